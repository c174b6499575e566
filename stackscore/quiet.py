"""Third-party chatter off unless ``--verbose``: fit and export print stackscore's own lines.

transformers' and huggingface_hub's progress bars and load reports, NNCF's rich progress bars
and ONNX Runtime's quantization advice would otherwise bury the few lines a user needs (what is
trained, which gates passed, the verdict). Errors still surface: they raise.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from typing import Iterator

_VERBOSE = False


def configure(verbose: bool) -> None:
    """Called once by the CLI (fit, export) before training or export code is imported."""
    global _VERBOSE
    _VERBOSE = verbose
    if verbose:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore")
    from .errors import StackscoreWarning

    warnings.filterwarnings("default", category=StackscoreWarning)  # ours still show (added last: it wins)
    for name in ("nncf", "onnxruntime", "transformers", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # the scoring install has no transformers
        pass


def verbose() -> bool:
    """Whether third-party progress is shown (``configure``): for libraries that take a switch
    instead of being muted, such as the tokenizers trainers (their hidden progress bar still
    printed three empty lines per trained tokenizer)."""
    return _VERBOSE


@contextlib.contextmanager
def muted() -> Iterator[None]:
    """Around a third-party call that prints progress bars or root-logger warnings itself
    (NNCF's quantization, ONNX Runtime's quantizer): its output is dropped unless verbose."""
    if _VERBOSE:
        yield
        return
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def native_stdout_muted() -> Iterator[None]:
    """Around a call whose C++ side prints to file descriptor 1 (``redirect_stdout`` does not reach
    it): torch's TorchScript exporter dumps the whole IR graph (tens of KB) to stdout before raising
    on an unsupported operator, since its ``setup_onnx_logging`` tests a function's truthiness, not
    its result. Dropped unless verbose; the exception itself still raises."""
    if _VERBOSE:
        yield
        return
    import sys
    import tempfile

    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no descriptor 1 to redirect: leave it as it is
        yield
        return
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 1)
            try:
                yield
            finally:
                os.dup2(saved, 1)
    finally:
        os.close(saved)
