"""What a long job pays for batch shapes OpenVINO has not prepared, window after window.

One model of an artifact, one process: the texts cut into windows as `stackscore score` cuts
them, each window's batches run once (shapes new to this compiled model are prepared then) and
again (all prepared), and the planner's padding. With ``--plain`` the planner does not charge
for shapes outside the preferred one per width (what it did before), for comparison.

    python benchmarks/window_shapes.py ARTIFACT --model minilm --data FILE.jsonl [--windows 10] [--window-rows 4096] [--plain] [--cache-dir D]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--windows", type=int, default=10)
    ap.add_argument("--window-rows", type=int, default=4096)
    ap.add_argument("--plain", action="store_true", help="no charge for new shapes (the planner before)")
    ap.add_argument("--cache-dir", type=Path)
    args = ap.parse_args()

    from stackscore.bench import load_corpus
    from stackscore.engine.scorer import Scorer
    from stackscore.options import RunOptions

    texts = load_corpus([str(args.data)], args.windows * args.window_rows)
    scorer = Scorer(args.artifact, RunOptions(precision="auto", cascade=False, streams=1, cache_dir=args.cache_dir))
    runner = scorer.runners[args.model]
    if args.plain:
        runner.new_shape_tokens = 0
    seen: set = set()
    padded = real = 0
    total_first = total_again = 0.0
    print(f"{args.model} ({runner.describe()}), new-shape charge {runner.new_shape_tokens} tokens")
    print("| window | batches | new shapes | first pass s | again s | new shapes cost s |\n|---:|---:|---:|---:|---:|---:|")
    for i in range(0, len(texts), args.window_rows):
        batches = list(runner.batches(runner.encode(texts[i : i + args.window_rows])))
        shapes = {b.input_ids.shape for b in batches}
        new = len(shapes - seen)
        seen |= shapes
        padded += sum(b.padded_tokens for b in batches)
        real += sum(b.real_tokens for b in batches)
        t0 = time.perf_counter()
        runner.run_batches(batches, len(scorer.labels))
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        runner.run_batches(batches, len(scorer.labels))
        again = time.perf_counter() - t0
        total_first, total_again = total_first + first, total_again + again
        print(f"| {i // args.window_rows} | {len(batches)} | {new} | {first:.3f} | {again:.3f} | {first - again:+.3f} |")
    print(f"\nall windows: first passes {total_first:.2f} s, again {total_again:.2f} s; padding {padded / max(real, 1) - 1:.2%} of real tokens; {len(seen)} distinct shapes")


if __name__ == "__main__":
    main()
