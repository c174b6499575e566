"""Checkpoints a team already fine-tuned, used exactly as saved (``finetune = false``).

The worst defect this project can have is a right-looking answer that is wrong on a user's
model: a label order read by position, a head initialised at random, token types dropped. Each
test compares the engine with the checkpoint's own PyTorch predictions, by label *name*.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from checkpoints import ARCHS, make_checkpoint  # noqa: E402

FAST = {"parity_rows": 24, "int8": False, "static_int8": False, "fp16": False}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from stackscore.train.corpus import generate, write_jsonl

    d = tmp_path_factory.mktemp("byo-data")
    write_jsonl(d / "train.jsonl", generate(160, seed=21))
    write_jsonl(d / "validation.jsonl", generate(60, seed=22, start=2000))
    write_jsonl(d / "test.jsonl", generate(40, seed=23, start=3000))
    return d


def fixed_config(data: Path, models: list[dict], method: str = "mean", **data_keys) -> dict:
    return {
        "labels": ["negative", "positive"], "seed": 0, **FAST,
        "data": {"validation": str(data / "validation.jsonl"), "test": str(data / "test.jsonl"), **data_keys},
        "fusion": {"method": method, "folds": 2},
        "models": [{"finetune": False, "max_length": 64, **m} for m in models],
    }


def run_fit(raw: dict, work: Path) -> dict:
    from stackscore.train.config import config_from_dict
    from stackscore.train.fit import fit

    return fit(config_from_dict(raw, work.parent), work, log=lambda *_: None)


def torch_labels(path: Path, texts: list[str], pairs: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """What the checkpoint itself predicts, as label names (its own id2label)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    tok = AutoTokenizer.from_pretrained(str(path))
    enc = tok(texts, pairs, padding=True, truncation=True, max_length=64, return_tensors="pt") if pairs else tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**enc).logits.numpy()
    return [model.config.id2label[int(i)] for i in logits.argmax(1)], logits


def test_reversed_id2label_is_mapped_by_name_not_position(tmp_path, data):
    """id2label {0: positive, 1: negative} on negative/positive data: every row keeps its label."""
    from stackscore import Ensemble

    ckpt = make_checkpoint(tmp_path / "rev", "bert", {0: "positive", 1: "negative"}, seed=3)
    report = run_fit(fixed_config(data, [{"name": "rev", "source": str(ckpt)}]), tmp_path / "work")
    manifest = json.loads((tmp_path / "work/artifact/manifest.json").read_text())
    assert manifest["models"][0]["label_map"] == {"positive": "positive", "negative": "negative"}
    texts = [json.loads(l)["text"] for l in (data / "test.jsonl").read_text().splitlines()]
    own, logits = torch_labels(ckpt, texts)
    ens = Ensemble.load(tmp_path / "work/artifact")
    proba, outs = ens.predict_proba(texts, return_model_outputs=True)
    assert ens.predict(texts) == own  # 100 % agreement with the checkpoint's own predictions
    assert np.allclose(outs["rev"], logits[:, [1, 0]], atol=1e-4)  # columns in the artifact's order
    assert report["fusion_fitted_on"]["models"]["rev"] == "checkpoint as saved (never trained here)"
    assert "validation" in report["fusion_fitted_on"]["rows"]


def test_case_insensitive_names_and_label_map(tmp_path, data):
    upper = make_checkpoint(tmp_path / "upper", "bert", {0: "NEGATIVE", 1: "POSITIVE"})
    generic = make_checkpoint(tmp_path / "generic", "bert", {0: "LABEL_0", 1: "LABEL_1"}, seed=1)
    raw = fixed_config(data, [
        {"name": "upper", "source": str(upper)},
        {"name": "generic", "source": str(generic), "label_map": {"LABEL_0": "positive", "LABEL_1": "negative"}},
    ], method="stack")
    run_fit(raw, tmp_path / "work")
    models = {m["name"]: m for m in json.loads((tmp_path / "work/artifact/manifest.json").read_text())["models"]}
    assert models["upper"]["label_map"] == {"NEGATIVE": "negative", "POSITIVE": "positive"}
    assert models["generic"]["label_map"] == {"LABEL_0": "positive", "LABEL_1": "negative"}
    from stackscore import Ensemble

    texts = [json.loads(l)["text"] for l in (data / "test.jsonl").read_text().splitlines()]
    _, logits = torch_labels(generic, texts)
    _, outs = Ensemble.load(tmp_path / "work/artifact").predict_proba(texts, return_model_outputs=True)
    assert np.allclose(outs["generic"], logits[:, [1, 0]], atol=1e-4)


@pytest.mark.parametrize(
    "id2label, extra, message",
    [
        ({0: "LABEL_0", 1: "LABEL_1"}, {}, "labels are generic (LABEL_0, LABEL_1)"),
        ({0: "neg", 1: "pos"}, {}, "do not match the data's"),
        ({0: "negative", 1: "neutral", 2: "positive"}, {}, "the checkpoint has 3 labels"),
        ({0: "LABEL_0", 1: "LABEL_1"}, {"label_map": {"LABEL_0": "negative", "LABEL_9": "positive"}}, "unknown checkpoint labels ['LABEL_9']"),
    ],
)
def test_label_mismatches_are_one_line_errors_before_any_work(tmp_path, data, id2label, extra, message):
    from stackscore.errors import StackscoreError

    ckpt = make_checkpoint(tmp_path / "c", "bert", id2label)
    with pytest.raises(StackscoreError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        run_fit(fixed_config(data, [{"name": "c", "source": str(ckpt), **extra}]), tmp_path / "work")
    assert not (tmp_path / "work").exists()  # nothing was trained, written or exported


def test_a_head_transformers_would_reinitialise_is_refused_through_the_cli(tmp_path, data):
    """A checkpoint saved without its classifier (a base model + id2label): the head would be noise."""
    import torch
    from transformers import BertConfig, BertModel

    ckpt = make_checkpoint(tmp_path / "c", "bert")
    config = BertConfig.from_pretrained(str(ckpt))
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(ckpt))  # overwrites the weights: no classifier.* tensors
    cfg = tmp_path / "fit.toml"
    cfg.write_text(
        f'labels = ["negative", "positive"]\nint8 = false\nstatic_int8 = false\nfp16 = false\n'
        f'[data]\nvalidation = "{data / "validation.jsonl"}"\ntest = "{data / "test.jsonl"}"\n'
        f'[fusion]\nmethod = "mean"\n[[models]]\nname = "c"\nsource = "{ckpt}"\nfinetune = false\n'
    )
    r = subprocess.run([sys.executable, "-m", "stackscore", "fit", str(cfg), "--out", str(tmp_path / "w")], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "classifier" in lines[0] and "at random" in lines[0]
    assert "Traceback" not in r.stderr


def test_fixed_models_need_validation_rows(tmp_path, data):
    from stackscore.errors import StackscoreError
    from stackscore.train.config import config_from_dict

    raw = fixed_config(data, [{"name": "c", "source": str(tmp_path)}])
    del raw["data"]["validation"]
    with pytest.raises(StackscoreError, match="'validation' is required with finetune = false"):
        config_from_dict(raw, tmp_path)


@pytest.mark.parametrize("arch", [a for a in ARCHS if a not in ("longformer", "funnel")])
def test_architecture_exports_with_parity_and_scores_like_pytorch(tmp_path, data, arch):
    """Each architecture, used as saved: ONNX parity at export, and the engine's labels = PyTorch's."""
    from stackscore import Ensemble

    ckpt = make_checkpoint(tmp_path / arch, arch, seed=5)
    run_fit(fixed_config(data, [{"name": "m", "source": str(ckpt)}]), tmp_path / "work")
    manifest = json.loads((tmp_path / "work/artifact/manifest.json").read_text())
    spec = manifest["models"][0]
    assert spec["architecture"] == arch and spec["parity"]["max_abs_diff"] <= 1e-4
    assert spec["parity"]["tokenizer_ids"]["mismatched_rows"] == 0
    texts = [json.loads(l)["text"] for l in (data / "test.jsonl").read_text().splitlines()]
    own, logits = torch_labels(ckpt, texts)
    _, outs = Ensemble.load(tmp_path / "work/artifact").predict_proba(texts, return_model_outputs=True)
    assert np.abs(outs["m"] - logits).max() < 1e-4


@pytest.mark.parametrize("arch", ["longformer", "funnel"])
def test_architectures_that_cannot_export_are_refused_up_front(tmp_path, data, arch):
    from stackscore.errors import StackscoreError

    ckpt = make_checkpoint(tmp_path / arch, arch)
    with pytest.raises(StackscoreError, match=f"architecture '{arch}' is not supported"):
        run_fit(fixed_config(data, [{"name": "m", "source": str(ckpt)}]), tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_a_failed_export_leaves_no_partial_artifact(tmp_path, data, monkeypatch):
    from stackscore.errors import StackscoreError
    from stackscore.export import onnx_graph

    ckpt = make_checkpoint(tmp_path / "c", "bert")

    def broken(*args, **kwargs):
        raise RuntimeError("the tracer gave up")

    monkeypatch.setattr(onnx_graph, "torch_to_onnx", broken)
    with pytest.raises(StackscoreError, match=r"model 'c' \(bert\): ONNX export failed: RuntimeError: the tracer gave up"):
        run_fit(fixed_config(data, [{"name": "c", "source": str(ckpt)}]), tmp_path / "work")
    assert not (tmp_path / "work/artifact").exists() and not (tmp_path / "work/artifact.tmp").exists()


def test_mixed_ensemble_fixed_checkpoint_tfidf_and_a_model_fine_tuned_here(tmp_path, data):
    ckpt = make_checkpoint(tmp_path / "c", "bert", {0: "positive", 1: "negative"})
    raw = fixed_config(data, [{"name": "fixed", "source": str(ckpt)}], method="auto", train=str(data / "train.jsonl"))
    raw["models"] += [
        {"name": "tfidf", "kind": "tfidf"},
        {"name": "here", "source": "scratch:bert", "max_length": 64, "epochs": 1, "hidden_size": 32, "num_layers": 1,
         "num_heads": 2, "intermediate_size": 64, "vocab_size": 400},
    ]
    report = run_fit(raw, tmp_path / "work")
    how = report["fusion_fitted_on"]["models"]
    assert how == {"fixed": "checkpoint as saved (never trained here)", "tfidf": "out-of-fold (2 folds)", "here": "out-of-fold (2 folds)"}
    assert report["fusion_fitted_on"]["n"] == 60  # the validation rows, and only those
    assert report["engine_vs_training"]["max_abs_diff"] <= 1e-3


def test_engine_check_is_enforced(tmp_path, artifact):
    """fit fails when the exported ensemble does not reproduce the training side."""
    from stackscore.errors import StackscoreError
    from stackscore.manifest import load_manifest
    from stackscore.train.fit import engine_check

    texts = ["a gripping film", "not good at all", "dull and far too long", "a wonderful cast"]
    from stackscore import Ensemble

    proba = Ensemble.load(artifact).predict_proba(texts)
    m = load_manifest(artifact)
    engine_check(artifact, m, texts, proba, "stack")  # the same numbers: passes
    with pytest.raises(StackscoreError, match="does not reproduce the training side"):
        engine_check(artifact, m, texts, proba[:, ::-1], "stack")
