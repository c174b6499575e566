"""Backend and precision selection, precision gates, and every backend against exact fp32."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stackscore.engine import backends
from stackscore.engine.backends import choose
from stackscore.options import RunOptions
from stackscore.engine.scorer import Scorer
from stackscore.errors import StackscoreError, StackscoreWarning
from stackscore.manifest import ModelSpec, load_manifest


def spec(graphs=("fp32",), gates=None) -> ModelSpec:
    return ModelSpec(name="m", kind="transformer", graphs={g: f"{g}.onnx" for g in graphs}, tokenizer="t.json", max_length=8, pad_id=0, inputs=["input_ids", "attention_mask"], parity={"gates": gates or {}})


@pytest.fixture
def cpu_with_bf16(monkeypatch):
    """A CPU like the export machines': bf16 instructions and VNNI (exact int8 kernels)."""
    monkeypatch.setattr(backends, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(backends, "int8_kernels", lambda: "exact")
    monkeypatch.setattr(backends, "have", lambda m: True)


def test_auto_trusts_a_gate_only_on_the_kind_of_cpu_that_measured_it(monkeypatch):
    """An int8 gate measured with VNNI's exact kernels says nothing where int8 saturates (x86
    without VNNI), and a bf16 gate run on a CPU without bf16 measured fp32: auto skips both,
    an explicit precision runs with a warning naming why."""
    monkeypatch.setattr(backends, "have", lambda m: True)
    monkeypatch.setattr(backends, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(backends, "int8_kernels", lambda: "saturating")
    vnni = spec(("fp32", "int8", "int8_static"), {"int8": {"passed": True, "int8_kernels": "exact"}, "int8_static": {"passed": True, "int8_kernels": "exact"}})
    assert choose(vnni, RunOptions(precision="auto")) == backends.Choice("onnxruntime", "fp32", "fp32")
    old = spec(("fp32", "int8"), {"int8": {"passed": True}})  # before the record: measured on VNNI machines
    assert choose(old, RunOptions(precision="auto")).precision == "fp32"
    with pytest.warns(RuntimeWarning, match="model 'm' at --precision int8: its int8 gate was measured on a CPU with VNNI"):
        assert choose(vnni, RunOptions(precision="int8")) == backends.Choice("openvino", "int8", "int8_static")
    here = spec(("fp32", "int8", "int8_static"), {"int8": {"passed": True, "int8_kernels": "saturating"}, "int8_static": {"passed": True, "int8_kernels": "saturating"}})
    assert choose(here, RunOptions(precision="auto")) == backends.Choice("openvino", "int8", "int8_static")
    assert choose(here, RunOptions(precision="auto", backend="onnxruntime")) == backends.Choice("onnxruntime", "int8", "int8")
    # On a VNNI CPU a gate measured with saturating kernels holds (exact sums are closer to fp32).
    monkeypatch.setattr(backends, "int8_kernels", lambda: "exact")
    assert choose(here, RunOptions(precision="auto")).graph_key == "int8_static"
    # bf16 gated where there was no bf16: a bf16 CPU does not take it, falls to int8
    monkeypatch.setattr(backends, "cpu_has_bf16", lambda: True)
    unmeasured = spec(("fp32", "int8"), {"int8": {"passed": True}, "bf16": {"passed": True, "cpu_bf16": False}})
    assert choose(unmeasured, RunOptions(precision="auto")) == backends.Choice("onnxruntime", "int8", "int8")
    with pytest.warns(RuntimeWarning, match="bf16 gate ran on a CPU without bf16 instructions"):
        choose(unmeasured, RunOptions(precision="bf16"))
    measured = spec(("fp32",), {"bf16": {"passed": True, "cpu_bf16": True}})
    assert choose(measured, RunOptions(precision="auto")) == backends.Choice("openvino", "bf16", "fp32")
    monkeypatch.setattr(backends, "cpu_has_bf16", lambda: False)  # a bf16 gate, a CPU without bf16: fp32 is as fast
    assert choose(measured, RunOptions(precision="auto")) == backends.Choice("onnxruntime", "fp32", "fp32")
    with pytest.warns(StackscoreWarning, match="at --precision bf16: this CPU has no bf16 instructions"):
        assert choose(measured, RunOptions(precision="bf16")) == backends.Choice("openvino", "bf16", "fp32")


def test_quiet_mode_hides_third_party_warnings_but_not_stackscores_own(monkeypatch):
    """fit/export/bench silence third-party warnings unless --verbose; the engine's own (an
    explicit precision whose gate does not hold here, a provider that fell back) still show."""
    import warnings

    from stackscore.quiet import configure

    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "error")  # configure only sets these by default
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with warnings.catch_warnings(record=True) as seen:
        configure(False)
        warnings.warn("a library's advice", UserWarning)
        warnings.warn("a library's runtime note", RuntimeWarning)
        warnings.warn("model 'm' at --precision int8: ...", StackscoreWarning)
    assert [str(w.message) for w in seen] == ["model 'm' at --precision int8: ..."]


def test_int8_kernels_tells_what_onnx_runtime_computes_on_this_cpu():
    """The premise of the int8 record, checked on whatever CPU runs the tests: 64 products of
    255 x 127 sum to 2,072,640 with exact int8 kernels; kernels that add pairs in int16 clip
    every pair at 32,767. Scoring reads the CPU's flags; export measures (the same answer)."""
    import onnxruntime as ort

    from stackscore.export.onnx_graph import int8_probe_graph, measured_int8_kernels

    backends.int8_kernels.cache_clear()
    sess = ort.InferenceSession(int8_probe_graph(), providers=["CPUExecutionProvider"])
    got = int(sess.run(None, {"a": np.full((1, 64), 255, np.uint8)})[0][0, 0])
    assert got == {"exact": 2_072_640, "saturating": 32 * 32_767}[backends.int8_kernels()]  # written out, not the module's constants
    assert measured_int8_kernels() == backends.int8_kernels()


def test_auto_runs_the_int8_graph_whose_gate_holds_and_static_int8_needs_bf16_where_it_runs_bf16(monkeypatch):
    """Static int8 runs its float ops in bf16 on a bf16 CPU: gated without bf16, a bf16 CPU does
    not trust it, and auto (and an explicit int8 not forced onto OpenVINO) runs the dynamic int8
    graph whose gate holds, not the static one."""
    monkeypatch.setattr(backends, "have", lambda m: True)
    monkeypatch.setattr(backends, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(backends, "int8_kernels", lambda: "exact")
    gates = {"int8": {"passed": True, "int8_kernels": "exact"}, "int8_static": {"passed": True, "int8_kernels": "exact", "cpu_bf16": False},
             "bf16": {"passed": False}}
    m = spec(("fp32", "int8", "int8_static"), gates)
    assert backends.auto_variant(m, RunOptions(precision="auto")) == "int8"
    assert choose(m, RunOptions(precision="auto")) == backends.Choice("onnxruntime", "int8", "int8")
    assert choose(m, RunOptions(precision="int8")) == backends.Choice("onnxruntime", "int8", "int8")
    with pytest.warns(RuntimeWarning, match="static int8 \\(its float ops run in bf16 here\\) was never checked"):
        assert choose(m, RunOptions(precision="int8", backend="openvino")) == backends.Choice("openvino", "int8", "int8_static")
    gated_with_bf16 = spec(("fp32", "int8", "int8_static"), {**gates, "int8_static": {**gates["int8_static"], "cpu_bf16": True}})
    assert choose(gated_with_bf16, RunOptions(precision="auto")) == backends.Choice("openvino", "int8", "int8_static")
    monkeypatch.setattr(backends, "cpu_has_bf16", lambda: False)  # no bf16 here: its float ops run fp32, as gated
    assert choose(m, RunOptions(precision="auto")) == backends.Choice("openvino", "int8", "int8_static")


def test_auto_prefers_bf16_then_int8_then_fp32(cpu_with_bf16, monkeypatch):
    both = spec(("fp32", "int8"), {"int8": {"passed": True}, "bf16": {"passed": True}})
    assert choose(both, RunOptions(precision="auto")) == backends.Choice("openvino", "bf16", "fp32")
    assert choose(both, RunOptions(precision="auto", backend="onnxruntime")) == backends.Choice("onnxruntime", "int8", "int8")
    failed_bf16 = spec(("fp32", "int8"), {"int8": {"passed": True}, "bf16": {"passed": False}})
    assert choose(failed_bf16, RunOptions(precision="auto")).precision == "int8"
    assert choose(spec(), RunOptions(precision="auto")) == backends.Choice("onnxruntime", "fp32", "fp32")
    monkeypatch.setattr(backends, "cpu_has_bf16", lambda: False)
    assert choose(both, RunOptions(precision="auto")).precision == "int8"


def test_auto_takes_static_int8_on_openvino_first(cpu_with_bf16):
    gates = {"int8": {"passed": True}, "bf16": {"passed": True}, "int8_static": {"passed": True}}
    m = spec(("fp32", "int8", "int8_static"), gates)
    assert choose(m, RunOptions(precision="auto")) == backends.Choice("openvino", "int8", "int8_static")
    assert choose(m, RunOptions(precision="int8")) == backends.Choice("openvino", "int8", "int8_static")
    # Forced onto ONNX Runtime, int8 means the dynamic graph.
    assert choose(m, RunOptions(precision="int8", backend="onnxruntime")) == backends.Choice("onnxruntime", "int8", "int8")
    assert choose(m, RunOptions(precision="auto", backend="onnxruntime")).graph_key == "int8"
    # A static graph whose gate failed is never chosen by auto.
    failed = spec(("fp32", "int8_static"), {**gates, "int8_static": {"passed": False}})
    assert choose(failed, RunOptions(precision="auto")) == backends.Choice("openvino", "bf16", "fp32")


def test_auto_on_gpu_takes_fp16_only_when_its_gate_passed():
    gpu = RunOptions(precision="auto", providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert choose(spec(("fp32", "fp16"), {"fp16": {"passed": True}}), gpu).precision == "fp16"
    assert choose(spec(("fp32", "fp16"), {"fp16": {"passed": False}}), gpu).precision == "fp32"
    # TensorRT makes its own fp16 engine from the unfused fp32 graph (fp16 as the gate allows)
    trt = RunOptions(precision="auto", providers=["TensorrtExecutionProvider", "CUDAExecutionProvider"])
    assert choose(spec(("fp32", "fp16"), {"fp16": {"passed": True}}), trt) == backends.Choice("onnxruntime", "fp16", "fp32")


def test_forced_precisions_and_clear_errors(monkeypatch):
    assert choose(spec(("fp32", "int8")), RunOptions(precision="int8")).graph_key == "int8"
    with pytest.raises(StackscoreError, match="no 'int8' graph"):
        choose(spec(), RunOptions(precision="int8"))
    with pytest.raises(StackscoreError, match="OpenVINO backend"):
        choose(spec(), RunOptions(precision="bf16", backend="onnxruntime"))
    monkeypatch.setattr(backends, "have", lambda m: False)
    with pytest.raises(StackscoreError, match=r"stackscore\[openvino\]"):
        choose(spec(), RunOptions(precision="bf16"))
    with pytest.raises(StackscoreError, match="precision must be one of"):
        choose(spec(), RunOptions(precision="fp8"))


def test_missing_gpu_provider_fails_clearly_or_falls_back_when_allowed(artifact):
    gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(StackscoreError, match="CUDAExecutionProvider not available.*allow-cpu-fallback"):
        Scorer(artifact, RunOptions(providers=gpu))
    with pytest.warns(RuntimeWarning, match="falling back to CPUExecutionProvider"):
        s = Scorer(artifact, RunOptions(providers=gpu, allow_cpu_fallback=True))
    assert all(b.providers == ["CPUExecutionProvider"] for r in s.runners.values() for b in r.backends)


def test_export_records_gates_and_keeps_only_passing_int8(artifact):
    m = load_manifest(artifact)
    for s in m.models:
        gate = s.parity["gates"]["int8"]
        assert ("int8" in s.graphs) == gate["passed"]
        assert gate["int8_kernels"] == backends.int8_kernels()  # which kind of CPU measured it
        if "label_agreement" in gate:
            assert gate["passed"] == (gate["label_agreement"] >= 0.995 and gate["mean_prob_error"] <= 0.02)
        if "int8" not in s.graphs:
            assert not (artifact / "models" / s.name / "model.int8.onnx").exists()


@pytest.mark.skipif(not (backends.have("nncf") and backends.have("openvino")), reason="needs the openvino extra (nncf)")
def test_export_writes_static_int8_qdq_graph_with_a_gate(artifact):
    import onnx

    for s in load_manifest(artifact).models:
        gate = s.parity["gates"]["int8_static"]
        assert gate["method"] == "nncf-static-qdq" and gate["calibration"] == "training sample", gate
        assert gate["int8_kernels"] == backends.int8_kernels() and gate["cpu_bf16"] == backends.cpu_has_bf16()
        assert gate["passed"] == (gate["label_agreement"] >= 0.995) == gate["agreement_passed"]  # speed rule off (conftest)
        # The baseline is what ``auto`` would run without int8_static: bf16 where this CPU has it
        # (AVX512-BF16 / AMX), else the dynamic int8 or fp32 graph (CI machines differ).
        rest = dataclasses.replace(s, graphs={k: v for k, v in s.graphs.items() if k != "int8_static"},
                                   parity={"gates": {k: v for k, v in s.parity["gates"].items() if k != "int8_static"}})
        expected = backends.auto_variant(rest, RunOptions(precision="auto"))
        assert gate["min_speedup"] == 0 and gate["baseline"] == expected and gate["seq_per_s"] > 0 and gate["quantized_ops"] > 0
        assert ("int8_static" in s.graphs) == gate["passed"]
        if gate["passed"]:
            ops = {n.op_type for n in onnx.load(str(artifact / s.graphs["int8_static"])).graph.node}
            assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_static_int8_ladder_keeps_more_in_fp32_each_try(artifact):
    import re

    import onnx

    from stackscore.export.onnx_graph import FFN_OUT, fp32_scopes

    m = load_manifest(artifact)
    graph = artifact / m.models[0].graphs["fp32"]
    ladder = fp32_scopes(graph)
    assert ladder[0] == [] and ladder[1] == [FFN_OUT]
    assert set(ladder[1]) < set(ladder[2]) and r".*layers?\.0/.*" in ladder[2]  # one-layer test models
    names = [n.name for n in onnx.load(str(graph)).graph.node if n.op_type == "MatMul"]
    assert any(re.match(FFN_OUT, n) for n in names), names  # the pattern names real nodes


def every_precision(artifact):
    m = load_manifest(artifact)
    precs = ["fp32"]
    if all("int8" in s.graphs for s in m.models):
        precs.append("int8")
    if backends.have("openvino"):
        precs.append("bf16")
    if backends.have("openvino") and all("int8_static" in s.graphs for s in m.models):
        precs.append("int8-static")
    return precs


def test_every_available_backend_agrees_with_exact_fp32(artifact, corpus_rows):
    texts = [r["text"] for r in corpus_rows[:300]]
    exact = Scorer(artifact, RunOptions(precision="fp32", backend="onnxruntime")).score_texts(texts)
    options = {
        "fp32": RunOptions(precision="fp32"),
        "int8": RunOptions(precision="int8", backend="onnxruntime"),  # dynamic int8
        "bf16": RunOptions(precision="bf16"),
        "int8-static": RunOptions(precision="int8", backend="openvino"),  # NNCF static int8
    }
    runs = {p: options[p] for p in every_precision(artifact)}
    if backends.have("openvino"):
        runs["openvino-fp32"] = RunOptions(precision="fp32", backend="openvino")
    for name, opts in runs.items():
        got = Scorer(artifact, opts).score_texts(texts)
        agreement = np.mean(got.proba.argmax(1) == exact.proba.argmax(1))
        if name in ("fp32", "openvino-fp32"):
            np.testing.assert_allclose(got.proba, exact.proba, atol=1e-4, err_msg=name)
        else:
            assert agreement >= 0.98, (name, agreement)


def test_a_gate_checks_probabilities_and_its_row_count_not_only_top_labels():
    """A variant whose logits shrank keeps every top label but moves every probability: it does
    not pass (mean error); nor does one measured on fewer rows than the minimum."""
    from types import SimpleNamespace

    from stackscore.export.onnx_graph import _gate

    rng = np.random.default_rng(0)
    ref = rng.normal(0, 3, (300, 2))
    g = SimpleNamespace(task="single_label", texts=["t"] * 300, width=2, logits=lambda backend: backend,
                        runner=lambda backend, **geometry: SimpleNamespace(logits=lambda texts, width: backend))  # the bucketed pass: the same logits
    good = _gate(lambda: ref + rng.normal(0, 0.01, ref.shape), ref, g, 0.995)
    assert good["passed"] and good["label_agreement"] == 1.0 and good["mean_prob_error"] < 0.02
    squashed = _gate(lambda: ref / 4, ref, g, 0.995)
    assert squashed["label_agreement"] == 1.0 and not squashed["passed"] and "probabilities moved" in squashed["reason"]
    from stackscore.export.onnx_graph import GateSettings, precision_gates

    few = SimpleNamespace(task="single_label", texts=["t"] * 50, logits=lambda b: b)  # before any graph is built
    gates, graphs = precision_gates(None, None, few, ref[:50], lambda *_: None, GateSettings(min_rows=200, static_int8=False), fp16_shape=(2, 32))
    assert graphs == {} and {"int8", "fp16"} <= set(gates) and all(not g["passed"] and "too few" in g["error"] for g in gates.values())


def test_scratch_tokenizers_train_without_printing(capfd, monkeypatch):
    """The tokenizers trainers' hidden progress bar still wrote three empty lines to stdout per
    trained tokenizer, into fit's own output: off unless --verbose."""
    import stackscore.quiet as quiet
    from stackscore.train.models import train_byte_bpe, train_wordpiece

    texts = [f"a fine film number {i}" for i in range(50)]
    monkeypatch.setattr(quiet, "_VERBOSE", False)
    bpe, wordpiece = train_byte_bpe(texts, 300), train_wordpiece(texts, 300)
    out = capfd.readouterr()
    assert out.out == "" and bpe.get_vocab_size() > 0 and wordpiece.get_vocab_size() > 0
