"""Should the base models run one after another with all cores, or side by side with cores split?

Times the sessions alone on the engine's own pre-tokenized batches of a corpus, both ways, in
one run, and prints the ratio. The engine uses the faster arrangement (sequential: see
benchmarks/RESULTS.md for the figure on this machine).

    python benchmarks/model_parallel.py --artifact fit-runs/bench/artifact --data ../shared/data/sst2/dev.jsonl --rows 2000
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

from stackscore.bench import load_corpus
from stackscore.engine.scorer import Scorer
from stackscore.options import RunOptions


def batches(scorer: Scorer, texts: list[str]) -> dict[str, list]:
    """Each transformer runner's own batches of ``texts`` (the engine's batcher, unbucketed on CPU)."""
    work = scorer.prepared_batches(texts, len(texts))
    return {n: work[n] for n, r in scorer.runners.items() if r.tokenizer_key is not None}


def timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--json", default="bench-out/model_parallel.json")
    args = ap.parse_args()
    texts = load_corpus(args.data, args.rows)
    cores = os.cpu_count() or 1
    seq = Scorer(args.artifact, RunOptions(precision=args.precision, threads=cores))
    split = Scorer(args.artifact, RunOptions(precision=args.precision, threads=max(1, cores // len(seq.model_names))))
    work = batches(seq, texts)

    def sequential():
        for name, bs in work.items():
            for b in bs:
                seq.runners[name].run_batch(b)

    def side_by_side():
        threads = [threading.Thread(target=lambda n=n: [split.runners[n].run_batch(b) for b in work[n]]) for n in work]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    sequential(), side_by_side()  # warm-up
    t_seq, t_par = timed(sequential), timed(side_by_side)
    res = {
        "rows": len(texts), "cores": cores, "precision": args.precision,
        "sequential_all_cores_s": round(t_seq, 3), "side_by_side_split_cores_s": round(t_par, 3),
        "sequential_speedup": round(t_par / t_seq, 3),
        "backends": seq.describe(),
    }
    print(json.dumps(res, indent=2))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
