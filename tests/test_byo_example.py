"""examples/byo: checkpoints fine-tuned with transformers.Trainer, stacked as saved, scored."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_checkpoints import torch_labels  # noqa: E402


def test_byo_example_end_to_end(tmp_path):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    run = tmp_path / "byo-run"
    r = subprocess.run([sys.executable, str(REPO / "examples/byo/train_two.py"), "--out", str(run), "--rows", "600", "--epochs", "1"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    # The example config, at the same place relative to byo-run/ as in the repository.
    cfg = tmp_path / "examples/byo/stack.toml"
    cfg.parent.mkdir(parents=True)
    shutil.copy(REPO / "examples/byo/stack.toml", cfg)
    fit = subprocess.run([sys.executable, "-m", "stackscore", "fit", str(cfg), "--out", str(run / "fit")], capture_output=True, text=True, env=env, timeout=600)
    assert fit.returncode == 0, fit.stderr[-2000:]
    # stackscore's own lines only: no third-party progress bars, load reports or advice (--verbose has them)
    for noise in ("Loading weights", "Writing model shards", "Statistics collection", "LOAD REPORT", "WARNING:root", "━"):
        assert noise not in fit.stderr, noise
    assert "engine vs training on the test split" in fit.stderr and "export bert" in fit.stderr
    report = json.loads((run / "fit/report.json").read_text())
    assert report["fusion_fitted_on"]["models"] == {"bert": "checkpoint as saved (never trained here)", "roberta": "checkpoint as saved (never trained here)"}
    score = subprocess.run(
        [sys.executable, "-m", "stackscore", "score", str(run / "fit/artifact"), str(run / "data/test.jsonl"), "-o", str(tmp_path / "p.jsonl"), "--with-model-outputs", "--quiet"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert score.returncode == 0, score.stderr[-2000:]
    rows = [json.loads(l) for l in (run / "data/test.jsonl").read_text().splitlines()]
    out = [json.loads(l) for l in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [o["id"] for o in out] == [r["id"] for r in rows]
    labels = sorted({r["label"] for r in rows})
    texts = [r["text"] for r in rows]
    for model in ("bert", "roberta"):  # each base model, as scored, = the checkpoint's own prediction, by name
        own, _ = torch_labels(run / "models" / model, texts)
        engine = [labels[int(np.argmax([o[f"prob_{model}_{l}"] for l in labels]))] for o in out]
        assert engine == own
