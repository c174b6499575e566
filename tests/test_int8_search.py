"""Static int8's per-op sensitivity search (export/int8_search.py) on a tiny BERT graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stackscore.engine import backends
from stackscore.export import int8_search as S

needs_nncf = pytest.mark.skipif(not (backends.have("nncf") and backends.have("openvino")), reason="needs the openvino extra (nncf)")


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """(fp32 graph, NNCF static-int8 QDQ graph) of a random two-layer BERT."""
    if not (backends.have("nncf") and backends.have("openvino")):
        pytest.skip("needs the openvino extra (nncf)")
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from stackscore.export.onnx_graph import quantize_static, torch_to_onnx

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64, num_labels=2)
    cfg._attn_implementation = "eager"
    model = BertForSequenceClassification(cfg).eval()
    d = tmp_path_factory.mktemp("int8s")
    fp32, q = d / "fp32.onnx", d / "q.onnx"
    torch_to_onnx(model, fp32, pad_id=0)
    quantize_static(fp32, q, [feeds(i) for i in range(16)])
    return fp32, q


def feeds(seed: int, rows: int = 8, width: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 120, size=(rows, width)).astype(np.int64)
    mask = np.ones_like(ids)
    for r in range(rows):
        n = int(rng.integers(4, width + 1))
        ids[r, n:], mask[r, n:] = 0, 0
    return {"input_ids": ids, "attention_mask": mask}


def run_ov(model, path: Path, precision: str = "fp32") -> np.ndarray:
    """Logits of ``model`` (a path or ModelProto, saved to ``path``) on fixed feeds, through the engine's OpenVINO backend."""
    import onnx

    from stackscore.engine.backends.ov import OpenVinoBackend
    from stackscore.manifest import ModelSpec
    from stackscore.options import RunOptions

    if not isinstance(model, Path):
        onnx.save(model, str(path))
        model = path
    spec = ModelSpec(name="t", kind="transformer", graphs={}, tokenizer=None, max_length=16, pad_id=0, inputs=["input_ids", "attention_mask"])
    b = OpenVinoBackend(model, spec, RunOptions(), precision)
    return np.concatenate([b.run(f["input_ids"], f["attention_mask"]) for f in (feeds(100 + i) for i in range(4))])


@needs_nncf
def test_reverting_every_quantized_op_gives_the_fp32_graph_back(graphs, tmp_path):
    import onnx

    fp32, q = graphs
    ops = S.quantized_ops(q, fp32)
    names = {n.name: n.op_type for n in onnx.load(str(fp32)).graph.node}
    assert {names[o] for o in ops} >= {"MatMul", "Gemm"} and len(ops) >= 12, ops
    back = S.revert_ops(q, fp32, ops)
    onnx.checker.check_model(back)
    assert not {n.op_type for n in back.graph.node} & {"QuantizeLinear", "DequantizeLinear"}
    ref = run_ov(fp32, tmp_path / "unused.onnx")
    np.testing.assert_allclose(run_ov(back, tmp_path / "back.onnx"), ref, atol=1e-4)
    assert np.abs(run_ov(q, tmp_path / "q.onnx") - ref).max() > 1e-4  # the quantized graph itself does differ


@needs_nncf
def test_reverting_one_op_touches_that_op_only(graphs, tmp_path):
    import onnx
    from onnx import numpy_helper as nh

    fp32, q = graphs
    f = onnx.load(str(fp32))
    finits = {t.name: nh.to_array(t) for t in f.graph.initializer}
    fnodes = {n.name: n for n in f.graph.node}
    ops = S.quantized_ops(q, fp32)
    for op in ops:  # linear layers, attention MatMuls (quantized before their Reshape/Transpose), embeddings
        one = S.revert_ops(q, fp32, [op])
        assert S.quantized_ops(one, fp32) == [o for o in ops if o != op], op
        node = next(n for n in one.graph.node if n.name == op)
        inits = {t.name: nh.to_array(t) for t in one.graph.initializer}
        for i, ft in enumerate(fnodes[op].input):
            if ft in finits:  # weights (and a Gemm's bias) are the fp32 graph's, not int8 or SmoothQuant-scaled
                np.testing.assert_array_equal(inits[node.input[i]], finits[ft])
    ffn = next(o for o in ops if "output/dense" in o and "attention" not in o)
    one = S.revert_ops(q, fp32, [ffn])
    onnx.checker.check_model(one)
    out = run_ov(one, tmp_path / "one.onnx", "int8")
    assert out.shape == (32, 2) and np.isfinite(out).all()


def test_ranking_orders_ops_by_the_error_their_revert_removes(graphs):
    fp32, q = graphs
    ops = S.quantized_ops(q, fp32)
    weight = {o: float(i % 5) for i, o in enumerate(ops)}  # error each op adds while quantized

    def score(model) -> float:
        return sum(weight[o] for o in S.quantized_ops(model, fp32))

    r = S.rank_ops(q, fp32, score, ops)
    assert r.base_error == sum(weight.values())
    assert [r.scores[o] for o in r.ops] == sorted(weight.values(), reverse=True)
    assert all(r.scores[o] == weight[o] for o in ops)


def test_ladder_sizes_and_the_speed_rule():
    assert S.ladder_sizes(38) == [1, 2, 4, 8, 16, 19]
    assert S.ladder_sizes(16) == [1, 2, 4, 8] and S.ladder_sizes(2) == [1] and S.ladder_sizes(1) == []
    assert S.ladder_sizes(10, max_share=1.0) == [1, 2, 4, 8, 10]
    assert S.speed_rule(110.0, 100.0) == (True, "")
    ok, why = S.speed_rule(104.0, 100.0, "bf16")
    assert not ok and "1.04x bf16" in why and "bf16 kept" in why
    assert S.speed_rule(50.0, None) == (True, "")  # no baseline measured: agreement alone decides


def test_search_texts_are_disjoint_from_calibration():
    texts = [f"t{i}" for i in range(256)]
    calib, search = S.split_texts(texts)
    assert (len(calib), len(search)) == (192, 64) and not set(calib) & set(search)
    assert S.split_texts(texts[:80]) == (texts[:80], [])  # too few to spare a search set
    calib, search = S.split_texts([f"t{i}" for i in range(3000)])
    assert len(calib) == S.MAX_CALIBRATION_ROWS and len(search) == S.MAX_SEARCH_ROWS and not set(calib) & set(search)
    assert S.logit_error(np.zeros((3, 2)), np.zeros((3, 2))) == 0.0
    assert S.logit_error(np.array([[2.0, 0.0]]), np.array([[0.0, 2.0]])) > S.logit_error(np.array([[2.0, 0.0]]), np.array([[1.0, 0.0]])) > 0


class FakeGate:
    """Stands in for GateInputs: a graph's 'logits' flip one gate row per unit of error its
    still-quantized ops carry (``weight``); its speed falls with each op in float."""

    def __init__(self, fp32, weight, speed_per_float_op, base_speed=100.0, fused_flips=0):
        self.fp32, self.weight, self.step, self.base_speed = fp32, weight, speed_per_float_op, base_speed
        self.fused_flips = fused_flips  # rows OpenVINO's fused attention kernels get wrong besides (plain nodes do not)
        self.texts, self.width, self.task = [f"g{i}" for i in range(200)], 2, "single_label"
        self.ref = np.tile([[2.0, 0.0]], (200, 1))
        self.all_ops = None

    def openvino(self, graph, precision, fused_attention=True, streams=1):
        if precision in ("bf16", "fp32"):
            return ("base", self.base_speed)
        left = S.quantized_ops(Path(graph), self.fp32)
        flips = sum(self.weight.get(o, 0) for o in left) + (self.fused_flips if fused_attention else 0)
        return (flips, 120.0 - self.step * (len(self.all_ops) - len(left)))

    def logits(self, backend):
        out = self.ref.copy()
        if backend[0] != "base":
            out[: int(backend[0]), 1] = 3.0  # that many rows flip
        return out

    def runner(self, backend, **options):
        if options:  # the gate's bucketed pass (``_gate``): the gate rows' own logits
            gate = self

            class Same:
                def logits(self, texts, width):
                    return gate.logits(backend)

            return Same()

        class R:
            def logits(self, texts, width):
                out = np.tile([[2.0, 0.0]], (len(texts), 1))
                if backend[0] != "base":
                    out[:, 1] = backend[0] / 10  # a continuous error that grows with the flips
                return out

        return R()


@pytest.fixture
def fake_search(graphs, monkeypatch, tmp_path):
    import shutil

    from stackscore.export import onnx_graph

    fp32, q = graphs
    monkeypatch.setattr(onnx_graph, "quantize_static", lambda src, out, calib, **kw: shutil.copyfile(q, out))
    monkeypatch.setattr(onnx_graph, "calibration_batches", lambda g, texts: [])
    last = {}

    def timed(run, rows, run_base=None, repeats=3):
        run()
        speed = last["speed"]
        if run_base is None:
            return speed, None
        run_base()
        return speed, last["speed"]

    monkeypatch.setattr(S, "rows_per_s", timed)

    def search(weight, step, base_speed=100.0, keep_open=False, confirm=None, fused_flips=0):
        g = FakeGate(fp32, weight, step, base_speed, fused_flips)
        g.all_ops = S.quantized_ops(q, fp32)
        real_logits = g.logits

        def logits(b):
            last["speed"] = b[1]
            return real_logits(b)

        g.logits = logits
        lines = []
        found = S.StaticInt8Search(fp32, tmp_path / "out.onnx", g, g.ref, [f"t{i}" for i in range(256)], 0.995, lines.append, ("bf16", lambda: g.openvino(fp32, "bf16")),
                                   confirm=confirm(fp32, tmp_path / "out.onnx", g.all_ops) if confirm else None)
        gate = found.run()
        return (gate, lines, g.all_ops, found) if keep_open else (gate, lines, g.all_ops)

    return search


def test_ladder_stops_at_the_first_graph_that_passes(fake_search):
    def weights(all_ops):
        # three sensitive ops: 4 + 3 + 2 flipped rows of 200; the rest flip none
        return {all_ops[-1]: 4, all_ops[3]: 3, all_ops[5]: 2}

    gate, lines, ops = fake_search({}, 1.0)  # nothing sensitive: the whole graph passes
    assert gate["passed"] and gate["fp32_scope"] == [] and len(gate["candidates"]) == 1 and "ranking" not in gate
    gate, lines, ops = fake_search(weights(ops), 1.0)
    # whole graph: 9 flips (95.5 %, with plain attention too); 1 op in float: 5 flips; 2 ops: 2 flips (99.0 %); 4 ops: 0 flips -> passes
    assert [c["fp32_ops"] for c in gate["candidates"]] == [0, 0, 1, 2, 4]
    assert [c["attention"] for c in gate["candidates"]] == ["fused", "plain", "fused", "fused", "fused"] and gate["attention"] == "fused"
    assert gate["passed"] and gate["fp32_ops"] == 4 and set(gate["fp32_scope"]) >= {ops[-1], ops[3], ops[5]}
    assert gate["ranking"][0][0] == ops[-1] and gate["search_rows"] == 64 and gate["calibration_rows"] == 192
    assert gate["speedup"] == pytest.approx(1.16) and gate["baseline"] == "bf16"
    assert len(lines) == 6 and "4 of" in lines[-1]  # one line per candidate + the search's


def test_a_passing_graph_slower_than_bf16_is_dropped_and_the_ladder_stops_when_slow(fake_search):
    _, _, ops = fake_search({}, 1.0)
    heavy = {ops[-1]: 4, ops[3]: 3, ops[5]: 2}
    gate, _, _ = fake_search(heavy, 5.0)  # 120 - 5 x 4 = 100 rows/s with 4 ops in float: 1.00x bf16
    assert not gate["passed"] and gate["label_agreement"] >= 0.995 and "1.00x bf16" in gate["reason"]
    gate, _, _ = fake_search(heavy, 9.0)  # 2 ops in float: 102 rows/s, failing too: no point in more float
    assert [c["fp32_ops"] for c in gate["candidates"]] == [0, 0, 1, 2] and "ladder stopped" in gate["reason"]
    gate, _, _ = fake_search(heavy, 1.0, base_speed=118.0)  # whole graph int8 barely faster than bf16
    assert len(gate["candidates"]) == 2 and "search skipped" in gate["reason"] and not gate["passed"]


def test_no_training_texts_means_no_static_int8_rather_than_calibrating_on_the_gate_rows(tmp_path):
    """A fit state without a calibration sample: calibrating on the gate rows would gate the graph
    on the rows it was fitted to, so static int8 is not built (export --calibration mends it)."""
    gate = S.search_static_int8(tmp_path / "fp32.onnx", tmp_path / "out.onnx", None, None, [], 0.995, print, None)
    assert gate["passed"] is False and "--calibration" in gate["error"] and not (tmp_path / "out.onnx").exists()


def test_tighter_goes_on_up_the_ladder_for_the_ensemble_gate(fake_search, tmp_path):
    """The ensemble gate can refuse a graph that passed its own gate (a stack weighs one model's
    flips): ``tighter`` then puts the next graph of the same ladder, with more of the most
    sensitive ops in float, at the same path, gated and timed as the ladder's, and says None
    once the ladder has no faster-than-bf16 graph left."""
    _, _, ops = fake_search({}, 1.0)
    weights = {ops[-1]: 4, ops[3]: 3, ops[5]: 2}
    gate, _, _, found = fake_search(weights, 1.0, keep_open=True)
    assert gate["passed"] and gate["fp32_ops"] == 4
    nxt = found.tighter()  # 8 ops in float: 120 - 8 = 112 rows/s, 1.12x bf16, still passes
    assert nxt is not None and nxt["passed"] and nxt["fp32_ops"] == 8 and nxt["fp32_scope"][:4] == gate["fp32_scope"]
    assert len(S.quantized_ops(tmp_path / "out.onnx", found.fp32)) == len(ops) - 8  # the graph at out is that one
    assert [c["fp32_ops"] for c in nxt["candidates"]] == [0, 0, 1, 2, 4, 8] and nxt["ranking"] == gate["ranking"]
    while (more := found.tighter()) is not None:  # up to the ladder's cap, or the speed rule
        assert more["fp32_ops"] > nxt["fp32_ops"] and more["speedup"] >= S.MIN_SPEEDUP
        nxt = more
    assert found.tighter() is None  # asking again gives none
    found.close()
    assert found.q is None and found.tighter() is None

    # a whole graph that passed without a search is ranked when tightened first
    gate, _, _, found = fake_search({}, 1.0, keep_open=True)
    assert gate["fp32_ops"] == 0 and "ranking" not in gate
    nxt = found.tighter()
    assert nxt is not None and nxt["fp32_ops"] == 1 and "ranking" in nxt


class FakeConfirmation:
    """Stands in for ``onnx_graph.Confirmation``: the graph at ``out`` flips 2 of 200 confirmation
    rows (99.0 %) until it keeps ``needs`` ops in float."""

    def __init__(self, needs):
        self.needs, self.rows, self.asked = needs, 200, []

    def __call__(self, fp32, out, all_ops):
        self.fp32, self.out, self.all_ops = fp32, out, all_ops
        return self

    def gate(self, backend, min_agreement):
        in_float = len(self.all_ops) - len(S.quantized_ops(self.out, self.fp32))
        self.asked.append(in_float)
        agreement = 1.0 if in_float >= self.needs else 0.99
        return {"label_agreement": agreement, "passed": agreement >= min_agreement, "rows": self.rows}


def test_a_graph_the_ladder_chose_on_the_gate_rows_must_pass_the_confirmation_rows(fake_search):
    """The ladder stops at the first graph that passes the gate rows: the luckiest of several
    tries on the same rows. It must pass rows apart from them too, else the ladder goes on; the
    whole graph (no choice made) and failing candidates are not confirmed."""
    _, _, ops = fake_search({}, 1.0)
    weights = {ops[-1]: 4, ops[3]: 3, ops[5]: 2}
    confirm = FakeConfirmation(needs=4)
    gate, lines, _ = fake_search(weights, 1.0, confirm=confirm)
    assert confirm.asked == [4]  # only candidates that passed the gate rows
    assert gate["passed"] and gate["fp32_ops"] == 4 and gate["confirmation"] == {"label_agreement": 1.0, "passed": True, "rows": 200}
    # failing the confirmation stops the ladder: the rows are one check, not a second set to choose on
    confirm = FakeConfirmation(needs=8)
    gate, lines, _ = fake_search(weights, 1.0, confirm=confirm)
    assert confirm.asked == [4] and not gate["passed"] and gate["fp32_ops"] == 4 and "ladder stopped" in gate["reason"]
    assert "confirmation rows" in gate["reason"] and [c["fp32_ops"] for c in gate["candidates"]] == [0, 0, 1, 2, 4]
    assert [c.get("confirmed_agreement") for c in gate["candidates"]] == [None, None, None, None, 0.99]
    assert gate["candidates"][4]["agreement_passed"] is False and any("not confirmed" in line for line in lines)
    # no confirmation rows: the gate rows decide, and the record says so
    gate, _, _ = fake_search(weights, 1.0)
    assert gate["passed"] and gate["fp32_ops"] == 4 and gate["confirmation"]["rows"] == 0



def test_a_whole_graph_wrong_only_through_fused_attention_runs_plain_attention(fake_search):
    """On an AMX Xeon a static-int8 MiniLM agreed 98.0 % with fp32 through OpenVINO's fused
    attention kernels and 99.8 % through plain nodes: the kernel, not the quantization. The
    whole graph that fails fused is gated again plain; where plain agrees more, the gate records
    ``attention: "plain"`` (confirmed apart from the gate rows: a choice was made on them) and
    the search, if still needed, ranks and climbs the ladder plain."""
    _, _, ops = fake_search({}, 1.0)
    confirm = FakeConfirmation(needs=0)
    gate, lines, _ = fake_search({}, 1.0, fused_flips=6, confirm=confirm)  # 97 % fused, 100 % plain
    assert gate["passed"] and gate["attention"] == "plain" and gate["fp32_ops"] == 0 and gate["fused_attention_agreement"] == 0.97
    assert [(c["fp32_ops"], c["attention"]) for c in gate["candidates"]] == [(0, "fused"), (0, "plain")] and confirm.asked == [0]
    assert "plain attention" in lines[1] and "ranking" not in gate
    # plain still failing: the ladder goes on plain (the fused kernels' flips are gone from every graph)
    gate, _, _ = fake_search({ops[-1]: 4, ops[3]: 3, ops[5]: 2}, 1.0, fused_flips=6)
    assert gate["passed"] and gate["attention"] == "plain" and gate["fp32_ops"] == 4
    assert [c["attention"] for c in gate["candidates"]] == ["fused", "plain", "plain", "plain", "plain"]
    # plain no better: the search stays fused
    gate, _, _ = fake_search({ops[-1]: 4}, 1.0)
    c = gate["candidates"]
    assert gate["passed"] and gate["attention"] == "fused" and gate["fp32_ops"] == 1
    assert [x["attention"] for x in c] == ["fused", "plain", "fused"] and c[0]["label_agreement"] == c[1]["label_agreement"] == 0.98


def test_a_passing_plain_attention_graph_wins_over_a_failing_fused_one_of_equal_agreement(tmp_path):
    """Fused can fail on its probabilities with every label agreeing (a multi-label model's 0.08
    error): plain attention at the same agreement that passes is kept, and every gate the search
    returns from then on says what the fused kernels agreed."""
    found = S.StaticInt8Search(tmp_path / "f.onnx", tmp_path / "q.onnx", None, None, ["t"], 0.995, print)
    fused = {"passed": False, "label_agreement": 1.0, "max_prob_error": 0.08}
    found.try_graph = lambda model, names: {"passed": True, "label_agreement": 1.0, "max_prob_error": 0.01}
    got = found.plain_attention(fused)
    assert got["passed"] and found.fused_attention is False and found.record["fused_attention_agreement"] == 1.0
    found = S.StaticInt8Search(tmp_path / "f.onnx", tmp_path / "q.onnx", None, None, ["t"], 0.995, print)
    found.try_graph = lambda model, names: {"passed": False, "label_agreement": 0.99}
    got = found.plain_attention({"passed": False, "label_agreement": 0.99})
    assert got["label_agreement"] == 0.99 and found.fused_attention is True and "fused_attention_agreement" not in found.record

