"""Inference backends behind one interface: ``run(input_ids, attention_mask) -> logits``.

- ``ort.OrtBackend``: ONNX Runtime, CPU execution provider by default; CUDA and TensorRT are
  provider configuration of the same class (GPU path, see ``gpu.py``).
- ``ov.OpenVinoBackend``: OpenVINO reading the same ONNX file; ``bf16`` runs the fp32 graph with
  OpenVINO's bf16 inference precision (AVX512-BF16 / AMX CPUs).

``choose`` turns a requested precision ("auto", "fp32", "int8", "bf16", "fp16") into a backend
and a graph from the manifest. "auto" takes the fastest precision whose export-time accuracy
gate passed on this hardware (CPU: static int8 on OpenVINO > bf16 on OpenVINO > dynamic int8 on
ONNX Runtime > fp32; GPU: fp16 > fp32); the artifact stays ONNX + JSON + tokenizer whatever runs it.
Every backend's ``run`` also takes ``token_type_ids`` (sentence pairs), fed when the graph has it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ...errors import ArtifactError, StackscoreError, StackscoreWarning
from ...export.variants import AUTO_ORDER, VARIANTS, graph_key
from ...manifest import ModelSpec
from ...options import PRECISIONS, TENSORRT, RunOptions, provider_names

__all__ = ["PRECISIONS", "Choice", "RunOptions", "choose", "cpu_has_bf16", "gate_holds_here", "graph_feeds", "have", "int8_kernels"]


@lru_cache(maxsize=1)
def cpuinfo() -> str:
    """``/proc/cpuinfo`` (empty where there is none), read once."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    flags = cpuinfo()
    return " avx512_bf16" in flags or " amx_bf16" in flags


@lru_cache(maxsize=1)
def int8_kernels() -> str:
    """How this CPU's int8 GEMMs add up: "exact" or "saturating".

    x86 CPUs without VNNI (AVX2, AVX-512 before VNNI) multiply u8 x s8 with VPMADDUBSW, whose
    int16 sums of adjacent pairs clip at 32,767; ONNX Runtime's and OpenVINO's int8 kernels both
    use it there (measured on an AVX2 EPYC: a MatMulInteger of 64 x 255 x 127 returned 32 x
    32,767, not 2,072,640, on both runtimes). VNNI (VPDPBUSD), AMX and Arm's dot products
    accumulate in int32. So an int8 graph's accuracy gate measured on one kind of CPU does not
    hold on the other: the export records which kind measured it (measuring, not reading flags:
    ``export.onnx_graph.measured_int8_kernels``). Scoring reads the flags; a CPU whose flags
    cannot be read counts as saturating (the safe side: only gates measured on saturating
    kernels are trusted there)."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "exact"
    flags = cpuinfo()
    return "exact" if any(f in flags for f in (" avx512_vnni", " avx_vnni", " amx_int8")) else "saturating"


def gate_holds_here(spec: ModelSpec, name: str) -> str | None:
    """Why ``name``'s export gate says nothing about this CPU (or, for bf16 on a CPU without it,
    why running it would be pointless), or None when it applies.

    A bf16 gate measured on a CPU without bf16 instructions ran OpenVINO in fp32 (it cannot have
    measured bf16's rounding); an int8 gate measured with exact int8 kernels (VNNI) does not
    cover a CPU whose kernels saturate (``int8_kernels``); static int8 runs its float ops in bf16
    on a bf16 CPU, so its gate needs ``cpu_bf16`` there too. Artifacts from before these records
    count as measured with exact kernels and bf16 (the project's export machines had both)."""
    gate = spec.parity.get("gates", {}).get(name) or {}
    if name == "bf16" and not cpu_has_bf16():
        return "this CPU has no bf16 instructions: OpenVINO would compute fp32 from the fp32 graph (no faster than fp32)"
    if name in ("bf16", "int8_static") and gate.get("cpu_bf16") is False and cpu_has_bf16():
        # OpenVINO runs bf16, and static int8's ops left in float, in bf16 where the CPU has it
        what = "bf16" if name == "bf16" else "static int8 (its float ops run in bf16 here)"
        return f"its {name} gate ran on a CPU without bf16 instructions (OpenVINO computed fp32 there), so {what} was never checked; export on a bf16 CPU to gate it"
    if VARIANTS[name].precision == "int8" and int8_kernels() == "saturating" and gate.get("int8_kernels") != "saturating":
        where = ("was measured on a CPU with VNNI (exact int8 sums)" if "int8_kernels" in gate
                 else "does not say which kind of CPU measured it (exported before stackscore recorded that)")
        return (f"its int8 gate {where}, and this CPU's int8 kernels saturate (x86 without VNNI: int16 pair sums clip), "
                "so its accuracy here is unchecked; export on a CPU like this one to gate it")
    return None


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def graph_feeds(input_ids: np.ndarray, attention_mask: np.ndarray, input_names: list[str], token_type_ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """What a transformer graph is fed: int64 ids and mask (windows hold int32 ids; no copy
    when already int64), ``token_type_ids`` if the graph has that input (the pair's segment ids,
    or zeros for single texts)."""
    feeds = {"input_ids": input_ids.astype(np.int64, copy=False), "attention_mask": attention_mask.astype(np.int64, copy=False)}
    if "token_type_ids" in input_names:
        feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"]) if token_type_ids is None else token_type_ids.astype(np.int64, copy=False)
    return {k: v for k, v in feeds.items() if k in input_names}


@lru_cache(maxsize=1)
def cpu_key() -> str:
    """This CPU, for cache keys: model name and feature flags (a blob compiled for AMX must not
    load where there is none)."""
    import hashlib
    import platform

    info = cpuinfo() or platform.processor() + platform.machine()
    lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags"))][:2]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


def compile_cache_dir(options: RunOptions, runtime: str, version: str, graph_sha256: str | None, precision: str):
    """Where a runtime may keep this graph's compiled form, or None (no cache asked, or no checksum
    to key it by). The key is the graph's sha256 (from the checksummed manifest), the runtime and
    its version, the CPU and the precision: a cached blob is only ever found by the exact graph,
    runtime and machine that wrote it; None also where the directory cannot be created."""
    if options.cache_dir is None or not graph_sha256:
        return None
    from pathlib import Path

    import re

    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", version)  # OpenVINO's version has slashes in it
    path = Path(options.cache_dir) / f"{runtime}-{safe}-cpu{cpu_key()}-{precision}-{graph_sha256[:32]}"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # a cache that cannot be written (full, read-only since) is no cache, not an error
        return None
    return path


def runtime_message(exc: BaseException) -> str:
    """A runtime's exception as one readable line (OpenVINO's start with C++ source locations)."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(("Exception from src/", "Check '"))]
    text = " ".join(lines) or type(exc).__name__
    return text if len(text) <= 400 else text[:400] + " ..."


def session_error(graph, runtime: str, exc: BaseException) -> ArtifactError:
    """A graph a runtime cannot open (corrupt, truncated, unsupported op, external data
    refused): one line naming the file, not the runtime's traceback."""
    return ArtifactError(f"{graph}: {runtime} cannot open this graph: {runtime_message(exc)}")


def run_error(graph, runtime: str, exc: BaseException, shape: tuple[int, ...]) -> ArtifactError:
    """A graph a runtime opened but cannot run on a batch (an op it lacks at run time, a shape its
    kernels refuse; with ``--backend`` forcing a runtime the export gates did not choose): one
    line naming the file and the batch, not a bug report with the runtime's C++ context."""
    return ArtifactError(f"{graph}: {runtime} cannot run this graph on a batch of {' x '.join(map(str, shape))} tokens: {runtime_message(exc)}")


def check_output_width(name: str, width: int | None, n_labels: int, graph) -> None:
    """The graph's last output dimension, when static, must equal the manifest's label count
    (cheap to know once a session exists; a mismatch would shift every probability column)."""
    if width is not None and width != n_labels:
        raise ArtifactError(
            f"{graph}: model '{name}' outputs {width} classes per row, the manifest lists {n_labels} labels"
        )


def gate_passed(spec: ModelSpec, precision: str) -> bool:
    gate = spec.parity.get("gates", {}).get(precision)
    return bool(gate and gate.get("passed"))


@dataclass(frozen=True)
class Choice:
    backend: str  # onnxruntime | openvino
    precision: str
    graph_key: str  # key into spec.graphs

    @property
    def variant(self) -> str:
        """The variant's name (``variants.VARIANTS``, the key of its export gate): its own graph's
        key, or for a runtime hint on the fp32 graph (bf16) the precision."""
        return self.graph_key if self.graph_key != "fp32" else self.precision


def auto_variant(spec: ModelSpec, options: RunOptions) -> str:
    """``--precision auto``: the first variant of ``AUTO_ORDER`` this model, runtime and CPU can run
    (TensorRT is not asked: ``choose`` hands it to ``tensorrt_choice``)."""
    gpu = options.on_gpu
    ov_ok = options.backend != "onnxruntime" and not gpu and have("openvino")

    def usable(name: str) -> bool:
        v = VARIANTS[name]
        if name == "fp32":
            return True
        if (v.file and name not in spec.graphs) or not gate_passed(spec, name):
            return False
        if not gpu and gate_holds_here(spec, name):
            return False
        if gpu:
            return True
        if v.runtime == "openvino":
            return ov_ok
        return options.backend != "openvino"

    return next(n for n in AUTO_ORDER["gpu" if gpu else "cpu"] if usable(n))


def tensorrt_choice(spec: ModelSpec, options: RunOptions) -> Choice:
    """TensorRT builds its engine from the plain fp32 graph (the fp16 graph's ORT-fused contrib
    ops, Attention and SkipLayerNorm, are not TensorRT ops and would split the graph between
    TensorRT and CUDA), in fp16 only when that is the precision: asked for, or ``auto``
    on a model whose fp16 gate passed at export (the evidence there is that this model's
    outputs survive fp16 rounding) with ``GpuOptions.trt_fp16`` on. An explicit fp32 is an fp32
    engine, and the description names what runs."""
    prec = options.precision
    if prec == "auto":
        prec = "fp16" if options.gpu.trt_fp16 and gate_passed(spec, "fp16") else "fp32"
    if prec not in ("fp16", "fp32"):
        raise StackscoreError(f"--device tensorrt builds fp32 or fp16 engines from the fp32 graph; --precision {prec} is not one of them")
    return Choice("onnxruntime", prec, "fp32")


def choose(spec: ModelSpec, options: RunOptions, warn: bool = True) -> Choice:
    """The runtime, precision and graph that serve ``spec`` under ``options`` (the variants table).
    ``warn``: an explicit precision whose gate does not hold on this CPU warns (once per model:
    callers that only look ahead pass False)."""
    prec, backend = options.precision, options.backend
    if TENSORRT in provider_names(options.providers):
        return tensorrt_choice(spec, options)
    ov_ok = backend != "onnxruntime" and not options.on_gpu and have("openvino")
    if prec == "auto":
        chosen = auto_variant(spec, options)
        if chosen == "int8":  # dynamic int8 (also where a static graph exists whose gate does not hold here)
            return Choice("onnxruntime", "int8", "int8")
        prec = VARIANTS[chosen].precision
    elif not options.on_gpu:
        name = "int8_static" if prec == "int8" and ov_ok and "int8_static" in spec.graphs else prec
        why = gate_holds_here(spec, name) if name in VARIANTS and gate_passed(spec, name) else None
        if why and name == "int8_static" and backend != "openvino" and "int8" in spec.graphs and gate_passed(spec, "int8") and gate_holds_here(spec, "int8") is None:
            return Choice("onnxruntime", "int8", "int8")  # the int8 graph whose gate holds here
        if why and warn:
            import warnings

            warnings.warn(f"model '{spec.name}' at --precision {prec}: {why} (--precision auto would not run it here)", StackscoreWarning, stacklevel=2)
    if prec == "bf16":
        if backend == "onnxruntime":
            raise StackscoreError("bf16 runs on the OpenVINO backend; use --backend openvino or auto")
        if not have("openvino"):
            raise StackscoreError("bf16 needs OpenVINO: pip install 'stackscore[openvino]'")
        return Choice("openvino", "bf16", graph_key(VARIANTS["bf16"]))
    if prec == "int8" and ov_ok and "int8_static" in spec.graphs:
        return Choice("openvino", "int8", "int8_static")  # static int8: faster than ORT's dynamic
    if prec not in spec.graphs:
        raise StackscoreError(f"model '{spec.name}' has no '{prec}' graph (has: {', '.join(spec.graphs)}); choose --precision")
    if backend == "openvino":
        if not have("openvino"):
            raise StackscoreError("the OpenVINO backend needs: pip install 'stackscore[openvino]'")
        return Choice("openvino", prec, prec)
    return Choice("onnxruntime", prec, prec)
