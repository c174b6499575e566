"""Static int8 variants for one model of an artifact: agreement with fp32 and speed, per variant.

Export tries the ladder in ``export/onnx_graph.py:fp32_scopes`` and keeps the first variant that
passes the 99.5 % gate; this script measures that ladder and a few alternatives (SmoothQuant,
more calibration rows, NNCF's mixed preset) on the same texts, through the engine's own
tokenizer, batcher and OpenVINO backend, so a failed gate can be understood.

    python benchmarks/int8_probe.py --fitdir fit-runs/bench --model minilm [--texts FILE.jsonl] [--json F]

Texts default to the fit's parity (gate) sample; calibration texts are the fit's training
sample (``--calibration-rows`` more are read from ``--calibration FILE.jsonl`` if given).
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
    more = [json.loads(line)["text"] for line in open(args.calibration)][:1000] if args.calibration else None
    # The gates' own inputs: the engine's runner (tokenizer, batcher) over the OpenVINO backend.
    g = GateInputs(artifact / spec.tokenizer, spec.max_length, spec.pad_id, texts, list(spec.inputs), len(manifest.labels))

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
