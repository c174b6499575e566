"""fit variants: holdout blending, auto selection, multi-class labels, and `stackscore export`."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import orjson

from conftest import tiny_config
from stackscore.train.corpus import FILLERS, generate


def three_class_rows(n: int, seed: int) -> list[dict]:
    """positive / negative reviews plus 'neutral' rows made of filler sentences only."""
    rng = random.Random(seed)
    rows = [{"text": e.text, "label": e.label} for e in generate(n, seed=seed)]
    for i in range(0, n, 3):
        rows[i] = {"text": " ".join(rng.choice(FILLERS) for _ in range(rng.randint(1, 3))), "label": "neutral"}
    return rows


def test_holdout_auto_multiclass_fit_and_engine_agree(tmp_path):
    from stackscore.api import Ensemble
    from stackscore.train.config import config_from_dict
    from stackscore.train.fit import fit

    data = tmp_path / "data"
    data.mkdir()
    for name, n, seed in (("train", 360, 1), ("test", 90, 2)):
        (data / f"{name}.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in three_class_rows(n, seed)))
    raw = tiny_config(data, method="auto", mode="holdout", holdout_fraction=0.3)
    raw["models"].append({"name": "tfidf", "kind": "tfidf", "min_df": 1})  # a heterogeneous ensemble
    cfg = config_from_dict(raw, tmp_path)
    report = fit(cfg, tmp_path / "work", log=lambda *_: None)
    assert report["labels"] == ["negative", "neutral", "positive"]
    assert report["fusion_mode"] == "holdout" and report["chosen"] in report["fusions"]
    assert set(report["cv_log_loss"]) == {"mean", "vote", "soft_vote", "weighted", "stack"}
    assert report["engine_vs_training"]["max_abs_diff"] < 1e-4
    manifest = json.loads((tmp_path / "work" / "artifact" / "manifest.json").read_text())
    assert manifest["task"] == "multiclass" and manifest["fusion"]["reason"].startswith("auto:")
    kinds = {m["name"]: m["kind"] for m in manifest["models"]}
    assert kinds == {"bert": "transformer", "roberta": "transformer", "tfidf": "tfidf"}
    tfidf = next(m for m in manifest["models"] if m["kind"] == "tfidf")
    assert tfidf["parity"]["max_abs_diff"] < 1e-4 and tfidf["tokenizer"] is None
    assert (tmp_path / "work" / "report.png").stat().st_size > 1000
    # Holdout: the meta-features are the blend rows only (30 % of train, stratified).
    assert len(np.load(tmp_path / "work" / "oof.npz")["y"]) == 108
    ens = Ensemble.load(tmp_path / "work" / "artifact")
    p, outs = ens.predict_proba(["It runs a little over two hours.", "the plot was truly brilliant"], return_model_outputs=True)
    assert p.shape == (2, 3) and set(outs) == {"bert", "roberta", "tfidf"}
    # TF-IDF "logits" are log-probabilities: they exponentiate to a distribution.
    np.testing.assert_allclose(np.exp(outs["tfidf"]).sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)


def test_cli_export_rebuilds_an_identical_scoring_artifact(fitted, tmp_path):
    from stackscore.api import Ensemble

    out = tmp_path / "again"
    res = subprocess.run([sys.executable, "-m", "stackscore", "export", str(fitted), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "artifact written" in res.stderr
    texts = ["a clever and moving film", "the pacing was not good", "It runs a little over two hours."]
    np.testing.assert_allclose(Ensemble.load(out).predict_proba(texts), Ensemble.load(fitted / "artifact").predict_proba(texts), atol=1e-6)


def test_folder_dataset_layout_loads_labels_from_subfolders(tmp_path):
    from stackscore.train.data import load_labelled

    for label, texts in (("neg", ["bad film", "awful"]), ("pos", ["great film"])):
        (tmp_path / "ds" / label).mkdir(parents=True)
        for i, t in enumerate(texts):
            (tmp_path / "ds" / label / f"{i}_1.txt").write_text(t + "\n")
    texts, labels = load_labelled(tmp_path / "ds")
    assert sorted(zip(labels, texts)) == [("neg", "awful"), ("neg", "bad film"), ("pos", "great film")]
    (tmp_path / "ds" / "pos" / "9_1.txt").write_text("  \n")
    import pytest

    from stackscore.errors import InputError

    with pytest.raises(InputError, match="9_1.txt: the text file is empty"):
        load_labelled(tmp_path / "ds")


def test_gates_on_too_few_rows_keep_no_faster_precision(fitted, tmp_path):
    """32 gate rows under the default minimum (200): no int8/fp16/bf16 variant is built or
    kept, each gate says why, and scoring at auto runs fp32 (the test fit lowers the minimum)."""
    import shutil

    from stackscore.api import Ensemble
    from stackscore.export import export_artifact
    from stackscore.export.variants import GATE_MIN_ROWS

    work = tmp_path / "work"
    shutil.copytree(fitted, work)
    state = json.loads((work / "fit_state.json").read_text())
    assert len(state["parity_texts"]) < GATE_MIN_ROWS
    state["gate_min_rows"] = GATE_MIN_ROWS
    (work / "fit_state.json").write_text(json.dumps(state))
    m = export_artifact(work, log=lambda *_: None)
    for spec in (s for s in m.models if s.kind == "transformer"):
        assert set(spec.graphs) == {"fp32"}
        gates = spec.parity["gates"]
        assert gates and all(not g["passed"] and "gate rows are too few" in g["error"] for g in gates.values())
    assert "fp32" in Ensemble.load(work / "artifact", precision="auto").scorer.describe()


def test_a_tfidf_model_refuses_training_rows_without_every_label():
    """LogisticRegression outputs the labels it saw: a fold without a rare label's rows gave one
    column fewer, every later label's column shifted onto the wrong name (or a shape error)."""
    import numpy as np
    import pytest

    from stackscore.errors import StackscoreError
    from stackscore.train.models import ModelConfig
    from stackscore.train.tfidf import fit_tfidf

    texts = ["good film", "bad film", "good plot", "bad plot"] * 5
    y = np.array([0, 2, 0, 2] * 5)
    with pytest.raises(StackscoreError, match="model 't': label 'neutral' has no row among the 20 rows"):
        fit_tfidf(texts, y, ModelConfig(name="t", kind="tfidf", min_df=1), ["negative", "neutral", "positive"])
    assert fit_tfidf(texts, np.array([0, 1, 0, 1] * 5), ModelConfig(name="t", kind="tfidf", min_df=1), ["a", "b"]).predict_proba(texts).shape == (20, 2)


def test_a_tfidf_label_with_too_few_rows_is_refused_before_any_model_trains():
    """Out-of-fold, a label with one row leaves one fold's TF-IDF model without it: refused when
    the splits are known, not after the models before it have trained."""
    import numpy as np
    import pytest

    from stackscore.errors import StackscoreError
    from stackscore.train.fit import FusionRows, check_tfidf_rows
    from stackscore.train.models import ModelConfig

    class S:  # the fields check_tfidf_rows reads
        task, labels, y_pool = "single_label", ["a", "b", "c"], np.array([0, 1, 0, 1, 2, 0, 1, 0])

    class Cfg:
        models = [ModelConfig(name="t", kind="tfidf")]

    everything = np.arange(8)
    with pytest.raises(StackscoreError, match="model 't': label 'c' has 1 row\\(s\\) .*out-of-fold predictions need 2 rows"):
        check_tfidf_rows(Cfg, S, FusionRows(everything, everything, True, ""))
    check_tfidf_rows(Cfg, S, FusionRows(everything[:2], everything, False, ""))  # holdout: one row is enough
    with pytest.raises(StackscoreError, match="label 'c' has 0 row"):
        check_tfidf_rows(Cfg, S, FusionRows(everything[4:], everything[:4], False, ""))


def test_a_test_file_that_is_the_validation_or_train_file_is_refused(tmp_path):
    """Read once per path, the same file as validation and test was taken silently: the stacker
    was scored on the rows it learned from and the report said the ensemble helps."""
    import pytest

    from stackscore.errors import StackscoreError
    from stackscore.train.config import config_from_dict
    from stackscore.train.fit import fit

    data = tmp_path / "data"
    data.mkdir()
    for name, n, seed in (("train", 60, 1), ("validation", 30, 2)):
        (data / f"{name}.jsonl").write_bytes(b"".join(orjson.dumps({"text": e.text, "label": e.label}) + b"\n" for e in generate(n, seed=seed)))
    (data / "link.jsonl").symlink_to(data / "validation.jsonl")
    for test in ("validation.jsonl", "link.jsonl", "train.jsonl"):
        raw = tiny_config(data, method="stack")
        raw["data"]["validation"] = str(data / "validation.jsonl")
        raw["data"]["test"] = str(data / test)
        with pytest.raises(StackscoreError, match=r"test is the same file as (validation|train); the report would score") as e:
            fit(config_from_dict(raw, tmp_path), tmp_path / "work", log=lambda *_: None)
        assert str(e.value).startswith(str(data / test))
    assert not (tmp_path / "work" / "models").exists()
