"""Model runners: one object per base model that turns a window of rows into logits.

A runner owns everything one model needs between texts and logits: its tokenizer, pad id,
length buckets, batch geometry and one backend per device (the way text-embeddings-inference
has one Backend and infinity one ModelWorker). The scorer, export's parity and precision gates,
static-int8 calibration, ``stackscore bench`` and the benchmarks all go through a runner, so
there is one batch loop in the code base (``TransformerRunner.batches`` + ``run_encoded``) and
the gates measure exactly what scoring runs.

- ``TransformerRunner``: token ids through an ONNX graph (ONNX Runtime or OpenVINO, CPU or GPUs).
- ``TextRunner``: a string-input graph (TF-IDF + linear model); texts in, log-probabilities out.

``run(window, rows)`` takes the rows of a window to score (all of them by default), which is
what a cascade needs: later stages run only the rows earlier stages left open, in full batches.
"""

from __future__ import annotations

import functools
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np

from ..errors import ArtifactError
from ..manifest import Manifest, ModelSpec, compiled_identity, data_files, resolve_inside
from ..options import RunOptions
from ..export.variants import VARIANTS
from .backends import check_output_width, choose
from .backends.gpu import buckets_for
from .batcher import BATCH_OVERHEAD_TOKENS, NEW_SHAPE_TOKENS, Batch, batch_scale, build_batch, plan_batches
from .tokenize import Encoded, TextTokenizer


class Backend(Protocol):
    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None) -> np.ndarray: ...


@dataclass
class RunStats:
    """What a runner did for one window: per-batch seconds and real vs padded tokens."""

    seconds: list[float] = field(default_factory=list)
    real_tokens: int = 0
    padded_tokens: int = 0
    truncated: int = 0  # rows cut, of those a model tokenized on its own (a cascade's later stage)

    def add(self, other: "RunStats") -> None:
        self.seconds += other.seconds
        self.real_tokens += other.real_tokens
        self.padded_tokens += other.padded_tokens
        self.truncated = max(self.truncated, other.truncated)  # as the window's count: the model that cut most


class TransformerRunner:
    """A transformer graph behind its tokenizer and the token-budget batcher.

    ``backends`` holds one backend per device; with more than one (several GPUs), a window's
    batches are dealt round-robin across them by one worker thread per device.
    """

    kind = "transformer"

    def __init__(self, name: str, tokenizer: TextTokenizer, pad_id: int, backends: list[Backend], token_budget: int, max_rows: int, buckets: tuple[int, ...] | None = None, describe: str = "", tokenizer_key: str | None = None, choice=None, overhead_tokens: int = BATCH_OVERHEAD_TOKENS, new_shape_tokens: int = 0):
        self.name = name
        self.tokenizer = tokenizer
        self.tokenizer_key = tokenizer_key or str(tokenizer.path)
        self.pad_id = int(pad_id)
        self.backends = list(backends)
        self.token_budget = int(token_budget)
        self.max_rows = int(max_rows)
        self.overhead_tokens = int(overhead_tokens)
        self.new_shape_tokens = int(new_shape_tokens)  # backends that prepare kernels per batch shape (plan_batches)
        self.buckets = buckets
        self.description = describe
        self.choice = choice  # backends.Choice (runtime, precision, graph) when built from an artifact
        self._workers = ThreadPoolExecutor(len(self.backends), thread_name_prefix=f"{name}-device") if len(self.backends) > 1 else None
        # Callers of multi-stream backends: one worker per stream of every device, sized here
        # (not by the first window's batch count, which would cap every later window).
        slots = sum(getattr(b, "streams", 1) for b in self.backends if getattr(b, "streams", 1) > 1)
        self._streams = ThreadPoolExecutor(slots, thread_name_prefix=f"{name}-stream") if slots else None
        self.min_batches = max(1, slots)  # a small window still gives every stream a batch (``plan_batches``)

    @classmethod
    def for_graph(cls, name: str, backend: Backend, tokenizer_json: Path, max_length: int, pad_id: int, options: RunOptions | None = None, flops_per_token: float = 0.0, truncation_side: str = "right", split_special_tokens: bool = False) -> "TransformerRunner":
        """A runner on one backend with the scorer's batch geometry for a graph of
        ``flops_per_token`` (export's gates and calibration)."""
        options = options or RunOptions()
        tok = TextTokenizer(tokenizer_json, max_length, options.long_text, options.max_windows, truncation_side=truncation_side, split_special_tokens=split_special_tokens)
        buckets = buckets_for(max_length) if options.bucketed else None
        budget, rows, overhead = batch_geometry(flops_per_token, options)
        return cls(name, tok, pad_id, [backend], budget, rows, buckets, overhead_tokens=overhead)

    # -- the one batch loop ------------------------------------------------------------------
    def encode(self, items: list) -> Encoded:
        return self.tokenizer.encode(items)

    def batches(self, enc: Encoded, seqs: np.ndarray | None = None) -> Iterator[Batch]:
        """Padded batches of ``enc``'s sequences (all, or ``seqs``), cut by the token budget."""
        lengths = enc.lengths if seqs is None else enc.lengths[seqs]
        groups = plan_batches(lengths, self.token_budget, self.max_rows, self.overhead_tokens, buckets=self.buckets, min_batches=self.min_batches,
                              new_shape_tokens=self.new_shape_tokens)
        for rows in groups:
            yield build_batch(enc, rows if seqs is None else seqs[rows], self.pad_id, self.buckets)

    def run_batches(self, batches: list[Batch], width: int) -> RunStats:
        """Prepared batches (from any windows) through the first device as scoring runs them,
        every stream busy; the logits are dropped. What bench, tune and the roofline time: one
        request at a time would leave a multi-stream model on a fraction of its cores."""
        rows = max((int(b.rows.max()) for b in batches if len(b.rows)), default=-1) + 1
        return self._run_on(0, batches, np.zeros((rows, width), dtype=np.float32))

    def run_batch(self, batch: Batch, device: int = 0) -> np.ndarray:
        return self.backends[device].run(batch.input_ids, batch.attention_mask, batch.token_type_ids)

    def _run_on(self, device: int, batches: list[Batch], out: np.ndarray) -> RunStats:
        """``batches`` on one device, each batch's logits written to its rows of ``out``.

        With several streams (``backend.streams``), that many callers take the next batch as
        soon as their last one is done, each on its own request; the rows say where each batch's
        logits go, so the output order does not depend on which finishes first."""
        backend = self.backends[device]
        streams = min(getattr(backend, "streams", 1), len(batches))
        if streams <= 1:
            return self._run_slot(backend, iter(batches), out, 0, None, None)
        queue, lock, stop = iter(batches), threading.Lock(), threading.Event()
        futures = [self._streams.submit(self._run_slot, backend, queue, out, slot, lock, stop) for slot in range(streams)]
        wait(futures)  # every caller has stopped (one that fails stops the others at their next batch)
        stats = RunStats()
        for f in futures:
            stats.add(f.result())  # the first error, if any, is raised here
        return stats

    @staticmethod
    def _run_slot(backend, queue: Iterator[Batch], out: np.ndarray, slot: int, lock: threading.Lock | None, stop: threading.Event | None) -> RunStats:
        stats = RunStats()
        while True:
            if lock is None:
                b = next(queue, None)
            else:
                with lock:
                    b = None if stop.is_set() else next(queue, None)
            if b is None:
                return stats
            t0 = time.perf_counter()
            try:  # a single caller does not name its slot: every backend (PyTorch's in the gates too) takes that
                logits = backend.run(b.input_ids, b.attention_mask, b.token_type_ids, **({} if lock is None else {"slot": slot}))
            except BaseException:
                if stop is not None:
                    stop.set()
                raise
            out[b.rows] = logits
            stats.seconds.append(time.perf_counter() - t0)
            stats.real_tokens += b.real_tokens
            stats.padded_tokens += b.padded_tokens

    def run_encoded(self, enc: Encoded, n_rows: int, width: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, RunStats]:
        """Logits of ``rows`` (default: every row) of a window of ``n_rows`` rows encoded as ``enc``.

        Returns ``(len(rows), width)`` logits in the order of ``rows``; in windows mode (a row
        split into several sequences, ``enc.owner``) a row's window logits are averaged.
        """
        seq_row = enc.owner if enc.owner is not None else np.arange(len(enc.lengths))
        seqs = slot = None
        n_out = n_rows
        if rows is not None:
            pos = np.full(n_rows, -1, dtype=np.int64)
            pos[np.asarray(rows, dtype=np.int64)] = np.arange(len(rows))
            seqs = np.flatnonzero(pos[seq_row] >= 0)
            slot = pos[seq_row[seqs]]
            n_out = len(rows)
        logits = np.zeros((len(enc.lengths), width), dtype=np.float32)
        batches = list(self.batches(enc, seqs))
        stats = RunStats()
        if self._workers is None or len(batches) < 2:
            stats.add(self._run_on(0, batches, logits))
        else:  # one worker per device, batches dealt round-robin; rows say where each goes
            n_dev = len(self.backends)
            for f in [self._workers.submit(self._run_on, d, batches[d::n_dev], logits) for d in range(n_dev)]:
                stats.add(f.result())
        if seqs is not None:
            logits, seq_row = logits[seqs], slot
            if enc.owner is None:
                out = np.zeros((n_out, width), dtype=np.float32)
                out[slot] = logits
                return out, stats
        if enc.owner is not None:
            summed = np.zeros((n_out, width), dtype=np.float64)
            np.add.at(summed, seq_row, logits)
            logits = (summed / np.bincount(seq_row, minlength=n_out)[:, None]).astype(np.float32)
        return logits, stats

    def logits(self, items: list, width: int) -> np.ndarray:
        """Texts (or pairs) -> ``(n, width)`` logits in input order through the tokenizer, the
        batcher and the backend: what export's parity and precision gates compare."""
        return self.run_encoded(self.encode(items), len(items), width)[0]

    def describe(self) -> str:
        return self.description


TFIDF_MAX_CHARS = 200_000  # ~30,000 words: exact on any document a TF-IDF model is usually fitted on


class TextRunner:
    """A string-input graph: the texts themselves are its input (no tokenizer, no batcher)."""

    kind = "tfidf"
    tokenizer_key = None

    def __init__(self, name: str, backend, describe: str = "onnxruntime/tfidf"):
        self.name = name
        self.backend = backend
        self.description = describe

    def run_texts(self, texts: list[str], width: int) -> tuple[np.ndarray, RunStats]:
        t0 = time.perf_counter()
        # The graph counts n-grams over the whole string: a 12 MB line cost ~300 MB. A text is cut
        # at TFIDF_MAX_CHARS (its transformers saw far less of it: their tokens were cut long before).
        cut = sum(len(t) > TFIDF_MAX_CHARS for t in texts)
        if cut:
            texts = [t if len(t) <= TFIDF_MAX_CHARS else t[:TFIDF_MAX_CHARS] for t in texts]
        out = self.backend.run_texts(texts) if texts else np.zeros((0, width), np.float32)
        return out, RunStats([time.perf_counter() - t0], truncated=cut)

    def describe(self) -> str:
        return self.description


ModelRunner = TransformerRunner | TextRunner


def streams_note(streams: int) -> str:
    """How a runner's description says it runs several requests at once (``without_tuning``
    takes it out again)."""
    return f" x{streams} streams" if streams > 1 else ""


def gated_plain_attention(spec: ModelSpec, choice) -> bool:
    """Whether the variant ``choice`` runs was gated with OpenVINO's attention as plain nodes
    (its gate's ``attention``: "plain"), so it must run so, whatever `tune` recorded: a static
    int8 MiniLM on an AMX Xeon agreed 98.0 % (91.7 % on bucketed batches) with fp32 through the
    fused attention kernels and 99.8 % through plain nodes (``int8_search``)."""
    if choice is None or choice.backend != "openvino":
        return False
    return (spec.parity or {}).get("gates", {}).get(choice.variant, {}).get("attention") == "plain"


def export_plain_attention(spec: ModelSpec, choice, streams: int, threads: int) -> bool:
    """Whether export timed the variant ``choice`` runs faster with OpenVINO's attention as plain
    nodes than with the fused kernel on its gate rows, both passing the gate (its gate's
    ``plain_attention.default``; ``onnx_graph.plain_attention_gate``), under the conditions of
    this run: the same kind of CPU (``cpu_key``), thread count and streams, against the same fused
    kernel (``tuning.fused_kernel``). How a run that `stackscore tune` has not measured runs it;
    elsewhere the fused kernel stays (which is faster depends on the machine: plain nodes' bf16
    Softmax costs more on two threads than on one, RESULTS.md)."""
    if choice is None or choice.backend != "openvino":
        return False
    plain = (spec.parity or {}).get("gates", {}).get(choice.variant, {}).get("plain_attention")
    if not isinstance(plain, dict) or plain.get("default") is not True or plain.get("passed") is not True:
        return False
    from ..tuning import fused_kernel
    from .backends import cpu_key

    return (plain.get("cpu"), plain.get("threads"), plain.get("streams"), plain.get("fused_kernel")) == (cpu_key(), threads, streams, fused_kernel())


def attention_note(backend: str, fused: bool) -> str:
    """How a runner's description says OpenVINO runs attention as plain nodes (``without_tuning``
    takes it out again)."""
    return " plain attention" if backend == "openvino" and not fused else ""


def without_tuning(described: str) -> str:
    """A description (one runner's, or a scorer's list of them) without ``streams_note``'s and
    ``attention_note``'s parts: what a resume must match. Stream counts, like thread counts, split
    the same work differently, and plain or fused attention kernels compute the same sums in
    another order; both are re-measured by `stackscore tune`. A Ray run's actors report their
    descriptions as text."""
    import re

    return re.sub(r" x\d+ streams| plain attention", "", described)


def fusion_files(manifest: Manifest, options: RunOptions) -> list[str]:
    """The fusion graph and, with the cascade on, its partial fusion graphs."""
    files = [manifest.fusion.graph] if manifest.fusion.graph else []
    if manifest.cascade and options.cascade:
        files += [g for st in manifest.cascade.get("stages", []) if (g := (st.get("fusion") or {}).get("graph"))]
    return files


def runners_for(manifest: Manifest, artifact_dir: Path, options: RunOptions, verify: Callable[[list[str]], None] | None = None) -> dict[str, ModelRunner]:
    """One runner per base model of an artifact, in manifest order.

    Models that share a tokenizer file (same sha256) and max length share one tokenizer, so a
    window is encoded once for all of them (``tokenizer_key``). The models are built on a thread
    each (at most one per core): checksumming a graph, parsing a tokenizer and compiling a session
    release the GIL, and a process that scores a small file waits for all of them before its
    first row. ``verify(files)`` (the scorer's checksums) runs on each model's files before
    anything opens them (``runner_for``).
    """
    import os

    tokenizers: dict[str, TextTokenizer] = {}
    lock = threading.Lock()
    _import_runtimes_ahead(manifest, options)

    def build(spec: ModelSpec) -> ModelRunner:
        return runner_for(spec, manifest, artifact_dir, options, tokenizers, lock, verify)

    workers = max(1, min(len(manifest.models), os.cpu_count() or 1))
    pool = ThreadPoolExecutor(workers, thread_name_prefix="load")
    try:
        built = list(pool.map(build, manifest.models))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # the first error is reported without waiting for every other model
        raise
    pool.shutdown()
    return {r.name: r for r in built}


def _import_runtimes_ahead(manifest: Manifest, options: RunOptions) -> None:
    """Start importing OpenVINO on a thread of its own when a model will run on it: the import
    (0.05 s alone, ~0.09 s beside the loaders) then overlaps the checksums and tokenizers
    instead of sitting in the first model's build, which every OpenVINO build waits for. Errors
    are left to the builds: ``import_openvino`` raises the same failure to each of them."""

    def wanted(spec: ModelSpec) -> bool:
        try:
            return spec.kind == "transformer" and choose(spec, options, warn=False).backend == "openvino"
        except Exception:  # noqa: BLE001 - the model's own build reports what is wrong with it
            return False

    def run() -> None:
        try:
            from .backends.ov import import_openvino

            import_openvino()
        except Exception:  # noqa: BLE001 - see above
            pass

    if any(wanted(spec) for spec in manifest.models):
        # Not a daemon: a process that fails early (a bad artifact, exit 2) waits for the import
        # to finish before it shuts down, instead of finalizing around a half-loaded library.
        threading.Thread(target=run, name="import-openvino").start()


def runner_for(spec: ModelSpec, manifest: Manifest, artifact_dir: Path, options: RunOptions, tokenizers: dict | None = None, lock: threading.Lock | None = None, verify: Callable[[list[str]], None] | None = None) -> ModelRunner:
    """One model's runner under ``options`` (``runners_for`` builds them all; ``tune`` builds one
    per stream count). ``tokenizers``/``lock``: a cache shared by models loading together.
    ``verify(files)``: called with the manifest names of exactly the files this runner is about
    to open (the graph ``choose`` picked, the tokenizer), before it opens them: the graph by the
    backend, which does not open it where ``--cache-dir`` keeps what was compiled from it."""
    from .backends.ort import OrtBackend, TextBackend

    tokenizers = {} if tokenizers is None else tokenizers
    lock = lock or threading.Lock()
    if verify is None and options.cache_dir is not None:
        # what is compiled from a graph is kept under its checksum: never from an unchecked one
        # (``tune`` builds its candidates' runners here, with the user's options)
        from ..manifest import verify_opened

        verify = functools.partial(verify_opened, artifact_dir, manifest)
    verify = verify or (lambda files: None)

    k = len(manifest.labels)
    if spec.kind == "tfidf":
        verify([spec.graphs.get("fp32", "")])
        graph = resolve_inside(artifact_dir, spec.graphs.get("fp32", ""), f"models[{spec.name}].graphs.fp32")
        backend = TextBackend(graph, options)
        check_output_width(spec.name, backend.output_width, k, graph)
        return TextRunner(spec.name, backend)
    if spec.kind != "transformer":
        raise ArtifactError(f"model '{spec.name}': kind '{spec.kind}' is not supported by this engine")
    choice = choose(spec, options)
    verify([spec.tokenizer])
    verify_graph = functools.cache(functools.partial(verify, [spec.graphs[choice.graph_key]]))  # once, however many devices
    graph = resolve_inside(artifact_dir, spec.graphs[choice.graph_key], f"models[{spec.name}].graphs.{choice.graph_key}")
    sha = compiled_identity(manifest, spec.graphs[choice.graph_key])
    token_budget, max_rows, overhead = batch_geometry(spec.flops_per_token, options)
    streams, fused = options.streams, options.fused_attention
    if gated_plain_attention(spec, choice):
        fused = False  # what its export gate measured: OpenVINO's fused kernels failed it there
    if not options.on_gpu and (not streams or fused is None):  # what `stackscore tune` measured and recorded for this graph on this CPU
        from ..tuning import recorded

        found = recorded(options.cache_dir, choice.backend, choice.precision, sha, options.cpu_threads, token_budget)
        streams = streams or found.get("streams") or default_streams(choice.backend, options)
        if fused is None:
            fused = found.get("fused_attention")
        if fused is None:  # not measured here by tune: what export measured, where it holds
            fused = not export_plain_attention(spec, choice, streams, options.cpu_threads)
    streams, fused = streams or 1, fused is not False  # else OpenVINO's own kernels

    def load_tokenizer() -> tuple[str, TextTokenizer]:
        with lock:  # models sharing a tokenizer file load it once
            return _tokenizer(spec, manifest, artifact_dir, options, tokenizers)

    # The tokenizer is parsed on a thread of its own while the sessions build (a compilation
    # releases the GIL): MiniLM's 0.02-0.03 s parse no longer comes before its build. A broken
    # tokenizer is still what is reported when both fail, as when it loaded first.
    loading = ThreadPoolExecutor(1, thread_name_prefix=f"{spec.name}-tokenizer")
    try:
        tokenizer = loading.submit(load_tokenizer)
        backends = []
        try:
            for device in options.devices:
                if tokenizer.done():
                    tokenizer.result()  # already failed: no compilation for nothing
                if choice.backend == "openvino":
                    from .backends.ov import OpenVinoBackend

                    backends.append(OpenVinoBackend(graph, spec, options, choice.precision, graph_sha256=sha, streams=streams, fused_attention=fused, verify_graph=verify_graph))
                else:
                    # ORT saves an optimized graph's external data relative to where it reads it from: none kept then
                    backends.append(OrtBackend(graph, spec, options, choice.precision, device, streams=streams, graph_sha256=sha, verify_graph=verify_graph, keep_optimized=not data_files(manifest)))
                check_output_width(spec.name, getattr(backends[-1], "output_width", None), k, graph)
        except Exception:
            if tokenizer.exception() is not None:  # waits for the parse (tens of ms)
                tokenizer.result()
            raise
        key, tok = tokenizer.result()
    finally:
        loading.shutdown(wait=False, cancel_futures=True)
    where = "".join(f" on GPU {d}" for d in options.devices if d is not None)
    if options.on_gpu and all(getattr(b, "device_id", 0) is None for b in backends):
        # GPU providers missing, CPU fallback allowed: the CPU runs the chosen graph as it is
        # stored (TensorRT's fp16 is an engine setting on the fp32 graph, not the graph's own).
        from dataclasses import replace

        choice = replace(choice, precision=VARIANTS[choice.graph_key].precision)
        where = " on the CPU (GPU providers missing)"
    buckets = buckets_for(spec.max_length) if options.bucketed else None
    return TransformerRunner(
        spec.name, tok, spec.pad_id, backends, token_budget, max_rows, buckets,
        describe=f"{choice.backend}/{choice.precision}{where}{streams_note(streams)}{attention_note(choice.backend, fused)}", tokenizer_key=key, choice=choice,
        overhead_tokens=overhead, new_shape_tokens=NEW_SHAPE_TOKENS * overhead // BATCH_OVERHEAD_TOKENS if choice.backend == "openvino" else 0,
    )


DEFAULT_OPENVINO_STREAMS = 2
"""Requests in flight per OpenVINO model on a multi-core CPU without a `stackscore tune` record.
Measured, not assumed: in all nine benches of sessions 8-12 (`stackscore bench`'s tune step, an
AMX Xeon, short/long/mixed texts) two streams ran MiniLM 14-111 % faster warm than one, and #16's
own measurement on an AMD EPYC found 10-25 %; a model as small as the bench's RoBERTa ranged
-12 % to +50 %, a small share of an ensemble's time. ONNX Runtime sessions keep one caller
(never measured with more here); `stackscore tune` still measures and records per model."""


def default_streams(backend: str, options: RunOptions) -> int:
    """``DEFAULT_OPENVINO_STREAMS`` for an OpenVINO model with at least that many CPU threads,
    else one request at a time."""
    if backend == "openvino" and not options.on_gpu and options.cpu_threads >= DEFAULT_OPENVINO_STREAMS:
        return DEFAULT_OPENVINO_STREAMS
    return 1


def batch_geometry(flops_per_token: float, options: RunOptions) -> tuple[int, int, int]:
    """A model's token budget, row cap and per-batch overhead (tokens): the options' own, times
    ``batch_scale`` for a model much smaller than MiniLM on CPUs (unless ``scale_batches`` is
    off). GPU backends keep the options' budget, which their shape profiles (TensorRT) and
    length buckets were built for."""
    scale = 1 if options.on_gpu or not options.scale_batches else batch_scale(flops_per_token)
    return options.token_budget * scale, options.max_batch_rows * scale, BATCH_OVERHEAD_TOKENS * scale


def _tokenizer(spec: ModelSpec, manifest: Manifest, artifact_dir: Path, options: RunOptions, cache: dict[str, TextTokenizer]) -> tuple[str, TextTokenizer]:
    if not spec.tokenizer:
        raise ArtifactError(f"model '{spec.name}' names no tokenizer")
    key = f"{manifest.files.get(spec.tokenizer, {}).get('sha256', spec.tokenizer)}:{spec.max_length}:{spec.truncation_side}:{spec.split_special_tokens}"
    if key not in cache:
        path = resolve_inside(artifact_dir, spec.tokenizer, f"models[{spec.name}].tokenizer")
        cache[key] = TextTokenizer(path, spec.max_length, options.long_text, options.max_windows, truncation_side=spec.truncation_side, split_special_tokens=spec.split_special_tokens)
    tok = cache[key]
    vocab = spec.parity.get("vocab_size")
    if vocab is not None and (tok.max_id >= vocab or spec.pad_id >= vocab):
        raise ArtifactError(
            f"model '{spec.name}': tokenizer has {tok.vocab_size} tokens with ids up to {tok.max_id} "
            f"(pad id {spec.pad_id}), the model's embedding has {vocab} rows: every id must be below {vocab}"
        )
    return key, tok
