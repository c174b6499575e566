"""Each architecture as a team saves it, exported and scored, against its own forward on each text alone.

Tiny random checkpoints (``tests/checkpoints.py``: config + ``*ForSequenceClassification``,
tokenizers trained locally, a wide initialisation so outputs depend on every token) go through
``stackscore fit`` with ``finetune = false``; the engine's logits on generated texts are compared
with the checkpoint's PyTorch forward on each text alone (no padding, no batch): what a text's
prediction means for the model as saved. A refusal is a result too (its one line is printed).

    python benchmarks/architectures.py --json bench-out/architectures.json            # every architecture
    python benchmarks/architectures.py gpt2 bart --variant pad-mismatch               # config pads with </s>

Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

VARIANTS = ("as-saved", "pad-mismatch", "no-pad-id")


def checkpoint(root: Path, arch: str, variant: str) -> Path:
    from checkpoints import make_checkpoint

    ck = make_checkpoint(root / arch, arch, seed=5)
    if variant != "as-saved":
        cfg = json.loads((ck / "config.json").read_text())
        cfg["pad_token_id"] = cfg.get("eos_token_id") if variant == "pad-mismatch" else None
        (ck / "config.json").write_text(json.dumps(cfg))
    return ck


def alone(ck: Path, texts: list[str], max_length: int) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(ck), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(ck))
    with torch.inference_mode():
        return np.stack([model(**tok(t, truncation=True, max_length=max_length, return_tensors="pt")).logits[0].numpy() for t in texts])


def main() -> None:
    from checkpoints import ARCHS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("archs", nargs="*", help="architectures (default: all in tests/checkpoints.py)")
    ap.add_argument("--variant", choices=VARIANTS, default="as-saved")
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    from stackscore import Ensemble
    from stackscore.errors import StackscoreError
    from stackscore.train.config import config_from_dict
    from stackscore.train.corpus import generate, write_jsonl
    from stackscore.train.fit import fit

    root = Path(tempfile.mkdtemp(prefix="stackscore-archs-"))
    data = root / "data"
    data.mkdir()
    write_jsonl(data / "validation.jsonl", generate(60, seed=22, start=2000))
    write_jsonl(data / "test.jsonl", generate(a.rows, seed=23, start=3000))
    texts = [json.loads(l)["text"] for l in (data / "test.jsonl").read_text().splitlines()]
    results = []
    for arch in a.archs or list(ARCHS):
        t0 = time.perf_counter()
        ck = checkpoint(root, arch, a.variant)
        raw = {
            "labels": ["negative", "positive"], "seed": 0, "parity_rows": 24, "int8": False, "static_int8": False, "fp16": False,
            "data": {"validation": str(data / "validation.jsonl"), "test": str(data / "test.jsonl")}, "fusion": {"method": "mean", "folds": 2},
            "models": [{"name": "m", "source": str(ck), "finetune": False, "max_length": 64}],
        }
        row = {"architecture": arch, "variant": a.variant}
        try:
            fit(config_from_dict(raw, root), root / f"work-{arch}", log=lambda *_: None)
            _, outs = Ensemble.load(root / f"work-{arch}/artifact").predict_proba(texts, return_model_outputs=True)
            ref = alone(ck, texts, 64)
            row.update(max_abs_diff=float(np.abs(outs["m"] - ref).max()), label_agreement=float(np.mean(outs["m"].argmax(1) == ref.argmax(1))))
        except StackscoreError as exc:
            row["refused"] = str(exc).split(": ", 1)[-1][:160]
        row["seconds"] = round(time.perf_counter() - t0, 1)
        results.append(row)
        print(f"  {arch}: {row.get('max_abs_diff', row.get('refused'))}", file=sys.stderr, flush=True)
    print(f"| architecture ({a.variant}) | engine vs each text alone, max abs diff | labels | refused |")
    print("|---|---:|---:|---|")
    for r in results:
        diff = f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else ""
        labels = f"{r['label_agreement']:.0%}" if "label_agreement" in r else ""
        print(f"| {r['architecture']} | {diff} | {labels} | {r.get('refused', '')} |")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"rows": a.rows, "results": results}, indent=1))


if __name__ == "__main__":
    main()
