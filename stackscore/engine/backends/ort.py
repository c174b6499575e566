"""ONNX Runtime backends: transformer graphs (ids + mask in, logits out) and string graphs."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ...errors import ArtifactError, StackscoreError, StackscoreWarning
from ...manifest import ModelSpec
from . import RunOptions, graph_feeds, run_error, session_error
from .gpu import provider_list, provider_names

FEEDABLE = {"input_ids", "attention_mask", "token_type_ids"}


def import_ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise StackscoreError("ONNX Runtime is not installed: pip install 'stackscore[cpu]' (or '[gpu]')") from None
    return ort


def resolve_providers(ort, options: RunOptions) -> list:
    """The providers to use: as asked, or CPU when the asked ones are missing and fallback is allowed."""
    available = set(ort.get_available_providers())
    names = provider_names(options.providers)
    missing = [p for p in names if p not in available]
    if not missing:
        return list(options.providers)
    msg = (
        f"execution provider(s) {', '.join(missing)} not available in this onnxruntime "
        f"(available: {', '.join(sorted(available))}); for CUDA/TensorRT install 'stackscore[gpu]' "
        "(onnxruntime-gpu, never together with onnxruntime) and the CUDA 12/13 + cuDNN 9 libraries"
    )
    if not options.allow_cpu_fallback:
        raise StackscoreError(msg + "; pass --allow-cpu-fallback to run on the CPU instead")
    import warnings

    warnings.warn(msg + "; falling back to CPUExecutionProvider as allowed", StackscoreWarning, stacklevel=3)
    return ["CPUExecutionProvider"]


def check_active_providers(model: str, requested: list[str], active: list[str], allow_fallback: bool) -> None:
    """Refuse a session that silently lost a requested GPU provider.

    ONNX Runtime's Python API retries without a provider whose libraries fail to load (seen on an
    H200 image without TensorRT: ``libnvinfer.so.10`` missing -> "Falling back to CUDA and
    retrying"), so a ``--device tensorrt`` run would otherwise report CUDA figures as TensorRT's.
    """
    lost = [p for p in requested if p not in active and p != "CPUExecutionProvider"]
    if not lost:
        return
    msg = (
        f"model '{model}': ONNX Runtime could not start {', '.join(lost)} (its libraries failed to load; "
        f"the session runs on {', '.join(active)})"
    )
    if not allow_fallback:
        raise StackscoreError(msg + "; install the provider's libraries or pass --allow-cpu-fallback to accept this")
    import warnings

    warnings.warn(msg, StackscoreWarning, stacklevel=3)


class OrtBackend:
    """An ONNX Runtime session for one transformer graph, on the CPU or on one GPU.

    On a GPU (``device_id`` set, CUDA/TensorRT providers) the session runs with IOBinding:
    inputs are copied to the device once, the logits are bound to a device buffer that ORT
    allocates, and only the (rows x labels) logits come back to the host for fusion, one
    small copy per batch instead of ORT's default copy-everything-per-run.
    """

    name = "onnxruntime"

    def __init__(self, graph: Path, spec: ModelSpec, options: RunOptions, precision: str = "fp32", device_id: int | None = None, streams: int = 1, graph_sha256: str | None = None, verify_graph: Callable[[], None] | None = None, keep_optimized: bool = True):
        ort = import_ort()
        self.graph = graph
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # A session is thread-safe: with several streams, as many callers run batches at once.
        # Each run works on its calling thread plus the session's one intra-op pool, which the
        # callers share: on 2 cores and 2 streams, two single-threaded runs; on more cores the
        # pool (threads/streams - 1 workers) is contended, so `stackscore tune` measures rather
        # than assumes the gain.
        self.streams = max(1, int(streams))
        so.intra_op_num_threads = max(1, options.cpu_threads // self.streams)
        so.inter_op_num_threads = 1
        providers = resolve_providers(ort, options)
        self.device_id = device_id if options.on_gpu and providers != ["CPUExecutionProvider"] else None
        if self.device_id is not None:
            providers = provider_list(
                providers, self.device_id, options.gpu, input_names=list(spec.inputs),
                max_length=spec.max_length, max_rows=options.max_batch_rows, token_budget=options.token_budget,
                fp16=precision == "fp16", engine_key=graph_sha256,
            )
        self.precision = precision
        source, finish = _optimized_cache(ort, so, graph, options, graph_sha256 if keep_optimized else None, precision, providers)
        if source == graph and verify_graph is not None:  # the kept optimized graph was made from the verified one
            verify_graph()
        try:
            self.session = ort.InferenceSession(str(source), sess_options=so, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception classes
            finish(False)
            raise session_error(graph, "ONNX Runtime", exc) from None
        finish(True)
        self.providers = self.session.get_providers()
        check_active_providers(spec.name, provider_names(providers), self.providers, options.allow_cpu_fallback)
        self.input_names = [i.name for i in self.session.get_inputs()]
        unknown = set(self.input_names) - FEEDABLE
        if unknown:
            raise ArtifactError(f"model '{spec.name}': graph has inputs the engine cannot feed: {sorted(unknown)}")
        self.output_name = spec.output
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if self.output_name not in outputs:
            raise ArtifactError(f"{graph}: model '{spec.name}' has no output '{self.output_name}' (outputs: {', '.join(outputs)})")
        last = outputs[self.output_name][-1] if outputs[self.output_name] else None
        self.output_width = last if isinstance(last, int) else None
        use_binding = options.io_binding if options.io_binding is not None else self.device_id is not None
        self.device = "cuda" if self.device_id is not None else "cpu"
        self.io_binding = bool(use_binding)
        self._ort = ort
        state = ort.capi.onnxruntime_pybind11_state  # the exception classes a failed run raises
        self._errors = tuple(c for c in vars(state).values() if isinstance(c, type) and issubclass(c, Exception)) + (RuntimeError,)

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None, slot: int = 0) -> np.ndarray:
        feeds = graph_feeds(input_ids, attention_mask, self.input_names, token_type_ids)
        try:
            if self.io_binding:
                return self.run_bound(feeds)
            return self.session.run([self.output_name], feeds)[0].astype(np.float32, copy=False)
        except self._errors as exc:  # ORT's own failures; anything else (a bug, MemoryError) as it is
            raise run_error(self.graph, "ONNX Runtime", exc, input_ids.shape) from exc

    def run_bound(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        binding = self.session.io_binding()
        device_id = self.device_id or 0
        for name, arr in feeds.items():
            if self.device == "cpu":
                binding.bind_cpu_input(name, arr)
            else:
                value = self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr), self.device, device_id)
                binding.bind_ortvalue_input(name, value)
        binding.bind_output(self.output_name, self.device, device_id)
        binding.synchronize_inputs()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return binding.copy_outputs_to_cpu()[0].astype(np.float32, copy=False)


def _optimized_cache(ort, so, graph: Path, options: RunOptions, graph_sha256: str | None, precision: str, providers: list):
    """ONNX Runtime's optimized-model file, with ``--cache-dir``: the graph as ORT rewrites it
    (constant folding, fusions: ~0.04 s of a MiniLM session's ~0.14 s), kept under a key of the
    graph's sha256, ORT's version, the CPU and the precision (``compile_cache_dir``), so it is
    only ever loaded in place of the exact, checksummed graph it was made from, by the same ORT
    on the same CPU. Returns (what to load, ``finish(session_ok)``: keeps the file the session
    just wrote, or removes it). Plain CPU sessions only: other providers compile parts of the
    graph into nodes ORT cannot save, and the key does not name them. A graph ORT cannot save
    (over 2 GB) is simply not kept."""
    from . import compile_cache_dir

    def nothing(ok: bool) -> None:
        return None

    cache = compile_cache_dir(options, "onnxruntime", ort.__version__, graph_sha256, precision) if list(providers) == ["CPUExecutionProvider"] else None
    if cache is None:
        return graph, nothing
    kept = cache / "model.optimized.onnx"
    if kept.is_file():
        return kept, nothing
    import os

    tmp = cache / f".model.{os.getpid()}.{id(so)}.onnx"
    so.optimized_model_filepath = str(tmp)
    # Saving a graph with CPU-specific rewrites (NCHWc layouts on AVX2/AVX-512) makes ORT warn that
    # it "should only be used in the same environment": the key above names the CPU, so that is
    # what happens; errors still print.
    so.log_severity_level = max(so.log_severity_level, 3)

    def finish(ok: bool) -> None:
        try:
            if ok:
                os.replace(tmp, kept)  # atomic: a concurrent reader sees no file or a whole one
                return
        except OSError:
            pass
        tmp.unlink(missing_ok=True)

    return graph, finish


class TextBackend:
    """A string-input graph (TF-IDF + linear model): texts in, log-probabilities out."""

    name = "onnxruntime"

    def __init__(self, graph: Path, options: RunOptions | None = None, rows_per_run: int = 2048):
        ort = import_ort()
        options = options or RunOptions()
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.cpu_threads
        # String ops run on the CPU whatever the device; the graph is small.
        try:
            self.session = ort.InferenceSession(str(graph), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            raise session_error(graph, "ONNX Runtime", exc) from None
        self.input_name = self.session.get_inputs()[0].name
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        self.output_name = "probabilities" if "probabilities" in outputs else list(outputs)[-1]
        last = outputs[self.output_name][-1] if outputs[self.output_name] else None
        self.output_width = last if isinstance(last, int) else None
        self.rows_per_run = rows_per_run

    def run_texts(self, texts: list[str]) -> np.ndarray:
        out = []
        for s in range(0, len(texts), self.rows_per_run):
            arr = np.asarray(texts[s : s + self.rows_per_run], dtype=object).reshape(-1, 1)
            out.append(self.session.run([self.output_name], {self.input_name: arr})[0])
        proba = np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
        return np.log(np.clip(proba, 1e-12, None)).astype(np.float32)
