"""``stackscore demo``: the whole product on a generated corpus, in a few minutes on 2 cores.

1. generate a templated sentiment corpus (train / validation / test) and a 100k-row scoring file;
2. fit a BERT-style (WordPiece) and a RoBERTa-style (byte-level BPE) classifier from configs,
   with K-fold out-of-fold logits and a stacking meta-learner;
3. export the artifact (ONNX + tokenizers + manifest, parity-checked);
4. score the big file with the engine and print throughput, padding and accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from .engine.pipeline import score_file
from .options import ScoreOptions
from .train.corpus import generate, write_jsonl

SMALL_MODEL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128, "vocab_size": 2000}


def demo_config(workdir: Path, folds: int = 5, epochs: int = 3) -> dict:
    return {
        "labels": ["negative", "positive"],
        "seed": 0,
        # Relative to the work directory (the config's base_dir).
        "data": {"train": "data/train.jsonl", "test": "data/test.jsonl"},
        "fusion": {"method": "stack", "folds": folds, "mode": "kfold", "features": "logits"},
        "models": [
            {"name": "bert", "source": "scratch:bert", "max_length": 128, "epochs": epochs, **SMALL_MODEL},
            {"name": "roberta", "source": "scratch:roberta", "max_length": 128, "epochs": epochs, "seed": 1, **SMALL_MODEL},
        ],
    }


def run_demo(workdir: str | Path = "demo-run", rows: int = 100_000, train_rows: int = 3000, folds: int = 5, epochs: int = 3, output_format: str = "jsonl", log: Callable[[str], None] = print) -> dict:
    from .train.config import config_from_dict
    from .train.fit import fit

    workdir = Path(workdir)
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    log(f"[1/4] corpus: {train_rows} train, {train_rows // 3} validation, {train_rows // 3} test, {rows:,} to score")
    write_jsonl(data / "train.jsonl", generate(train_rows, seed=1))
    write_jsonl(data / "validation.jsonl", generate(train_rows // 3, seed=2, start=10_000_000))
    write_jsonl(data / "test.jsonl", generate(train_rows // 3, seed=3, start=20_000_000))
    write_jsonl(data / "score.jsonl", generate(rows, seed=4, start=30_000_000))
    raw = demo_config(workdir, folds, epochs)
    (workdir / "fit-config.json").write_text(json.dumps(raw, indent=2) + "\n")

    log("[2/4] fit: fine-tune base models, out-of-fold logits, stacking meta-learner")
    log("[3/4] export: ONNX graphs, parity gates, manifest (inside fit)")
    report = fit(config_from_dict(raw, workdir), workdir, log)

    log(f"[4/4] score: {rows:,} rows through the engine")
    out = workdir / f"predictions.{output_format}"
    stats = score_file(workdir / "artifact", data / "score.jsonl", out, ScoreOptions.from_kwargs(label_field="label", overwrite=True))
    log(stats.summary())
    summary = {"report": report, "score": stats.to_dict(), "predictions": str(out), "artifact": str(workdir / "artifact")}
    (workdir / "demo-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
