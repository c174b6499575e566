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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import StackscoreError
from .readers import Chunk, open_reader
from .scorer import EngineConfig, Scorer, ScoredWindow
from .stats import ScoreStats
from .writers import ResultBlock, open_writer

_DONE = object()


@dataclass
class ScoreOptions:
    text_field: str = "text"
    id_field: str | None = None
    label_field: str | None = None
    chunk_rows: int = 4096
    queue_depth: int = 2
    with_model_outputs: bool = False
    with_contributions: bool = False
    overwrite: bool = False
    progress: bool = True
    engine: EngineConfig = field(default_factory=EngineConfig)


def result_block(scored: ScoredWindow, labels: list[str], model_names: list[str], opts: ScoreOptions) -> ResultBlock:
    """Vectorized: one (n, k) scatter per column family, no per-row Python except label names."""
    chunk = scored.chunk
    n, k = len(chunk), len(labels)
    proba = np.full((n, k), np.nan)
    proba[scored.valid] = scored.proba
    top = np.nanargmax(np.where(np.isnan(proba), -1.0, proba), axis=1) if n else np.zeros(0, dtype=int)
    label_names = np.asarray(labels, dtype=object)[top]
    ok = np.zeros(n, dtype=bool)
    ok[scored.valid] = True
    label_col = np.where(ok, label_names, None).tolist()
    cols: dict[str, Any] = {"label": label_col, "score": np.where(ok, proba[np.arange(n), top] if n else 0.0, np.nan)}
    for j, lab in enumerate(labels):
        cols[f"prob_{lab}"] = proba[:, j]
    cols["error"] = chunk.errors
    if opts.with_model_outputs:
        for m in model_names:
            full = np.full((n, k), np.nan)
            full[scored.valid] = scored.logits[m]
            for j, lab in enumerate(labels):
                cols[f"logit_{m}_{lab}"] = full[:, j]
    if opts.with_contributions and scored.contributions is not None:
        contrib = np.full((n, len(model_names)), np.nan)
        contrib[scored.valid] = scored.contributions
        for i, m in enumerate(model_names):
            cols[f"contrib_{m}"] = contrib[:, i]
    return ResultBlock(list(chunk.ids), cols)


def _update_stats(stats: ScoreStats, scored: ScoredWindow, labels: list[str]) -> None:
    chunk = scored.chunk
    stats.rows += len(chunk)
    stats.scored += len(scored.valid)
    stats.add_errors(chunk.errors)
    stats.real_tokens += scored.real_tokens
    stats.padded_tokens += scored.padded_tokens
    stats.truncated += scored.truncated
    stats.batch_seconds.extend(scored.batch_seconds)
    if chunk.labels is not None and len(scored.valid):
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


def run_pipeline(scorer: Scorer, chunks: Iterator[Chunk], sink: Callable[[ScoredWindow], None], opts: ScoreOptions, stats: ScoreStats, on_progress: Callable[[ScoreStats], None] | None = None) -> None:
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
            _update_stats(stats, scored, scorer.labels)
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


class _Progress:
    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr is not None
        self.last = 0.0

    def __call__(self, stats: ScoreStats) -> None:
        now = time.perf_counter()
        if self.enabled and now - self.last >= 1.0:
            self.last = now
            rate = stats.rows / max(now - stats.started, 1e-9)
            print(f"\r  {stats.rows:,} rows  {rate:,.0f} rows/s  errors {stats.errored:,}", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.enabled and self.last:
            print(file=sys.stderr)


def score_file(artifact: str | Path | Scorer, input_path: str | Path, output_path: str | Path, opts: ScoreOptions | None = None) -> ScoreStats:
    """Stream ``input_path`` through the ensemble and write predictions to ``output_path``."""
    opts = opts or ScoreOptions()
    output_path = Path(output_path)
    if output_path.exists() and not opts.overwrite:
        raise StackscoreError(f"{output_path}: output exists; pass --overwrite to replace it")
    scorer = artifact if isinstance(artifact, Scorer) else Scorer(artifact, opts.engine)
    chunks = open_reader(input_path, opts.text_field, opts.id_field, opts.label_field, opts.chunk_rows)
    writer = open_writer(output_path)
    stats = ScoreStats()
    progress = _Progress(opts.progress)

    def sink(scored: ScoredWindow) -> None:
        writer.write(result_block(scored, scorer.labels, scorer.model_names, opts))

    try:
        run_pipeline(scorer, chunks, sink, opts, stats, progress)
        if writer.rows == 0:  # an empty input still gives a well-formed, empty output
            empty = Chunk(0, [], [], [])
            sink(ScoredWindow(empty, np.zeros(0, dtype=np.int64), np.zeros((0, len(scorer.labels))), {m: np.zeros((0, len(scorer.labels))) for m in scorer.model_names}, None))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        progress.done()
    return stats.finish()
