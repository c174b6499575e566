"""The scoring pipeline: reader -> tokenizer -> (batcher -> sessions -> fusion) -> writer.

Three threads joined by bounded queues, so tokenization and file I/O overlap with inference and
memory stays bounded by ``queue_depth`` windows of ``chunk_rows`` rows, whatever the file size:

    [read + tokenize] --q_in--> [batch + run + fuse] --q_out--> [format + write]

A window is the sorting window as well: rows are length-sorted inside it for batching and
scattered back by index, so output leaves in input order with no separate reorder buffer.
Errors in any stage stop the others and are re-raised in the caller's thread.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import InputError, StackscoreError
from ..tasks import activate
from .committer import CommittedOutput, OutputLock, check_output_path
from .readers import Window, Snapshot, open_reader
from .runner import without_tuning
from ..options import ScoreOptions, WriteOptions, fingerprint_options
from .scorer import Scorer, ScoredWindow
from .stats import ScoreStats
from .writers import ResultBlock

_DONE = object()


class _Columns(dict):
    """Result columns by name; a name given twice is an error, not a silent replacement (a model
    ``x`` with a label ``y`` writes ``prob_x_y``, which is also the fused column of a label ``x_y``)."""

    def __setitem__(self, name: str, value: Any) -> None:
        if name in self:
            from ..errors import ArtifactError

            raise ArtifactError(
                f"two result columns would be named '{name}' (from the model and label names: a model name followed by '_' and a "
                "label is also a label here); rename a model or a label and export again"
            )
        super().__setitem__(name, value)


def check_column_names(labels: list[str], model_names: list[str], task: str = "single_label", write: WriteOptions | None = None) -> None:
    """The result columns these models and labels give under ``write`` (default: every optional
    column), each named once (``_Columns``): what fit checks before it trains anything (any
    option may be used later), and ``score_file`` before it reads a row (the options it runs)."""
    k = len(labels)
    write = write or WriteOptions(with_model_outputs=True, with_contributions=True)
    empty = ScoredWindow(Window(0, [], [], []), np.zeros(0, dtype=np.int64), np.zeros((0, k)), {m: np.zeros((0, k)) for m in model_names},
                         np.zeros((0, len(model_names))), stage=np.zeros(0, dtype=np.int64))
    result_block(empty, labels, model_names, write, task, np.zeros(k))


def result_block(scored: ScoredWindow, labels: list[str], model_names: list[str], opts: WriteOptions, task: str = "single_label", thresholds: np.ndarray | None = None) -> ResultBlock:
    """Vectorized: one (n, k) scatter per column family, no per-row Python except label names.

    Columns by task: single-label ``label``, ``score``, ``prob_<label>``; multi-label ``labels``
    (the labels on, as a list) and ``prob_<label>``; regression ``value``. With a cascade,
    ``stage`` (which stage answered the row, 1 = the cheapest model alone). Then ``error``.
    """
    chunk = scored.chunk
    n = len(chunk)
    ok = np.zeros(n, dtype=bool)
    ok[scored.valid] = True

    def scatter(values: np.ndarray) -> np.ndarray:
        full = np.full((n, values.shape[1]), np.nan)
        full[scored.valid] = values
        return full

    proba = scatter(scored.proba)
    names = np.asarray(labels, dtype=object)
    cols: dict[str, Any] = _Columns()
    if task == "regression":
        cols["value"] = proba[:, 0]
    elif task == "multi_label":
        on = np.nan_to_num(proba, nan=-1.0) >= thresholds[None, :]
        cols["labels"] = [names[on[i]].tolist() if ok[i] else None for i in range(n)]
        for j, lab in enumerate(labels):
            cols[f"prob_{lab}"] = proba[:, j]
    else:
        top = np.where(ok, np.nan_to_num(proba, nan=-1.0).argmax(axis=1), 0) if n else np.zeros(0, dtype=np.int64)
        cols["label"] = np.where(ok, names[top], None).tolist()
        cols["score"] = proba[np.arange(n), top] if n else np.zeros(0)
        for j, lab in enumerate(labels):
            cols[f"prob_{lab}"] = proba[:, j]
    if scored.stage is not None:
        stage = np.zeros(n, dtype=np.int64)
        stage[scored.valid] = scored.stage
        cols["stage"] = [int(s) if good else None for s, good in zip(stage, ok)]
    cols["error"] = chunk.errors
    if opts.with_model_outputs:
        for m in model_names:
            full = scatter(scored.logits[m])
            if task == "regression":
                cols[f"value_{m}"] = full[:, 0]
                continue
            probs = scatter(activate(task, scored.logits[m]))
            for j, lab in enumerate(labels):
                cols[f"logit_{m}_{lab}"] = full[:, j]
            for j, lab in enumerate(labels):
                cols[f"prob_{m}_{lab}"] = probs[:, j]
    if opts.with_contributions and scored.contributions is not None:
        contrib = scatter(scored.contributions)
        for i, m in enumerate(model_names):
            cols[f"contrib_{m}"] = contrib[:, i]
    rows = np.arange(chunk.start, chunk.start + n, dtype=np.int64)
    if opts.on_error == "skip" and not ok.all():  # counted in the stats, left out of the output
        keep = np.flatnonzero(ok)
        return ResultBlock([chunk.ids[i] for i in keep], {c: (v[keep] if isinstance(v, np.ndarray) else [v[i] for i in keep]) for c, v in cols.items()}, rows[keep], chunk.id_type)
    return ResultBlock(list(chunk.ids), cols, rows, chunk.id_type)


def _update_stats(stats: ScoreStats, scored: ScoredWindow, labels: list[str], task: str = "single_label") -> None:
    chunk = scored.chunk
    stats.rows += len(chunk)
    stats.scored += len(scored.valid)
    stats.add_errors(chunk.errors)
    stats.real_tokens += scored.real_tokens
    stats.padded_tokens += scored.padded_tokens
    stats.truncated += scored.truncated
    stats.batch_seconds.extend(scored.batch_seconds)
    stats.model_seconds.update(scored.model_seconds)
    if scored.stage is not None:
        stats.add_stages(scored.stage)
    if chunk.labels is not None and len(scored.valid) and task == "single_label":  # accuracy: single-label only
        truth = np.asarray([str(chunk.labels[i]) for i in scored.valid], dtype=object)
        known = np.isin(truth, labels)
        pred = np.asarray(labels, dtype=object)[scored.proba.argmax(axis=1)]
        stats.labelled += int(known.sum())
        stats.correct += int(np.sum((pred == truth) & known))


class _Stage(threading.Thread):
    """Runs ``fn`` and records the first exception so the caller can re-raise it."""

    def __init__(self, name: str, fn: Callable[[], None], failed: threading.Event):
        super().__init__(name=name, daemon=True)
        self.fn = fn
        self.failed = failed
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
            self.error = exc
            self.failed.set()


def _put(q: queue.Queue, item: Any, failed: threading.Event) -> bool:
    """Blocking put that gives up when another stage failed (no deadlock on a full queue)."""
    while not failed.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, failed: threading.Event) -> Any:
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if failed.is_set():
                return _DONE


def run_pipeline(scorer: Scorer, chunks: Iterator[Window], sink: Callable[[ScoredWindow], None], opts: ScoreOptions, stats: ScoreStats, on_progress: Callable[[ScoreStats], None] | None = None) -> None:
    """Drive chunks through encode -> infer -> sink with one thread per stage."""
    failed = threading.Event()
    q_in: queue.Queue = queue.Queue(maxsize=opts.queue_depth)
    q_out: queue.Queue = queue.Queue(maxsize=opts.queue_depth)

    def produce() -> None:
        for chunk in chunks:
            if not _put(q_in, scorer.encode(chunk), failed):
                return
        _put(q_in, _DONE, failed)

    def consume() -> None:
        while (scored := _get(q_out, failed)) is not _DONE:
            sink(scored)
            _update_stats(stats, scored, scorer.labels, scorer.fusion.task)
            if on_progress is not None:
                on_progress(stats)

    producer = _Stage("stackscore-tokenize", produce, failed)
    writer = _Stage("stackscore-write", consume, failed)
    producer.start()
    writer.start()
    try:
        while (window := _get(q_in, failed)) is not _DONE:
            if not _put(q_out, scorer.infer(window), failed):
                break
        _put(q_out, _DONE, failed)
    except BaseException:
        failed.set()
        raise
    finally:
        producer.join()
        writer.join()
    for stage in (producer, writer):
        if stage.error is not None:
            raise stage.error


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


class _Progress:
    """One status line on stderr, at most once a second: percent of the input done (by bytes,
    where the reader knows them), rows written, rows/s, ETA and errors so far.

    The reader runs ahead of the writer by the queued windows, so each window is stamped with
    the bytes read when it was read (``track``) and the percent is that of the last window
    *written*: the line never says 100 % while windows are still being scored."""

    def __init__(self, enabled: bool, snapshot: Snapshot | None = None):
        self.enabled = enabled and sys.stderr is not None
        self.snapshot = snapshot
        self.last = 0.0
        self.marks: list[tuple[int, int]] = []  # (input rows up to the end of a window, bytes read then)

    def track(self, chunks: Iterator[Window]) -> Iterator[Window]:
        for c in chunks:
            read = self.snapshot.bytes_read if self.snapshot is not None else None
            if read is not None:
                self.marks.append((c.start + len(c), read))
            yield c

    def bytes_done(self, rows_done: int) -> int | None:
        """Bytes read when the last fully written window was read."""
        import bisect

        i = bisect.bisect_right(self.marks, (rows_done, float("inf"))) - 1
        if i < 0:
            return None
        del self.marks[:i]  # older marks are never needed again
        return self.marks[0][1]

    def line(self, stats: ScoreStats, now: float) -> str:
        elapsed = max(now - stats.started, 1e-9)
        parts = [f"{stats.rows:,} rows", f"{stats.rows / elapsed:,.0f} rows/s"]
        read = self.bytes_done(stats.resumed_from + stats.rows) if self.marks else (self.snapshot.bytes_read if self.snapshot is not None else None)
        if read is not None and self.snapshot.size:
            fraction = min(1.0, read / self.snapshot.size)
            parts.insert(0, f"{fraction:6.1%} read")
            if fraction > 0:
                parts.append(f"ETA {_duration(elapsed * (1 - fraction) / fraction)}")
        parts.append(f"errors {stats.errored:,}")
        return "  " + "  ".join(parts)

    def __call__(self, stats: ScoreStats) -> None:
        now = time.perf_counter()
        if self.enabled and now - self.last >= 1.0:
            self.last = now
            print("\r" + self.line(stats, now), end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.enabled and self.last:
            print(file=sys.stderr)


def _skip_done(chunks: Iterator[Window], rows_done: int) -> Iterator[Window]:
    """Drop the rows a resumed run already committed (chunk boundaries are deterministic)."""
    for c in chunks:
        end = c.start + len(c)
        if end <= rows_done:
            continue
        if c.start < rows_done:
            cut = rows_done - c.start
            c = Window(
                rows_done, c.ids[cut:], c.texts[cut:], c.errors[cut:], c.labels[cut:] if c.labels is not None else None,
                c.id_type, pairs=c.pairs[cut:] if c.pairs is not None else None,
            )
        yield c


def _raise_first_error(chunk: Window, path: Path) -> None:
    for e in chunk.errors:
        if e is not None:
            raise InputError(f"{path}: {e} (--on-error fail)")


def _fail_fast(chunks: Iterator[Window], path: Path) -> Iterator[Window]:
    for c in chunks:
        _raise_first_error(c, path)
        yield c


def check_pair_option(scorer: Scorer, text_pair_field: str | None, option: str = "--text-pair-field") -> None:
    """A pair artifact needs the second text; a single-text artifact must not be given one.
    ``option``: how the caller names it (the CLI's flag, a Python keyword)."""
    if scorer.text_pair and not text_pair_field:
        raise StackscoreError(f"{scorer.artifact_dir}: this ensemble was fitted on sentence pairs: give the second texts with {option}")
    if text_pair_field and not scorer.text_pair:
        raise StackscoreError(f"{scorer.artifact_dir}: this ensemble scores single texts; {option} {text_pair_field!r} does not apply")
    if scorer.text_pair and scorer.options.long_text != "truncate":
        raise StackscoreError(f"--long-text {scorer.options.long_text} applies to single texts; sentence pairs are truncated longest-first")


def fingerprint(input_path: Path, scorer: Scorer, opts: ScoreOptions, snapshot: Snapshot | None = None) -> dict[str, Any]:
    """What must not change between an interrupted run and its resumption."""
    snapshot = snapshot or Snapshot(input_path)
    digest = scorer.manifest.digest  # the manifest bytes the scorer parsed
    if not digest:  # a Scorer given a manifest built in memory
        from ..manifest import sha256_file

        digest = sha256_file(scorer.artifact_dir / "manifest.json")
    return {
        "input": str(input_path.resolve()),
        "input_size": snapshot.size,
        "input_mtime_ns": snapshot.mtime_ns,
        "manifest_sha256": digest,
        # the output-shaping options, and the backend/precision each model actually runs on
        # ("auto" may resolve differently elsewhere)
        "options": {**fingerprint_options(opts), "backends": without_tuning(scorer.describe())},
    }


def score_file(artifact: str | Path | Scorer, input_path: str | Path, output_path: str | Path, opts: ScoreOptions | None = None, keep: list[Scorer] | None = None) -> ScoreStats:
    """Stream ``input_path`` through the ensemble and write predictions to ``output_path``.

    Output is committed window by window (see ``committer.py``): after a crash, the same call
    with ``resume=True`` continues where the last committed window ended. The output is locked
    for the whole run, and the input is read as it was when the run started (``Snapshot``).

    ``keep``: a list that a scorer built here is added to once the run has succeeded, so that
    the caller decides when its models are freed. `stackscore score` keeps it until the process
    ends without the interpreter's teardown (``cli._exit_now``): freeing OpenVINO's compiled
    models and the sessions when this function returned took 0.12-0.14 s of a whole process (a
    20-row job runs ~0.85 s), after its output was complete. A run that fails frees it as it
    unwinds, while the runtimes are still whole.
    """
    opts = opts or ScoreOptions()
    if isinstance(artifact, Scorer) and artifact.options != opts.run:
        raise StackscoreError("score_file was given a Scorer built with other run options than opts.run: build opts with run=scorer.options")
    input_path, output_path = Path(input_path), Path(output_path)
    check_output_path(output_path, input_path)
    read = opts.read
    with OutputLock(output_path):  # before anything is loaded: a second run fails fast
        snapshot = Snapshot(input_path, read.allow_growing_input) if input_path.is_file() else None
        chunks = open_reader(
            input_path, read.text_field, read.id_field, read.label_field, read.window_rows, encoding_errors=read.encoding_errors,
            snapshot=snapshot, pair_field=read.text_pair_field, tsv_quotes=read.tsv_quotes, field_check=opts.field_check,
        )
        load_started_at, t0 = time.time(), time.perf_counter()
        scorer = artifact if isinstance(artifact, Scorer) else Scorer(artifact, opts.run)
        loaded = None if scorer is artifact else (load_started_at, time.perf_counter() - t0)
        check_pair_option(scorer, read.text_pair_field)
        check_column_names(scorer.labels, scorer.model_names, scorer.fusion.task, opts.write)
        out = CommittedOutput(output_path, fingerprint(input_path, scorer, opts, snapshot), resume=opts.write.resume, overwrite=opts.write.overwrite)
        stats = _run(scorer, chunks, out, input_path, opts, snapshot, loaded)
    if keep is not None and scorer is not artifact:
        keep.append(scorer)
    return stats


def _run(scorer: Scorer, chunks: Iterator[Window], out: CommittedOutput, input_path: Path, opts: ScoreOptions, snapshot: Snapshot | None,
         loaded: tuple[float, float] | None = None) -> ScoreStats:
    """``loaded``: (epoch s, seconds) of building the scorer here, None when the caller built it."""
    if out.rows_done:
        chunks = _skip_done(chunks, out.rows_done)
        if opts.progress:
            print(f"  resuming after {out.rows_done:,} committed rows", file=sys.stderr)
    if opts.write.on_error == "fail":
        chunks = _fail_fast(chunks, input_path)
    stats = ScoreStats(resumed_from=out.rows_done, backends=scorer.describe())
    if loaded is not None:
        stats.load_started_at, stats.load_seconds = loaded
    progress = _Progress(opts.progress, snapshot)
    chunks = progress.track(chunks)

    def sink(scored: ScoredWindow) -> None:
        if opts.write.on_error == "fail":  # rows that failed at inference (non-finite output)
            _raise_first_error(scored.chunk, input_path)
        out.commit(result_block(scored, scorer.labels, scorer.model_names, opts.write, scorer.fusion.task, scorer.fusion.thresholds), len(scored.chunk))
        if stats.first_row_at is None:  # what `stackscore bench` reports as time to the first row
            stats.first_row_at = time.time()

    try:
        def report(st: ScoreStats) -> None:
            progress(st)
            if opts.on_progress is not None:
                opts.on_progress(st)

        run_pipeline(scorer, chunks, sink, opts, stats, report)
        if out.parts == 0:  # an empty input still gives a well-formed, empty output
            empty = Window(0, [], [], [])
            k = len(scorer.labels)
            logits = {m: np.zeros((0, k)) for m in scorer.model_names}
            contributions = scorer.fusion.contributions([logits[m] for m in scorer.model_names])
            stage = np.zeros(0, dtype=np.int64) if scorer.cascade is not None else None
            sink(ScoredWindow(empty, np.zeros(0, dtype=np.int64), np.zeros((0, k)), logits, contributions, stage=stage))
        if snapshot is not None and snapshot.change() is not None:  # changed after it was read
            snapshot.changed()
        out.finish()
    except BaseException:
        out.discard_if_empty()
        raise
    finally:
        progress.done()
    return stats.finish()
