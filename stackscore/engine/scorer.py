"""The scorer: an artifact loaded into one runner per base model and a fusion stage.

It exposes the two steps the pipeline runs on separate threads, ``encode`` (CPU-bound
tokenization, once per distinct tokenizer) and ``infer`` (each runner's batches, then fusion),
and is also what the Python API calls directly for in-memory texts. Batching, devices and
long-text averaging live in the runners (``runner.py``); the scorer only hands them windows.

An artifact fitted with a cascade (``fusion/cascade.py``) is scored stage by stage: every row
of a window through the cheapest model, only the rows its partial fusion is unsure of through
the next, and so on; each stage's runner batches just its open rows (full token-budget batches),
and rows stay in window order. ``ScoredWindow.stage`` says which stage answered each row.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from ..errors import StackscoreError
from ..manifest import Manifest, check_listing, load_manifest, verify_opened
from ..options import RunOptions
from .fusion_stage import FusionStage
from .readers import Window, checked_window
from .runner import RunStats, TextRunner, fusion_files, runners_for
from .tokenize import Encoded


@dataclass
class EncodedWindow:
    chunk: Window
    valid: np.ndarray  # indices (into the window) of rows that have text
    encoded: dict[str, Encoded]  # tokenizer key -> encodings of the valid rows
    texts: list[str]  # the valid rows' texts (for string-input models)
    items: list | None = None  # what tokenizers take: texts, or (text, text_pair) tuples


@dataclass
class ScoredWindow:
    chunk: Window
    valid: np.ndarray
    proba: np.ndarray  # (len(valid), k)
    logits: dict[str, np.ndarray]  # model -> (len(valid), k)
    contributions: np.ndarray | None
    real_tokens: int = 0
    padded_tokens: int = 0
    truncated: int = 0
    batch_seconds: list[float] = field(default_factory=list)
    stage: np.ndarray | None = None  # cascade only: 1-based stage that answered each valid row
    ran: dict[str, np.ndarray] | None = None  # cascade only: per model, the valid rows it ran on
    model_seconds: Counter = field(default_factory=Counter)  # per model: wall seconds of its run_model calls


def _flag_non_finite(out: ScoredWindow, model_names: list[str]) -> ScoredWindow:
    """Rows whose logits or fused probabilities are not all finite become error rows.

    A NaN or infinite output (corrupted weights, an overflow in a low precision) has no
    meaningful argmax: taking one would print a made-up label next to null probabilities. The
    row keeps its place and id, gets ``non-finite model output`` as its error, and leaves the
    window's valid rows, so the writers give it null label and probabilities.
    """
    bad = ~np.isfinite(out.proba).all(axis=1)
    culprit = np.full(len(bad), "fused probabilities", dtype=object)
    for name in reversed(model_names):  # the first model with a bad row names it
        nonfinite = ~np.isfinite(out.logits[name]).all(axis=1)
        if out.ran is not None:  # a cascade leaves the rows a model never saw as NaN: not errors
            nonfinite &= out.ran[name]
        culprit[nonfinite] = f"logits of model '{name}'"
        bad |= nonfinite
    if not bad.any():
        return out
    chunk = out.chunk
    for i in np.flatnonzero(bad):
        row = int(out.valid[i])
        chunk.errors[row] = f"row {chunk.start + row}: non-finite model output ({culprit[i]})"
    keep = ~bad
    out.valid = out.valid[keep]
    out.proba = out.proba[keep]
    out.logits = {m: v[keep] for m, v in out.logits.items()}
    if out.stage is not None:
        out.stage = out.stage[keep]
        out.ran = {m: v[keep] for m, v in out.ran.items()}
    if out.contributions is not None:
        out.contributions = out.contributions[keep]
    return out


class Scorer:
    def __init__(self, artifact_dir: str | Path, options: RunOptions | None = None, manifest: Manifest | None = None):
        self.artifact_dir = Path(artifact_dir)
        self.options = options or RunOptions()
        verify = None
        if manifest is None:  # names and sizes of every file; checksums of just the files this run opens
            manifest = load_manifest(self.artifact_dir, verify=False)
            check_listing(self.artifact_dir, manifest)
            verify = partial(verify_opened, self.artifact_dir, manifest)
            verify(fusion_files(manifest, self.options))
        self.manifest = manifest
        self.labels = list(self.manifest.labels)
        self.text_pair = bool(self.manifest.text_pair)
        self.runners = runners_for(self.manifest, self.artifact_dir, self.options, verify=verify)
        self.tokenizers = {r.tokenizer_key: r.tokenizer for r in self.runners.values() if r.tokenizer_key is not None}
        self.fusion = FusionStage(self.manifest, self.artifact_dir)
        self.cascade = None
        if self.manifest.cascade and self.options.cascade:
            from ..fusion.cascade import Cascade

            self.cascade = Cascade.from_manifest(self.manifest.cascade, self.artifact_dir, self.fusion.method, self.fusion.task)
        self.eager_tokenizers = self._eager_tokenizers()
        self._lock = threading.Lock()  # sessions are thread-safe; this keeps batches whole per call

    def _eager_tokenizers(self) -> list[str]:
        """The tokenizers run up front, on the reader's thread, for every row of a window: every
        one, or with a cascade each stage's up to the first that can stop a row by its
        confidence (a stage whose threshold no probability reaches, ``NEVER``, passes on every
        row but one whose logits are not finite, which stops as an error row). Later stages
        tokenize just the rows that reach them, on the scoring thread. (A rt-polarity fit's
        cascade starts with a TF-IDF stage that never stops a row: RoBERTa's tokenizing then
        overlaps the previous window's inference instead of following the TF-IDF stage.)"""
        if self.cascade is None:
            return list(self.tokenizers)
        keys: list[str] = []
        for st in self.cascade.stages_:
            key = self.runners[st.models[-1]].tokenizer_key
            if key is not None and key not in keys:
                keys.append(key)
            if st.threshold is None or st.threshold <= 1.0:
                break
        return keys

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.manifest.models]

    def describe(self) -> str:
        """Which runtime and precision serve each model (``auto`` resolved on this machine)."""
        transformers = [f"{n}: {r.describe()}" for n, r in self.runners.items() if not isinstance(r, TextRunner)]
        return ", ".join(transformers + [f"{n}: {r.describe()}" for n, r in self.runners.items() if isinstance(r, TextRunner)])

    def encode(self, chunk: Window) -> EncodedWindow:
        valid = np.fromiter((i for i, e in enumerate(chunk.errors) if e is None), dtype=np.int64)
        texts = [chunk.texts[i] for i in valid] if len(valid) != len(chunk) else chunk.texts
        if self.text_pair:
            if chunk.pairs is None:
                raise StackscoreError("this artifact scores sentence pairs: name the second text's field (--text-pair-field)")
            items = list(zip(texts, [chunk.pairs[i] for i in valid]))
        else:
            items = texts
        encoded = {key: self.tokenizers[key].encode(items) for key in self.eager_tokenizers}
        return EncodedWindow(chunk, valid, encoded, texts, items)

    def run_model(self, name: str, window: EncodedWindow, rows: np.ndarray | None = None) -> tuple[np.ndarray, RunStats]:
        """One model's logits on ``rows`` of the window's valid rows (default: all of them)."""
        runner = self.runners[name]
        k = len(self.labels)
        if isinstance(runner, TextRunner):
            texts = window.texts if rows is None else [window.texts[i] for i in rows]
            return runner.run_texts(texts, k)
        enc = window.encoded.get(runner.tokenizer_key)
        if enc is None:  # not tokenized up front (a cascade's later stage): just these rows, now
            items = window.items if rows is None else [window.items[j] for j in rows]
            enc = runner.encode(items)
            logits, done = runner.run_encoded(enc, len(items), k)
            done.truncated = enc.truncated
            return logits, done
        return runner.run_encoded(enc, len(window.valid), k, rows)

    def prepared_batches(self, texts: list[str], window_rows: int) -> dict[str, list]:
        """Per model, the work scoring ``texts`` gives it, prepared in advance: a transformer's
        padded batches (window by window, as ``infer`` cuts them) or a string model's text lists.
        What bench and the benchmarks time the backends alone on (every model on every row)."""
        work: dict[str, list] = {name: [] for name in self.model_names}
        for s in range(0, len(texts), window_rows):
            part = texts[s : s + window_rows]
            window = self.encode(Window(s, list(range(len(part))), part, [None] * len(part)))
            for name, runner in self.runners.items():
                if isinstance(runner, TextRunner):
                    work[name].append(window.texts)
                else:
                    enc = window.encoded.get(runner.tokenizer_key) or runner.encode(window.items)
                    work[name].extend(runner.batches(enc))
        return work

    def infer(self, window: EncodedWindow) -> ScoredWindow:
        n = len(window.valid)
        out = ScoredWindow(window.chunk, window.valid, np.zeros((n, len(self.labels))), {}, None)
        for enc in window.encoded.values():
            out.truncated = max(out.truncated, enc.truncated)
        stats = RunStats()
        with self._lock:
            if self.cascade is not None:
                self._cascade(window, out, stats)
            else:
                for name in self.model_names:
                    out.logits[name], done = self._timed(out, name, window)
                    stats.add(done)
                outs = [out.logits[m] for m in self.model_names]
                out.proba = self.fusion(outs)
                out.contributions = self.fusion.contributions(outs)
        out.batch_seconds, out.real_tokens, out.padded_tokens = stats.seconds, stats.real_tokens, stats.padded_tokens
        out.truncated = max(out.truncated, stats.truncated)
        return _flag_non_finite(out, self.model_names)

    def _timed(self, out: ScoredWindow, name: str, window: EncodedWindow, rows: np.ndarray | None = None) -> tuple[np.ndarray, RunStats]:
        """``run_model``, its wall seconds added to ``out.model_seconds`` (where a process's time goes)."""
        t0 = time.perf_counter()
        result = self.run_model(name, window, rows)
        out.model_seconds[name] += time.perf_counter() - t0
        return result

    def _cascade(self, window: EncodedWindow, out: ScoredWindow, stats: RunStats) -> None:
        """Stage by stage over the window's open rows; a model runs only on the rows that reach it.

        Logits of rows a model never saw stay NaN (``out.ran`` says which are real); a row whose
        logits so far are not finite stops where it is, and ``_flag_non_finite`` reports it.
        """
        n, k = len(window.valid), len(self.labels)
        out.logits = {m: np.full((n, k), np.nan, dtype=np.float32) for m in self.model_names}
        out.ran = {m: np.zeros(n, dtype=bool) for m in self.model_names}
        out.stage = np.zeros(n, dtype=np.int64)
        open_ = np.arange(n)
        for i, st in enumerate(self.cascade.stages_):
            if not len(open_):
                break
            new = st.models[-1]  # stage i adds one model to the ones already run
            part, done = self._timed(out, new, window, None if len(open_) == n else open_)
            stats.add(done)
            out.logits[new][open_], out.ran[new][open_] = part, True
            seen = {m: out.logits[m][open_] for m in st.inputs}
            finite = np.all([np.isfinite(v).all(axis=1) for v in seen.values()], axis=0)
            proba, stops = self.cascade.stage_proba(i, seen)
            stops = stops | ~finite
            out.proba[open_[stops]] = proba[stops]
            out.stage[open_[stops]] = i + 1
            open_ = open_[~stops]
        last = np.flatnonzero(out.stage == len(self.cascade.stages_))
        contrib = self.fusion.contributions([out.logits[m][last] for m in self.model_names])
        if contrib is not None:  # the full fusion's shares, for the rows it answered
            out.contributions = np.full((n, contrib.shape[1]), np.nan)
            out.contributions[last] = contrib

    def score_texts(self, texts: list[str], pairs: list[str] | None = None) -> ScoredWindow:
        """Score in-memory texts (``pairs`` for pair artifacts). A text that is empty or blank (or
        not a string) gets no prediction, as in a file: it is left out of ``valid`` and its reason
        is in the window's ``errors`` (the API gives it a row of NaN, never a label)."""
        return self.infer(self.encode(checked_window(list(texts), list(pairs) if pairs is not None else None)))
