"""Where a small job's start goes, phase by phase, in one fresh process: the imports, then per
model its checksums, tokenizer and session (each on its loading thread, with start and end
times, so what overlaps shows), then the first window's inference, model by model.

    python benchmarks/cold_phases.py ARTIFACT --data FILE.jsonl [--rows 20] [--cache-dir D] [--precision auto]

Run it twice with ``--cache-dir``: the first run fills the compiled-model cache. Times are
seconds from the interpreter's start of this script (the interpreter itself: ~0.02 s more).
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import functools  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

EVENTS: list[tuple[str, float, float, str]] = []


def timed(owner, name: str, label: str) -> None:
    """Replace ``owner.name`` with a wrapper that records (label, start, end, thread)."""
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            EVENTS.append((label, t - T0, time.perf_counter() - T0, threading.current_thread().name))

    static = isinstance(getattr(owner, "__dict__", {}).get(name), staticmethod)
    setattr(owner, name, staticmethod(wrapper) if static else wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--cache-dir", type=Path)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()

    t = time.perf_counter()
    import stackscore.engine.pipeline  # noqa: F401 - what `stackscore score` imports before the scorer
    from stackscore.bench import load_corpus
    from stackscore.engine import runner, scorer, tokenize
    from stackscore.engine.backends import ort, ov
    from stackscore.options import RunOptions

    EVENTS.append(("import stackscore (cli path, numpy included)", t - T0, time.perf_counter() - T0, "MainThread"))
    timed(scorer, "verify_opened", "checksums of opened files")
    timed(tokenize.TextTokenizer, "__init__", "tokenizer")
    timed(ov.OpenVinoBackend, "__init__", "OpenVINO session (incl. import)")
    timed(ov.OpenVinoBackend, "_compile", "  its compilation (or cached blob)")
    timed(ort.OrtBackend, "__init__", "ONNX Runtime session (incl. import)")
    timed(ort.TextBackend, "__init__", "string-input session")
    timed(runner, "runner_for", "model built")
    timed(scorer.Scorer, "run_model", "  a model's share of the first window")
    texts = load_corpus([str(args.data)], args.rows)
    t = time.perf_counter()
    s = scorer.Scorer(args.artifact, RunOptions(precision=args.precision, cache_dir=args.cache_dir))
    EVENTS.append(("scorer ready", t - T0, time.perf_counter() - T0, "MainThread"))
    t = time.perf_counter()
    s.score_texts(texts)
    EVENTS.append((f"first {len(texts)} rows scored (new shapes)", t - T0, time.perf_counter() - T0, "MainThread"))
    print(f"{'phase':48s} {'start':>6s} {'end':>6s} {'took':>6s}  thread")
    for label, a, b, thread in sorted(EVENTS, key=lambda e: e[1]):
        print(f"{label:48s} {a:6.3f} {b:6.3f} {b - a:6.3f}  {thread}")
    print(f"backends: {s.describe()}", file=sys.stderr)


if __name__ == "__main__":
    main()
