"""The Ray engine against the local engine on one file: whole-process wall time, and 1 vs 2 actors.

    python benchmarks/ray_engine.py --artifact demo-run/artifact --rows 100000 --json bench-out/ray_engine.json

Every run is its own ``stackscore score`` process, timed from start to exit, so the Ray runs pay
what a user pays: importing Ray, starting a local cluster, loading the ensemble in each actor.
Runs (all on the same machine, CLI defaults otherwise, ``--precision auto``):

- ``local``: the local engine (its threads use every core);
- ``ray 1x2``: one actor with 2 CPUs (2 inference threads);
- ``ray 2x1``: two actors with 1 CPU each (the default on 2 cores);
- ``ray shards 2x1``: the same rows as 4 input shards into a directory (actors write the shards).

The one-file Ray runs must give the local engine's bytes; the table says whether they did. The
input is generated (``stackscore.train.corpus.generate``) into a temporary directory, with a bad
row every 1,000 rows.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

BAD = [b"{not json", b'{"id": "x", "text": null}', b'{"id": "y", "text": "   "}', b'{"id": "z", "body": "no text"}', b'{"id": "w", "text": "caf\xe9"}']


def make_input(path: Path, rows: int, seed: int = 0) -> None:
    from stackscore.train.corpus import generate

    pool = [e.text for e in generate(min(rows, 20_000), seed=seed)]
    with open(path, "wb") as fh:
        for i in range(rows):
            if i % 1000 == 999:
                fh.write(BAD[(i // 1000) % len(BAD)] + b"\n")
            else:
                fh.write(orjson.dumps({"id": i, "text": pool[i % len(pool)]}) + b"\n")


def split(src: Path, shards: int, into: Path) -> None:
    lines = src.read_bytes().splitlines(keepends=True)
    into.mkdir()
    per = -(-len(lines) // shards)
    for k in range(shards):
        (into / f"shard{k}.jsonl").write_bytes(b"".join(lines[k * per:(k + 1) * per]))


def run(name: str, args: list[str], stats_path: Path, env: dict) -> dict:
    cmd = [sys.executable, "-m", "stackscore", "score", *args, "--quiet", "--stats-json", str(stats_path)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed: {proc.stderr.decode()[-2000:]}")
    stats = json.loads(stats_path.read_text())
    print(f"  {name}: {wall:.1f} s", file=sys.stderr, flush=True)
    return {"name": name, "wall_s": round(wall, 2), "rows": stats["rows"], "engine_rows_per_s": stats["rows_per_s"], "backends": stats["backends"],
            "actors": stats.get("actors"), "command": " ".join(["stackscore", "score", *args])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--json", default="bench-out/ray_engine.json")
    args = ap.parse_args()
    env = {**os.environ, "RAY_ADDRESS": ""}  # a local cluster per run, never one found elsewhere
    results = []
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        d = Path(d)
        src = d / "in.jsonl"
        make_input(src, args.rows)
        split(src, args.shards, d / "shards")
        art = str(args.artifact)
        local = run("local", [art, str(src), "-o", str(d / "local.jsonl")], d / "s0.json", env)
        results.append(local)
        for name, extra, out in [
            ("ray 1x2", ["--engine", "ray", "--actors", "1", "--cpus-per-actor", "2"], d / "ray1.jsonl"),
            ("ray 2x1", ["--engine", "ray", "--actors", "2", "--cpus-per-actor", "1"], d / "ray2.jsonl"),
        ]:
            r = run(name, [art, str(src), "-o", str(out), *extra], d / "s.json", env)
            r["same_bytes_as_local"] = out.read_bytes() == (d / "local.jsonl").read_bytes()
            results.append(r)
        r = run(f"ray shards 2x1 ({args.shards} shards)", [art, str(d / "shards"), "-o", str(d / "preds") + "/", "--engine", "ray", "--actors", "2", "--cpus-per-actor", "1"], d / "s.json", env)
        manifest = json.loads((d / "preds" / "_manifest.json").read_text())
        r["rows"] = manifest["rows"]
        results.append(r)
    for r in results:
        r["rows_per_s_wall"] = round(r["rows"] / r["wall_s"], 1)
        r["wall_vs_local"] = round(r["wall_s"] / local["wall_s"], 3)
    print(f"\n{args.rows:,} rows, {os.cpu_count()} CPUs, artifact {args.artifact}, backends: {local['backends']}")
    print(f"{'run':<26}{'wall s':>9}{'rows/s (wall)':>15}{'vs local':>10}{'engine rows/s':>15}  same bytes")
    for r in results:
        same = {True: "yes", False: "NO", None: "-"}[r.get("same_bytes_as_local")]
        print(f"{r['name']:<26}{r['wall_s']:>9.1f}{r['rows_per_s_wall']:>15,.0f}{r['wall_vs_local']:>9.2f}x{r['engine_rows_per_s']:>15,.0f}  {same}")
    out = {
        "date": datetime.date.today().isoformat(), "rows": args.rows, "cpus": os.cpu_count(), "python": platform.python_version(),
        "artifact": str(args.artifact), "command": " ".join([Path(sys.executable).name, *sys.argv]), "runs": results,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
