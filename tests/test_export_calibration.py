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
    gate = FitState.load(workdir).parity_texts
    with pytest.raises(StackscoreError, match="must not include the gate rows"):
        export_artifact(workdir, workdir / "artifact", log=lambda *_: None, calibration_texts=["a fresh text", str(gate[0])])
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
