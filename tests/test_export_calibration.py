"""`stackscore export --calibration FILE`: static int8 calibrated on the user's training texts,
never on the gate rows (the gate measures on rows never used to calibrate)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from stackscore.errors import StackscoreError
from stackscore.export import export_artifact
from stackscore.fit_state import FitState
from stackscore.manifest import load_manifest


@pytest.fixture
def workdir(fitted, tmp_path):
    """The fitted directory with its own artifact slot (models and the rest shared, read-only)."""
    d = tmp_path / "fit"
    d.mkdir()
    for p in fitted.iterdir():
        if p.name != "artifact":
            (d / p.name).symlink_to(p)
    (d / "fit_state.json").unlink()
    shutil.copy(fitted / "fit_state.json", d / "fit_state.json")
    return d


def test_calibration_texts_that_are_gate_rows_are_refused(workdir):
    state = FitState.load(workdir)
    held = [state.parity_texts[0]] + (state.confirmation_texts or [])[:1]
    assert len(held) == 2  # the fixture's test split has rows past the gate rows
    for row in held:
        with pytest.raises(StackscoreError, match="must not include the gate or confirmation rows"):
            export_artifact(workdir, workdir / "artifact", log=lambda *_: None, calibration_texts=["a fresh text", str(row)])
    assert not (workdir / "artifact").exists()  # nothing half-written


def test_export_calibrates_on_the_given_file_without_its_gate_rows(workdir, tmp_path):
    pytest.importorskip("nncf")
    state = FitState.load(workdir)
    gate = [str(t) for t in state.parity_texts[:20]]
    fresh = [f"calibration text number {i} about a film that was good or bad" for i in range(150)]
    src = tmp_path / "train.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in gate + fresh))
    res = subprocess.run([sys.executable, "-m", "stackscore", "export", str(workdir), "--calibration", str(src), "--calibration-rows", "200"],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    assert "calibrating static int8 on 150 texts" in res.stderr  # the 20 gate rows were left out
    m = load_manifest(workdir / "artifact")
    gates = [spec.parity["gates"]["int8_static"] for spec in m.models if spec.kind == "transformer"]
    assert gates and all("error" not in g for g in gates)
    # 150 training texts: the int8 search keeps some for ranking ops, the rest calibrate
    assert all(g["calibration_rows"] + g.get("search_rows", 0) == 150 for g in gates), gates


def test_the_ensemble_gate_drops_faster_variants_until_the_fused_answers_agree(workdir):
    """Every model can pass its own gate while their combination does not: an impossible
    ensemble threshold drops each lossy variant in turn (lowest own agreement first) until the
    ensemble runs exact fp32; what it did is in the manifest."""
    from stackscore.export.artifact import ensemble_gate

    art = workdir / "artifact"
    export_artifact(workdir, art, log=lambda *_: None)
    m = load_manifest(art)
    passed = m.fusion.parity["ensemble_auto"]
    assert passed["label_agreement"] >= 0.995 and passed["dropped"] == [] and passed["rows"] == len(FitState.load(workdir).parity_texts)
    texts = FitState.load(workdir).parity_texts
    result = ensemble_gate(art, m, texts, 1.01, log=lambda *_: None)  # 101 %: nothing lossy can pass
    assert result["dropped"], result
    assert "openvino" not in result["runs"] and "int8" not in result["runs"] and result["label_agreement"] == 1.0
    for item in result["dropped"]:
        name, key = item.split(":")
        spec = next(s for s in m.models if s.name == name)
        assert spec.parity["gates"][key]["passed"] is False and "ensemble gate" in spec.parity["gates"][key]["reason"]
        if key in ("int8", "int8_static"):
            assert key not in spec.graphs and not list(art.glob(f"models/{name}/*{key.replace('_', '-')}*"))


@pytest.mark.parametrize("ladder_left", [True, False])
def test_the_ensemble_gate_tightens_a_searched_static_int8_before_dropping_it(tmp_path, monkeypatch, ladder_left):
    """Each model can pass its own gate while the stack does not (on a Xeon with AMX, MiniLM's
    1-op static int8 at 99.61 %, the stack 99.22 %). A graph the int8 search chose is then not
    dropped at once: its search's next graph up the ladder takes its place and the ensemble is
    measured again; dropped only when the ladder has none left. (The runtime is faked: the fused
    answers flip 3 of 200 rows until the graph keeps 4 ops in float.)"""
    from types import SimpleNamespace as NS

    import numpy as np

    from stackscore.engine import scorer as scorer_mod
    from stackscore.export.artifact import ensemble_gate

    spec = NS(name="bert", graphs={"fp32": "f.onnx", "int8_static": "q.onnx"},
              parity={"gates": {"int8_static": {"passed": True, "label_agreement": 0.996, "fp32_ops": 1, "fp32_scope": ["op0"]}}})
    (tmp_path / "q.onnx").write_bytes(b"graph")
    manifest = NS(models=[spec], task="single_label", fusion=NS(params={}), cascade=None)

    class FakeScorer:
        def __init__(self, directory, run, manifest):
            self.run = run
            self.quantized = run.precision == "auto" and "int8_static" in spec.graphs
            self.runners = {"bert": NS(choice=NS(variant="int8_static" if self.quantized else "fp32", precision="int8" if self.quantized else "fp32"))}

        def score_texts(self, texts, pairs=None):
            proba = np.tile([[0.9, 0.1]], (len(texts), 1))
            if self.quantized and spec.parity["gates"]["int8_static"]["fp32_ops"] < 4:
                proba[:3] = proba[:3, ::-1]
            return NS(proba=proba)

        def describe(self):
            return "bert: openvino/int8" if self.quantized else "bert: onnxruntime/fp32"

    monkeypatch.setattr(scorer_mod, "Scorer", FakeScorer)
    asked = []

    def tighter():
        asked.append(1)
        k = spec.parity["gates"]["int8_static"]["fp32_ops"] * 2
        return {"passed": True, "label_agreement": 0.998, "fp32_ops": k, "fp32_scope": [f"op{i}" for i in range(k)]} if ladder_left else None

    lines = []
    result = ensemble_gate(tmp_path, manifest, [f"text {i}" for i in range(200)], 0.995, lines.append, tighten={"bert": tighter})
    gate = spec.parity["gates"]["int8_static"]
    if ladder_left:
        assert result["label_agreement"] == 1.0 and result["dropped"] == [] and result["tightened"] == ["bert:int8_static:2", "bert:int8_static:4"]
        assert gate["passed"] and gate["fp32_ops"] == 4 and "98.50%" in gate["tightened_by"] and "int8_static" in spec.graphs
        assert "more ops in float: bert:int8_static:2, bert:int8_static:4" in lines[-1]
    else:
        assert len(asked) == 1 and result["dropped"] == ["bert:int8_static"] and "tightened" not in result
        assert not gate["passed"] and "no graph with more ops in float" in gate["reason"]
        assert "int8_static" not in spec.graphs and not (tmp_path / "q.onnx").exists()


def test_a_mix_with_a_searched_graph_must_pass_the_confirmation_rows_too(tmp_path, monkeypatch):
    """The gate rows are where the search chose its graph: a mix holding one (ops in float) must
    also pass on rows apart from them. Here the fused answers agree on every gate row but flip 3
    of 200 confirmation rows until MiniLM keeps 8 ops in float: the searched graph is dropped,
    untightened (the confirmation rows are one check, not a second set to climb the ladder on),
    not the other model's bf16, whose own gate agreed less; passing, the confirmation is recorded."""
    from types import SimpleNamespace as NS

    import numpy as np

    from stackscore.engine import scorer as scorer_mod
    from stackscore.export.artifact import ensemble_gate

    minilm = NS(name="minilm", graphs={"fp32": "f.onnx", "int8_static": "q.onnx"},
                parity={"gates": {"int8_static": {"passed": True, "label_agreement": 0.998, "fp32_ops": 1, "fp32_scope": ["op0"]}}})
    roberta = NS(name="roberta", graphs={"fp32": "r.onnx"}, parity={"gates": {"bf16": {"passed": True, "label_agreement": 0.996}}})
    manifest = NS(models=[minilm, roberta], task="single_label", fusion=NS(params={}), cascade=None)

    class FakeScorer:
        def __init__(self, directory, run, manifest):
            auto = run.precision == "auto"
            q = auto and "int8_static" in minilm.graphs  # what choose() does: a dropped graph is not run
            self.runners = {"minilm": NS(choice=NS(variant="int8_static" if q else "fp32", precision="int8" if q else "fp32")),
                            "roberta": NS(choice=NS(variant="bf16" if auto else "fp32", precision="bf16" if auto else "fp32"))}
            self.auto = auto

        def score_texts(self, texts, pairs=None):
            proba = np.tile([[0.9, 0.1]], (len(texts), 1))
            if self.auto and "int8_static" in minilm.graphs and texts[0].startswith("confirm") and minilm.parity["gates"]["int8_static"]["fp32_ops"] < 8:
                proba[:3] = proba[:3, ::-1]
            return NS(proba=proba)

        def describe(self):
            return "minilm: openvino/int8, roberta: openvino/bf16" if self.auto else "fp32"

    monkeypatch.setattr(scorer_mod, "Scorer", FakeScorer)

    def tighter():
        k = minilm.parity["gates"]["int8_static"]["fp32_ops"] * 2
        return {"passed": True, "label_agreement": 0.998, "fp32_ops": k, "fp32_scope": [f"op{i}" for i in range(k)]}

    (tmp_path / "q.onnx").write_bytes(b"graph")
    lines = []
    result = ensemble_gate(tmp_path, manifest, [f"text {i}" for i in range(200)], 0.995, lines.append, tighten={"minilm": tighter},
                           confirmation=[f"confirm {i}" for i in range(200)])
    gate = minilm.parity["gates"]["int8_static"]
    assert result["dropped"] == ["minilm:int8_static"] and "tightened" not in result and not gate["passed"]
    assert "98.50% with fp32 on the confirmation rows" in gate["reason"] and "int8_static" not in minilm.graphs and not (tmp_path / "q.onnx").exists()
    assert roberta.parity["gates"]["bf16"]["passed"] and sum("not confirmed" in line for line in lines) == 1
    assert result["confirmation"] is None  # the mix that stands holds no searched graph
    # a searched graph that passes the confirmation rows stays, and the record says so
    minilm.graphs["int8_static"] = "q.onnx"
    gate.update(passed=True, fp32_ops=8, label_agreement=0.998)
    result = ensemble_gate(tmp_path, manifest, [f"text {i}" for i in range(200)], 0.995, lines.append, tighten={"minilm": tighter},
                           confirmation=[f"confirm {i}" for i in range(200)])
    assert result["dropped"] == [] and result["confirmation"] == {"rows": 200, "label_agreement": 1.0, "moved": 0.0, "passed": True, "searched": ["minilm"]}
    # without confirmation rows (a fit state from before they were kept) the gate rows decide alone
    gate.update(fp32_ops=1)
    result = ensemble_gate(tmp_path, manifest, [f"text {i}" for i in range(200)], 0.995, lines.append, tighten={"minilm": tighter})
    assert "tightened" not in result and result["dropped"] == [] and result["confirmation"] is None


def test_the_ensemble_gate_bounds_every_multi_label_probability(tmp_path, monkeypatch):
    """Multi-label: the ensemble gate checked only that label sets agree at the tuned thresholds,
    so fused probabilities could drift while every label stayed on the same side (a stacker reads
    raw logits, where a saturated sigmoid's int8 error is large). Now each probability must stay
    within MAX_ERROR_GATE of exact fp32, as each model's own gate asks. (Runtime faked: the
    quantized answers move 0.06 on rows far from the 0.5 thresholds.)"""
    from types import SimpleNamespace as NS

    import numpy as np

    from stackscore.engine import scorer as scorer_mod
    from stackscore.export.artifact import ensemble_gate
    from stackscore.export.onnx_graph import MAX_ERROR_GATE

    spec = NS(name="bert", graphs={"fp32": "f.onnx", "int8": "q.onnx"}, parity={"gates": {"int8": {"passed": True, "label_agreement": 1.0}}})
    (tmp_path / "q.onnx").write_bytes(b"graph")
    manifest = NS(models=[spec], task="multi_label", fusion=NS(params={"thresholds": [0.5, 0.5, 0.5]}), cascade=None)
    shift = {"by": 0.06}

    class FakeScorer:
        def __init__(self, directory, run, manifest):
            self.quantized = run.precision == "auto" and "int8" in spec.graphs
            self.runners = {"bert": NS(choice=NS(variant="int8" if self.quantized else "fp32", precision="int8" if self.quantized else "fp32"))}

        def score_texts(self, texts, pairs=None):
            proba = np.tile([[0.9, 0.1, 0.75]], (len(texts), 1))
            return NS(proba=proba - shift["by"] if self.quantized else proba)

        def describe(self):
            return "bert: onnxruntime/int8" if self.quantized else "bert: onnxruntime/fp32"

    monkeypatch.setattr(scorer_mod, "Scorer", FakeScorer)
    shift["by"] = MAX_ERROR_GATE / 2
    kept = ensemble_gate(tmp_path, manifest, [f"text {i}" for i in range(50)], 0.995, lambda *_: None)
    assert kept["dropped"] == [] and kept["label_agreement"] == 1.0 and "int8" in spec.graphs
    shift["by"] = 0.06  # every label set unchanged, every probability 0.06 off
    lines = []
    dropped = ensemble_gate(tmp_path, manifest, [f"text {i}" for i in range(50)], 0.995, lines.append)
    assert dropped["dropped"] == ["bert:int8"] and dropped["label_agreement"] == 1.0
    assert not spec.parity["gates"]["int8"]["passed"] and f"probabilities moved up to 0.060 (at most {MAX_ERROR_GATE})" in spec.parity["gates"]["int8"]["reason"]


def test_a_variant_wrong_only_on_batches_padded_to_a_bucket_length_fails_its_gate(artifact):
    """A static-int8 MiniLM with OpenVINO's fused attention agreed 99.8 % on the gate's own
    batches (padded to 11, 14, 17, ... 31, 34 tokens) and 73 % on rows scored in a batch padded to
    exactly 32, which scoring forms at will. The gate now also runs its rows padded to the bucket
    lengths and keeps the worse figures."""
    import numpy as np

    from stackscore.export.onnx_graph import GateInputs, _gate
    from stackscore.train.corpus import generate

    spec = next(s for s in load_manifest(artifact).models if s.name == "bert")

    class Fake:  # a deterministic model: right everywhere but at one padded length
        def __init__(self, broken_at: int | None):
            self.broken_at = broken_at

        def run(self, ids, mask, types=None):
            score = (ids * mask).sum(1) % 7 - 3.0
            z = np.stack([score, -score], 1).astype(np.float32)
            return -z if ids.shape[1] == self.broken_at else z

    texts = [e.text for e in generate(300, seed=5, start=7000)]
    g = GateInputs(artifact / spec.tokenizer, spec.max_length, spec.pad_id, texts, spec.inputs, 2)
    ref = g.logits(Fake(None))
    lengths = g.runner(Fake(None)).tokenizer.encode(texts).lengths
    assert (lengths > 16).sum() > 30  # rows that a batch padded to 32 holds
    ok = _gate(lambda: Fake(None), ref, g, 0.995)
    assert ok["passed"] and ok["label_agreement"] == ok["bucketed_agreement"] == 1.0
    bad = _gate(lambda: Fake(32), ref, g, 0.995)
    assert not bad["passed"] and bad["bucketed_agreement"] < 0.9 and bad["label_agreement"] == bad["bucketed_agreement"]


def test_confirmation_rows_are_test_rows_apart_from_the_gate_rows():
    """Fit keeps up to parity_rows more test rows, disjoint from the gate rows, for what a search
    chooses on the gate rows; the gate and calibration samples are drawn as before."""
    from types import SimpleNamespace as NS

    from stackscore.train.fit import sample_rows

    s = NS(test=[f"test {i}" for i in range(700)], pool=[f"train {i}" for i in range(3000)], n_train=2500)
    cfg = NS(seed=0, parity_rows=512, calibration_rows=1152)
    got = sample_rows(cfg, s)
    assert len(got.parity) == 512 and len(got.confirmation) == 188 and not set(got.parity) & set(got.confirmation)
    assert set(got.parity) | set(got.confirmation) == set(s.test) and len(got.calibration) == 1152
    small = sample_rows(NS(seed=0, parity_rows=512, calibration_rows=64), NS(test=s.test[:300], pool=s.pool, n_train=2500))
    assert len(small.parity) == 300 and small.confirmation == []


def test_confirmation_gates_a_built_backend_against_the_fp32_graph_on_its_own_rows(artifact):
    """``Confirmation`` runs an already built backend (a real OpenVINO bf16 session here) on rows
    apart from the gate rows, against the fp32 graph's logits (computed once), with the gate's own
    rules (bucketed pass included): the real session passes, one wrong on half its rows fails."""
    pytest.importorskip("openvino")

    from stackscore.export.onnx_graph import Confirmation, GateInputs
    from stackscore.train.corpus import generate

    spec = next(s for s in load_manifest(artifact).models if s.name == "bert")
    texts = [e.text for e in generate(240, seed=9, start=9000)]
    g = GateInputs(artifact / spec.tokenizer, spec.max_length, spec.pad_id, texts, spec.inputs, 2, flops_per_token=spec.flops_per_token)
    fp32 = artifact / spec.graphs["fp32"]
    c = Confirmation(g, fp32)
    real = g.openvino(fp32, "bf16")
    found = c.gate(real, 0.995)
    assert found["passed"] and found["rows"] == 240 and found["label_agreement"] >= 0.995
    ref = c._ref
    assert ref is not None and ref.shape == (240, 2)

    class HalfWrong:  # the real session, its logits swapped on every other batch row
        def __init__(self, inner):
            self.inner = inner

        def run(self, ids, mask, types=None):
            z = self.inner.run(ids, mask)
            z[::2] = z[::2, ::-1]
            return z

    bad = c.gate(HalfWrong(real), 0.995)
    assert not bad["passed"] and bad["label_agreement"] < 0.9 and c._ref is ref  # the reference computed once


@pytest.mark.parametrize("min_speedup", [0.0, 1e9])
def test_bf16s_plain_attention_is_gated_timed_and_the_default_only_where_faster(artifact, min_speedup):
    """``plain_attention_gate``: the fp32 graph through OpenVINO with attention as plain nodes is
    gated against the reference like any variant (a real session), then timed against the fused
    kernel at the streams an untuned run uses; it becomes the default only at ``min_speedup``
    (0: always; 1e9: never), and a graph that fails its gate never does."""
    pytest.importorskip("openvino")

    from stackscore.engine.runner import default_streams
    from stackscore.export.onnx_graph import GateInputs, plain_attention_gate
    from stackscore.options import RunOptions
    from stackscore.train.corpus import generate

    spec = next(s for s in load_manifest(artifact).models if s.name == "bert")
    texts = [e.text for e in generate(240, seed=9, start=9000)]
    g = GateInputs(artifact / spec.tokenizer, spec.max_length, spec.pad_id, texts, spec.inputs, 2, flops_per_token=spec.flops_per_token)
    fp32 = artifact / spec.graphs["fp32"]
    ref = g.logits(g.ort(fp32))
    lines: list[str] = []
    gate = plain_attention_gate(fp32, "bf16", g, ref, 0.995, lines.append, min_speedup)
    assert gate["passed"] and gate["label_agreement"] >= 0.995 and gate["streams"] == default_streams("openvino", RunOptions())
    assert gate["rows_per_s"] > 0 and gate["fused_rows_per_s"] > 0 and gate["speedup"] == pytest.approx(gate["rows_per_s"] / gate["fused_rows_per_s"], rel=1e-2)
    assert gate["default"] is (min_speedup == 0.0) and gate["min_speedup"] == min_speedup
    from stackscore.engine.backends import cpu_key
    from stackscore.tuning import fused_kernel

    assert (gate["cpu"], gate["threads"], gate["fused_kernel"]) == (cpu_key(), RunOptions().cpu_threads, fused_kernel())  # what the timing holds for
    assert len(lines) == 1 and "bf16 plain attention: agreement" in lines[0] and ("the default where untuned" in lines[0]) is gate["default"]
    wrong = plain_attention_gate(fp32, "bf16", g, -ref, 0.995, lines.append, 0.0)  # every label the other way round
    assert not wrong["passed"] and wrong["default"] is False and "speedup" not in wrong and "gate failed" in lines[-1]
