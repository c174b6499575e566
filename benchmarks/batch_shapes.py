"""What a batch costs beyond its tokens, per model of an artifact, through the engine's own runners.

1. **Per call**: one backend at fixed shapes (rows x length), milliseconds per call and
   microseconds per token: the fixed cost behind ``batcher.BATCH_OVERHEAD_TOKENS``.
2. **First shapes**: the engine's own batches of ``--rows`` texts, three passes in one process:
   the first pays for every new (rows, length) shape (kernels made per shape), later ones not;
   with ``--bucket-step N`` lengths are padded to multiples of N (fewer shapes, more padding).

    python benchmarks/batch_shapes.py ARTIFACT --data FILE.jsonl [--rows 2000] [--bucket-step 8] [--json F]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--bucket-step", type=int, default=0, help="pad lengths to multiples of this (0: the engine's exact plan)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from stackscore.bench import load_corpus
    from stackscore.engine.runner import TransformerRunner
    from stackscore.engine.scorer import Scorer
    from stackscore.options import RunOptions

    texts = load_corpus([str(args.data)], args.rows)
    scorer = Scorer(args.artifact, RunOptions(precision="auto", cascade=False, streams=1))
    width = len(scorer.labels)
    out: dict = {}
    for name, runner in scorer.runners.items():
        if not isinstance(runner, TransformerRunner):
            continue
        backend = runner.backends[0]
        per_call = {}
        for rows, length in [(1, 16), (1, 32), (4, 32), (16, 32), (64, 32), (8, 64), (32, 64)]:
            ids = np.full((rows, length), 5, np.int64)
            mask = np.ones_like(ids)
            backend.run(ids, mask)
            backend.run(ids, mask)
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 0.3:
                backend.run(ids, mask)
                n += 1
            ms = (time.perf_counter() - t0) / n * 1e3
            per_call[f"{rows}x{length}"] = {"ms": round(ms, 3), "us_per_token": round(ms * 1e3 / (rows * length), 2)}
        if args.bucket_step:
            step = args.bucket_step
            runner.buckets = tuple(range(step, runner.tokenizer.max_length + 1, step)) + ((runner.tokenizer.max_length,) if runner.tokenizer.max_length % step else ())
        batches = list(runner.batches(runner.encode(texts)))
        padded, real = sum(b.padded_tokens for b in batches), sum(b.real_tokens for b in batches)
        passes = []
        for _ in range(3):
            t0 = time.perf_counter()
            runner.run_batches(batches, width)
            passes.append(round(time.perf_counter() - t0, 3))
        out[name] = {
            "describe": runner.describe(), "per_call": per_call, "batches": len(batches),
            "shapes": len({b.input_ids.shape for b in batches}), "padding": round(1 - real / padded, 4),
            "pass_seconds": passes, "first_pass_extra_s": round(passes[0] - min(passes[1:]), 3),
        }
        r = out[name]
        print(f"{name} ({r['describe']}): per call " + ", ".join(f"{k} {v['ms']} ms ({v['us_per_token']} us/token)" for k, v in per_call.items()))
        print(f"  {len(texts):,} rows: {r['batches']} batches, {r['shapes']} shapes, padding {r['padding']:.1%}; passes {passes} s -> first pass +{r['first_pass_extra_s']} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
