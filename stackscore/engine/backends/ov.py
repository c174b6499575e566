"""OpenVINO backend: reads the artifact's ONNX graph; bf16 via the inference-precision hint.

OpenVINO compiles for dynamic shapes once and reuses kernels across lengths, and on CPUs with
AVX512-BF16/AMX its bf16 execution of an fp32 graph is fast; a static int8 graph (NNCF QDQ,
``int8_static`` in the manifest) is faster still (~1.3x bf16 on MiniLM: benchmarks/int8_probe.py).
It does not speed up ONNX Runtime's *dynamically* quantized graphs, which stay on ONNX Runtime.
"""

from __future__ import annotations

import locale
import sys
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from ...manifest import ModelSpec
from . import RunOptions, compile_cache_dir, cpu_has_bf16, graph_feeds, session_error


_FIRST_CALL = threading.Lock()
_IMPORT = threading.Lock()  # the sys.modules switch below is process-wide
_import_error: BaseException | None = None  # the first failed import, raised again to every caller


def import_openvino():
    """``openvino`` without its model converter: ``import openvino`` also imports
    ``openvino.tools.ovc`` (``convert_model``, for PyTorch/TF models), ~0.1 s of a cold start
    spent on something the engine never calls (it reads ONNX through the frontend). Importing
    the package while that submodule's import fails skips it (``openvino/__init__`` guards it
    with ``except ImportError``); ``openvino.convert_model`` stays available to later code in
    the process, imported on first use. A package imported earlier is returned as it is."""
    global _import_error
    key = "openvino.tools.ovc"
    with _IMPORT:
        if _import_error is not None:  # a second attempt could fail differently (half-imported submodules)
            raise _import_error
        if "openvino" in sys.modules:
            return sys.modules["openvino"]
        blocked = key not in sys.modules
        if blocked:
            sys.modules[key] = None  # type: ignore[assignment]  # import -> ImportError
        try:
            import openvino as ov
        except BaseException as exc:
            _import_error = exc
            raise
        finally:
            if blocked and sys.modules.get(key, 0) is None:
                del sys.modules[key]
    if not hasattr(ov, "convert_model"):

        def __getattr__(name: str):  # PEP 562: only called for names the module lacks
            if name == "convert_model":
                from openvino.tools.ovc import convert_model

                ov.convert_model = convert_model
                return convert_model
            raise AttributeError(f"module 'openvino' has no attribute {name!r}")

        ov.__getattr__ = __getattr__
    return ov


_LOCALE = threading.Lock()
_building = 0  # OpenVINO builds of this process in flight (under _LOCALE)
_saved_locale: str | None = None


@contextmanager
def c_locale_while_building():
    """The process in the "C" locale while any of its OpenVINO builds runs; the caller's locale
    put back once, when the last one ends.

    OpenVINO reads and writes its compiled-model cache under a scoped ``setlocale(LC_ALL, "C")``
    (``ScopedLocale`` in its ``cache_manager.hpp``: query the process's locale name, set "C",
    restore the saved name). Two builds at once interleave those process-wide calls: the second
    saves the "C" the first has set and restores it after the first has restored the caller's,
    so the process was left in "C" (seen: 3 of 6 two-model loads; a later decode of UTF-8 bytes
    by locale failed), and a name queried while the other thread replaces it can be read after
    glibc has freed it. With "C" held across every build that overlaps, each of OpenVINO's
    save/set/restore is a "C" -> "C" no-op (glibc frees no name: the C names are static), and no
    build starts or ends while this function changes the locale (both happen under ``_LOCALE``
    with no build in flight). Only builds with a cache directory use it (OpenVINO's only
    ``setlocale`` is in its cache manager): other threads of the process see "C" while those run,
    as they already did for each cached import's duration (so the engine names its encodings)."""
    global _building, _saved_locale
    with _LOCALE:
        if _building == 0:
            _saved_locale = locale.setlocale(locale.LC_ALL)
            locale.setlocale(locale.LC_ALL, "C")
        _building += 1
    try:
        yield
    finally:
        with _LOCALE:
            _building -= 1
            if _building == 0:
                try:
                    locale.setlocale(locale.LC_ALL, _saved_locale)
                except locale.Error:  # never in place of the build's own outcome
                    pass


def inference_hint(precision: str) -> str:
    """OpenVINO's ``INFERENCE_PRECISION_HINT`` for a variant: bf16 for bf16, and for int8 (a static
    QDQ graph runs its non-quantized ops in bf16) where the CPU has it; f32 otherwise."""
    return "bf16" if precision == "bf16" or (precision == "int8" and cpu_has_bf16()) else "f32"


class OpenVinoBackend:
    name = "openvino"

    def __init__(self, graph: Path, spec: ModelSpec, options: RunOptions, precision: str = "fp32", graph_sha256: str | None = None, streams: int = 1, perf_count: bool = False, fused_attention: bool = True):
        # Models are built on a thread each (``runners_for``). The compilation (or the cached
        # blob's import: the longest part of a cached start, GIL released) runs alongside the
        # other models' (with a cache directory, under ``c_locale_while_building``); what touches
        # the Python binding's state around it is made under the first-call lock, for the reason
        # ``run`` gives.
        with _FIRST_CALL:
            core, model, config, cached = self._prepare(graph, options, precision, graph_sha256, streams, fused_attention)
            if perf_count:  # per-node times for the roofline's op profile (roofline.op_profile)
                config["PERF_COUNT"] = True
        with c_locale_while_building() if cached else nullcontext():
            self.compiled = self._compile(core, model, config, graph)
        with _FIRST_CALL:
            self._finish(spec)

    @staticmethod
    def _compile(core, model, config: dict, graph: Path):
        try:
            return core.compile_model(model, "CPU", config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with C++ context
            raise session_error(graph, "OpenVINO", exc) from None

    def _prepare(self, graph: Path, options: RunOptions, precision: str, graph_sha256: str | None, streams: int, fused_attention: bool = True):
        ov = import_openvino()
        # pybind11's numpy API is looked up by a function-local static that imports numpy (Python
        # code, during which the GIL can pass to another thread): the kind of initializer behind
        # the deadlock ``run`` describes. Filled here, under the lock, so that no compilation
        # outside it is the first to reach it, whatever its config conversion touches.
        ov.Tensor(np.zeros(1, dtype=np.float32))
        core = ov.Core()
        self.fused_attention = bool(fused_attention)
        # OpenVINO's blob key leaves SNIPPETS_MODE out (a blob compiled with fused attention was
        # imported for a plain-attention request): each kind of kernel gets its own directory.
        cache = compile_cache_dir(options, "openvino", ov.__version__, graph_sha256, precision + ("" if self.fused_attention else "-plainattn"))
        model = str(graph)
        if cache is not None:
            # compile_model(path) with CACHE_DIR: a cached blob skips both parsing and compiling
            core.set_property({"CACHE_DIR": str(cache)})
        else:
            try:
                model = core.read_model(str(graph))
            except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with C++ context
                raise session_error(graph, "OpenVINO", exc) from None
        config = {
            "INFERENCE_PRECISION_HINT": inference_hint(precision),
            "INFERENCE_NUM_THREADS": options.cpu_threads,
        }
        if not self.fused_attention:
            # OpenVINO fuses each attention block into one JIT-compiled kernel (a "snippet").
            # With dynamic shapes that kernel is compiled again for every new batch shape: 7-23 ms
            # each for MiniLM-L6 on an AMX Xeon against 3-5 ms for plain MatMul/Softmax nodes, and
            # a fresh process meets a new shape in nearly every batch; the fused kernel wins on
            # long sequences (256 tokens: 43 vs 69 ms a batch there). So `stackscore tune`
            # measures it per machine (``tuning.measure``).
            config["SNIPPETS_MODE"] = "DISABLE"
        # One stream: one request at a time, all cores on it. Several: the cores split into
        # ``streams`` executors, each running its own request (the runner keeps them busy).
        self.streams = max(1, int(streams))
        config.update({"PERFORMANCE_HINT": "LATENCY"} if self.streams == 1 else {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": self.streams})
        self.precision = precision
        return core, model, config, cache is not None

    def _finish(self, spec: ModelSpec) -> None:
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self.requests = [self.compiled.create_infer_request() for _ in range(self.streams)]
        self._called = False
        self.output = self.compiled.output(spec.output) if spec.output in {n for o in self.compiled.outputs for n in o.get_names()} else self.compiled.output(0)
        shape = self.output.get_partial_shape()
        last = shape[shape.rank.get_length() - 1] if shape.rank.is_static and shape.rank.get_length() else None
        self.output_width = last.get_length() if last is not None and last.is_static else None

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None, slot: int = 0) -> np.ndarray:
        """One batch on request ``slot`` (one per stream; a request serves one caller at a time).

        A backend's first call is made alone (``_FIRST_CALL``): OpenVINO's Python binding fills
        C++ function-local statics on first use (the tensor-to-numpy conversions) while taking the
        GIL, and two streams making their first calls at once deadlocked a whole `stackscore
        score` process (one thread in the static's initializer waiting for the GIL, the other
        holding the GIL waiting for the initializer). Waiting on this lock releases the GIL."""
        feeds = graph_feeds(input_ids, attention_mask, self.input_names, token_type_ids)
        if not self._called:
            with _FIRST_CALL:
                res = self.requests[slot].infer(feeds)
                out = np.asarray(res[self.output], dtype=np.float32)
                self._called = True
                return out
        res = self.requests[slot].infer(feeds)
        return np.asarray(res[self.output], dtype=np.float32)
