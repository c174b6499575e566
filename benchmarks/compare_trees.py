"""Two checkouts of stackscore, the same artifact and input: whole `stackscore score` processes,
alternated, best of N each; prints rows/s, the ratio, and whether the outputs are byte-identical.

For refactors that must not change behaviour or speed ("no slowdown, same bytes"):

    git worktree add /tmp/before <commit>
    python benchmarks/compare_trees.py --before /tmp/before --after . \\
        --artifact demo-run/artifact --input demo-run/data/score.jsonl --json bench-out/compare.json
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(tree: Path, artifact: Path, src: Path, out: Path, extra: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    cmd = [sys.executable, "-m", "stackscore.cli", "score", str(artifact), str(src), "-o", str(out), "--overwrite", "--quiet", *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tree)
    seconds = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"{tree}: stackscore score failed: {r.stderr.strip()[-400:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--after", type=Path, required=True)
    ap.add_argument("--artifact", type=Path, required=True)
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--extra", default="", help="more `score` options, e.g. '--precision fp32 --with-model-outputs'")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = sum(1 for line in args.input.open("rb") if line.strip())
    extra = args.extra.split()
    seconds: dict[str, list[float]] = {"before": [], "after": []}
    digests: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as d:
        for _ in range(args.repeats):  # alternated: a noisy neighbour hits both
            for name, tree in (("before", args.before), ("after", args.after)):
                out = Path(d) / f"{name}.jsonl"
                seconds[name].append(run(tree, args.artifact.resolve(), args.input.resolve(), out, extra))
                digests[name] = hashlib.sha256(out.read_bytes()).hexdigest()
    best = {k: min(v) for k, v in seconds.items()}
    res = {
        "rows": rows, "before": str(args.before), "after": str(args.after), "extra": extra, "seconds": seconds,
        "rows_per_s": {k: rows / v for k, v in best.items()}, "after_over_before": best["before"] / best["after"],
        "identical_output": digests["before"] == digests["after"], "sha256": digests,
    }
    print(f"| tree | rows/s (whole process, best of {args.repeats}) |\n|---|---:|")
    for k in ("before", "after"):
        print(f"| {k} | {res['rows_per_s'][k]:,.1f} |")
    print(f"after / before speed: {res['after_over_before']:.3f}x; outputs byte-identical: {res['identical_output']}")
    from stackscore.bench import write_outputs

    write_outputs(res, args.json, None)


if __name__ == "__main__":
    main()
