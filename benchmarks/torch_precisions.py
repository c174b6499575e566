"""Which PyTorch precision an expert would pick on this CPU: one transformer of a fit directory
under fp32, ``torch.autocast(bfloat16)`` and dynamic int8, sorted batches of 32 (best of 2).
On a CPU without bf16 instructions PyTorch emulates bf16 (6.3x slower than fp32 for MiniLM on an
AVX2 EPYC), which is why ``stackscore bench``'s expert runs fp32 there.

    python benchmarks/torch_precisions.py fit-runs/rt-polarity --model minilm --data ../shared/data/rt-polarity/test.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
import warnings
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=256)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from stackscore.engine.backends import cpu_has_bf16

    torch.set_num_threads(os.cpu_count() or 1)
    d = args.workdir / "models" / args.model
    tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(str(d), local_files_only=True).eval()
    texts = sorted((json.loads(line)["text"] for line in args.data.open(encoding="utf-8")), key=len)[: args.rows]
    runs = {"fp32": (model, False), "bf16 autocast": (model, True),
            "dynamic int8": (torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8), False)}
    print(f"CPU has bf16 instructions: {cpu_has_bf16()}")
    for name, (m, bf16) in runs.items():
        best = float("inf")
        for _ in range(2):
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            t0 = time.perf_counter()
            with torch.inference_mode(), ctx:
                for s in range(0, len(texts), 32):
                    m(**tok(texts[s : s + 32], padding=True, truncation=True, max_length=64, return_tensors="pt"))
            best = min(best, time.perf_counter() - t0)
        print(f"| {name} | {len(texts) / best:,.1f} rows/s |")


if __name__ == "__main__":
    main()
