"""Cascade on vs off: whole `stackscore score` processes on one machine, one run, as ratios.

For a fit directory whose artifact has a cascade (``[fusion] cascade = true``):

- **throughput**: ``--rows`` rows of ``--data`` (a JSONL with ``text``) scored file to file by
  ``stackscore score`` processes (cold start included), ``--cascade on`` and ``off`` alternated,
  best of ``--repeats`` each; the ratio is what to compare across machines;
- **quality**: ``--test`` (labelled JSONL) scored both ways: accuracy, log-loss, agreement of
  the cascade's label with the full ensemble's, and the share of rows each stage answered.

    python benchmarks/cascade.py --fit fit-runs/rt-polarity --data ../shared/data/rt-polarity/train.jsonl \\
        --test ../shared/data/rt-polarity/test.jsonl --rows 8000 --json bench-out/cascade-rt-polarity.json

Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson


def take_rows(src: Path, dst: Path, rows: int, label_field: str | None = None) -> int:
    """The first ``rows`` rows of ``src`` (repeated if it is shorter), as ``{"id", "text"[, "label"]}``."""
    pool = [orjson.loads(l) for l in src.read_bytes().splitlines() if l.strip()]
    out, i = [], 0
    while len(out) < rows and pool:
        r = pool[i % len(pool)]
        row = {"id": len(out), "text": r["text"]}
        if label_field:
            row["label"] = r[label_field]
        out.append(orjson.dumps(row))
        i += 1
    dst.write_bytes(b"\n".join(out) + b"\n")
    return len(out)


def score(artifact: Path, src: Path, out: Path, cascade: str, extra: list[str]) -> float:
    """Seconds for one whole `stackscore score` process (import, load, score, write)."""
    cmd = [sys.executable, "-m", "stackscore.cli", "score", str(artifact), str(src), "-o", str(out), "--overwrite", "--quiet", "--cascade", cascade, *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"stackscore score failed: {r.stderr.strip()[-500:]}")
    return seconds


def quality(on: Path, off: Path, labels: list[str], truth: list[str]) -> dict:
    a = [orjson.loads(l) for l in on.read_bytes().splitlines()]
    b = [orjson.loads(l) for l in off.read_bytes().splitlines()]
    pa = np.asarray([[r[f"prob_{l}"] for l in labels] for r in a])
    pb = np.asarray([[r[f"prob_{l}"] for l in labels] for r in b])
    y = np.asarray([labels.index(str(t)) for t in truth])

    def ll(p: np.ndarray) -> float:
        return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))))

    stages = np.asarray([r["stage"] for r in a])
    return {
        "rows": len(a),
        "accuracy_cascade": float(np.mean(pa.argmax(1) == y)), "accuracy_full": float(np.mean(pb.argmax(1) == y)),
        "log_loss_cascade": ll(pa), "log_loss_full": ll(pb),
        "agreement": float(np.mean(pa.argmax(1) == pb.argmax(1))),
        "stage_share": [float(np.mean(stages == s)) for s in range(1, int(stages.max()) + 1)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fit", type=Path, required=True, help="fit work directory (artifact/ inside)")
    ap.add_argument("--data", type=Path, required=True, help="JSONL with a text field: the throughput corpus")
    ap.add_argument("--test", type=Path, required=True, help="labelled JSONL (text, label): the quality check")
    ap.add_argument("--rows", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--label-field", default="label")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    artifact = args.fit / "artifact"
    manifest = json.loads((artifact / "manifest.json").read_text())
    if not manifest.get("cascade"):
        raise SystemExit(f"{artifact}: no cascade in this artifact (fit with [fusion] cascade = true)")
    labels = manifest["labels"]
    extra = ["--precision", args.precision]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        n = take_rows(args.data, d / "in.jsonl", args.rows)
        times: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(args.repeats):  # alternated, so a noisy neighbour hits both
            for mode in ("on", "off"):
                times[mode].append(score(artifact, d / "in.jsonl", d / f"{mode}.jsonl", mode, extra))
        take_rows(args.test, d / "test.jsonl", sum(1 for l in args.test.read_bytes().splitlines() if l.strip()), args.label_field)
        truth = [orjson.loads(l)["label"] for l in (d / "test.jsonl").read_bytes().splitlines()]
        score(artifact, d / "test.jsonl", d / "t-on.jsonl", "on", extra)
        score(artifact, d / "test.jsonl", d / "t-off.jsonl", "off", extra)
        q = quality(d / "t-on.jsonl", d / "t-off.jsonl", labels, truth)
        tp = quality(d / "on.jsonl", d / "off.jsonl", labels, [labels[0]] * n)  # stage shares on the throughput corpus
    best = {m: min(v) for m, v in times.items()}
    res = {
        "fit": str(args.fit), "data": str(args.data), "test_file": str(args.test), "rows": n, "precision": args.precision,
        "cascade_order": manifest["cascade"]["order"], "cpu_count": os.cpu_count(),
        "seconds": times, "rows_per_s_on": n / best["on"], "rows_per_s_off": n / best["off"],
        "speedup": best["off"] / best["on"], "throughput_stage_share": tp["stage_share"],
        "throughput_agreement": tp["agreement"], "test": q,
    }
    print(f"\n{args.fit.name}: {n:,} rows, cascade {' -> '.join(res['cascade_order'])}, precision {args.precision}")
    print("| | rows/s (whole process) | accuracy | log-loss | agreement with full | rows per stage |")
    print("|---|---:|---:|---:|---:|---|")
    print(f"| cascade on | {res['rows_per_s_on']:,.1f} | {q['accuracy_cascade']:.4f} | {q['log_loss_cascade']:.4f} | {q['agreement']:.2%} | {', '.join(f'{s:.1%}' for s in q['stage_share'])} |")
    print(f"| cascade off (full) | {res['rows_per_s_off']:,.1f} | {q['accuracy_full']:.4f} | {q['log_loss_full']:.4f} | 100% | - |")
    print(f"speed-up {res['speedup']:.2f}x; on the throughput corpus {', '.join(f'{s:.1%}' for s in tp['stage_share'])} of rows per stage, agreement {tp['agreement']:.2%}")
    from stackscore.bench import write_outputs

    write_outputs(res, args.json, None)


if __name__ == "__main__":
    main()
