"""Sentence pairs: (text, text_pair) rows, the tokenizer's pair template, token types fed to the graph."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from checkpoints import make_checkpoint  # noqa: E402
from test_checkpoints import FAST, run_fit, torch_labels  # noqa: E402


@pytest.fixture(scope="module")
def pair_data(tmp_path_factory) -> Path:
    from stackscore.train.corpus import generate

    d = tmp_path_factory.mktemp("pairs")
    for name, n, seed in (("train", 160, 31), ("validation", 60, 32), ("test", 40, 33)):
        a, b = generate(n, seed=seed), generate(n, seed=seed + 100, start=5000)
        with open(d / f"{name}.jsonl", "w") as fh:
            for x, y in zip(a, b):
                # the label depends on the pair: does the second text agree with the first?
                fh.write(json.dumps({"id": x.id, "text": x.text, "text_pair": y.text, "label": "same" if x.label == y.label else "different"}) + "\n")
    return d


def rows(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def pair_fit(tmp_path_factory, pair_data) -> tuple[Path, Path]:
    """A fixed pair-classifier BERT (token types matter) + a BERT fine-tuned here on the pairs."""
    root = tmp_path_factory.mktemp("pair-fit")
    # A wide initialisation: outputs that visibly depend on every input, token types included.
    ckpt = make_checkpoint(root / "ckpt", "bert", {0: "different", 1: "same"}, seed=7, initializer_range=0.5)
    raw = {
        "labels": ["different", "same"], "seed": 0, **FAST,
        "data": {k: str(pair_data / f"{k}.jsonl") for k in ("train", "validation", "test")} | {"text_pair_field": "text_pair"},
        "fusion": {"method": "stack", "folds": 2},
        "models": [
            {"name": "fixed", "source": str(ckpt), "finetune": False, "max_length": 64},
            {"name": "here", "source": "scratch:bert", "max_length": 64, "epochs": 1, "hidden_size": 32, "num_layers": 1,
             "num_heads": 2, "intermediate_size": 64, "vocab_size": 400},
        ],
    }
    run_fit(raw, root / "work")
    return root / "work" / "artifact", ckpt


def test_pair_graph_takes_token_types_and_matches_pytorch(pair_fit, pair_data):
    from stackscore import Ensemble
    from stackscore.engine.backends.ort import OrtBackend
    from stackscore.options import RunOptions
    from stackscore.manifest import load_manifest

    artifact, ckpt = pair_fit
    manifest = load_manifest(artifact)
    assert manifest.text_pair
    fixed = next(m for m in manifest.models if m.name == "fixed")
    assert fixed.inputs == ["input_ids", "attention_mask", "token_type_ids"]
    # A BERT fine-tuned here on pairs trains with segment ids, so its graph takes them too.
    assert next(m for m in manifest.models if m.name == "here").inputs == ["input_ids", "attention_mask", "token_type_ids"]
    test = rows(pair_data / "test.jsonl")
    a, b = [r["text"] for r in test], [r["text_pair"] for r in test]
    own, logits = torch_labels(ckpt, a, b)
    ens = Ensemble.load(artifact)
    _, outs = ens.predict_proba(a, text_pairs=b, return_model_outputs=True)
    assert np.abs(outs["fixed"] - logits).max() < 1e-4
    # The predictions depend on token types: the same ids with all-zero types give other logits.
    backend = OrtBackend(artifact / fixed.graphs["fp32"], fixed, RunOptions())
    enc = ens.scorer.runners["fixed"].tokenizer.encode(list(zip(a[:4], b[:4])))
    from stackscore.engine.batcher import build_batch

    batch = build_batch(enc, np.arange(4), fixed.pad_id)
    assert batch.token_type_ids is not None and batch.token_type_ids.max() == 1
    with_types = backend.run(batch.input_ids, batch.attention_mask, batch.token_type_ids)
    zeros = backend.run(batch.input_ids, batch.attention_mask, np.zeros_like(batch.token_type_ids))
    assert np.abs(with_types - zeros).max() > 1e-2


def test_pairs_truncate_longest_first_like_transformers(tmp_path):
    from transformers import AutoTokenizer

    from stackscore.engine.tokenize import TextTokenizer

    ckpt = make_checkpoint(tmp_path / "c", "bert")
    hf = AutoTokenizer.from_pretrained(str(ckpt))
    hf.backend_tokenizer.save(str(tmp_path / "tokenizer.json"))
    long_a, short_b = "a truly wonderful and gripping film " * 20, "not good"
    # Past the engine's character cap (4,096 here): A is longer in tokens, B within the first
    # 4,096 characters; a cap that cut both made B the longer one, so longest-first gave the
    # odd token of the (even) budget to B: other ids than transformers' (export's own long
    # parity pair failed fit about half the time).
    capped_a, capped_b = "a " * 5000, "a," * 2100  # 5,000 vs 4,200 tokens; 2,048 vs 4,096 in their first 4,096 characters
    # Long pairs are encoded side by side (the pair encoder's overflow grew with the product of
    # the two lengths: 3.7 GB for one row of two 64,000-character texts); near-equal lengths
    # around the budget decide the odd token, on either truncation side.
    words = "the movie was great but the ending felt rushed and a bit silly".split()
    near = [" ".join(words[i % len(words)] for i in range(n)) for n in (15, 16, 17, 300, 301)]
    rows_a = [long_a, short_b, capped_a, capped_b, *[a for a in near for _ in near]]
    rows_b = [short_b, long_a, capped_b, capped_a, *[b for _ in near for b in near]]
    for side in ("right", "left"):
        hf.truncation_side = side
        for max_length in (32, 33, 64):
            enc = TextTokenizer(tmp_path / "tokenizer.json", max_length, truncation_side=side).encode(list(zip(rows_a, rows_b)))
            ref = hf(rows_a, rows_b, truncation=True, max_length=max_length)
            for i in range(len(rows_a)):
                assert enc.flat[enc.offsets[i] : enc.offsets[i] + enc.lengths[i]].tolist() == ref["input_ids"][i], (side, max_length, i)
                assert enc.types[enc.offsets[i] : enc.offsets[i] + enc.lengths[i]].tolist() == ref["token_type_ids"][i], (side, max_length, i)


def test_cli_pair_field_required_and_refused(tmp_path, pair_fit, pair_data, artifact):
    pair_artifact, _ = pair_fit
    src = pair_data / "test.jsonl"
    cli = [sys.executable, "-m", "stackscore", "score", "--quiet"]
    missing = subprocess.run([*cli, str(pair_artifact), str(src), "-o", str(tmp_path / "a.jsonl")], capture_output=True, text=True)
    assert missing.returncode == 2 and "--text-pair-field" in missing.stderr and "Traceback" not in missing.stderr
    extra = subprocess.run([*cli, str(artifact), str(src), "-o", str(tmp_path / "b.jsonl"), "--text-pair-field", "text_pair"], capture_output=True, text=True)
    assert extra.returncode == 2 and "scores single texts" in extra.stderr
    # A row with no second text is an error row, not dropped and not scored on half its input.
    bad = tmp_path / "in.jsonl"
    test = rows(src)[:5]
    del test[2]["text_pair"]
    bad.write_text("".join(json.dumps(r) + "\n" for r in test))
    ok = subprocess.run([*cli, str(pair_artifact), str(bad), "-o", str(tmp_path / "c.jsonl"), "--text-pair-field", "text_pair"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    out = rows(tmp_path / "c.jsonl")
    assert len(out) == 5 and [r["id"] for r in out] == [r["id"] for r in test]
    assert out[2]["label"] is None and "text_pair" in out[2]["error"]
    assert all(r["error"] is None and r["label"] in ("same", "different") for i, r in enumerate(out) if i != 2)


def test_the_python_api_streams_pairs_and_names_its_own_keywords(pair_fit, pair_data, artifact):
    """``score_iter`` had no way to pass the second texts (a pair ensemble could not use it), and
    the Python API's refusals named the CLI's --text-pair-field."""
    from stackscore import Ensemble
    from stackscore.errors import StackscoreError

    pair_artifact, _ = pair_fit
    test = rows(pair_data / "test.jsonl")[:9]
    ens = Ensemble.load(pair_artifact)
    items = [(r["text"], r["text_pair"]) for r in test]
    items[4] = (items[4][0], "  ")  # a blank second text: an error row in its place
    streamed = list(ens.score_iter(items, chunk_rows=4))
    proba = ens.predict_proba([t for t, _ in items], text_pairs=[p for _, p in items])
    assert len(streamed) == 9 and streamed[4]["label"] is None and "text_pair" in streamed[4]["error"]
    for i, r in enumerate(streamed):
        if i != 4:
            assert r["error"] is None and abs(r["prob_same"] - proba[i, ens.labels.index("same")]) < 1e-6
    with pytest.raises(TypeError, match=r"items must be \(text, text_pair\) tuples"):
        list(ens.score_iter([r["text"] for r in test]))
    with pytest.raises(StackscoreError, match="fitted on sentence pairs: give the second texts with text_pairs="):
        ens.predict_proba([r["text"] for r in test])
    import pandas as pd

    with pytest.raises(StackscoreError, match="give the second texts with text_pair_column="):
        ens.score_dataframe(pd.DataFrame({"text": [r["text"] for r in test]}))
    with pytest.raises(StackscoreError, match="scores single texts; text_pair_column= 'text_pair' does not apply"):
        Ensemble.load(artifact).score_dataframe(pd.DataFrame({"text": ["a"], "text_pair": ["b"]}), text_pair_column="text_pair")
