"""Two checkouts of stackscore, the same artifact and input: whole `stackscore score` processes,
alternated, N each; prints rows/s (best), launch to exit and launch to the first committed row
(best and median), the ratio, and whether the outputs are byte-identical.

For refactors that must not change behaviour or speed ("no slowdown, same bytes"):

    git worktree add /tmp/before <commit>
    python benchmarks/compare_trees.py --before /tmp/before --after . \\
        --artifact demo-run/artifact --input demo-run/data/score.jsonl --json bench-out/compare.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(tree: Path, artifact: Path, src: Path, out: Path, extra: list[str], paths: list[Path]) -> tuple[float, float]:
    """One whole process: (launch to exit, launch to the first committed row) in seconds.
    ``paths`` go on PYTHONPATH after the tree (a tree's own pins of a dependency, installed with
    ``pip install --target``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p.resolve()) for p in [tree, *paths])}
    stats = out.with_suffix(".stats.json")
    cmd = [sys.executable, "-m", "stackscore.cli", "score", str(artifact), str(src), "-o", str(out), "--overwrite", "--quiet", "--stats-json", str(stats), *extra]
    launched, t0 = time.time(), time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tree)
    seconds = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"{tree}: stackscore score failed: {r.stderr.strip()[-400:]}")
    return seconds, json.loads(stats.read_bytes())["first_row_at"] - launched


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--after", type=Path, required=True)
    ap.add_argument("--artifact", type=Path, required=True)
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--extra", default="", help="more `score` options, e.g. '--precision fp32 --with-model-outputs'")
    ap.add_argument("--before-path", type=Path, action="append", default=[], help="also on PYTHONPATH for the before tree (its pinned versions of a dependency, from `pip install --target DIR pkg==X`)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = sum(1 for line in args.input.open("rb") if line.strip())
    extra = args.extra.split()
    seconds: dict[str, list[float]] = {"before": [], "after": []}
    first_row: dict[str, list[float]] = {"before": [], "after": []}
    digests: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as d:
        for _ in range(args.repeats):  # alternated: a noisy neighbour hits both
            for name, tree, paths in (("before", args.before, args.before_path), ("after", args.after, [])):
                out = Path(d) / f"{name}.jsonl"
                whole, first = run(tree, args.artifact.resolve(), args.input.resolve(), out, extra, paths)
                seconds[name].append(whole)
                first_row[name].append(first)
                digests[name] = hashlib.sha256(out.read_bytes()).hexdigest()
    best = {k: min(v) for k, v in seconds.items()}
    res = {
        "rows": rows, "before": str(args.before), "after": str(args.after), "extra": extra, "seconds": seconds, "first_row_seconds": first_row,
        "rows_per_s": {k: rows / v for k, v in best.items()}, "after_over_before": best["before"] / best["after"],
        "identical_output": digests["before"] == digests["after"], "sha256": digests,
    }
    print(f"| tree | rows/s (whole process, best of {args.repeats}) | launch to exit, best / median | launch to first row, best / median |\n|---|---:|---:|---:|")
    for k in ("before", "after"):
        w, f = seconds[k], first_row[k]
        print(f"| {k} | {res['rows_per_s'][k]:,.1f} | {min(w):.3f} / {statistics.median(w):.3f} s | {min(f):.3f} / {statistics.median(f):.3f} s |")
    print(f"after / before speed: {res['after_over_before']:.3f}x; outputs byte-identical: {res['identical_output']}")
    from stackscore.bench import write_outputs

    write_outputs(res, args.json, None)


if __name__ == "__main__":
    main()
