"""A roofline for `stackscore bench`: how close each model runs to this machine's measured peak.

Two numbers per model, both measured in the same run with the same runtime:

- **work**: FLOPs per batch from the graph itself. Every MatMul/Gemm whose right operand is a
  weight (an initializer, possibly behind a DequantizeLinear in a static-int8 graph) costs
  ``2 x K x N`` per token; self-attention adds ``4 x d x L`` per token per layer (scores and
  weighted sum over a padded length ``L``), with ``d`` the model width and one Softmax per layer.
  Summed over the engine's own batches (padded shapes: what the machine computes).
- **peak**: a chain of four 1024 x 1024 MatMuls per precision, run by the runtime the model runs
  on with the same threads (best of one request at a time and one per two cores): OpenVINO fp32,
  bf16 (hint) and int8 (QDQ graph); ONNX Runtime fp32 and dynamic int8. On a 2-core Zen 4 it
  reads ~190 GFLOP/s fp32, ~420 bf16 and ~800 int8 on OpenVINO, about 80-85 % of what the
  cores' vector units can issue at their clock.

``fraction = achieved / peak`` for the precision the model runs at. Below 60 % the bench says
which stage holds it: padding (computed tokens that are not real) first; then, for an OpenVINO
model, what its per-node counters measured (``op_profile``): GEMMs a static-int8 graph keeps in
float for accuracy, or the time outside the GEMMs (attention, norms, activations), with the
GEMMs' own speed against the peak; else (or where the GEMMs themselves are slow) the model's
shape: small matrices (a width under 512 leaves GEMMs too small to fill the cores), or
attention (long sequences, where the ``L^2`` part dominates and runs as small batched matmuls).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

GOAL = 0.60


@dataclass(frozen=True)
class GraphCost:
    per_token: float  # weight-GEMM FLOPs per token
    width: int  # model width d (the most common K of the weight GEMMs)
    layers: int  # Softmax nodes (one per attention layer)
    per_token_int8: float = 0.0  # the part whose weight comes through a DequantizeLinear (static int8 QDQ)
    per_row: float = 0.0  # weight GEMMs on one vector per row (pooler, classification head)

    def batch_flops(self, rows: int, length: int) -> float:
        """FLOPs of one padded batch of ``rows x length`` tokens."""
        tokens = rows * length
        return tokens * (self.per_token + 4.0 * self.width * length * self.layers) + rows * self.per_row


def graph_cost(path: Path) -> GraphCost:
    """Weight-GEMM FLOPs of a graph, per token and per row. A GEMM whose activation has fewer
    dimensions than the widest GEMM activations' (batch x d beside batch x sequence x d: the
    pooler and the head after the first token is taken) runs once per row: counted per token, it
    put MiniLM's FLOPs 1.4 % and a small RoBERTa's 6 % high, and their fraction of peak with them."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    try:  # activation ranks; the weights' data is not needed
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - no ranks: every GEMM counts per token, as before
        pass
    g = model.graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*g.value_info, *g.input, *g.output] if v.type.tensor_type.HasField("shape")}
    shapes = {i.name: list(i.dims) for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}

    def weight_shape(name: str) -> tuple[list[int], bool] | None:
        """The weight's shape, and whether it is quantized (behind a DequantizeLinear)."""
        if name in shapes:
            return shapes[name], False
        node = producers.get(name)  # QDQ: DequantizeLinear(initializer) or a Transpose of one
        if node is not None and node.op_type in ("DequantizeLinear", "Transpose", "Cast") and node.input:
            found = weight_shape(node.input[0])
            if found is None:
                return None
            shape, quantized = found
            return (shape[::-1] if node.op_type == "Transpose" else shape), quantized or node.op_type == "DequantizeLinear"
        return None

    gemms = []
    for n in g.node:
        if n.op_type not in ("MatMul", "Gemm", "MatMulInteger") or len(n.input) < 2:
            continue
        found = weight_shape(n.input[1])
        if found is None or len(found[0]) != 2:
            continue
        (k, m), quantized = found
        if n.op_type == "Gemm" and any(a.name == "transB" and a.i for a in n.attribute):
            k, m = m, k
        gemms.append((k, m, quantized or n.op_type == "MatMulInteger", ranks.get(n.input[0])))
    token_rank = max((r for *_, r in gemms if r is not None), default=None)
    per_token, per_token_int8, per_row, ks = 0.0, 0.0, 0.0, Counter()
    for k, m, int8, rank in gemms:
        if rank is not None and token_rank is not None and rank < token_rank:
            per_row += 2.0 * k * m
            continue
        per_token += 2.0 * k * m
        per_token_int8 += 2.0 * k * m if int8 else 0.0
        ks[k] += 1
    layers = sum(1 for n in g.node if n.op_type == "Softmax")
    width = ks.most_common(1)[0][0] if ks else 0
    return GraphCost(per_token, int(width), layers, per_token_int8, per_row)


PEAK_N, PEAK_DEPTH = 1024, 4
# A peak is the best of this many slices of its measuring time: one second averaged whole once read
# a bf16 peak 25 % low on this shared machine, and MiniLM's float GEMMs at "131 %" of it.
PEAK_SLICES = 5


def _matmul_graph(n: int = PEAK_N, depth: int = PEAK_DEPTH, int8: bool = False) -> bytes:
    """``Y = X @ W1 @ W2 ... @ Wdepth``, X (n x n) fed, each W an n x n weight; int8: QDQ around
    every operand. A chain keeps the data inside the runtime between GEMMs, so the call's fixed
    costs (feeding X, returning Y) weigh a quarter of one MatMul's: one 1024^3 MatMul per call
    read 349 GFLOP/s bf16 and 343 "int8" on a 2-core Zen 4, the chain of four 420 and 800."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "X"
    if int8:
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]
    for i in range(depth):
        w = f"W{i}"
        inits.append(numpy_helper.from_array((rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32), w))
        if int8:
            nodes += [
                helper.make_node("QuantizeLinear", [x, "s", "z"], [f"Xq{i}"]), helper.make_node("DequantizeLinear", [f"Xq{i}", "s", "z"], [f"Xd{i}"]),
                helper.make_node("QuantizeLinear", [w, "s", "z"], [f"Wq{i}"]), helper.make_node("DequantizeLinear", [f"Wq{i}", "s", "z"], [f"Wd{i}"]),
            ]
            x, w = f"Xd{i}", f"Wd{i}"
        nodes.append(helper.make_node("MatMul", [x, w], [f"Y{i}"]))
        x = f"Y{i}"
    graph = helper.make_graph(
        nodes, "peak", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def measure_peak(precision: str, threads: int, runtime: str = "openvino", n: int = PEAK_N, depth: int = PEAK_DEPTH, seconds: float = 1.0) -> float | None:
    """GFLOP/s of a chain of large MatMuls at ``precision`` on ``runtime`` with ``threads``
    threads, the best of one request at a time and one per core pair (streams), each the best
    of ``PEAK_SLICES`` slices of ``seconds``; None where this runtime/CPU cannot run it. ONNX
    Runtime's int8 is its dynamic quantization of the same chain (MatMulInteger), what an
    ``int8`` model on ONNX Runtime runs."""
    import tempfile

    x = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    best = None
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "peak.onnx"
        try:
            if runtime == "onnxruntime":
                import onnxruntime as ort

                path.write_bytes(_matmul_graph(n, depth))
                if precision == "int8":
                    from onnxruntime.quantization import QuantType, quantize_dynamic

                    from .quiet import muted

                    with muted():  # ORT's quantizer logs pre-processing advice
                        quantize_dynamic(str(path), str(Path(d) / "peak8.onnx"), weight_type=QuantType.QInt8)
                    path = Path(d) / "peak8.onnx"
                so = ort.SessionOptions()
                so.intra_op_num_threads = threads
                sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
                calls = [(lambda: sess.run(None, {"X": x}), 1)]  # (one call, requests it runs)
            else:
                from .engine.backends.ov import import_openvino

                ov = import_openvino()
                path.write_bytes(_matmul_graph(n, depth, int8=precision == "int8"))
                core = ov.Core()
                model = core.read_model(str(path))
                hint = "bf16" if precision in ("bf16", "int8") else "f32"
                calls = []
                for streams in sorted({1, max(1, threads // 2)}):
                    mode = {"PERFORMANCE_HINT": "LATENCY"} if streams == 1 else {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams}
                    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, **mode})
                    queue = ov.AsyncInferQueue(compiled, streams)

                    def run(queue=queue, streams=streams) -> None:
                        for _ in range(streams):
                            queue.start_async({0: x})
                        queue.wait_all()

                    calls.append((run, streams))
        except Exception:  # noqa: BLE001 - a precision this runtime/CPU lacks: no peak, said as such
            return None
        for run, per_call in calls:
            run()
            for _ in range(PEAK_SLICES):  # the best slice: a peak, not an average over a neighbour's burst
                done, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds / PEAK_SLICES:
                    run()
                    done += per_call
                gflops = 2.0 * n**3 * depth * done / (time.perf_counter() - t0) / 1e9
                best = gflops if best is None else max(best, gflops)
    return best


def model_roofline(scorer, texts: list[str], chunk_rows: int, threads: int) -> dict[str, Any]:
    """Per transformer model: FLOPs on the engine's own batches of ``texts``, its backends' time
    alone on them, achieved GFLOP/s, the measured peak at its precision, and the fraction."""
    from .engine.runner import TransformerRunner

    peaks: dict[tuple[str, str], float | None] = {}
    out: dict[str, Any] = {}
    work = scorer.prepared_batches(texts, chunk_rows)
    for name, runner in scorer.runners.items():
        if not isinstance(runner, TransformerRunner):
            continue
        spec = next(m for m in scorer.manifest.models if m.name == name)
        # FLOPs from the fp32 graph (a fused graph, fp16's, hides GEMMs inside Attention nodes);
        # which of them are int8, from the graph that runs
        from .manifest import verify_opened

        key = runner.choice.graph_key if runner.choice is not None else "fp32"
        verify_opened(scorer.artifact_dir, scorer.manifest, sorted({spec.graphs["fp32"], spec.graphs[key]}))
        cost = graph_cost(scorer.artifact_dir / spec.graphs["fp32"])
        if key != "fp32":
            cost = replace(cost, per_token_int8=graph_cost(scorer.artifact_dir / spec.graphs[key]).per_token_int8)
        batches = work[name]
        flops = sum(cost.batch_flops(*b.input_ids.shape) for b in batches)
        padded = sum(b.padded_tokens for b in batches)
        real = sum(b.real_tokens for b in batches)
        runner.run_batches(batches[:2], len(scorer.labels))  # warm
        t0 = time.perf_counter()
        runner.run_batches(batches, len(scorer.labels))  # every stream busy, as scoring runs it
        seconds = time.perf_counter() - t0
        precision = runner.choice.precision if runner.choice is not None else "fp32"
        runtime = runner.choice.backend if runner.choice is not None else "onnxruntime"
        def peak_of(p: str) -> float | None:
            if (runtime, p) not in peaks:
                peaks[(runtime, p)] = measure_peak(p, threads, runtime)
            return peaks[(runtime, p)]

        peak = peak_of(precision)
        achieved = flops / seconds / 1e9
        row = {
            "precision": precision, "runtime": runtime, "gflops_per_row": round(flops / len(texts) / 1e9, 4), "gflops_total": flops / 1e9, "seconds_alone": round(seconds, 3),
            "achieved_gflops": round(achieved, 1), "peak_gflops": None if peak is None else round(peak, 1),
            "fraction_of_peak": None if not peak else round(achieved / peak, 3),
            "padding_fraction": round(1 - real / max(padded, 1), 4), "width": cost.width, "layers": cost.layers,
            "mean_padded_length": round(padded / max(sum(b.input_ids.shape[0] for b in batches), 1), 1),
        }
        if runtime == "openvino":
            row["ops"] = op_profile(scorer, runner, batches, cost, peak_of)
        row["held_by"] = held_by(row)
        out[name] = row
    if out:  # the ensemble: all its GEMM work over all its model time; fraction time-weighted
        total_s = sum(r["seconds_alone"] for r in out.values()) or 1e-9
        fracs = [(r["seconds_alone"], r["fraction_of_peak"]) for r in out.values() if r["fraction_of_peak"] is not None]
        out["ensemble"] = {
            "precision": "/".join(sorted({r["precision"] for r in out.values()})),
            "gflops_per_row": round(sum(r["gflops_per_row"] for r in out.values()), 4),
            "achieved_gflops": round(sum(r["gflops_total"] for r in out.values()) / total_s, 1),
            "peak_gflops": None, "seconds_alone": round(total_s, 3),
            "fraction_of_peak": round(sum(s * f for s, f in fracs) / sum(s for s, _ in fracs), 3) if fracs else None,
            "held_by": None,
        }
    return out


def ceiling(roof: dict[str, Any], rows: int) -> float | None:
    """The most rows/s the ensemble's transformers could reach on this machine: each model's
    GEMM work on these ``rows`` (the engine's padded batches, every model on every row) at 100 %
    of this run's measured peak for the precision it runs at, the models one after another (they
    share the cores). Tokenization, TF-IDF and every op outside the GEMMs (softmax, norms) count
    as free, so it is a bound no engine reaches, not a forecast: a goal above it (a speed ratio
    against a loop, say) cannot be met at these precisions on this machine in this state. None
    where a peak is unknown or there is no transformer.

    A peak is measured at one moment; on a machine whose speed drifts (a shared VM: MiniLM's
    GEMMs once ran at 130 % of a peak read a minute earlier) the peak of a runtime and precision
    is raised to the fastest any model was seen to run at it (``effective_peaks``), so the bound
    is never below what was seen."""
    peaks = effective_peaks(roof)
    seconds = 0.0
    for m in _models(roof):
        peak = peaks.get((m.get("runtime"), m.get("precision")))
        if not peak:
            return None
        seconds += m["gflops_total"] / peak
    return rows / seconds if seconds > 0 and rows > 0 else None


def effective_peaks(roof: dict[str, Any]) -> dict[tuple[Any, Any], float]:
    """Per (runtime, precision): the measured peak, or the fastest work seen at that precision on
    that runtime if faster: a model's FLOPs over its time (at the precision it runs at), its int8
    GEMMs alone (int8) and its float GEMMs alone (at the float precision they ran at, bf16 or
    fp32, an int8 model's kept-in-float layers included). Only where a peak was measured."""
    seen: dict[tuple[Any, Any], list[float]] = {}
    for m in _models(roof):
        runtime, ops = m.get("runtime"), m.get("ops") or {}
        seen.setdefault((runtime, m.get("precision")), []).extend([m.get("peak_gflops") or 0.0, m.get("achieved_gflops") or 0.0])
        if ops.get("int8_gemm_gflops"):
            seen.setdefault((runtime, "int8"), []).append(ops["int8_gemm_gflops"])
        if ops.get("float_gemm_gflops") and ops.get("float_gemm_precision"):
            seen.setdefault((runtime, ops["float_gemm_precision"]), []).append(ops["float_gemm_gflops"])
    measured = {(m.get("runtime"), m.get("precision")) for m in _models(roof) if m.get("peak_gflops")}
    return {key: max(seen[key]) for key in measured}


def _models(roof: dict[str, Any]) -> list[dict[str, Any]]:
    """The roofline's per-model rows (not its "ensemble" summary)."""
    return [m for name, m in roof.items() if name != "ensemble"]


def op_profile(scorer, runner, batches: list, cost: GraphCost, peak_of: Callable[[str], float | None]) -> dict[str, Any] | None:
    """Where an OpenVINO model's time goes, measured: its graph compiled again with per-node
    counters (``PERF_COUNT``, one request at a time on one stream's share of the threads, as
    each of the model's streams runs; GEMM speeds count the streams side by side, an upper
    bound as it assumes no contention between them; the shares, not the seconds, are what it is
    for), the engine's batches run once to warm and once counted. Node time
    splits into int8 GEMMs, float GEMMs (layers a static-int8 graph keeps in float for accuracy,
    or every GEMM of a float graph) and everything else (attention, layer norms, activations,
    reorders), with each GEMM kind's achieved GFLOP/s against ``peak_of(precision)``."""
    from .engine.backends.ov import OpenVinoBackend, inference_hint
    from .manifest import resolve_inside, verify_opened

    choice = runner.choice
    if choice is None or choice.backend != "openvino" or not batches:
        return None
    spec = next(m for m in scorer.manifest.models if m.name == runner.name)
    graph = resolve_inside(scorer.artifact_dir, spec.graphs[choice.graph_key], f"models[{spec.name}].graphs.{choice.graph_key}")
    verify_opened(scorer.artifact_dir, scorer.manifest, [spec.graphs[choice.graph_key]])  # opened again, so checked again
    fused = getattr(runner.backends[0], "fused_attention", True)  # the kernels the model scores with
    # One request on one stream's share of the threads: OpenVINO's bf16 Softmax cost MiniLM 17 %
    # of its time on short texts on 2 threads and 7-9 % on 1 (its fixed cost per call grows with
    # threads), so a profile on every thread named a stage a two-stream run hardly pays.
    streams = max(1, int(getattr(runner.backends[0], "streams", 1)))
    threads = max(1, scorer.options.cpu_threads // streams)
    side_by_side = min(streams, scorer.options.cpu_threads)  # streams beyond the threads share them
    backend = OpenVinoBackend(graph, spec, replace(scorer.options, cache_dir=None, threads=threads), choice.precision, perf_count=True, fused_attention=fused)
    seconds: Counter = Counter()
    for counted in (False, True):
        for b in batches:
            backend.run(b.input_ids, b.attention_mask, b.token_type_ids)
            if counted:
                for p in backend.requests[0].profiling_info:
                    seconds[(p.node_type, p.exec_type)] += p.real_time.total_seconds()
    total = sum(seconds.values()) or 1e-12
    int8_s = sum(v for (t, e), v in seconds.items() if t.startswith("FullyConnected") and int8_kernel(e))
    float_s = sum(v for (t, _), v in seconds.items() if t.startswith("FullyConnected")) - int8_s
    others = Counter()
    for (t, _), v in seconds.items():
        if not t.startswith("FullyConnected"):
            others[t] += v
    tokens = sum(b.padded_tokens for b in batches)
    float_hint = "bf16" if inference_hint(choice.precision) == "bf16" else "fp32"

    def gemm(flops_per_token: float, s: float, peak: float | None) -> tuple[float | None, float | None]:
        if s <= 0 or flops_per_token <= 0:
            return None, None
        achieved = flops_per_token * tokens / (s / side_by_side) / 1e9  # the streams side by side, each on its share: an upper bound (no contention)
        return round(achieved, 1), (round(achieved / peak, 3) if peak else None)

    int8_gflops, int8_frac = gemm(cost.per_token_int8, int8_s, peak_of("int8") if int8_s > 0 else None)
    float_gflops, float_frac = gemm(cost.per_token - cost.per_token_int8, float_s, peak_of(float_hint) if float_s > 0 else None)
    return {
        "int8_gemm_share": round(int8_s / total, 3), "float_gemm_share": round(float_s / total, 3), "other_share": round(1 - (int8_s + float_s) / total, 3),
        "float_gemm_precision": float_hint,
        "int8_gemm_gflops": int8_gflops, "int8_gemm_fraction_of_peak": int8_frac,
        "float_gemm_gflops": float_gflops, "float_gemm_fraction_of_peak": float_frac,
        "other_top": [[t, round(v / total, 3)] for t, v in others.most_common(4)],
        "streams": streams, "threads_per_stream": threads,
    }


def int8_kernel(exec_type: str) -> bool:
    """Whether an OpenVINO CPU kernel name (``brgemm_avx512_i8``, ``..._I8`` for u8 inputs,
    ``..._amx_u8``) runs on 8-bit integers: one of its ``_``-separated parts names the type."""
    return any(part in ("i8", "u8", "int8", "uint8") for part in exec_type.lower().split("_"))


def held_by(row: dict[str, Any]) -> str | None:
    """Which stage keeps a model below the goal (None when it meets it or no peak was measured):
    from the op profile where there is one (OpenVINO), else from the model's shape."""
    if row["fraction_of_peak"] is None or row["fraction_of_peak"] >= GOAL:
        return None
    if row["padding_fraction"] > 0.10:
        return f"padding ({row['padding_fraction']:.0%} of computed tokens are pad)"
    ops = row.get("ops")
    if ops:
        main = "int8" if row["precision"] == "int8" else "float"
        main_frac = ops[f"{main}_gemm_fraction_of_peak"]
        reasons = []  # (share of the model's time, what)
        if main == "int8" and ops["float_gemm_share"] >= 0.15:
            slow = f", at {ops['float_gemm_fraction_of_peak']:.0%} of the {ops['float_gemm_precision']} peak" if ops["float_gemm_fraction_of_peak"] is not None else ""
            reasons.append((ops["float_gemm_share"], f"GEMMs kept in float for accuracy {ops['float_gemm_share']:.0%} of its time{slow}"))
        if ops["other_share"] >= 0.15:
            top = ", ".join(f"{t} {v:.0%}" for t, v in ops["other_top"][:3])
            reasons.append((ops["other_share"], f"ops outside the GEMMs {ops['other_share']:.0%} ({top}: attention, norms, activations)"))
        if reasons and (main_frac is None or main_frac >= GOAL):
            gemms = f"; its {main} GEMMs run at {main_frac:.0%} of the {'int8' if main == 'int8' else ops['float_gemm_precision']} peak" if main_frac is not None else ""
            return " and ".join(r for _, r in sorted(reasons, reverse=True)) + gemms
    if row["mean_padded_length"] > 4 * row["width"] / 3:
        return f"attention (mean length {row['mean_padded_length']:.0f} vs width {row['width']}: the L^2 part runs as small batched matmuls)"
    if row["width"] < 512:
        return f"small matrices (width {row['width']}: GEMMs of {row['width']} x {row['width']} do not fill the cores' vector units)"
    return "kernel overheads between GEMMs (layer norms, activations, memory traffic)"
