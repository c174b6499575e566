"""The local engine's per-window step, for executors other than the local pipeline.

``engine/pipeline.py`` runs read -> encode -> infer -> ``result_block`` -> commit on three threads
in one process. Ray actors, Spark executors and Ray Data batches run the *same* steps, one window
at a time, through the functions here, so every executor gives the same rows, the same error rows
and the same columns (whatever ``result_block`` makes them: nothing here names a result column):

- ``score_window``: a window read by the engine's readers -> its ``ResultBlock`` and its share of
  the run's statistics (what the local pipeline's sink and ``_update_stats`` do per window);
- ``empty_block``: the result of an input with no rows, so an empty input still gives a
  well-formed output (and a schema) with the columns a non-empty one would have;
- ``score_arrow``: Arrow record batches (a Spark partition, a Ray Data batch) through the
  columnar readers' own row checks (``readers._from_arrow_batches``: null, empty, non-text and
  invalid-UTF-8 rows become error rows exactly as in a CSV or Parquet file).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from ..engine.pipeline import _raise_first_error, _update_stats, result_block
from ..engine.readers import Window, _from_arrow_batches
from ..engine.scorer import ScoredWindow
from ..engine.stats import ScoreStats
from ..engine.writers import ResultBlock, block_to_table
from ..errors import InputError, StackscoreError
from ..options import ReadOptions, WriteOptions

# A reader's row location ("line 12: ", "row 3: "), as ``engine/stats.py`` strips it to count
# errors by reason. DataFrame rows have no file position, so their errors carry the reason only.
_LOCATION = re.compile(r"^(line|row) \d+: ")


def empty_block(scorer: Any, write: WriteOptions) -> ResultBlock:
    """The result block of zero rows: the columns an output of this ensemble has, no rows.

    ``scorer`` is a ``Scorer`` or anything with its ``labels``, ``model_names`` and ``fusion``
    (a Spark driver builds the schema without loading the base models' sessions)."""
    k = len(scorer.labels)
    logits = {m: np.zeros((0, k)) for m in scorer.model_names}
    contributions = scorer.fusion.contributions([logits[m] for m in scorer.model_names])
    stage = np.zeros(0, dtype=np.int64) if getattr(scorer, "cascade", None) is not None else None  # a cascade's `stage` column
    scored = ScoredWindow(Window(0, [], [], []), np.zeros(0, dtype=np.int64), np.zeros((0, k)), logits, contributions, stage=stage)
    return result_block(scored, scorer.labels, scorer.model_names, write, scorer.fusion.task, scorer.fusion.thresholds)


def score_window(scorer: Any, window: Window, write: WriteOptions, source: str | None = None, source_path: str | None = None, before: int = 0) -> tuple[ResultBlock, ScoreStats]:
    """One window through encode -> infer -> ``result_block``, as the local pipeline does it.

    ``source``: when rows of several input files go to one output, each error names its file
    (``b.jsonl line 3: invalid JSON``); the statistics count errors by reason either way.
    ``source_path``: the file named by ``--on-error fail`` when a row fails at inference. Without
    one (a DataFrame's rows: no file, and a row number that counts from the partition or batch,
    not the frame) an error row at inference gets its reason only, as reader errors do there.
    ``before``: the rows of earlier inputs in ``window.start`` (several inputs, one output):
    errors made at inference name the row in its own file, as the reader's do.
    """
    window.start -= before
    try:
        scored = scorer.infer(scorer.encode(window))
    finally:
        window.start += before
    if source_path is None:
        errors = scored.chunk.errors
        for i, e in enumerate(errors):
            if e is not None:
                errors[i] = _LOCATION.sub("", e)
    if write.on_error == "fail":  # rows that failed at inference (non-finite output)
        if source_path is None:
            bad = next((e for e in scored.chunk.errors if e is not None), None)
            if bad is not None:
                raise InputError(f"{bad} (--on-error fail)")
        _raise_first_error(scored.chunk, Path(source_path or "input"))
    stats = ScoreStats()
    _update_stats(stats, scored, scorer.labels, scorer.fusion.task)
    if source is not None:
        errors = scored.chunk.errors
        for i, e in enumerate(errors):
            if e is not None:
                errors[i] = f"{source} {e}"
    block = result_block(scored, scorer.labels, scorer.model_names, write, scorer.fusion.task, scorer.fusion.thresholds)
    return block, stats


def merge_stats(total: ScoreStats, part: ScoreStats) -> None:
    """Add one window's (or one shard's) counters to the run's. Timing fields stay the run's,
    but for the first committed row (the earliest). A shard that went on from its own committed
    parts adds them to ``resumed_from``: rows + resumed_from is every input row."""
    total.rows += part.rows
    total.resumed_from += part.resumed_from
    for i, c in enumerate(part.stage_rows):  # cascade: rows each stage answered
        if i == len(total.stage_rows):
            total.stage_rows.append(0)
        total.stage_rows[i] += c
    if part.first_row_at is not None:
        total.first_row_at = part.first_row_at if total.first_row_at is None else min(total.first_row_at, part.first_row_at)
    total.scored += part.scored
    total.errors.update(part.errors)
    total.real_tokens += part.real_tokens
    total.padded_tokens += part.padded_tokens
    total.truncated += part.truncated
    total.labelled += part.labelled
    total.correct += part.correct
    total.batch_seconds.extend(part.batch_seconds)
    total.model_seconds.update(part.model_seconds)  # summed over windows (and over workers: seconds of scoring threads)


def result_schema(scorer: Any, write: WriteOptions):
    """The Arrow schema of the result columns (no ``id``/``row``: a DataFrame keeps its own)."""
    table = block_to_table(empty_block(scorer, write))
    return table.schema.remove(table.schema.get_field_index("row")).remove(0)


def check_columns(names: Iterable[str], read: ReadOptions, result_names: Iterable[str], prefix: str = "", fold_case: bool = False) -> None:
    """One line on the driver, before any executor starts: the text column(s) exist and no
    result column would shadow an input column (``fold_case``: whatever their case, as Spark
    resolves names by default: an input ``Label`` beside the result's ``label`` is ambiguous)."""
    names = list(names)
    if read.text_pair_field is not None and read.text_pair_field == read.text_field:
        raise InputError(f"the text and text pair columns must be different columns, got '{read.text_field}' for both")
    for what, col in (("text", read.text_field), ("text pair", read.text_pair_field)):
        if col is not None and col not in names:
            raise InputError(f"no {what} column '{col}' (columns: {', '.join(names)})")
    fold = str.casefold if fold_case else (lambda name: name)
    results = {fold(prefix + c) for c in result_names}
    clash = sorted(n for n in set(names) if fold(n) in results)
    if clash:
        raise StackscoreError(f"input column(s) {', '.join(clash)} would be overwritten by result columns; rename them or pass prefix=")


def score_arrow(scorer: Any, batches: Iterable[Any], read: ReadOptions, write: WriteOptions, schema, prefix: str = "") -> Iterator[Any]:
    """Record batches (one Spark partition, Ray Data batches) -> the same batches with the result
    columns appended (rows without a prediction dropped under ``on_error='skip'``).

    Rows are checked by the columnar readers' own code, so a null, empty, non-text or
    invalid-UTF-8 text is an error row with the reason a CSV or Parquet file gives; the row's
    location is left out (a partition has no file position; the row keeps its own columns).
    ``schema``: ``result_schema(scorer, write)``, computed once.
    """
    import pyarrow as pa

    held: list[tuple[int, Any]] = []  # (first row, batch) of batches the reader has taken
    not_text: dict[int, str] = {}  # row -> reason, for rows of object columns that hold no text

    def keep(it: Iterable[Any]) -> Iterator[Any]:
        row = 0
        for b in it:
            if isinstance(b, pa.Table):
                b = b.combine_chunks().to_batches()[0] if b.num_rows else pa.RecordBatch.from_pylist([], schema=b.schema)
            held.append((row, b))
            fed = b
            for field in (read.text_field, read.text_pair_field):
                if field is not None:
                    fed = _objects_as_text(fed, field, row, not_text)
            row += b.num_rows
            yield fed

    windows = _from_arrow_batches(keep(batches), Path("DataFrame"), read.text_field, None, None, read.window_rows, read.encoding_errors, read.text_pair_field)
    names = [prefix + f.name for f in schema]
    for window in windows:
        while held and held[0][0] + held[0][1].num_rows <= window.start:  # windows never cross batches
            held.pop(0)
        first, batch = held[0]
        window.errors = [None if e is None else not_text.pop(window.start + i, None) or _LOCATION.sub("", e) for i, e in enumerate(window.errors)]
        if write.on_error == "fail":
            bad = next((e for e in window.errors if e is not None), None)
            if bad is not None:
                raise InputError(f"{bad} (--on-error fail)")
        block, _ = score_window(scorer, window, write)
        table = block_to_table(block)
        rows = np.asarray(block.row_numbers(), dtype=np.int64) - first
        part = batch.take(pa.array(rows))
        cols = [table.column(f.name).cast(f.type) for f in schema]
        yield pa.RecordBatch.from_arrays([*part.columns, *[c.combine_chunks() for c in cols]], names=[*part.schema.names, *names])


# Options for files that a DataFrame's rows have no use for: taken silently, they did nothing.
_FILE_ONLY = ("id_field", "label_field", "tsv_quotes", "overwrite", "resume", "allow_growing_input")
# The file pipeline's own machinery: a DataFrame's batches are scheduled by Ray / Spark, whose
# UIs show their progress; taken silently, these did nothing either.
_PIPELINE_ONLY = ("on_progress", "queue_depth")


def frame_options(adapter: str, set_by: dict[str, str], options: dict[str, Any], **fixed: Any):
    """``ScoreOptions`` for a DataFrame adapter (``score_spark``, ``score_dataset``): ``fixed``
    are what the adapter sets from its own parameters, ``options`` the user's flat names. A name
    the adapter sets itself (``set_by``: name -> what to pass instead) or one that only applies
    to files is refused in one line, not met by a TypeError or silently ignored."""
    from ..options import ScoreOptions

    for name in options:
        if name in set_by:
            raise StackscoreError(f"{adapter}: {name}= is not taken here; {set_by[name]}")
        if name in _FILE_ONLY:
            raise StackscoreError(f"{adapter}: {name}= applies to files, not to a DataFrame's rows (they keep their own columns beside the results)")
        if name in _PIPELINE_ONLY:
            raise StackscoreError(f"{adapter}: {name}= applies to the file pipeline; the framework schedules a DataFrame's batches and shows their progress")
    return ScoreOptions.from_kwargs(**fixed, **options)


def _objects_as_text(batch, field: str, first_row: int, not_text: dict[int, str]):
    """A text column that Arrow does not type as text, as a string column whose non-text rows
    are null, each with the reason the Python API gives it (``readers._text_error``), in
    ``not_text`` by row. A pandas column of mixed Python objects reaches a Ray Data batch as an
    extension type of pickled objects, a Spark column may be numbers: in ``score_dataframe``
    each such row is an error row and the others are scored, and so they are here (the columnar
    reader refuses the whole column, as it should for a file's typed column)."""
    import pyarrow as pa

    from ..engine.readers import _plain, _text_error

    i = batch.schema.get_field_index(field)
    if i < 0:
        return batch  # the reader names the missing column
    t = _plain(batch.column(i)).type
    if any(check(t) for check in (pa.types.is_string, pa.types.is_large_string, pa.types.is_null, pa.types.is_binary, pa.types.is_large_binary, pa.types.is_fixed_size_binary)):
        return batch
    values = batch.column(i).to_pylist()
    texts = []
    for j, v in enumerate(values):
        reason = _text_error(v, field)
        if reason is not None:
            not_text.setdefault(first_row + j, reason)  # the text's reason before its pair's, as score_dataframe
        texts.append(None if reason is not None else v)
    return batch.set_column(i, pa.field(field, pa.string()), pa.array(texts, type=pa.string()))


def planned_scorer(artifact_dir: str | Path, run: Any, digest: str):
    """The ``Scorer`` of an executor (a Ray actor, a Ray Data actor, a Spark worker), refused
    unless it loaded the artifact the driver planned the job with: ``digest`` is the driver's
    manifest sha256 (``ArtifactFacts.digest``), compared with that of the manifest bytes this
    scorer parsed (every other file it opens is checked against that manifest). Without it an
    executor on a node holding another copy of the artifact, or one started after the artifact
    was exported again to the same path (Ray Data runs lazily, actors restart), scored with other
    models and labels than the driver's columns and the other executors, and nothing said so."""
    from ..engine.scorer import Scorer
    from ..errors import ArtifactError
    from ..manifest import load_manifest

    def check(here: str) -> None:
        if here != digest:
            raise ArtifactError(
                f"{artifact_dir}: not the artifact this job was planned with (manifest.json sha256 {here[:16]} here, "
                f"{digest[:16]} on the driver): it changed after this job was planned, or this node has another copy; "
                "every node must see the same artifact: run the job again"
            )

    check(load_manifest(artifact_dir, verify=False).digest)  # before any model is built (a retried task fails fast)
    scorer = Scorer(artifact_dir, run)
    check(scorer.manifest.digest)  # and the bytes it was built from
    return scorer


class ArtifactFacts:
    """What the driver of a distributed run needs to know about an artifact without loading its
    base models: labels, model names and the fusion stage (for the result columns), whether it
    scores sentence pairs (for ``check_pair_option``), and, once an executor has loaded it, which
    backend serves each model (``describe``, part of the resume fingerprint)."""

    def __init__(self, artifact_dir: str | Path, options: Any, description: str = ""):
        from ..engine.fusion_stage import FusionStage
        from ..manifest import load_manifest

        self.artifact_dir = Path(artifact_dir)
        self.options = options
        self.manifest = load_manifest(self.artifact_dir, verify=False)  # the executors verify the files
        self.digest = self.manifest.digest  # which artifact the job is planned with (``planned_scorer``)
        self.labels = list(self.manifest.labels)
        self.model_names = [m.name for m in self.manifest.models]
        self.text_pair = bool(self.manifest.text_pair)
        self.fusion = FusionStage(self.manifest, self.artifact_dir)
        self.cascade = self.manifest.cascade if getattr(options, "cascade", True) else None  # truthy: the output has a stage column
        self.description = description

    def describe(self) -> str:
        return self.description
