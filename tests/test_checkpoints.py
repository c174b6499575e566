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
from checkpoints import ARCHS, REFUSED, make_checkpoint  # noqa: E402

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


def torch_labels(path: Path, texts: list[str], pairs: list[str] | None = None, max_length: int = 64) -> tuple[list[str], np.ndarray]:
    """What the checkpoint itself predicts, as label names (its own id2label)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    tok = AutoTokenizer.from_pretrained(str(path))
    enc = tok(texts, pairs, padding=True, truncation=True, max_length=max_length, return_tensors="pt") if pairs else tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
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
        # transformers names output k id2label[k]: ranking keys {1, 2} would swap what it means
        ({1: "negative", 2: "positive"}, {}, "id2label keys are [1, 2], not 0..1"),
        ({0: "positive", 1: "positive"}, {}, "id2label names 'positive' more than once"),
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
        f'[fusion]\nmethod = "mean"\n[[models]]\nname = "c"\nsource = "{ckpt}"\nfinetune = false\nmax_length = 64\n'
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


@pytest.mark.parametrize("arch", [a for a in ARCHS if a not in REFUSED])
def test_architecture_exports_with_parity_and_scores_like_pytorch(tmp_path, data, arch):
    """Each architecture, used as saved: ONNX parity at export, and the engine's labels = PyTorch's."""
    from stackscore import Ensemble

    ckpt = make_checkpoint(tmp_path / arch, arch, seed=5)
    run_fit(fixed_config(data, [{"name": "m", "source": str(ckpt)}]), tmp_path / "work")
    manifest = json.loads((tmp_path / "work/artifact/manifest.json").read_text())
    spec = manifest["models"][0]
    assert spec["architecture"] == arch and spec["parity"]["max_abs_diff"] <= spec["parity"]["tolerance"] <= 1e-4 * 50
    assert spec["parity"]["tokenizer_ids"]["mismatched_rows"] == 0
    texts = [json.loads(l)["text"] for l in (data / "test.jsonl").read_text().splitlines()]
    own, logits = torch_labels(ckpt, texts)
    assert logits.std(axis=0).min() > 1e-2  # outputs that depend on the input: the comparison means something
    _, outs = Ensemble.load(tmp_path / "work/artifact").predict_proba(texts, return_model_outputs=True)
    assert np.abs(outs["m"] - logits).max() < 1e-4 * max(1.0, float(np.abs(logits).max()))


@pytest.mark.parametrize("arch", REFUSED)
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


def test_max_length_beyond_what_the_checkpoint_or_exporter_handles_is_refused(tmp_path, data):
    from stackscore.errors import StackscoreError

    bird = make_checkpoint(tmp_path / "bird", "big_bird", block_size=4)  # 1 random block: sparse above 28 tokens
    with pytest.raises(StackscoreError, match="BigBird switches to block-sparse attention above 28 tokens"):
        run_fit(fixed_config(data, [{"name": "b", "source": str(bird), "max_length": 64}]), tmp_path / "w1")
    bert = make_checkpoint(tmp_path / "bert", "bert")  # 130 position embeddings
    with pytest.raises(StackscoreError, match="max_length 512 is more than its 130 position embeddings"):
        run_fit(fixed_config(data, [{"name": "c", "source": str(bert), "max_length": 512}]), tmp_path / "w2")


@pytest.mark.parametrize("model_type", ["data2vec-text", "xlm-roberta-xl", "mpnet", "roberta-prelayernorm", "xmod", "roberta"])
def test_roberta_style_positions_leave_fewer_rows_than_the_table_has(model_type):
    """Models that copied RoBERTa's positions (counted from pad_token_id + 1) can take 128 tokens
    with 130 position embeddings: data2vec-text and XLM-R-XL at 130 failed fit with a traceback
    ("index 130 is out of bounds"), MPNet at export."""
    from transformers import AutoConfig

    from stackscore.errors import StackscoreError
    from stackscore.train.models import check_max_length

    config = AutoConfig.for_model(model_type, max_position_embeddings=130, pad_token_id=1)
    check_max_length("m", config, 128)
    with pytest.raises(StackscoreError, match="max_length 130 is more than its 128 position embeddings"):
        check_max_length("m", config, 130)


def test_big_bird_below_its_sparse_threshold_matches_pytorch(tmp_path, data):
    from stackscore import Ensemble

    ckpt = make_checkpoint(tmp_path / "bird", "big_bird", block_size=16, num_random_blocks=1)  # sparse above 112 tokens
    run_fit(fixed_config(data, [{"name": "b", "source": str(ckpt), "max_length": 112}]), tmp_path / "work")
    long_texts = [" ".join(json.loads(l)["text"] for l in (data / "test.jsonl").read_text().splitlines()[i : i + 6]) for i in range(0, 30, 6)]
    _, logits = torch_labels(ckpt, long_texts, max_length=112)
    _, outs = Ensemble.load(tmp_path / "work/artifact").predict_proba(long_texts, return_model_outputs=True)
    assert np.abs(outs["b"] - logits).max() < 1e-4 * max(1.0, float(np.abs(logits).max()))


def test_a_checkpoint_changed_after_fit_is_refused_at_export(tmp_path, data):
    from stackscore.errors import StackscoreError
    from stackscore.export import export_artifact

    ckpt = make_checkpoint(tmp_path / "c", "bert")
    run_fit(fixed_config(data, [{"name": "c", "source": str(ckpt)}]), tmp_path / "work")
    before = (tmp_path / "work/artifact/manifest.json").read_bytes()
    config = json.loads((ckpt / "config.json").read_text())
    config["id2label"] = {"0": "positive", "1": "negative"}  # re-saved with another label order
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(StackscoreError, match="changed since it was fitted"):
        export_artifact(tmp_path / "work", log=lambda *_: None)
    assert (tmp_path / "work/artifact/manifest.json").read_bytes() == before  # the good artifact is kept


def test_a_failed_engine_check_leaves_no_artifact_and_keeps_the_old_one(tmp_path, data, monkeypatch):
    from stackscore.errors import StackscoreError
    from stackscore.train import fit as fit_mod

    ckpt = make_checkpoint(tmp_path / "c", "bert")
    raw = fixed_config(data, [{"name": "c", "source": str(ckpt)}])
    run_fit(raw, tmp_path / "work")
    before = (tmp_path / "work/artifact/manifest.json").read_bytes()
    monkeypatch.setattr(fit_mod, "ENGINE_TOLERANCE", -1.0)  # nothing can pass: the check must stop the fit
    with pytest.raises(StackscoreError, match="does not reproduce the training side"):
        run_fit(raw, tmp_path / "work")
    assert (tmp_path / "work/artifact/manifest.json").read_bytes() == before
    assert not (tmp_path / "work/artifact.tmp").exists()


def test_test_rows_come_from_validation_when_checkpoints_are_fixed(tmp_path, data):
    """Fixed checkpoints likely trained on the train file: without a test file, test rows are cut from validation."""
    ckpt = make_checkpoint(tmp_path / "c", "bert")
    raw = fixed_config(data, [{"name": "c", "source": str(ckpt)}], train=str(data / "train.jsonl"))
    del raw["data"]["test"]
    report = run_fit(raw, tmp_path / "work")
    assert report["train_rows"] == 160 and report["validation_rows"] + report["test_rows"] == 60


def test_finetune_must_be_a_boolean(tmp_path, data):
    from stackscore.errors import StackscoreError
    from stackscore.train.config import config_from_dict

    raw = fixed_config(data, [{"name": "c", "source": str(tmp_path), "finetune": "false"}])
    with pytest.raises(StackscoreError, match="finetune must be true or false"):
        config_from_dict(raw, tmp_path)
    for key, bad in (("calibration_rows", 0), ("parity_rows", 0), ("parity_rows", True)):  # 0: static int8 calibrated on the gate rows
        raw = {**fixed_config(data, [{"name": "c", "source": str(tmp_path)}]), key: bad}
        with pytest.raises(StackscoreError, match=f"{key} must be a positive whole number"):
            config_from_dict(raw, tmp_path)
    for key, bad in (("plain_attention_min_speedup", "1.1"), ("static_int8_min_speedup", -1), ("plain_attention_min_speedup", True)):  # export compares timings with them
        raw = {**fixed_config(data, [{"name": "c", "source": str(tmp_path)}]), key: bad}
        with pytest.raises(StackscoreError, match=f"{key} must be a number >= 0"):
            config_from_dict(raw, tmp_path)


@pytest.mark.parametrize("mode, validation", [("kfold", False), ("holdout", False), ("kfold", True), ("holdout", True)])
def test_fusion_rows_are_never_rows_a_model_trained_on(tmp_path, mode, validation):
    """A fake trainer records its rows: every fusion-row prediction comes from a model that never saw that row."""
    from stackscore.train.config import config_from_dict
    from stackscore.train.fit import Splits, fusion_rows
    from stackscore.train.oof import out_of_fold

    n_train, n_val = 40, (20 if validation else 0)
    y = np.asarray([i % 2 for i in range(n_train + n_val)])
    s = Splits(["a", "b"], [f"t{i}" for i in range(n_train + n_val)], y, n_train, [], np.zeros(0))
    cfg = config_from_dict({"data": {"train": "x"}, "fusion": {"mode": mode, "folds": 4}, "models": [{"name": "m"}]}, tmp_path)
    rows = fusion_rows(cfg, s)
    if validation:
        assert rows.fusion.tolist() == list(range(n_train, n_train + n_val))
    seen: list[set] = []

    def train(r):
        seen.append(set(r.tolist()))
        return len(seen) - 1

    predicted_by: dict[int, int] = {}

    def predict(model, r):
        for i in r:
            predicted_by[int(i)] = model
        return np.zeros((len(r), 2))

    if rows.kfold:
        out_of_fold(train, predict, s.y_pool, 4)
    else:
        predict(train(rows.fit), rows.fusion)
    for i in rows.fusion:
        assert int(i) not in seen[predicted_by[int(i)]]


def test_a_tokenizer_that_truncates_on_the_left_is_followed(tmp_path, data):
    """A checkpoint whose tokenizer keeps the end of long texts (``truncation_side: left``): the
    manifest records it (format 3.x, which earlier readers refuse: they cut on the right), and
    the engine scores long rows as PyTorch does, on their last tokens."""
    from stackscore import Ensemble

    ckpt = make_checkpoint(tmp_path / "left", "bert", seed=7)
    cfg = json.loads((ckpt / "tokenizer_config.json").read_text())
    (ckpt / "tokenizer_config.json").write_text(json.dumps({**cfg, "truncation_side": "left"}))
    run_fit(fixed_config(data, [{"name": "m", "source": str(ckpt), "max_length": 16}]), tmp_path / "work")
    manifest = json.loads((tmp_path / "work/artifact/manifest.json").read_text())
    assert manifest["models"][0]["truncation_side"] == "left" and manifest["format_version"].startswith("3.")
    short = [json.loads(l)["text"] for l in (data / "test.jsonl").read_text().splitlines()]
    texts = [f"{a} {b} {c}" for a, b, c in zip(short, short[1:], short[2:])]  # well past 16 tokens
    _, logits = torch_labels(ckpt, texts, max_length=16)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ckpt))
    assert tok.truncation_side == "left"
    cut_right = tok(texts, truncation=True, max_length=16)["input_ids"]
    tok.truncation_side = "right"
    assert cut_right != tok(texts, truncation=True, max_length=16)["input_ids"]  # the two sides differ on these rows
    _, outs = Ensemble.load(tmp_path / "work/artifact").predict_proba(texts, return_model_outputs=True)
    assert np.abs(outs["m"] - logits).max() < 1e-4 * max(1.0, float(np.abs(logits).max()))
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "stackscore", "inspect", str(tmp_path / "work/artifact")], capture_output=True, text=True)
    assert res.returncode == 0 and "max_length 16 (cut on the left: keeps the end)" in res.stdout, res.stderr


def test_the_tokenizer_json_fallback_keeps_the_truncation_side(tmp_path, monkeypatch):
    """Where transformers cannot build a checkpoint's tokenizer, its tokenizer.json is wrapped
    directly: the config's truncation_side still comes with it (else a left-truncating
    checkpoint would be recorded as cutting on the right, and its parity check would agree)."""
    import transformers

    from stackscore.hf import load_tokenizer
    from stackscore.train.models import train_wordpiece

    train_wordpiece(["a fine film", "dull"] * 10, 60).save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "truncation_side": "left", "cls_token": "[CLS]"}))

    def refuse(*a, **k):
        raise ValueError("cannot build this tokenizer")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    tok = load_tokenizer(tmp_path)
    assert isinstance(tok, transformers.PreTrainedTokenizerFast) and tok.truncation_side == "left"
    # PreTrainedTokenizerFast's default gives no token types: a BERT pair model (type_vocab_size
    # 2) was fitted and exported with every type 0. From the config, or tokenizer_config's list.
    assert "token_type_ids" not in tok("a", "b")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "type_vocab_size": 2}))
    assert load_tokenizer(tmp_path)("a", "dull")["token_type_ids"] == [0, 0, 0, 1, 1]
    # do_lower_case wins over tokenizer.json's BertNormalizer, as in transformers' fast BERT tokenizers
    assert load_tokenizer(tmp_path).tokenize("Dull") == ["dull"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": False, "cls_token": "[CLS]"}))
    assert load_tokenizer(tmp_path).tokenize("Dull") == ["[UNK]"]


def _retune(ckpt: Path, **config) -> None:
    """Change a saved checkpoint's config.json keys, as a team's saved files can differ."""
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**cfg, **config}))


def _without_pad_token(ckpt: Path) -> None:
    """The saved tokenizer without a pad token, as GPT-2 and Llama tokenizers are published."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (ckpt / name).is_file():
            cfg = json.loads((ckpt / name).read_text())
            cfg.pop("pad_token", None)
            (ckpt / name).write_text(json.dumps(cfg))


def test_a_decoder_without_a_pad_id_in_its_config_is_refused_up_front(tmp_path, data):
    """GPT-2-style classifiers find each row's last token by config.pad_token_id; without it
    transformers cannot batch them and a graph would read padding: one line, what to set."""
    from stackscore.errors import StackscoreError

    ckpt = make_checkpoint(tmp_path / "g", "gpt2")
    _retune(ckpt, pad_token_id=None)
    with pytest.raises(StackscoreError, match=r"no pad_token_id, and gpt2 finds each row's last token by it.*set pad_token_id in config.json to the tokenizer's pad token id, 1"):
        run_fit(fixed_config(data, [{"name": "m", "source": str(ckpt)}]), tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_a_model_whose_output_depends_on_padding_fails_export(tmp_path, data):
    """A decoder whose config pads with another id than its tokenizer: PyTorch and the graph agree
    on the same padded batches, yet every padded row reads padding. Export compares the graph's
    padded batches with each text alone, so it is refused, naming both ids."""
    from stackscore.errors import ParityError

    ckpt = make_checkpoint(tmp_path / "g", "gpt2", seed=3)
    _retune(ckpt, pad_token_id=2)  # the tokenizer pads with <pad> = 1; 2 is </s>
    with pytest.raises(ParityError, match=r"outputs change when a row is padded.*tokenizer pads with id 1 but its config.pad_token_id is 2"):
        run_fit(fixed_config(data, [{"name": "m", "source": str(ckpt)}]), tmp_path / "work")
    assert not (tmp_path / "work/artifact").exists()


def test_bart_scores_each_row_by_its_own_last_eos(tmp_path, data):
    """BART's head reads the last <eos>; transformers refuses a batch whose rows hold different
    numbers of them. The graph gathers each row's own last <eos>: a text with a literal </s>
    scores exactly as PyTorch scores it alone, and so does its neighbour in the batch."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from stackscore import Ensemble

    ckpt = make_checkpoint(tmp_path / "b", "bart", seed=4)
    run_fit(fixed_config(data, [{"name": "m", "source": str(ckpt)}]), tmp_path / "work")
    parity = json.loads((tmp_path / "work/artifact/manifest.json").read_text())["models"][0]["parity"]
    assert parity["max_abs_diff_unpadded"] <= 10 * parity["tolerance"]
    texts = ["a fine and moving film", "dull </s> and far too long for its story", "fine"]
    model = AutoModelForSequenceClassification.from_pretrained(str(ckpt)).eval()
    tok = AutoTokenizer.from_pretrained(str(ckpt))
    assert [tok(t)["input_ids"].count(tok.eos_token_id) for t in texts] == [1, 2, 1]
    with torch.inference_mode():
        alone = np.stack([model(**tok(t, return_tensors="pt")).logits[0].numpy() for t in texts])
        with pytest.raises(ValueError, match="same number of <eos>"):
            model(**tok(texts, padding=True, return_tensors="pt"))
    _, outs = Ensemble.load(tmp_path / "work/artifact").predict_proba(texts, return_model_outputs=True)
    assert np.abs(outs["m"] - alone).max() < 1e-4 * max(1.0, float(np.abs(alone).max()))
    from stackscore.train.finetune import predict_logits  # fit's own predictions of fusion rows, too

    assert np.abs(predict_logits(model, tok, texts, 64) - alone).max() < 1e-4 * max(1.0, float(np.abs(alone).max()))


def test_fine_tuning_a_decoder_published_without_a_pad_token(tmp_path, data):
    """A base GPT-2 has no pad token in its tokenizer or config: fine-tuning pads with its
    end-of-text token (transformers' own advice), saves both, and the artifact scores each row
    as the fine-tuned model scores it alone."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from stackscore import Ensemble

    ckpt = make_checkpoint(tmp_path / "g", "gpt2", seed=6)
    _without_pad_token(ckpt)
    _retune(ckpt, pad_token_id=None)
    assert AutoTokenizer.from_pretrained(str(ckpt)).pad_token is None
    raw = {
        "labels": ["negative", "positive"], "seed": 0, **FAST,
        "data": {"train": str(data / "train.jsonl"), "test": str(data / "test.jsonl")}, "fusion": {"method": "mean", "folds": 2},
        "models": [{"name": "g", "source": str(ckpt), "max_length": 64, "epochs": 1}],
    }
    run_fit(raw, tmp_path / "work")
    saved = tmp_path / "work/models/g"
    tok = AutoTokenizer.from_pretrained(str(saved))
    model = AutoModelForSequenceClassification.from_pretrained(str(saved)).eval()
    assert tok.pad_token == tok.eos_token and model.config.pad_token_id == tok.eos_token_id
    texts = [json.loads(l)["text"] for l in (data / "test.jsonl").read_text().splitlines()][:12]
    with torch.inference_mode():
        alone = np.stack([model(**tok(t, return_tensors="pt")).logits[0].numpy() for t in texts])
    _, outs = Ensemble.load(tmp_path / "work/artifact").predict_proba(texts, return_model_outputs=True)
    assert np.abs(outs["g"] - alone).max() < 1e-4 * max(1.0, float(np.abs(alone).max()))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_checkpoint_saved_in_half_precision_exports_in_fp32(tmp_path, data, dtype):
    """transformers 5 keeps a saved fp16/bf16 dtype: the "fp32" graph was traced in half precision
    (parity failed, or ONNX Runtime had no bf16 Add). Fit and export load fp32: the engine gives
    the fp32 forward of the saved weights."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from stackscore import Ensemble

    ckpt = make_checkpoint(tmp_path / dtype, "bert", seed=2)
    AutoModelForSequenceClassification.from_pretrained(str(ckpt)).to(getattr(torch, dtype)).save_pretrained(str(ckpt))
    assert json.loads((ckpt / "config.json").read_text())["dtype"] == dtype
    run_fit(fixed_config(data, [{"name": "m", "source": str(ckpt)}]), tmp_path / "work")
    texts = [json.loads(l)["text"] for l in (data / "test.jsonl").read_text().splitlines()]
    from transformers import AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(ckpt), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(ckpt))
    with torch.inference_mode():
        ref = model(**tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")).logits.numpy()
    _, outs = Ensemble.load(tmp_path / "work/artifact").predict_proba(texts, return_model_outputs=True)
    assert np.abs(outs["m"] - ref).max() < 1e-4 * max(1.0, float(np.abs(ref).max()))


def test_ids_the_model_cannot_embed_are_refused_before_any_work(tmp_path, data):
    """A token added to the tokenizer without resizing the embeddings, and a pair tokenizer's
    type 1 on a model with one token type: transformers crashes on the rows that use them (an
    IndexError, reported as a bug). One line each, nothing written. Single texts on the
    one-type model are fine."""
    from transformers import AutoTokenizer

    from stackscore.errors import StackscoreError

    added = make_checkpoint(tmp_path / "added", "bert", seed=1)
    tok = AutoTokenizer.from_pretrained(str(added))
    tok.add_tokens(["brandnewtoken"])
    tok.save_pretrained(str(added))
    with pytest.raises(StackscoreError, match=r"its tokenizer gives ids up to \d+, its embedding has \d+ rows"):
        run_fit(fixed_config(data, [{"name": "m", "source": str(added)}]), tmp_path / "w1")
    assert not (tmp_path / "w1").exists()
    one_type = make_checkpoint(tmp_path / "one", "bert", seed=1, type_vocab_size=1)
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    for split in ("validation", "test"):
        rows = [json.loads(l) for l in (data / f"{split}.jsonl").read_text().splitlines()]
        (pairs / f"{split}.jsonl").write_text("".join(json.dumps({**r, "other": r["text"][::-1]}) + "\n" for r in rows))
    with pytest.raises(StackscoreError, match="gives a pair's second text token type 1, the model has type_vocab_size 1"):
        run_fit(fixed_config(pairs, [{"name": "m", "source": str(one_type)}], text_pair_field="other"), tmp_path / "w2")
    assert not (tmp_path / "w2").exists()
    run_fit(fixed_config(data, [{"name": "m", "source": str(one_type)}]), tmp_path / "w3")  # single texts: type 0 only
    assert (tmp_path / "w3/artifact/manifest.json").is_file()


def test_a_tokenizer_that_splits_typed_special_tokens_is_followed(tmp_path, data, monkeypatch):
    """``split_special_tokens``: transformers reads a "[SEP]" typed in a text as word pieces; the
    setting is not kept in tokenizer.json, so the engine read it as the separator (a flipped
    label on such rows, while parity passed on rows without one). The manifest carries it
    (format 4.x, refused by earlier readers) and export's token-id check types every special
    token into one text, so a tokenizer that lost the setting fails export."""
    from stackscore import Ensemble
    from stackscore.engine import tokenize
    from stackscore.errors import ParityError

    ckpt = make_checkpoint(tmp_path / "split", "distilbert", seed=4)
    cfg = json.loads((ckpt / "tokenizer_config.json").read_text())
    (ckpt / "tokenizer_config.json").write_text(json.dumps({**cfg, "split_special_tokens": True}))
    run_fit(fixed_config(data, [{"name": "m", "source": str(ckpt)}]), tmp_path / "work")
    manifest = json.loads((tmp_path / "work/artifact/manifest.json").read_text())
    assert manifest["models"][0]["split_special_tokens"] is True and manifest["format_version"].startswith("4.")
    texts = ["a fine [SEP] film [CLS] overall", "dull [MASK] and slow", "a fine film overall"]
    _, logits = torch_labels(ckpt, texts)
    _, outs = Ensemble.load(tmp_path / "work/artifact").predict_proba(texts, return_model_outputs=True)
    assert np.abs(outs["m"] - logits).max() < 1e-4 * max(1.0, float(np.abs(logits).max()))
    real = tokenize.TextTokenizer.__init__

    def forgets(self, *a, **k):  # an engine that drops the setting, as tokenizer.json does
        real(self, *a, **{**k, "split_special_tokens": False})

    monkeypatch.setattr(tokenize.TextTokenizer, "__init__", forgets)
    with pytest.raises(ParityError, match="other ids than transformers"):
        run_fit(fixed_config(data, [{"name": "m", "source": str(ckpt)}]), tmp_path / "again")


def test_a_one_output_sigmoid_head_scores_two_labels(tmp_path, data):
    """Cross-encoders and BCE-trained binary classifiers have one output z, read as sigmoid(z):
    the user names which label that is (`positive_label`; one output's id2label names nothing),
    the graph puts a 0 beside z, and softmax([0, z]) gives exactly [1 - sigmoid(z), sigmoid(z)].
    Without positive_label, or with a head trained as a regression, one line."""
    from stackscore import Ensemble
    from stackscore.errors import StackscoreError

    ckpt = make_checkpoint(tmp_path / "ce", "bert", {0: "LABEL_0"}, seed=9)
    with pytest.raises(StackscoreError, match=r'one output \(a sigmoid head.*set positive_label = "positive"'):
        run_fit(fixed_config(data, [{"name": "m", "source": str(ckpt)}]), tmp_path / "w0")
    texts = [json.loads(l)["text"] for l in (data / "test.jsonl").read_text().splitlines()]
    _, z = torch_labels(ckpt, texts)
    sigmoid = 1 / (1 + np.exp(-z[:, 0]))
    for positive, column in (("positive", 1), ("negative", 0)):
        work = tmp_path / f"w-{positive}"
        run_fit(fixed_config(data, [{"name": "m", "source": str(ckpt), "positive_label": positive}]), work)
        proba = Ensemble.load(work / "artifact").predict_proba(texts)
        np.testing.assert_allclose(proba[:, column], sigmoid, atol=1e-5)
        np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    res = subprocess.run([sys.executable, "-m", "stackscore", "inspect", str(work / "artifact")], capture_output=True, text=True)
    assert res.returncode == 0 and "one output (sigmoid head): its sigmoid is the probability of 'negative'" in res.stdout, res.stderr
    _retune(ckpt, problem_type="regression")
    with pytest.raises(StackscoreError, match="one output trained as 'regression', not a sigmoid"):
        run_fit(fixed_config(data, [{"name": "m", "source": str(ckpt), "positive_label": "positive"}]), tmp_path / "w1")


def test_a_decoder_whose_tokenizer_has_no_pad_token_pads_with_the_configs(tmp_path, data):
    """GPT-2 classifiers are often saved with config.pad_token_id set and a tokenizer without a
    pad token: fit failed as "a bug" (transformers cannot pad), export would have padded with 0.
    The config's pad id is the pad token: the engine equals each text alone."""
    from transformers import AutoTokenizer

    from stackscore import Ensemble

    ckpt = make_checkpoint(tmp_path / "g", "gpt2", seed=8)
    _without_pad_token(ckpt)
    _retune(ckpt, pad_token_id=2)  # </s>, as `model.config.pad_token_id = tok.eos_token_id` saves it
    assert AutoTokenizer.from_pretrained(str(ckpt)).pad_token is None
    run_fit(fixed_config(data, [{"name": "m", "source": str(ckpt)}]), tmp_path / "work")
    manifest = json.loads((tmp_path / "work/artifact/manifest.json").read_text())
    assert manifest["models"][0]["pad_id"] == 2
    texts = [json.loads(l)["text"] for l in (data / "test.jsonl").read_text().splitlines()][:16]
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(ckpt)).eval()
    tok = AutoTokenizer.from_pretrained(str(ckpt))
    with torch.inference_mode():
        alone = np.stack([model(**tok(t, truncation=True, max_length=64, return_tensors="pt")).logits[0].numpy() for t in texts])
    _, outs = Ensemble.load(tmp_path / "work/artifact").predict_proba(texts, return_model_outputs=True)
    assert np.abs(outs["m"] - alone).max() < 1e-4 * max(1.0, float(np.abs(alone).max()))


def test_fine_tuning_bart_on_rows_with_a_literal_eos(tmp_path, data):
    """Fine-tuning a BART-family model: transformers' head refuses a batch whose rows hold
    different numbers of </s> (a text with a literal one); training reads each row's own last
    </s> as scoring does, with transformers' loss for the head, and equals it where it runs."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from stackscore.hf import eos_pooled_logits, hf_encode
    from stackscore.train.finetune import head_loss

    ckpt = make_checkpoint(tmp_path / "b", "bart", seed=4)
    model = AutoModelForSequenceClassification.from_pretrained(str(ckpt)).eval()
    tok = AutoTokenizer.from_pretrained(str(ckpt))
    enc = hf_encode(tok, ["a fine film", "dull and slow"], 64, False)
    labels = torch.tensor([1, 0])
    with torch.inference_mode():
        theirs = model(**enc, labels=labels).loss
        ours = head_loss(model.config, eos_pooled_logits(model, enc["input_ids"], enc["attention_mask"]), labels)
    assert abs(float(theirs) - float(ours)) < 1e-5
    rows = [json.loads(l) for l in (data / "train.jsonl").read_text().splitlines()]
    rows[0]["text"] += " </s> and more"
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = {
        "labels": ["negative", "positive"], "seed": 0, **FAST,
        "data": {"train": str(train), "test": str(data / "test.jsonl")}, "fusion": {"method": "mean", "folds": 2},
        "models": [{"name": "b", "source": str(ckpt), "max_length": 64, "epochs": 1, "batch_size": 64}],
    }
    run_fit(raw, tmp_path / "work")
    assert (tmp_path / "work/artifact/manifest.json").is_file()


@pytest.mark.parametrize("pad", [-1, 500])
def test_a_config_pad_id_the_tokenizer_lacks(tmp_path, data, pad):
    """No pad token in the tokenizer and a config pad id that is none of its ids (-1 in some
    Llama configs, or past its vocabulary): as saved, one line naming both (it crashed as a bug);
    fine-tuned, the end-of-text token pads and the config is set to match."""
    from stackscore.errors import StackscoreError

    ckpt = make_checkpoint(tmp_path / "g", "gpt2", seed=2)
    _without_pad_token(ckpt)
    _retune(ckpt, pad_token_id=pad)
    with pytest.raises(StackscoreError, match=rf"model 'm': its tokenizer has no pad token and its config's pad_token_id {pad} is not one of"):
        run_fit(fixed_config(data, [{"name": "m", "source": str(ckpt)}]), tmp_path / "w1")
    raw = {
        "labels": ["negative", "positive"], "seed": 0, **FAST,
        "data": {"train": str(data / "train.jsonl"), "test": str(data / "test.jsonl")}, "fusion": {"method": "mean", "folds": 2},
        "models": [{"name": "g", "source": str(ckpt), "max_length": 64, "epochs": 1}],
    }
    run_fit(raw, tmp_path / "w2")
    saved = json.loads((tmp_path / "w2/models/g/config.json").read_text())
    assert saved["pad_token_id"] == 2  # </s>, the tokenizer's end-of-text token


def _edit_json(path: Path, **kv) -> None:
    raw = json.loads(path.read_text())
    raw.update(kv)
    path.write_text(json.dumps(raw))


def test_a_label2id_that_contradicts_id2label_is_refused_and_a_generic_one_ignored(tmp_path):
    """Training code usually encodes targets with label2id, the engine names outputs by id2label:
    when the two name the same labels at other outputs, which is true is unknown (accepted
    silently before, id2label winning a coin flip). Generic LABEL_k names say nothing."""
    from stackscore.errors import StackscoreError
    from stackscore.train.models import ModelConfig, load_fixed

    ckpt = make_checkpoint(tmp_path / "c", "bert", {0: "negative", 1: "positive"})
    cfg = ModelConfig(name="m", source=str(ckpt), max_length=64, finetune=False)
    _edit_json(ckpt / "config.json", label2id={"LABEL_0": 0, "LABEL_1": 1})
    assert load_fixed(cfg, ckpt, ["negative", "positive"])[2] == [0, 1]
    _edit_json(ckpt / "config.json", label2id={"negative": 1, "positive": 0})
    with pytest.raises(StackscoreError, match="label2id .* contradicts its id2label"):
        load_fixed(cfg, ckpt, ["negative", "positive"])


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_a_tokenizer_saved_padding_on_the_left_pads_as_the_engine_does(tmp_path, arch):
    """``padding_side = "left"`` in tokenizer_config.json (decoders saved for generation): fit's
    PyTorch predictions padded on the left, so padded rows of absolute-position models got other
    logits than the engine (right-padded) and the rows alone, and trained the fusion on them."""
    import torch

    from stackscore.train.corpus import generate
    from stackscore.train.finetune import predict_logits
    from stackscore.train.models import ModelConfig, load_fixed

    ckpt = make_checkpoint(tmp_path / "c", arch, seed=3)
    _edit_json(ckpt / "tokenizer_config.json", padding_side="left")
    model, tok, _, _ = load_fixed(ModelConfig(name="m", source=str(ckpt), max_length=64, finetune=False), ckpt, ["negative", "positive"])
    texts = [e.text for e in generate(12, seed=5)]
    with torch.inference_mode():
        alone = np.stack([model(**tok(t, truncation=True, max_length=64, return_tensors="pt")).logits[0].numpy() for t in texts])
    np.testing.assert_allclose(predict_logits(model, tok, texts, 64), alone, atol=1e-4)


def test_a_fixed_checkpoint_needs_its_max_length(tmp_path, data):
    """A checkpoint does not record the length it was fine-tuned with; the 128 default scored a
    model trained at 64 (or 512) at another length, with other predictions on long rows."""
    from stackscore.errors import StackscoreError
    from stackscore.train.config import config_from_dict

    raw = fixed_config(data, [{"name": "c", "source": str(tmp_path)}])
    del raw["models"][0]["max_length"]
    with pytest.raises(StackscoreError, match="'c': finetune = false needs max_length"):
        config_from_dict(raw, tmp_path)


def test_a_checkpoint_of_a_teams_own_subclass_is_refused_not_scored_without_its_layers(tmp_path):
    """A BertForSequenceClassification subclass with an extra layer, saved under its own class
    name: transformers loaded it as the plain class, dropping the extra weights silently, and
    every check then agreed on that other model."""
    import torch
    from transformers import BertForSequenceClassification

    from stackscore.errors import StackscoreError
    from stackscore.train.models import ModelConfig, load_fixed

    ckpt = make_checkpoint(tmp_path / "c", "bert", seed=3)

    class MyBertClassifier(BertForSequenceClassification):
        def __init__(self, config):
            super().__init__(config)
            self.pre_classifier = torch.nn.Linear(config.hidden_size, config.hidden_size)
            self.post_init()

    MyBertClassifier.from_pretrained(str(ckpt)).save_pretrained(str(ckpt))
    cfg = ModelConfig(name="m", source=str(ckpt), max_length=64, finetune=False)
    with pytest.raises(StackscoreError, match="saved by class MyBertClassifier.*pre_classifier.bias, pre_classifier.weight left out"):
        load_fixed(cfg, ckpt, ["negative", "positive"])
    _edit_json(ckpt / "config.json", architectures=["BertForSequenceClassification"])  # renamed, weights still there
    with pytest.raises(StackscoreError, match="holds weights \\(pre_classifier"):
        load_fixed(cfg, ckpt, ["negative", "positive"])


def test_a_pooler_saved_beside_a_classifier_without_one_is_no_reason_to_refuse(tmp_path):
    """RoBERTa-family classifiers saved by transformers 2-3 (cardiffnlp's twitter-roberta models)
    hold ``roberta.pooler.*`` that RobertaForSequenceClassification never had or used."""
    import torch
    from safetensors.torch import load_file, save_file

    from stackscore.train.models import ModelConfig, load_fixed

    ckpt = make_checkpoint(tmp_path / "c", "roberta", seed=3)
    weights = load_file(str(ckpt / "model.safetensors"))
    hidden = weights["classifier.dense.weight"].shape[0]
    weights["roberta.pooler.dense.weight"], weights["roberta.pooler.dense.bias"] = torch.zeros(hidden, hidden), torch.zeros(hidden)
    save_file(weights, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    model, *_ = load_fixed(ModelConfig(name="m", source=str(ckpt), max_length=64, finetune=False), ckpt, ["negative", "positive"])
    assert type(model).__name__ == "RobertaForSequenceClassification"


def test_fine_tuning_a_classifier_checkpoint_starts_from_a_fresh_head(tmp_path):
    """transformers re-initialises only heads of another shape: a checkpoint already fine-tuned
    with as many labels kept its trained head, its outputs renamed to this data's labels by
    position ({0: positive} became label 0 = negative). The encoder is kept; the head is new,
    the same in every fold."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from stackscore.train.models import ModelConfig, load_pretrained

    ckpt = make_checkpoint(tmp_path / "c", "bert", {0: "positive", 1: "negative"}, seed=3)
    saved = AutoModelForSequenceClassification.from_pretrained(str(ckpt))
    factory, _ = load_pretrained(ModelConfig(name="m", source=str(ckpt), max_length=64), ["negative", "positive"], tmp_path)
    one, two = factory(), factory()
    assert not torch.equal(one.classifier.weight, saved.classifier.weight)
    assert torch.equal(one.classifier.weight, two.classifier.weight) and float(one.classifier.bias.abs().max()) == 0.0
    assert torch.equal(one.bert.encoder.layer[0].attention.self.query.weight, saved.bert.encoder.layer[0].attention.self.query.weight)


@pytest.mark.parametrize("arch, head", [("t5", "classification_head.dense"), ("distilbert", "pre_classifier")])
def test_a_fresh_head_is_initialised_by_the_architectures_own_rules(tmp_path, arch, head):
    """T5's head starts at N(0, d_model^-0.5) by its own rule: a generic per-Linear pass after it
    gave std 1.0 (logits ~sqrt(d_model), a saturated tanh). The fresh head's spread is that of a
    model built from its config."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from stackscore.train.models import ModelConfig, load_pretrained

    ckpt = make_checkpoint(tmp_path / "c", arch, seed=3)
    factory, _ = load_pretrained(ModelConfig(name="m", source=str(ckpt), max_length=64), ["negative", "positive"], tmp_path)
    torch.manual_seed(0)
    built = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(str(ckpt)))
    got, want = (float(m.get_submodule(head).weight.std()) for m in (factory(), built))
    assert 0.7 < got / want < 1.4, (got, want)


def test_an_operator_onnx_cannot_export_is_one_error_without_torchs_ir_dump(tmp_path, capfd):
    """FNet's Fourier mixing (``aten::fft_fftn``) has no ONNX operator: torch's exporter printed the
    whole IR graph (~28 KB for one tiny layer) to file descriptor 1 before raising, burying the
    one-line error fit and export give for it."""
    import torch
    from transformers import FNetConfig, FNetForSequenceClassification

    from stackscore.export.onnx_graph import torch_to_onnx

    model = FNetForSequenceClassification(FNetConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, intermediate_size=37, num_labels=2, max_position_embeddings=64)).eval()
    capfd.readouterr()
    with pytest.raises(torch.onnx.errors.UnsupportedOperatorError, match="fft"):
        torch_to_onnx(model, tmp_path / "fnet.onnx", pad_id=0)
    out = capfd.readouterr()
    assert "Torch IR graph" not in out.out + out.err and len(out.out) < 200, out.out[:300]


@pytest.mark.parametrize("mode", ["kfold", "holdout"])
def test_a_scratch_tokenizer_learns_only_from_the_rows_its_model_trains_on(tmp_path, monkeypatch, mode):
    """Each fold's (and the holdout's) scratch tokenizer is trained on exactly the texts its
    model fine-tunes on, never on the rows it then predicts for the fusion: trained on every
    text, its vocabulary had seen the held-out rows' words, which new texts never are."""
    import stackscore.train.fit as fit_module
    from stackscore.train.config import config_from_dict
    from stackscore.train.fit import Splits, fit_base_model, fusion_rows

    n = 24
    texts = [f"t{i} word{i}" for i in range(n)]
    s = Splits(["a", "b"], texts, np.asarray([i % 2 for i in range(n)]), n, [], np.zeros(0))
    cfg = config_from_dict({"data": {"train": "x"}, "fusion": {"mode": mode, "folds": 3}, "models": [{"name": "m", "source": "scratch:bert"}]}, tmp_path)
    rows = fusion_rows(cfg, s)

    class Saved:  # a model or a tokenizer: what its texts were
        def __init__(self, texts):
            self.texts = set(texts)

        def save_pretrained(self, path):
            pass

    trained: list[tuple[Saved, set]] = []  # (tokenizer, the texts its model fine-tuned on)
    predicted: list[tuple[Saved, set]] = []  # (tokenizer, the texts it predicted)

    def fake_build(mcfg, some, labels, base_dir, task):
        return (lambda: Saved([])), Saved(some)

    def fake_finetune(model, tok, some, y, mcfg, log):
        trained.append((tok, set(some)))
        return model

    def fake_predict(model, tok, some, max_length):
        predicted.append((tok, set(some)))
        return np.zeros((len(some), 2), dtype=np.float32)

    monkeypatch.setattr(fit_module, "build_model", fake_build)
    monkeypatch.setattr(fit_module, "finetune", fake_finetune)
    monkeypatch.setattr(fit_module, "predict_logits", fake_predict)
    fit_base_model(cfg.models[0], cfg, s, rows, tmp_path, [], None, lambda *_: None)
    assert len(trained) == (4 if mode == "kfold" else 1)  # three folds and the final model, or the holdout's model
    assert all(tok.texts == seen for tok, seen in trained)  # each tokenizer learned from its model's training texts only
    fusion = {texts[i] for i in rows.fusion}
    out_of_fold = [(tok, some) for tok, some in predicted if some and some <= fusion]
    assert out_of_fold and all(not (tok.texts & some) for tok, some in out_of_fold)  # no fusion row shaped the vocabulary that predicted it
