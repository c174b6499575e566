"""Each architecture as a team saves it, exported and scored, against its own forward on each text alone.

Tiny random checkpoints (``tests/checkpoints.py``: config + ``*ForSequenceClassification``,
tokenizers trained locally, a wide initialisation so outputs depend on every token) go through
``stackscore fit`` with ``finetune = false``; the engine's logits on generated texts are compared
with the checkpoint's PyTorch forward on each text alone (no padding, no batch): what a text's
prediction means for the model as saved. A refusal is a result too (its one line is printed).

    python benchmarks/architectures.py --json bench-out/architectures.json            # every architecture
    python benchmarks/architectures.py --backend openvino                             # through OpenVINO (fp32)
    python benchmarks/architectures.py gpt2 bart --variant pad-mismatch               # config pads with </s>
    python benchmarks/architectures.py gpt2 bart t5 --task regression                 # a one-value head
    python benchmarks/architectures.py gpt2 bart t5 --task multi_label --pairs        # sigmoid per label, sentence pairs

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
# task -> (the data's labels, the checkpoint's id2label, its problem_type)
TASKS = {
    "single_label": (["negative", "positive"], {0: "negative", 1: "positive"}, None),
    "regression": (["score"], {0: "score"}, "regression"),
    "multi_label": (["a", "b", "c"], {0: "a", 1: "b", 2: "c"}, "multi_label_classification"),
}


def checkpoint(root: Path, arch: str, variant: str, task: str) -> Path:
    from checkpoints import make_checkpoint

    _, id2label, problem_type = TASKS[task]
    ck = make_checkpoint(root / arch, arch, id2label, seed=5, **({"problem_type": problem_type} if problem_type else {}))
    if variant != "as-saved":
        cfg = json.loads((ck / "config.json").read_text())
        cfg["pad_token_id"] = cfg.get("eos_token_id") if variant == "pad-mismatch" else None
        (ck / "config.json").write_text(json.dumps(cfg))
    return ck


def rows_for(task: str, n: int, seed: int, start: int) -> list[dict]:
    """Generated rows with a label of the task's kind and a second text for pairs."""
    import random

    from stackscore.train.corpus import generate

    rows = []
    for e in generate(n, seed=seed, start=start):
        r = random.Random(e.id)
        label = {"single_label": e.label, "regression": round(r.random(), 3), "multi_label": [l for l in "abc" if r.random() < 0.5] or ["a"]}[task]
        rows.append({"id": e.id, "text": e.text, "other": e.text[::-1][:60], "label": label})
    return rows


def alone(ck: Path, texts: list[str], max_length: int, pairs: list[str] | None = None) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(ck), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(ck))
    with torch.inference_mode():
        return np.stack([
            model(**tok(t, *([pairs[i]] if pairs else []), truncation=True, max_length=max_length, return_tensors="pt")).logits[0].numpy()
            for i, t in enumerate(texts)
        ])


def main() -> None:
    from checkpoints import ARCHS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("archs", nargs="*", help="architectures (default: all in tests/checkpoints.py)")
    ap.add_argument("--variant", choices=VARIANTS, default="as-saved")
    ap.add_argument("--task", choices=list(TASKS), default="single_label")
    ap.add_argument("--pairs", action="store_true", help="sentence pairs (a second text per row)")
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "openvino"], help="the engine's runtime (fp32); openvino runs its fused attention, encoders' blocks as one SDPA node")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    from stackscore import Ensemble
    from stackscore.errors import StackscoreError
    from stackscore.train.config import config_from_dict
    from stackscore.train.fit import fit

    root = Path(tempfile.mkdtemp(prefix="stackscore-archs-"))
    data = root / "data"
    data.mkdir()
    for split, n, seed, start in (("validation", 60, 22, 2000), ("test", a.rows, 23, 3000)):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_for(a.task, n, seed, start)))
    test = [json.loads(l) for l in (data / "test.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in test]
    pairs = [r["other"] for r in test] if a.pairs else None
    labels = TASKS[a.task][0]
    results = []
    for arch in a.archs or list(ARCHS):
        t0 = time.perf_counter()
        ck = checkpoint(root, arch, a.variant, a.task)
        raw = {
            "labels": labels, "task": a.task, "seed": 0, "parity_rows": 24, "int8": False, "static_int8": False, "fp16": False,
            "data": {"validation": str(data / "validation.jsonl"), "test": str(data / "test.jsonl"), **({"text_pair_field": "other"} if a.pairs else {})},
            "fusion": {"method": "mean", "folds": 2},
            "models": [{"name": "m", "source": str(ck), "finetune": False, "max_length": 64}],
        }
        row = {"architecture": arch, "variant": a.variant, "task": a.task, "pairs": a.pairs}
        try:
            fit(config_from_dict(raw, root), root / f"work-{arch}", log=lambda *_: None)
            ens = Ensemble.load(root / f"work-{arch}/artifact", precision="fp32", backend=a.backend)
            _, outs = ens.predict_proba(texts, text_pairs=pairs, return_model_outputs=True)
            row["sdpa_blocks"] = getattr(ens.scorer.runners["m"].backends[0], "sdpa_blocks", None)
            ref = alone(ck, texts, 64, pairs)
            row.update(max_abs_diff=float(np.abs(outs["m"] - ref).max()), label_agreement=float(np.mean(outs["m"].argmax(1) == ref.argmax(1))))
        except StackscoreError as exc:
            row["refused"] = str(exc).split(": ", 1)[-1][:160]
        row["seconds"] = round(time.perf_counter() - t0, 1)
        results.append(row)
        print(f"  {arch}: {row.get('max_abs_diff', row.get('refused'))}", file=sys.stderr, flush=True)
    sdpa = a.backend == "openvino"  # OpenVINO's fused attention: how many blocks became one SDPA node
    print(f"| architecture ({a.variant}, {a.task}{', pairs' if a.pairs else ''}, {a.backend}) | engine vs each text alone, max abs diff | top output | refused |" + (" attention blocks as SDPA |" if sdpa else ""))
    print("|---|---:|---:|---|" + ("---:|" if sdpa else ""))
    for r in results:
        diff = f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else ""
        labels = f"{r['label_agreement']:.0%}" if "label_agreement" in r else ""
        print(f"| {r['architecture']} | {diff} | {labels} | {r.get('refused', '')} |" + (f" {r.get('sdpa_blocks', '')} |" if sdpa else ""))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"rows": a.rows, "backend": a.backend, "results": results}, indent=1))


if __name__ == "__main__":
    main()
