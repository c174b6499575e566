"""Multi-label and regression ensembles, end to end on tiny models: fit, export, engine, outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from checkpoints import make_checkpoint  # noqa: E402
from test_checkpoints import FAST, run_fit  # noqa: E402

TINY = {"max_length": 64, "epochs": 2, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "vocab_size": 400}


def _rows(n: int, seed: int, start: int, task: str) -> list[dict]:
    from stackscore.train.corpus import generate

    out = []
    for e in generate(n, seed=seed, start=start):
        words = len(e.text.split())
        if task == "multi_label":  # three labels, each on or off on its own
            labels = [e.label] + (["long"] if words > 14 else []) + (["but"] if " but " in e.text else [])
            out.append({"id": e.id, "text": e.text, "labels": labels})
        else:  # a score: the sentiment, moved by length
            out.append({"id": e.id, "text": e.text, "target": (4.0 if e.label == "positive" else 1.0) + 0.05 * words})
    return out


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def multi_fit(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("multi")
    data = {k: _write(root / f"{k}.jsonl", _rows(n, s, st, "multi_label")) for k, n, s, st in (("train", 240, 41, 0), ("test", 60, 42, 9000))}
    raw = {
        "seed": 0, **FAST,
        "data": {"train": str(data["train"]), "test": str(data["test"]), "label_field": "labels"},
        "fusion": {"method": "auto", "folds": 2},
        "models": [{"name": "bert", "source": "scratch:bert", **TINY}, {"name": "roberta", "source": "scratch:roberta", "seed": 1, **TINY}],
    }
    report = run_fit(raw, root / "work")
    assert report["task"] == "multi_label"
    return root


def test_multi_label_fit_report_and_manifest(multi_fit):
    report = json.loads((multi_fit / "work/report.json").read_text())
    assert set(report["models"]["bert"]) == {"micro_f1", "macro_f1", "subset_accuracy", "log_loss"}
    assert set(report["fusions"]) == {"mean", "weighted", "stack"}
    assert "micro-F1" in report["verdict"]
    m = json.loads((multi_fit / "work/artifact/manifest.json").read_text())
    assert m["task"] == "multi_label" and m["labels"] == ["but", "long", "negative", "positive"]
    assert len(m["fusion"]["params"]["thresholds"]) == 4
    assert report["engine_vs_training"]["max_abs_diff"] <= 1e-3 and report["engine_vs_training"]["label_agreement"] >= 0.995


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_multi_label_outputs_in_every_format(multi_fit, tmp_path, suffix):
    import pyarrow.parquet as pq

    from stackscore import Ensemble

    src = multi_fit / "test.jsonl"
    out = tmp_path / f"p{suffix}"
    r = subprocess.run([sys.executable, "-m", "stackscore", "score", str(multi_fit / "work/artifact"), str(src), "-o", str(out), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ens = Ensemble.load(multi_fit / "work/artifact")
    texts = [json.loads(l)["text"] for l in src.read_text().splitlines()]
    expected = ens.predict(texts)  # lists of labels, at the manifest's thresholds
    if suffix == ".jsonl":
        got = [json.loads(l)["labels"] for l in out.read_text().splitlines()]
    elif suffix == ".csv":
        import pyarrow.csv as pacsv

        col = pacsv.read_csv(out).column("labels").to_pylist()
        got = [[] if not v else v.split("|") for v in col]
    else:
        table = pq.read_table(out)
        import pyarrow as pa

        t = table.schema.field("labels").type
        assert pa.types.is_list(t) and pa.types.is_string(t.value_type)
        got = table.column("labels").to_pylist()
    assert got == expected
    proba = ens.predict_proba(texts)
    thresholds = np.asarray(json.loads((multi_fit / "work/artifact/manifest.json").read_text())["fusion"]["params"]["thresholds"])
    assert [sorted(np.asarray(ens.labels)[p >= thresholds].tolist()) for p in proba] == [sorted(g) for g in got]


@pytest.fixture(scope="module")
def reg_fit(tmp_path_factory) -> Path:
    """A fixed regression checkpoint (one output) + a BERT fine-tuned here, stacked with ridge."""
    root = tmp_path_factory.mktemp("reg")
    data = {k: _write(root / f"{k}.jsonl", _rows(n, s, st, "regression")) for k, n, s, st in (("train", 200, 51, 0), ("validation", 80, 52, 5000), ("test", 60, 53, 9000))}
    ckpt = make_checkpoint(root / "ckpt", "bert", {0: "LABEL_0"}, problem_type="regression")
    raw = {
        "seed": 0, **FAST,
        "data": {k: str(v) for k, v in data.items()} | {"label_field": "target"},
        "fusion": {"method": "stack", "folds": 2},
        "models": [
            {"name": "fixed", "source": str(ckpt), "finetune": False, "max_length": 64},
            {"name": "bert", "source": "scratch:bert", **TINY, "learning_rate": 1e-3},
        ],
    }
    report = run_fit(raw, root / "work")
    assert report["task"] == "regression"
    return root


def test_regression_fit_engine_and_outputs(reg_fit, tmp_path):
    from stackscore import Ensemble

    report = json.loads((reg_fit / "work/report.json").read_text())
    assert set(report["models"]["bert"]) == {"rmse", "mae", "pearson", "spearman"} and "RMSE" in report["verdict"]
    m = json.loads((reg_fit / "work/artifact/manifest.json").read_text())
    assert m["task"] == "regression" and m["labels"] == ["value"] and m["fusion"]["method"] == "stack"
    gate = m["fusion"]["parity"]["ensemble_auto"]  # the fused values at auto are gated too (a ridge stack can amplify its models' errors)
    assert gate["max_relative_error"] <= 0.05 and gate["label_agreement"] >= 0.995
    out = tmp_path / "p.jsonl"
    src = reg_fit / "test.jsonl"
    r = subprocess.run([sys.executable, "-m", "stackscore", "score", str(reg_fit / "work/artifact"), str(src), "-o", str(out), "--with-contributions", "--with-model-outputs", "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    texts = [json.loads(l)["text"] for l in src.read_text().splitlines()]
    values = Ensemble.load(reg_fit / "work/artifact").predict(texts)
    assert np.allclose([r["value"] for r in rows], values, atol=1e-5)
    coef = np.asarray(m["fusion"]["params"]["linear_coef"])
    for row in rows[:5]:  # contributions: each model's output times its ridge coefficient
        assert np.isclose(row["contrib_fixed"], coef[0] * row["value_fixed"], atol=1e-4)
        assert np.isclose(row["contrib_bert"], coef[1] * row["value_bert"], atol=1e-4)
    assert set(rows[0]) >= {"id", "value", "error", "value_fixed", "value_bert"}


@pytest.mark.parametrize(
    "rows, extra, message",
    [
        ([{"text": "fine", "target": "high"}], {"task": "regression"}, "must be a finite number for a regression task, got 'high'"),
        ([{"text": "fine", "labels": ["joy", "awe"]}], {"labels": ["but", "joy", "long", "negative", "positive"]}, "train.jsonl: row 10: label 'awe' is not in the config's 'labels'"),
        ([{"text": "fine", "labels": "joy"}], {"task": "multi_label"}, "must be a list of labels for a multi-label task"),
    ],
)
def test_bad_task_input_is_one_line_exit_2(tmp_path, rows, extra, message):
    good = _rows(20, 61, 0, "multi_label" if "labels" in rows[0] else "regression")
    field = "labels" if "labels" in rows[0] else "target"
    _write(tmp_path / "train.jsonl", good[:10] + rows + good[10:])
    lines = [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    cfg = tmp_path / "fit.toml"
    cfg.write_text("\n".join(lines) + f'\n[data]\ntrain = "train.jsonl"\nlabel_field = "{field}"\n[[models]]\nname = "b"\nsource = "scratch:bert"\n')
    r = subprocess.run([sys.executable, "-m", "stackscore", "fit", str(cfg), "--out", str(tmp_path / "w")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    err = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(err) == 1 and message in err[0], r.stderr


def test_fixed_checkpoint_head_must_match_the_task(tmp_path):
    from stackscore.errors import StackscoreError
    from stackscore.train.models import ModelConfig, load_fixed

    single = make_checkpoint(tmp_path / "s", "bert", {0: "a", 1: "b"})
    with pytest.raises(StackscoreError, match="needs problem_type 'multi_label_classification'"):
        load_fixed(ModelConfig(name="s", source=str(single), finetune=False), single, ["a", "b"], "multi_label")
    with pytest.raises(StackscoreError, match="one-output regression head"):
        load_fixed(ModelConfig(name="s", source=str(single), finetune=False), single, ["value"], "regression")


def test_thresholds_are_tuned_for_f1_per_label():
    from stackscore.tasks import f1_scores, tune_thresholds

    y = np.array([[1, 0], [1, 0], [0, 1], [0, 0], [0, 1]], dtype=float)
    p = np.array([[0.30, 0.9], [0.35, 0.1], [0.10, 0.8], [0.12, 0.2], [0.05, 0.7]])
    t = tune_thresholds(y, p)
    assert 0.12 < t[0] <= 0.30  # label 0: on at 0.30 and 0.35, off at 0.12 and below
    assert f1_scores(y, p >= t)[1] > f1_scores(y, p >= 0.5)[1]


@pytest.mark.parametrize(
    "name, rows, expected",
    [
        ("ints.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 1}], "single_label"),  # SST-2's class ids
        ("names.csv", "text,label\na,pos\nb,neg\n", "single_label"),
        ("scores.csv", "text,target\na,3.8\nb,5.0\n", "regression"),
        ("mixed.jsonl", [{"text": "a", "target": 5}, {"text": "b", "target": 3.8}], "regression"),
        ("nulls.jsonl", [{"text": "a", "labels": None}, {"text": "b", "labels": ["joy"]}], "multi_label"),
        ("lists.parquet", None, "multi_label"),
        ("joined.csv", 'text,labels\na,joy|anger\nb,joy\nc,""\n', "multi_label"),  # as the engine's CSV output writes them
    ],
)
def test_task_is_inferred_from_every_format(tmp_path, name, rows, expected):
    from stackscore.train.data import infer_task, load_labelled

    path = tmp_path / name
    field = "target" if "score" in name or "mixed" in name else ("labels" if expected == "multi_label" else "label")
    if name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": ["a", "b"], "labels": [["joy"], ["joy", "awe"]]}), path)
    elif isinstance(rows, str):
        path.write_text(rows)
    else:
        _write(path, rows)
    assert infer_task(load_labelled(path, "text", field, task=None)[1]) == expected
    if name == "joined.csv":  # split into lists; an empty cell: no label on (single-label: refused, not a class '')
        from stackscore.errors import InputError
        from stackscore.train.data import convert_labels

        raw = load_labelled(path, "text", field, task=None)[1]
        assert convert_labels(raw, "multi_label", path, field) == [["anger", "joy"], ["joy"], []]
        with pytest.raises(InputError, match="joined.csv: row 2: field 'labels' is empty"):
            convert_labels(raw, "single_label", path, field)


def test_regression_from_csv_with_large_targets(tmp_path):
    """Numeric text from CSV, targets in the thousands: the float32 meta-learner's rounding is relative to them."""
    import csv

    rows = _rows(200, 71, 0, "regression")
    for name, part in (("train", rows[:150]), ("test", rows[150:])):
        with open(tmp_path / f"{name}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "target"])
            w.writerows([(r["text"], f"{1000 * r['target']:.1f}") for r in part])
    raw = {
        "seed": 0, **FAST,
        "data": {"train": str(tmp_path / "train.csv"), "test": str(tmp_path / "test.csv"), "label_field": "target"},
        "fusion": {"method": "stack", "folds": 2},
        "models": [{"name": "bert", "source": "scratch:bert", **TINY, "learning_rate": 1e-3}, {"name": "roberta", "source": "scratch:roberta", "seed": 1, **TINY}],
    }
    report = run_fit(raw, tmp_path / "work")
    assert report["task"] == "regression" and report["engine_vs_training"]["label_agreement"] >= 0.995
    m = json.loads((tmp_path / "work/artifact/manifest.json").read_text())
    assert m["format_version"] == "2.0" and m["fusion"]["parity"]["max_abs_diff_vs_training"] <= m["fusion"]["parity"]["tolerance"]


def test_format_version_says_who_may_read_it(multi_fit, artifact):
    assert json.loads((multi_fit / "work/artifact/manifest.json").read_text())["format_version"] == "2.0"
    assert json.loads((artifact / "manifest.json").read_text())["format_version"] == "1.0"  # single-label, single text


def test_a_label_never_on_in_the_fusion_rows(tmp_path):
    """stack refuses it in one line naming it; auto skips stack; mean still works."""
    from stackscore.errors import StackscoreError

    rows = _rows(200, 81, 0, "multi_label")
    for r in rows[:100]:
        r["labels"] = [l for l in r["labels"] if l != "but"]
    train, val, test = rows[100:170], rows[:60], rows[170:]  # 'but' is never on in validation
    for name, part in (("train", train), ("validation", val), ("test", test)):
        _write(tmp_path / f"{name}.jsonl", part)
    base = {
        "seed": 0, **FAST, "labels": ["but", "long", "negative", "positive"],
        "data": {k: str(tmp_path / f"{k}.jsonl") for k in ("train", "validation", "test")} | {"label_field": "labels"},
        "models": [{"name": "bert", "source": "scratch:bert", **TINY, "epochs": 1}, {"name": "roberta", "source": "scratch:roberta", "seed": 1, **TINY, "epochs": 1}],
    }
    with pytest.raises(StackscoreError, match="label 'but' is never on there"):
        run_fit({**base, "fusion": {"method": "stack", "mode": "holdout"}}, tmp_path / "w1")
    report = run_fit({**base, "fusion": {"method": "auto", "mode": "holdout", "folds": 2}}, tmp_path / "w2")
    assert report["chosen"] in ("mean", "weighted") and "stack skipped" in report["reason"]


def test_multi_label_empty_input_and_all_error_windows(multi_fit, tmp_path):
    for content, n in (("", 0), ('{"id": 1, "text": ""}\n{"id": 2}\n', 2)):
        src = tmp_path / f"in{n}.jsonl"
        src.write_text(content)
        out = tmp_path / f"out{n}.parquet"
        r = subprocess.run([sys.executable, "-m", "stackscore", "score", str(multi_fit / "work/artifact"), str(src), "-o", str(out), "--quiet"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        import pyarrow.parquet as pq

        t = pq.read_table(out)
        assert t.num_rows == n and "labels" in t.column_names
        assert all(v is None for v in t.column("labels").to_pylist()) and all(e for e in t.column("error").to_pylist())


def test_a_regression_cross_encoder_saved_with_a_sigmoid_is_scored_as_it_predicts(tmp_path):
    """sentence-transformers' STS-B-style cross-encoders (one output, trained with BCE on
    targets in [0, 1]) record a Sigmoid in config.json: CrossEncoder.predict gives sigmoid(z).
    A regression ensemble took the raw z (1.35 where the model predicts 0.79) in fit, export and
    the engine alike, so every check agreed on the wrong scale. Other activations are refused."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from stackscore import Ensemble
    from stackscore.errors import StackscoreError
    from stackscore.train.models import ModelConfig, load_fixed

    data = {k: _write(tmp_path / f"{k}.jsonl", _rows(n, s, st, "regression")) for k, n, s, st in (("validation", 60, 52, 5000), ("test", 40, 53, 9000))}
    ckpt = make_checkpoint(tmp_path / "ce", "bert", {0: "LABEL_0"}, seed=9)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["sentence_transformers"] = {"activation_fn": "torch.nn.modules.activation.Sigmoid", "version": "5.0.0"}
    (ckpt / "config.json").write_text(json.dumps(cfg))
    raw = {"seed": 0, **FAST, "data": {k: str(v) for k, v in data.items()} | {"label_field": "target"}, "fusion": {"method": "mean", "folds": 2},
           "models": [{"name": "ce", "source": str(ckpt), "finetune": False, "max_length": 64}]}
    run_fit(raw, tmp_path / "work")
    texts = [json.loads(l)["text"] for l in data["test"].read_text().splitlines()][:12]
    model, tok = AutoModelForSequenceClassification.from_pretrained(str(ckpt)).eval(), AutoTokenizer.from_pretrained(str(ckpt))
    with torch.inference_mode():
        predicted = np.array([torch.sigmoid(model(**tok(t, truncation=True, max_length=64, return_tensors="pt")).logits)[0, 0].item() for t in texts])
    np.testing.assert_allclose(Ensemble.load(tmp_path / "work/artifact", precision="fp32").predict(texts), predicted, atol=1e-4)
    cfg["sentence_transformers"]["activation_fn"] = "torch.nn.modules.activation.Tanh"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(StackscoreError, match="applies tanh to this cross-encoder's output"):
        load_fixed(ModelConfig(name="ce", source=str(ckpt), max_length=64, finetune=False), ckpt, ["value"], "regression")
    # sentence-transformers 5+/6.x records it in config_sentence_transformers.json, not config.json
    # (read as raw z before: 3.26 off CrossEncoder.predict), and with no name there a directory it
    # marks as a CrossEncoder's gets CrossEncoder's default, Sigmoid for one output
    del cfg["sentence_transformers"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    spec = ModelConfig(name="ce", source=str(ckpt), max_length=64, finetune=False)

    def activation() -> str | None:
        return getattr(load_fixed(spec, ckpt, ["value"], "regression")[0], "output_activation", None)

    assert activation() is None  # a plain transformers checkpoint: its raw output
    # an old (pre-4.0) cross-encoder saved no name: the config says how its team predicts
    from dataclasses import replace

    from stackscore.train.config import config_from_dict

    assert getattr(load_fixed(replace(spec, activation="sigmoid"), ckpt, ["value"], "regression")[0], "output_activation", None) == "sigmoid"
    with pytest.raises(StackscoreError, match="activation applies to regression checkpoints"):
        load_fixed(replace(spec, activation="sigmoid"), ckpt, ["a", "b"], "single_label")
    for bad in ({"activation": "tanh"}, {"activation": "sigmoid", "finetune": True}):
        with pytest.raises(StackscoreError, match="activation .*applies to finetune = false"):
            config_from_dict({**raw, "data": {**raw["data"], "train": raw["data"]["validation"]}, "models": [{**raw["models"][0], **bad}]}, tmp_path)
    st = {"__version__": {"sentence_transformers": "6.2.0"}, "model_type": "CrossEncoder"}
    for recorded, expected in (("torch.nn.modules.activation.Sigmoid", "sigmoid"), (None, "sigmoid"), ("torch.nn.modules.linear.Identity", None)):
        (ckpt / "config_sentence_transformers.json").write_text(json.dumps(st | ({"activation_fn": recorded} if recorded else {})))
        assert activation() == expected, recorded
    (ckpt / "config_sentence_transformers.json").write_text(json.dumps(st | {"activation_fn": "torch.nn.modules.activation.Tanh"}))
    with pytest.raises(StackscoreError, match="applies tanh to this cross-encoder's output"):
        activation()
    try:  # and as the installed sentence-transformers itself saves one, where it is installed
        from sentence_transformers import CrossEncoder
    except ImportError:
        return
    (ckpt / "config_sentence_transformers.json").unlink()
    CrossEncoder(str(ckpt), num_labels=1, max_length=64).save_pretrained(str(tmp_path / "st"))
    assert getattr(load_fixed(spec, tmp_path / "st", ["value"], "regression")[0], "output_activation", None) == "sigmoid"


def test_a_cleanly_separated_label_gets_the_middle_of_its_best_thresholds():
    from stackscore.tasks import tune_thresholds

    rng = np.random.default_rng(0)
    y = (rng.random((200, 2)) < 0.4).astype(float)
    proba = np.where(y > 0.5, rng.uniform(0.9, 1.0, y.shape), rng.uniform(0.0, 0.12, y.shape))
    t = tune_thresholds(y, proba)
    assert ((t >= 0.45) & (t <= 0.55)).all(), t  # anywhere in 0.15-0.90 is perfect: not 0.15, next to the negatives
