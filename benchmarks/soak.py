"""Soak benchmark: score N generated rows of mixed lengths with bad rows sprinkled in.

Reports throughput over time and peak RSS, checks rows out == rows in, and compares peak RSS
with a 10,000-row run of the same artifact (the memory-flatness check). Each size runs in its
own process so that peak RSS is that run's alone.

    python benchmarks/soak.py --artifact demo-run/artifact --rows 1000000 --json bench-out/soak.json

Needs an artifact (``make demo`` builds one). Generates its input into a temp directory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

BAD_ROWS = [b"{not json", b'{"id": "x", "text": null}', b'{"id": "y", "text": "   "}', b'{"id": "z", "body": "no text"}', b'{"id": "w", "text": "caf\xe9"}']


def make_input(path: Path, rows: int, bad_every: int, seed: int = 0) -> int:
    """Mixed lengths: generated reviews, some repeated to IMDb-like length. Returns bad-row count."""
    from stackscore.train.corpus import generate

    rng = random.Random(seed)
    pool = [e.text for e in generate(20_000, seed=seed)]
    bad = 0
    with open(path, "wb") as fh:
        buf = []
        for i in range(rows):
            if bad_every and i % bad_every == bad_every - 1:
                buf.append(BAD_ROWS[(i // bad_every) % len(BAD_ROWS)])
                bad += 1
            else:
                text = pool[rng.randrange(len(pool))]
                if rng.random() < 0.1:  # a long tail of long rows
                    text = " ".join(pool[rng.randrange(len(pool))] for _ in range(rng.randint(3, 12)))
                buf.append(orjson.dumps({"id": i, "text": text}))
            if len(buf) >= 10_000:
                fh.write(b"\n".join(buf) + b"\n")
                buf = []
        if buf:
            fh.write(b"\n".join(buf) + b"\n")
    return bad


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(args: argparse.Namespace) -> None:
    """One scoring run in this process; prints a JSON record on stdout."""
    from stackscore.engine.pipeline import ScoreOptions, score_file

    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "in.jsonl"
        bad = make_input(src, args.rows, args.bad_every)
        out = Path(d) / "out.jsonl"
        samples: list[dict] = []
        stop = threading.Event()
        state = {"stats": None}

        def progress(stats):
            state["stats"] = stats

        def sample():
            t0 = time.perf_counter()
            while not stop.wait(2.0):
                s = state["stats"]
                samples.append({"t": round(time.perf_counter() - t0, 1), "rows": s.rows if s else 0, "rss_mb": round(rss_mb(), 1)})

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        stats = score_file(args.artifact, src, out, ScoreOptions.from_kwargs(progress=False, on_progress=progress))
        stop.set()
        with open(out, "rb") as fh:
            rows_out = sum(1 for _ in fh)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"rows_in": args.rows, "rows_out": rows_out, "bad_rows": bad, "stats": stats.to_dict(), "peak_rss_mb": round(peak, 1), "timeline": samples}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifact", default="demo-run/artifact")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--small-rows", type=int, default=10_000)
    ap.add_argument("--bad-every", type=int, default=997)
    ap.add_argument("--json", default="bench-out/soak.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    results = {}
    for n in (args.small_rows, args.rows):
        cmd = [sys.executable, __file__, "--child", "--artifact", args.artifact, "--rows", str(n), "--bad-every", str(args.bad_every)]
        print(f"scoring {n:,} rows ...", file=sys.stderr, flush=True)
        res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "true"})
        if res.returncode != 0:
            sys.exit(res.stderr)
        results[n] = json.loads(res.stdout.strip().splitlines()[-1])
    small, big = results[args.small_rows], results[args.rows]
    ratio = big["peak_rss_mb"] / small["peak_rss_mb"]
    print("\n| rows | rows out | bad rows | rows/s | peak RSS MB |\n|---:|---:|---:|---:|---:|")
    for n, r in results.items():
        print(f"| {n:,} | {r['rows_out']:,} | {r['bad_rows']:,} | {r['stats']['rows_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} |")
    print(f"\npeak RSS {args.rows:,} rows / {args.small_rows:,} rows = {ratio:.3f} (goal <= 1.10)")
    print("rows out == rows in:", all(r["rows_out"] == r["rows_in"] for r in results.values()))
    tl = big["timeline"]
    if tl:
        print("\nthroughput over time (rows/s per 2 s sample, every 10th sample):")
        prev = {"t": 0, "rows": 0}
        for i, s in enumerate(tl):
            if i % 10 == 0:
                dt = s["t"] - prev["t"]
                print(f"  t={s['t']:>6.0f}s rows={s['rows']:>9,} rate={(s['rows'] - prev['rows']) / dt if dt else 0:>7,.0f}/s rss={s['rss_mb']:.0f} MB")
            prev = s
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"runs": {str(k): v for k, v in results.items()}, "rss_ratio": ratio}, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
