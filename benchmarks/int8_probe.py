"""Static int8 variants for one model of an artifact: agreement with fp32 and speed, per variant.

Export tries the ladder in ``export/onnx_graph.py:fp32_scopes`` and keeps the first variant that
passes the 99.5 % gate; this script measures that ladder and a few alternatives (SmoothQuant,
more calibration rows, NNCF's mixed preset) on the same texts, through the engine's own
tokenizer, batcher and OpenVINO backend, so a failed gate can be understood.

    python benchmarks/int8_probe.py --fitdir fit-runs/bench --model minilm [--texts FILE.jsonl] [--json F]
    python benchmarks/int8_probe.py --fitdir fit-runs/bench --model minilm --search [--calibration F --calibration-rows N]

Texts default to the fit's parity (gate) sample; calibration texts are the fit's training
sample (``--calibration-rows`` more are read from ``--calibration FILE.jsonl`` if given, shuffled
with seed 0). ``--search`` runs export's per-op sensitivity search (``export/int8_search.py``)
instead of the fixed variants: the training texts are split into calibration and search sets,
and each candidate is gated and timed against bf16 as export does.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fitdir", type=Path, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--texts", type=Path, help="JSONL with a 'text' field (default: the fit's gate sample)")
    ap.add_argument("--calibration", type=Path, help="JSONL with more calibration texts (for the 1,000-row variant)")
    ap.add_argument("--calibration-rows", type=int, default=1000, help="rows read from --calibration (default 1000)")
    ap.add_argument("--search", action="store_true", help="run export's sensitivity search instead of the fixed variants")
    ap.add_argument("--min-speedup", type=float, default=1.05, help="--search: speed rule vs bf16 (0: agreement alone decides, to see the whole ladder)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import nncf

    from stackscore.export.onnx_graph import GateInputs, calibration_batches, fp32_scopes, quantize_static
    from stackscore.fit_state import FitState
    from stackscore.manifest import load_manifest

    state = FitState.load(args.fitdir)
    artifact = args.fitdir / "artifact"
    manifest = load_manifest(artifact)
    spec = next(m for m in manifest.models if m.name == args.model)
    fp32 = artifact / spec.graphs["fp32"]
    texts = [json.loads(line)["text"] for line in open(args.texts)] if args.texts else state.parity_texts
    calib_texts = state.calibration_texts or state.parity_texts
    more = None
    if args.calibration:
        pool = [json.loads(line)["text"] for line in open(args.calibration)]
        more = [pool[i] for i in np.random.default_rng(0).permutation(len(pool))[: args.calibration_rows]]
    # The gates' own inputs: the engine's runner (tokenizer, batcher) over the OpenVINO backend.
    g = GateInputs(artifact / spec.tokenizer, spec.max_length, spec.pad_id, texts, list(spec.inputs), len(manifest.labels), flops_per_token=spec.flops_per_token, truncation_side=spec.truncation_side)

    def run(graph: Path, precision: str) -> tuple[np.ndarray, float]:
        backend = g.openvino(graph, precision)
        g.runner(backend).logits(texts[:64], g.width)  # warm-up
        t0 = time.perf_counter()
        out = g.logits(backend)
        return out, len(texts) / (time.perf_counter() - t0)

    ref, fp32_speed = run(fp32, "fp32")
    rows = {"fp32 (reference)": {"agreement": 1.0, "seq_per_s": round(fp32_speed, 1)}}
    bf16, speed = run(fp32, "bf16")
    rows["bf16"] = {"agreement": float(np.mean(bf16.argmax(1) == ref.argmax(1))), "seq_per_s": round(speed, 1)}

    if args.search:
        from stackscore.export.int8_search import search_static_int8

        training = more or state.calibration_texts
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            gate = search_static_int8(fp32, Path(d) / "q.onnx", g, ref, training, 0.995, print, ("bf16", lambda: g.openvino(fp32, "bf16")), min_speedup=args.min_speedup)
            seconds = time.perf_counter() - t0
        print(f"\n{args.model}: {len(training)} training texts ({gate['calibration_rows']} calibrate, {gate['search_rows']} search), "
              f"{gate.get('quantized_ops')} quantized ops; gate on {len(texts)} texts vs OpenVINO fp32 (>= 0.995); {seconds:.0f}s in all "
              f"(quantize {gate['quantize_seconds']}s, search {gate.get('search_seconds', 0)}s)\n")
        print("| ops in float | agreement | max prob error | rows/s | vs bf16 | passed |\n|---:|---:|---:|---:|---:|---|")
        for c in gate["candidates"]:
            if c.get("label_agreement") is None:  # the candidate failed to build or run
                print(f"| {c['fp32_ops']} | error | | | | False |")
                continue
            print(f"| {c['fp32_ops']} | {c['label_agreement']:.4f} | {c['max_prob_error']:.3f} | {c.get('seq_per_s') or 0:,.0f} | {c.get('speedup') or 0:.2f}x | {c['agreement_passed']} |")
        print(f"\nkept: {gate['passed']} {gate.get('reason', '')}; bf16 {gate.get('baseline_seq_per_s')} rows/s, bf16 agreement {rows['bf16']['agreement']:.4f}")
        print("ranking (error removed by reverting the op alone):", *gate.get("ranking", [])[:10], sep="\n  ")
        if args.json:
            args.json.write_text(json.dumps({"model": args.model, "texts": len(texts), "training_texts": len(training), "seconds": seconds, "bf16": rows["bf16"], "gate": gate}, indent=2) + "\n")
        return

    AQP = nncf.AdvancedQuantizationParameters
    ladder = fp32_scopes(fp32)
    variants = {f"ladder {i}: fp32 {scope or 'none'}": (scope, calib_texts, {}) for i, scope in enumerate(ladder)}
    variants["SmoothQuant alpha 0.5"] = (None, calib_texts, {"advanced_parameters": AQP(smooth_quant_alpha=0.5)})
    variants["SmoothQuant alpha 0.95"] = (None, calib_texts, {"advanced_parameters": AQP(smooth_quant_alpha=0.95)})
    variants["ladder 1 + mixed preset"] = (ladder[1], calib_texts, {"preset": nncf.QuantizationPreset.MIXED})
    if more:
        variants["ladder 1 + 1,000 calibration rows"] = (ladder[1], more, {})
    with tempfile.TemporaryDirectory() as d:
        q = Path(d) / "q.onnx"
        for label, (scope, cal, kw) in variants.items():
            calib = calibration_batches(g, cal)
            quantize_static(fp32, q, calib, scope, **kw)
            got, speed = run(q, "int8")
            rows[label] = {"agreement": float(np.mean(got.argmax(1) == ref.argmax(1))), "seq_per_s": round(speed, 1), "calibration_rows": len(cal)}
            print(f"{label}: agreement {rows[label]['agreement']:.4f}, {speed:,.0f} seq/s", flush=True)
    print(f"\n{args.model} on {len(texts)} texts, agreement with OpenVINO fp32 (gate: >= 0.995)\n")
    print("| variant | agreement | seq/s |\n|---|---:|---:|")
    for label, r in rows.items():
        print(f"| {label} | {r['agreement']:.4f} | {r['seq_per_s']:,.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "texts": len(texts), "variants": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
