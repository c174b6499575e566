"""Each OpenVINO model of an artifact with its attention fused (what export gated; blocks as one
SDPA node) against plain MatMul/Softmax nodes, head to head on a corpus's rows: the engine's own
runners and batches at the same streams, each form's first pass, then warm passes in rounds with
the two taking turns (``tuning.taking_turns``, what `stackscore tune` does), best per form; and
how often the two agree in what the task answers.

    python benchmarks/attention_ab.py ARTIFACT --data FILE.jsonl [--data FILE2] [--rows 2000] [--streams 2] [--rounds 5] [--json F]

A machine whose speed drifts within a minute compares its drift when the forms are timed one
after the other; taking turns slows both alike.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--data", action="append", required=True, help="a corpus file; twice for an equal mix")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--streams", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from stackscore import tuning
    from stackscore.bench import load_corpus
    from stackscore.engine.runner import TransformerRunner, runner_for
    from stackscore.engine.scorer import Scorer
    from stackscore.options import RunOptions

    texts = load_corpus(args.data, args.rows)
    opts = RunOptions(precision=args.precision, backend="openvino", streams=args.streams, fused_attention=True)
    base = Scorer(args.artifact, opts)
    work = base.prepared_batches(texts, 4096)
    out = {"artifact": str(args.artifact), "data": args.data, "rows": len(texts), "streams": args.streams, "rounds": args.rounds, "models": {}}
    print(f"{len(texts):,} rows of {' + '.join(args.data)}, {args.streams} stream(s), best of {args.rounds} warm rounds taking turns")
    print("| model | backend | fused warm rows/s | plain warm rows/s | plain / fused | first pass: fused / plain | agreement |")
    print("|---|---|---:|---:|---:|---|---:|")
    for spec in base.manifest.models:
        fused = base.runners[spec.name]
        if not isinstance(fused, TransformerRunner) or fused.choice is None or fused.choice.backend != "openvino":
            continue
        plain = runner_for(spec, base.manifest, base.artifact_dir, replace(opts, fused_attention=False))
        first, warm = tuning.taking_turns({"fused": fused, "plain": plain}, work[spec.name], len(base.labels), len(texts), rounds=args.rounds)
        agreement = tuning.attention_agreement(fused, plain, work[spec.name], base.fusion.task)
        ratio = warm["plain"] / warm["fused"]
        out["models"][spec.name] = {"describe": fused.describe(), "warm_rows_per_s": warm, "first_pass_rows_per_s": first, "plain_over_fused": ratio, "agreement": agreement}
        print(f"| {spec.name} | {fused.describe()} | {warm['fused']:,.0f} | {warm['plain']:,.0f} | {ratio:.3f} | {first['fused']:,.0f} / {first['plain']:,.0f} | {agreement:.2%} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
