"""Out-of-fold cascade thresholds on the final models: planned vs what new rows get, before and
after `Cascade.hold_stop_shares`.

Fit learns a cascade's thresholds on out-of-fold outputs (fold models) and the engine applies
them to the final models, trained on every row. This refits the cascade on a fit's own
``oof.npz`` for each given cost order (fixed, so run-to-run timing noise does not reorder the
stages), then scores ``--fresh`` rows (never seen by any model) with the artifact's final models
and reports agreement with the full ensemble and the share of rows stopping at each stage: with
the thresholds as learned, and after holding them to the planned shares on ``--test`` (the
fit's test split: its texts only, as fit does).

    python benchmarks/cascade_holdout.py --fit FIT_DIR --test TEST.jsonl --fresh FRESH.jsonl \\
        --order t1,t3,t2 --order t3,t1,t2 --json bench-out/cascade-holdout.json

For fits with the default fusion parameters (the partial fusions are refitted with them).
Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import orjson


def texts_of(path: Path) -> list[str]:
    return [orjson.loads(l)["text"] for l in path.read_bytes().splitlines() if l.strip()]


def main() -> None:
    from stackscore.api import Ensemble
    from stackscore.fusion import candidates, from_manifest
    from stackscore.fusion.cascade import Cascade
    from stackscore.manifest import load_manifest
    from stackscore.train.fit import partial_fusions

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fit", type=Path, required=True, help="fit work directory (artifact/ and oof.npz inside)")
    ap.add_argument("--test", type=Path, required=True, help="JSONL with text: the fit's test split")
    ap.add_argument("--fresh", type=Path, required=True, help="JSONL with text: rows no model has seen")
    ap.add_argument("--order", action="append", required=True, help="cost order, comma-separated model names (repeatable)")
    ap.add_argument("--folds", type=int, default=3, help="the fit's [fusion] folds")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    art = args.fit / "artifact"
    m = load_manifest(art)
    oof = np.load(args.fit / "oof.npz")
    names = [s.name for s in m.models]
    outs = {n: oof[f"logits_{n}"] for n in names}
    full = from_manifest(m.fusion, art, m.task)
    cand = candidates("single_label")
    make_partial = partial_fusions(m.fusion.method, cand, "single_label", None, names)
    ens = Ensemble(art, cascade=False)
    _, test = ens.predict_proba(texts_of(args.test), return_model_outputs=True)
    fresh_texts = texts_of(args.fresh)
    _, fresh = ens.predict_proba(fresh_texts, return_model_outputs=True)
    full_label = full.predict_proba([fresh[n] for n in names]).argmax(1)

    def on_fresh(c: Cascade) -> tuple[float, list[float]]:
        proba, stage = c.predict_proba(fresh)
        return float(np.mean(proba.argmax(1) == full_label)), (np.bincount(stage, minlength=len(names)) / len(fresh_texts)).round(3).tolist()

    rows = []
    print(f"{len(fresh_texts):,} fresh rows; thresholds held on {len(texts_of(args.test)):,} test rows\n")
    print("| cost order | planned agreement (fusion rows, CV) | planned stop shares | learned: agreement on fresh rows | learned: stop shares | held: agreement | held: stop shares |")
    print("|---|---:|---|---:|---|---:|---|")
    for order in (o.split(",") for o in args.order):
        c = Cascade(folds=args.folds).fit(outs, oof["y"], order, {n: 1.0 + i for i, n in enumerate(order)}, make_partial, full,
                                          model_order=names, make_full=cand.get(m.fusion.method))
        learned = on_fresh(c)
        held = c.hold_stop_shares(test)
        after = on_fresh(c)
        rows.append({"order": order, "planned_agreement": c.agreement_, "planned_stop_share": c.stop_share_,
                     "learned": {"agreement": learned[0], "stop_share": learned[1]}, "held": {"agreement": after[0], "stop_share": after[1], "stages": held}})
        print(f"| {' -> '.join(order)} | {c.agreement_:.4f} | {np.round(c.stop_share_, 3).tolist()} | {learned[0]:.4f} | {learned[1]} | {after[0]:.4f} | {after[1]} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"fit": str(args.fit), "fresh_rows": len(fresh_texts), "orders": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
