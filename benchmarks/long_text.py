"""Accuracy and speed of the long-text modes (truncate, head-tail, windows) on one labelled corpus.

    python benchmarks/long_text.py --artifact fit-runs/imdb/artifact --data ../shared/data/imdb/test.jsonl --rows 1000
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

import orjson

from stackscore.engine.pipeline import score_file
from stackscore.options import ScoreOptions


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--json", default="bench-out/long_text.json")
    args = ap.parse_args()
    rows = [orjson.loads(l) for l in open(args.data, "rb")]
    random.Random(0).shuffle(rows)
    rows = rows[: args.rows]
    results = {}
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "in.jsonl"
        src.write_bytes(b"".join(orjson.dumps({"id": r["id"], "text": r["text"], "label": r["label"]}) + b"\n" for r in rows))
        for mode in ("truncate", "head-tail", "windows"):
            opts = ScoreOptions.from_kwargs(label_field="label", progress=False, overwrite=True, long_text=mode, precision=args.precision)
            stats = score_file(args.artifact, src, Path(d) / f"{mode}.jsonl", opts)
            results[mode] = {"accuracy": stats.accuracy, "rows_per_s": round(stats.rows_per_s, 1), "truncated_rows": stats.truncated, "computed_tokens": stats.padded_tokens, "backends": stats.backends}
            print(f"{mode:>10}: accuracy {stats.accuracy:.4f}  {stats.rows_per_s:,.1f} rows/s  rows over max length {stats.truncated}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"data": args.data, "rows": len(rows), "modes": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
