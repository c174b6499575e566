"""Static int8 that keeps the fewest ops in floating point: a per-op sensitivity search.

When the whole NNCF static-int8 graph fails its gate, export quantizes once, then ranks every
quantized op by how much the logits move back towards fp32 when that one op is reverted to
floating point (graph surgery on the QDQ graph, ``revert_ops``), on a *search* set of training
texts disjoint from both the calibration texts and the gate rows. It then gates the graph with
the k most sensitive ops reverted, k = 1, 2, 4, ... (``ladder_sizes``), and keeps the first that
passes, if it is also faster than the variant ``--precision auto`` would run instead
(``speed_rule``): int8 with much in floating point can be slower than bf16.

Reverting an op here means: its weight (and bias) back to the fp32 graph's values (undoing int8
weights, SmoothQuant's rescaling and bias correction) and its activation inputs taken from
before their Quantize/DequantizeLinear pair (and SmoothQuant's Mul); other consumers of the same
quantizer keep it. OpenVINO then runs that op in its floating-point inference precision (bf16 on
CPUs that have it, as for every non-quantized op of an int8 graph).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .variants import STATIC_INT8_MIN_SPEEDUP as MIN_SPEEDUP  # kept only if this much faster than what auto runs instead

PASS_THROUGH = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity"}
SEARCH_SHARE = 0.25  # of the training texts, for the search set (the rest calibrate) ...
MIN_SEARCH_ROWS = 32  # ... at least this many (fewer: no search, the ranking would be noise) ...
MAX_SEARCH_ROWS = 128  # ... at most this many: each op's revert runs them (MiniLM-L6: ~0.8 s per op on 2 cores)
MIN_CALIBRATION_ROWS = 64
MAX_CALIBRATION_ROWS = 1024  # NNCF's statistics saturate; export time grows linearly
MAX_FLOAT_SHARE = 0.5  # stop the ladder before more than this share of quantized ops is in float


class _Index:
    def __init__(self, model):
        self.model = model
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.consumers: dict[str, list] = defaultdict(list)
        for n in model.graph.node:
            for i in n.input:
                self.consumers[i].append(n)
        self.inits = {i.name: i for i in model.graph.initializer}
        self.inputs = {i.name for i in model.graph.input}

    def exists(self, tensor: str) -> bool:
        return tensor in self.producer or tensor in self.inits or tensor in self.inputs

    def dq_feeding(self, node, slot: int):
        """(consumer, slot, DequantizeLinear) feeding ``node``'s input ``slot``, through single-consumer
        shape ops (attention MatMuls are quantized before their Reshape/Transpose), or None."""
        cur, s = node, slot
        for _ in range(6):
            if s >= len(cur.input) or not cur.input[s]:
                return None
            p = self.producer.get(cur.input[s])
            if p is None:
                return None
            if p.op_type == "DequantizeLinear":
                return cur, s, p
            if p.op_type in PASS_THROUGH and len(self.consumers[p.output[0]]) == 1:
                cur, s = p, 0
                continue
            return None
        return None


def _load(model):
    import onnx

    return onnx.load(str(model)) if isinstance(model, (str, Path)) else model


def quantized_ops(qmodel, fmodel) -> list[str]:
    """Names of the ops NNCF quantized (a DequantizeLinear on an input), in graph order; each
    also exists in the fp32 graph (NNCF keeps the original node names)."""
    q, f = _load(qmodel), _load(fmodel)
    fnames = {n.name for n in f.graph.node}
    idx = _Index(q)
    out = []
    for n in q.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear", *PASS_THROUGH) or n.name not in fnames:
            continue
        if any(idx.dq_feeding(n, s) is not None for s in range(len(n.input))):
            out.append(n.name)
    return out


def _fp32_initializer(q, qidx: _Index, fidx: _Index, name: str) -> str:
    """The fp32 graph's initializer ``name`` in ``q`` (reused if identical, else copied under a new name)."""
    from onnx import numpy_helper as nh

    src = fidx.inits[name]
    have = qidx.inits.get(name)
    if have is not None and have.data_type == src.data_type and np.array_equal(nh.to_array(have), nh.to_array(src)):
        return name
    new = f"{name}__fp32"
    if new not in qidx.inits:
        t = q.graph.initializer.add()
        t.CopyFrom(src)
        t.name = new
        qidx.inits[new] = t
    return new


def _remove_dead(model) -> None:
    g = model.graph
    outputs = {o.name for o in g.output}
    while True:
        used = outputs | {i for n in g.node for i in n.input}
        dead = [n for n in g.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input} | outputs
    for t in [t for t in g.initializer if t.name not in used]:
        g.initializer.remove(t)


def revert_ops(qmodel, fmodel, names) -> Any:
    """A copy of the QDQ graph ``qmodel`` with the ops ``names`` back in floating point (see the module doc)."""
    import copy

    q = copy.deepcopy(_load(qmodel))
    f = _load(fmodel)
    fnodes = {n.name: n for n in f.graph.node}
    fidx = _Index(f)
    qidx = _Index(q)
    byname = {n.name: n for n in q.graph.node}
    for name in names:
        node, fnode = byname[name], fnodes[name]
        for s, ftensor in enumerate(fnode.input):
            if s >= len(node.input) or not ftensor:
                continue
            if ftensor in fidx.inits:  # weight or bias: the fp32 values
                node.input[s] = _fp32_initializer(q, qidx, fidx, ftensor)
            elif ftensor != node.input[s] and qidx.exists(ftensor):  # DQ (after SmoothQuant's Mul) directly on the input
                node.input[s] = ftensor
            else:
                hit = qidx.dq_feeding(node, s)
                if hit is None:
                    continue
                consumer, cs, dq = hit
                qn = qidx.producer.get(dq.input[0])
                if qn is None or qn.op_type != "QuantizeLinear":
                    continue
                src = qn.input[0]
                smooth = qidx.producer.get(src)
                if smooth is not None and smooth.op_type == "Mul" and "smooth_quant" in smooth.name:
                    src = smooth.input[0]
                consumer.input[cs] = src
        # a bias added right after the op (bias correction moves it): the fp32 values too
        for c in qidx.consumers[node.output[0]]:
            if c.op_type == "Add" and c.name in fnodes:
                for s, ftensor in enumerate(fnodes[c.name].input):
                    if ftensor in fidx.inits and s < len(c.input):
                        c.input[s] = _fp32_initializer(q, qidx, fidx, ftensor)
        qidx = _Index(q)  # rewired: recompute producers/consumers for the next op
    _remove_dead(q)
    return q


def _save_new(model, path: Path) -> None:
    """Save ``model`` to ``path`` as a new file: an earlier graph there may still be mapped by a
    compiled OpenVINO model, and truncating it in place crashes that process (SIGSEGV)."""
    import onnx

    path.unlink(missing_ok=True)
    onnx.save(model, str(path))


def split_texts(texts: list, search_share: float = SEARCH_SHARE, min_search: int = MIN_SEARCH_ROWS, max_search: int = MAX_SEARCH_ROWS, max_calibration: int = MAX_CALIBRATION_ROWS) -> tuple[list, list]:
    """(calibration, search): disjoint parts of the training texts (the search set from the end).
    No search set (``[]``) when there are too few texts to spare ``min_search`` and still
    calibrate on ``MIN_CALIBRATION_ROWS``."""
    texts = list(texts)
    n_search = min(max_search, max(min_search, int(round(len(texts) * search_share))))
    if len(texts) - n_search < MIN_CALIBRATION_ROWS:
        return texts[:max_calibration], []
    calib, search = texts[: len(texts) - n_search], texts[len(texts) - n_search :]
    return calib[:max_calibration], search


def logit_error(ref: np.ndarray, got: np.ndarray, task: str = "single_label") -> float:
    """A continuous distance of ``got`` from ``ref`` (label agreement on a few hundred rows is too
    coarse to rank ops): mean KL(ref || got) of the softmax (single-label); mean |prob error|
    (multi-label); mean |error| relative to ``ref``'s range (regression)."""
    from ..tasks import activate

    if task == "regression":
        return float(np.mean(np.abs(got - ref)) / max(float(np.ptp(ref)), 1e-6))
    pa, pb = activate(task, ref), activate(task, got)
    if task == "multi_label":
        return float(np.mean(np.abs(pa - pb)))
    eps = 1e-12
    return float(np.mean(np.sum(pa * (np.log(pa + eps) - np.log(pb + eps)), axis=1)))


def ladder_sizes(n_ops: int, max_share: float = MAX_FLOAT_SHARE) -> list[int]:
    """How many of the most sensitive ops each try keeps in float: 1, 2, 4, ... up to ``max_share`` of them."""
    cap = int(n_ops * max_share)
    sizes, k = [], 1
    while k <= cap:
        sizes.append(k)
        k *= 2
    if sizes and sizes[-1] < cap:
        sizes.append(cap)
    return sizes


def speed_rule(int8_rps: float | None, base_rps: float | None, base: str = "bf16", min_speedup: float = MIN_SPEEDUP) -> tuple[bool, str]:
    """Whether a static int8 graph is worth keeping against ``base`` (what auto runs otherwise)."""
    if not int8_rps or not base_rps:
        return True, ""  # nothing to compare with: the agreement gate alone decides
    ratio = int8_rps / base_rps
    if ratio >= min_speedup:
        return True, ""
    return False, f"{ratio:.2f}x {base} speed (< {min_speedup:.2f}x): {base} kept instead"


def rows_per_s(run: Callable[[], Any], rows: int, run_base: Callable[[], Any] | None = None, repeats: int = 3) -> tuple[float, float | None]:
    """Rows per second of ``run`` (one pass over ``rows`` rows, already warm) and of ``run_base``:
    timed in turns, the best of ``repeats`` each, so that load from elsewhere on the machine
    (it varies by 2x within a minute on a shared box) hits both alike."""
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, f in enumerate((run, run_base)):
            if f is not None:
                t0 = time.perf_counter()
                f()
                best[i] = min(best[i], time.perf_counter() - t0)
    return rows / best[0], (rows / best[1] if run_base is not None else None)


@dataclass
class Ranking:
    ops: list[str]  # most sensitive first
    scores: dict[str, float]  # error removed by reverting the op alone (higher: more sensitive)
    base_error: float  # whole int8 graph's error on the search set
    seconds: float


def rank_ops(qmodel, fmodel, score: Callable[[Any], float], ops: list[str] | None = None) -> Ranking:
    """Rank quantized ops by ``score(base error) - score(graph with the op reverted)``.

    ``score(model)`` runs a graph on the search set and returns its ``logit_error`` vs fp32.
    """
    t0 = time.perf_counter()
    q, f = _load(qmodel), _load(fmodel)
    ops = ops if ops is not None else quantized_ops(q, f)
    base = score(q)
    scores = {}
    for name in ops:
        scores[name] = base - score(revert_ops(q, f, [name]))
    order = sorted(ops, key=lambda n: -scores[n])
    return Ranking(order, scores, base, time.perf_counter() - t0)


def search_static_int8(
    fp32: Path, out: Path, g, ref: np.ndarray, training_texts: list | None, min_agreement: float, log,
    baseline: tuple[str, Callable[[], Any]] | None = None, min_speedup: float = MIN_SPEEDUP,
    max_share: float = MAX_FLOAT_SHARE, **nncf_options,
) -> dict[str, Any]:
    """Static int8 for ``fp32`` at ``out``, with the fewest ops in float that pass the gate
    (``StaticInt8Search.run``; its ``tighter`` goes on up the ladder when asked)."""
    return StaticInt8Search(fp32, out, g, ref, training_texts, min_agreement, log, baseline, min_speedup, max_share, **nncf_options).run()


def unconfirmed(gate: dict[str, Any]) -> bool:
    """A graph that passed the gate rows it was chosen on and failed the confirmation rows: the
    search stops there (trying the next graph would make those rows a second set to choose on,
    and the next graph's confirmed figure the luckiest of several again)."""
    return isinstance(gate.get("confirmation"), dict) and gate["confirmation"].get("passed") is False


class StaticInt8Search:
    """Static int8 for ``fp32`` at ``out``, with the fewest ops in float that pass the gate.

    ``run()``:
    1. quantize the whole graph once (NNCF, calibrated on the training texts less the search set)
       and gate it on the gate rows (``g``, against ``ref``); if it fails, gate it again with
       OpenVINO's attention as plain nodes, and go on with whichever agreed more
       (``plain_attention``);
    2. if it fails, rank the quantized ops on the search set (``rank_ops``) and gate the graph
       with the k most sensitive in float, k in ``ladder_sizes``, stopping at the first that passes;
    3. keep a passing graph only if it runs at least ``min_speedup`` x the rows/s of ``baseline``
       (name, backend factory: what ``--precision auto`` runs otherwise), both timed in turns on
       the gate rows (``rows_per_s``); the ladder also stops once a candidate is slower than that, since more ops
       in float only slow it further.

    Returns the gate (``passed``, ``label_agreement``, ``fp32_scope`` = ops kept in float, and
    ``candidates``: one summary per graph tried). The file at ``out`` is the last graph gated.

    ``tighter()`` goes on up the same ladder past the graph kept, for the ensemble gate: each
    model can pass its own gate while the fused answers do not (a stack can weigh one model's
    flips), and a graph with more ops in float is what the ensemble would rather run than none.
    The search keeps the quantized and fp32 graphs in memory for it until ``close()``.
    ``record``: fields every gate it returns carries (what export measured of this CPU).
    """

    def __init__(self, fp32: Path, out: Path, g, ref: np.ndarray, training_texts: list | None, min_agreement: float, log,
                 baseline: tuple[str, Callable[[], Any]] | None = None, min_speedup: float = MIN_SPEEDUP,
                 max_share: float = MAX_FLOAT_SHARE, record: dict[str, Any] | None = None, confirm=None, streams: int = 1, **nncf_options):
        self.fp32, self.out, self.g, self.ref, self.training_texts = fp32, out, g, ref, training_texts
        self.confirm = confirm  # onnx_graph.Confirmation: a ladder's graph passes there too (None: no such rows)
        self.streams = streams  # each candidate's OpenVINO requests in flight, as an untuned run uses (the baseline's too)
        self.min_agreement, self.log, self.baseline, self.min_speedup, self.max_share = min_agreement, log, baseline, min_speedup, max_share
        self.nncf_options, self.record = nncf_options, dict(record or {})
        self.q = self.f = None
        self.ops: list[str] = []
        self.ranking: Ranking | None = None
        self.search_texts: list = []
        self.common: dict[str, Any] = {}
        self.candidates: list[dict[str, Any]] = []
        self.base_backend: dict[str, Any] = {}
        self.kept = -1  # ops in float of the graph at ``out`` that passed (-1: none)
        self.fused_attention = True  # OpenVINO's fused attention kernels; False once plain nodes did better (``run``)
        self.t_start = self.t_quantized = 0.0

    def base_run(self) -> Callable[[], Any] | None:
        g, baseline = self.g, self.baseline
        if baseline is not None and "b" not in self.base_backend:
            try:
                self.base_backend["b"] = baseline[1]()
                g.logits(self.base_backend["b"])  # warm: every batch shape compiled
            except Exception:  # noqa: BLE001 - no baseline: the agreement gate alone decides
                self.base_backend["b"] = None
        b = self.base_backend.get("b")
        return (lambda: g.logits(b)) if b is not None else None

    def fast_enough(self, gate: dict[str, Any]) -> tuple[bool, str]:
        return speed_rule(gate.get("seq_per_s"), gate.get("baseline_seq_per_s"), self.baseline[0] if self.baseline else "", self.min_speedup)

    def try_graph(self, model, names: list[str]) -> dict[str, Any]:
        from .onnx_graph import _gate

        g, baseline = self.g, self.baseline
        built: dict[str, Any] = {}

        def make():
            if model is not None:
                _save_new(model, self.out)
            built["b"] = g.openvino(self.out, "int8", fused_attention=self.fused_attention, streams=self.streams)
            return built["b"]

        attention = "fused" if self.fused_attention else "plain"
        gate = _gate(make, self.ref, g, self.min_agreement, **self.common, fp32_scope=list(names), fp32_ops=len(names), attention=attention)
        gate["agreement_passed"] = gate["passed"]  # ``passed`` may still be withdrawn by the speed rule
        if "label_agreement" in gate and "b" in built:  # the gate's pass warmed it
            rps, base = rows_per_s(lambda: g.logits(built["b"]), len(g.texts), self.base_run())
            gate["seq_per_s"] = round(rps, 1)
            if base:
                gate["baseline"], gate["baseline_seq_per_s"] = baseline[0], round(base, 1)
                gate["speedup"] = round(gate["seq_per_s"] / base, 3)
                gate["min_speedup"] = self.min_speedup
        if "label_agreement" in gate:
            speed = f", {gate['seq_per_s']:,.0f} rows/s ({gate['speedup']:.2f}x {baseline[0]})" if "speedup" in gate else ""
            plain = "" if self.fused_attention else ", plain attention"
            self.log(f"    int8_static ({len(names)} of {len(self.ops)} ops in float{plain}): agreement {gate['label_agreement']:.2%}{speed}")
        if (names or not self.fused_attention) and "b" in built:  # chosen on the gate rows (a ladder's graph, the attention kind): confirmed apart from them
            self.confirmed(gate, built["b"])
            gate["agreement_passed"] = gate["passed"]
        summary = {k: gate.get(k) for k in ("fp32_ops", "attention", "label_agreement", "max_prob_error", "seq_per_s", "speedup", "agreement_passed")}
        if isinstance(gate.get("confirmation"), dict) and "label_agreement" in gate["confirmation"]:
            summary["confirmed_agreement"] = gate["confirmation"]["label_agreement"]
        self.candidates.append(summary)
        return gate

    def plain_attention(self, fused: dict[str, Any]) -> dict[str, Any]:
        """The whole graph failed its gate through OpenVINO's fused attention kernels: gate it with
        attention as plain nodes. On an AMX Xeon a static-int8 MiniLM agreed 98.0 % with fp32 on
        fresh rows through the fused kernels (91.7 % on batches padded to bucket lengths) and
        99.8 % through plain nodes, at about the same speed: the fused int8 kernel, not the
        quantization, was wrong. Where plain agrees more, the rest of the search (ranking, ladder,
        ``tighter``) runs plain too, and the gate records ``attention: "plain"``, which scoring
        then always runs (``engine.runner.gated_plain_attention``)."""
        self.fused_attention = False
        plain = self.try_graph(None, [])
        better = (plain.get("passed", False), plain.get("label_agreement", 0.0)) > (fused.get("passed", False), fused.get("label_agreement", 0.0))
        if "error" in plain or not better:  # a passing graph wins; else the higher agreement
            self.fused_attention = True
            fused["plain_attention_agreement"] = plain.get("label_agreement")
            return fused
        self.record["fused_attention_agreement"] = fused["label_agreement"]  # on every gate the search returns from here on
        plain["fused_attention_agreement"] = fused["label_agreement"]
        return plain

    def confirmed(self, gate: dict[str, Any], backend) -> None:
        """A ladder's graph passed the gate rows, where the ladder chose it: it must pass the
        confirmation rows too (``onnx_graph.Confirmation``), else it fails and the search stops
        there (``unconfirmed``)."""
        if not gate["passed"]:
            return
        if self.confirm is None:
            gate["confirmation"] = {"rows": 0, "why": "no confirmation rows: a fit state from before they were kept, or fewer test rows apart from the gate rows than gate_min_rows"}
            return
        found = self.confirm.gate(backend, self.min_agreement)
        gate["confirmation"] = found
        if not found["passed"]:
            gate["passed"] = False
            what = f"agreement {found['label_agreement']:.2%}" if "label_agreement" in found else found.get("error", "failed")
            gate["reason"] = f"passed the gate rows it was chosen on, not {found['rows']} confirmation rows ({what})"
        self.log(f"    int8_static ({len(gate.get('fp32_scope', []))} ops in float) on {found['rows']} confirmation rows: "
                 f"{found.get('label_agreement', 0.0):.2%} -> {'confirmed' if found['passed'] else 'not confirmed'}")

    def rank(self) -> None:
        """Rank the quantized ops on the search set (once); the ranking stays None on failure."""
        g = self.g
        tmp = self.out.with_name(self.out.stem + ".search.onnx")
        try:
            search_ref = g.runner(g.openvino(self.fp32, "fp32")).logits(self.search_texts, g.width)

            def score(model) -> float:
                _save_new(model, tmp)
                return logit_error(search_ref, g.runner(g.openvino(tmp, "int8", self.fused_attention)).logits(self.search_texts, g.width), g.task)

            self.ranking = rank_ops(self.q, self.f, score, self.ops)
        except Exception as exc:  # noqa: BLE001 - the whole-graph gate stands
            self.common["search_error"] = f"{type(exc).__name__}: {exc}"
        finally:
            tmp.unlink(missing_ok=True)
        if self.ranking is not None:
            r = self.ranking
            self.log(f"    int8_static search: {len(self.ops)} ops ranked on {len(self.search_texts)} search texts in {r.seconds:.0f}s "
                     f"(KL {r.base_error:.2e}; most sensitive: {', '.join(r.ops[:3])})")

    def ladder(self, after: int) -> dict[str, Any] | None:
        """Gate the graphs with more than ``after`` of the most sensitive ops in float, fewest
        first, up to the first that passes; None when there was no size left to try."""
        gate = None
        for k in (k for k in ladder_sizes(len(self.ops), self.max_share) if k > after):
            gate = self.try_graph(revert_ops(self.q, self.f, self.ranking.ops[:k]), self.ranking.ops[:k])
            if gate["passed"] or "error" in gate:
                break
            if unconfirmed(gate):  # the confirmation rows are one check, not a second set to choose on
                gate["reason"] += "; ladder stopped"
                break
            ok, why = self.fast_enough(gate)
            if not ok:
                gate["reason"] = f"{gate['fp32_ops']} ops in float already {why}; ladder stopped"
                break
        else:
            if gate is not None:
                gate["reason"] = f"no graph with up to {int(len(self.ops) * self.max_share)} of {len(self.ops)} ops in float passed the gate"
        return gate

    def finish(self, gate: dict[str, Any]) -> dict[str, Any]:
        """The speed rule on a passing graph, and the search's records."""
        if gate["passed"]:
            ok, why = self.fast_enough(gate)
            if not ok:
                gate["passed"] = False
                gate["reason"] = why
        elif "reason" not in gate and "error" not in gate:
            gate["reason"] = "gate failed" + ("" if self.search_texts else f" (no search: {self.common['search']})")
        gate["candidates"] = list(self.candidates)
        if self.ranking is not None:
            gate["ranking"] = [[n, float(f"{self.ranking.scores[n]:.3g}")] for n in self.ranking.ops[:16]]
            gate["search_seconds"] = round(self.ranking.seconds, 1)
        gate["quantize_seconds"] = round(self.t_quantized - self.t_start, 1)
        gate["seconds"] = round(time.perf_counter() - self.t_start, 1)
        gate.update(self.record)
        self.kept = len(gate.get("fp32_scope", [])) if gate["passed"] else -1
        return gate

    def run(self) -> dict[str, Any]:
        import onnx

        from .onnx_graph import calibration_batches, quantize_static

        if not self.training_texts:
            # Calibrating on the gate rows would gate the graph on the rows it was fitted to.
            return {"passed": False, "method": "nncf-static-qdq", "error": "no calibration texts apart from the gate rows (a fit state from before they were kept): "
                    "re-export with --calibration <training corpus>", **self.record}
        self.t_start = time.perf_counter()
        calib_texts, self.search_texts = split_texts(self.training_texts)
        self.common = {
            "method": "nncf-static-qdq", "calibration_rows": len(calib_texts), "calibration": "training sample", "search_rows": len(self.search_texts),
        }
        if not self.search_texts:
            self.common["search"] = f"none: {len(self.training_texts)} training texts are too few to spare {MIN_SEARCH_ROWS} for a search set"
        try:
            quantize_static(self.fp32, self.out, calibration_batches(self.g, calib_texts), **self.nncf_options)
            self.q, self.f = onnx.load(str(self.out)), onnx.load(str(self.fp32))
            self.ops = quantized_ops(self.q, self.f)
        except Exception as exc:  # noqa: BLE001 - a failed optional precision is reported, not fatal
            return {"error": f"{type(exc).__name__}: {exc}", **self.common, "fp32_scope": [], "passed": False, **self.record}
        self.common["quantized_ops"] = len(self.ops)
        self.t_quantized = time.perf_counter()

        gate = self.try_graph(None, [])
        if not gate["passed"] and "error" not in gate:
            gate = self.plain_attention(gate)
        if not gate["passed"] and "error" not in gate and self.search_texts and not unconfirmed(gate):
            ok, why = self.fast_enough(gate)
            if not ok:
                gate["reason"] = f"whole graph int8 already {why}; search skipped"
            else:
                self.rank()
                if self.ranking is not None:
                    gate = self.ladder(0) or gate
        gate.update({k: v for k, v in self.common.items() if k == "search_error"})
        return self.finish(gate)

    def tighter(self) -> dict[str, Any] | None:
        """The next graph up the ladder from the one kept (more of the most sensitive ops in
        float) that passes its gate and the speed rule, now at ``out``; None when there is none
        (nothing kept, no search set, the ladder's end, or too slow). Ranks first if the whole
        graph had passed without a search."""
        if self.kept < 0 or self.q is None or not self.search_texts:
            return None
        if self.ranking is None:
            self.rank()
            if self.ranking is None:
                return None
        gate = self.ladder(self.kept)
        if gate is None:
            return None
        gate = self.finish(gate)
        return gate if gate["passed"] else None

    def close(self) -> None:
        """Let the graphs held for ``tighter`` go."""
        self.q = self.f = None
        self.base_backend.clear()
