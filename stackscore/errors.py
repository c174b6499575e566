"""User-facing errors.

Anything a user can cause (a bad path, a malformed manifest, a missing column) raises
:class:`StackscoreError` with a message that names the file, line and field. The CLI prints the
message and exits non-zero without a traceback; library users can catch it.
"""

from __future__ import annotations


class StackscoreError(Exception):
    """An error caused by input, configuration or an artifact: shown to the user as-is."""


class ArtifactError(StackscoreError):
    """The artifact directory is not what its manifest claims (schema, checksum, paths)."""


class InputError(StackscoreError):
    """An input file cannot be read at all (missing, wrong format, unknown column)."""


class ParityError(StackscoreError):
    """An exported graph (or tokenizer) does not compute what the trained model computes."""


class StackscoreWarning(RuntimeWarning):
    """Something the user should know that does not stop the run (an explicit precision whose gate
    does not hold on this CPU, a GPU provider that fell back): shown even where ``--verbose`` is off
    and third-party warnings are silenced (``quiet.configure``)."""
