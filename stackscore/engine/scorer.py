"""The scorer: an artifact loaded into tokenizers, sessions and a fusion stage.

It exposes the two steps the pipeline runs on separate threads, ``encode`` (CPU-bound
tokenization) and ``infer`` (batching, sessions, fusion), and is also what the Python API calls
directly for in-memory texts.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, StackscoreError
from ..manifest import Manifest, load_manifest, resolve_inside
from .backends.gpu import buckets_for
from .batcher import build_batch, plan_batches
from .fusion_stage import FusionStage
from .readers import Chunk
from .session_pool import BackendOptions, SessionPool
from .tokenize import Encoded, TextTokenizer


@dataclass
class EncodedWindow:
    chunk: Chunk
    valid: np.ndarray  # indices (into the chunk) of rows that have text
    encoded: dict[str, Encoded]  # tokenizer key -> encodings of the valid rows
    texts: list[str]  # the valid rows' texts (for string-input models)


@dataclass
class ScoredWindow:
    chunk: Chunk
    valid: np.ndarray
    proba: np.ndarray  # (len(valid), k)
    logits: dict[str, np.ndarray]  # model -> (len(valid), k)
    contributions: np.ndarray | None
    real_tokens: int = 0
    padded_tokens: int = 0
    truncated: int = 0
    batch_seconds: list[float] = field(default_factory=list)


@dataclass
class EngineConfig:
    token_budget: int = 2048  # measured: 1024-16384 within 7 % on CPU; 2048 keeps batch latency low
    max_batch_rows: int = 256
    long_text: str = "truncate"  # truncate | head-tail | windows (see tokenize.py)
    backend: BackendOptions = field(default_factory=BackendOptions)
    bucket_lengths: bool | None = None  # pad to a few fixed lengths; None: on for GPU providers


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
    if out.contributions is not None:
        out.contributions = out.contributions[keep]
    return out


class Scorer:
    def __init__(self, artifact_dir: str | Path, config: EngineConfig | None = None, manifest: Manifest | None = None):
        self.artifact_dir = Path(artifact_dir)
        self.config = config or EngineConfig()
        self.manifest = manifest or load_manifest(self.artifact_dir)
        self.labels = list(self.manifest.labels)
        self.text_pair = bool(self.manifest.text_pair)
        self.tokenizers: dict[str, TextTokenizer] = {}
        self.model_tokenizer: dict[str, str] = {}
        for spec in self.manifest.models:
            if spec.kind == "tfidf":
                continue
            if not spec.tokenizer:
                raise ArtifactError(f"model '{spec.name}' names no tokenizer")
            key = f"{self.manifest.files.get(spec.tokenizer, {}).get('sha256', spec.tokenizer)}:{spec.max_length}"
            if key not in self.tokenizers:
                path = resolve_inside(self.artifact_dir, spec.tokenizer, f"models[{spec.name}].tokenizer")
                self.tokenizers[key] = TextTokenizer(path, spec.max_length, self.config.long_text)
            self.model_tokenizer[spec.name] = key
            vocab = spec.parity.get("vocab_size")
            tok = self.tokenizers[key]
            if vocab is not None and (tok.max_id >= vocab or spec.pad_id >= vocab):
                raise ArtifactError(
                    f"model '{spec.name}': tokenizer has {tok.vocab_size} tokens with ids up to {tok.max_id} "
                    f"(pad id {spec.pad_id}), the model's embedding has {vocab} rows: every id must be below {vocab}"
                )
        self.pad_ids = {spec.name: spec.pad_id for spec in self.manifest.models}
        opts, cfg = self.config.backend, self.config
        # One pool per device: GPUs each get a session per model; the CPU gets one pool.
        self.pools = [
            SessionPool(self.manifest, self.artifact_dir, opts, device_id=d, token_budget=cfg.token_budget, max_rows=cfg.max_batch_rows)
            for d in opts.devices
        ]
        self.sessions = self.pools[0]
        bucketed = cfg.bucket_lengths if cfg.bucket_lengths is not None else opts.on_gpu
        self.buckets = {s.name: buckets_for(s.max_length) if bucketed else None for s in self.manifest.models}
        self._workers = ThreadPoolExecutor(len(self.pools), thread_name_prefix="device") if len(self.pools) > 1 else None
        self.fusion = FusionStage(self.manifest, self.artifact_dir)
        self._lock = threading.Lock()  # sessions are thread-safe; this keeps batches whole per call

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.manifest.models]

    def encode(self, chunk: Chunk) -> EncodedWindow:
        valid = np.fromiter((i for i, e in enumerate(chunk.errors) if e is None), dtype=np.int64)
        texts = [chunk.texts[i] for i in valid] if len(valid) != len(chunk) else chunk.texts
        if self.text_pair:
            if chunk.pairs is None:
                raise StackscoreError("this artifact scores sentence pairs: name the second text's field (--text-pair-field)")
            items = list(zip(texts, [chunk.pairs[i] for i in valid]))
        else:
            items = texts
        encoded = {key: tok.encode(items) for key, tok in self.tokenizers.items()}
        return EncodedWindow(chunk, valid, encoded, texts)

    def infer(self, window: EncodedWindow) -> ScoredWindow:
        cfg = self.config
        n = len(window.valid)
        k = len(self.labels)
        out = ScoredWindow(window.chunk, window.valid, np.zeros((n, k)), {}, None)
        for enc in window.encoded.values():
            out.truncated = max(out.truncated, enc.truncated)
        with self._lock:
            for name in self.model_names:
                if name in self.sessions.text_backends:
                    t0 = time.perf_counter()
                    out.logits[name] = self.sessions.text_backends[name].run_texts(window.texts) if n else np.zeros((0, k), np.float32)
                    out.batch_seconds.append(time.perf_counter() - t0)
                    continue
                enc = window.encoded[self.model_tokenizer[name]]
                logits = np.zeros((len(enc.lengths), k), dtype=np.float32)
                plans = plan_batches(enc.lengths, cfg.token_budget, cfg.max_batch_rows, buckets=self.buckets[name])
                if self._workers is None:
                    done = [self._run_batches(self.sessions, name, enc, plans, logits)]
                else:  # one worker per device, batches dealt round-robin; rows say where each goes
                    n_dev = len(self.pools)
                    futures = [
                        self._workers.submit(self._run_batches, pool, name, enc, plans[i::n_dev], logits)
                        for i, pool in enumerate(self.pools)
                    ]
                    done = [f.result() for f in futures]
                for seconds, real, padded in done:
                    out.batch_seconds += seconds
                    out.real_tokens += real
                    out.padded_tokens += padded
                if enc.owner is not None:  # windows: average each row's window logits
                    summed = np.zeros((n, k), dtype=np.float64)
                    np.add.at(summed, enc.owner, logits)
                    logits = (summed / np.bincount(enc.owner, minlength=n)[:, None]).astype(np.float32)
                out.logits[name] = logits
        outs = [out.logits[m] for m in self.model_names]
        out.proba = self.fusion(outs)
        out.contributions = self.fusion.contributions(outs)
        return _flag_non_finite(out, self.model_names)

    def _run_batches(self, pool: SessionPool, name: str, enc: Encoded, plans: list[np.ndarray], logits: np.ndarray) -> tuple[list[float], int, int]:
        """Run ``plans`` of model ``name`` on one device, writing rows of ``logits`` in place.

        Returns (per-batch seconds, real tokens, padded tokens) for the window's statistics.
        """
        buckets = self.buckets[name]
        seconds: list[float] = []
        real = padded = 0
        for rows in plans:
            batch = build_batch(enc, rows, self.pad_ids[name], buckets)
            t0 = time.perf_counter()
            logits[rows] = pool.run(name, batch.input_ids, batch.attention_mask, batch.token_type_ids)
            seconds.append(time.perf_counter() - t0)
            real += batch.real_tokens
            padded += batch.padded_tokens
        return seconds, real, padded

    def score_texts(self, texts: list[str], pairs: list[str] | None = None) -> ScoredWindow:
        """Score in-memory texts (every one must be a non-empty string; ``pairs`` for pair artifacts)."""
        chunk = Chunk(0, list(range(len(texts))), list(texts), [None] * len(texts), pairs=list(pairs) if pairs is not None else None)
        return self.infer(self.encode(chunk))
