"""Could ONNX Runtime's dynamic int8 pass the gate with a few ops kept in fp32? (a probe, not a
feature: on the rt-polarity MiniLM it could not, see RESULTS.md "On a CPU without VNNI or bf16").

Ranks every MatMul/Gather with a weight initializer by how much the logits' KL to fp32 drops
when that one node is left out of ``quantize_dynamic`` (on ``--search-rows`` training texts),
then leaves out the k most sensitive, k = 0, 1, 2, 4, 8, 12, and reports each graph's label
agreement with fp32 on the test texts and its speed against fp32 (best of 3), every graph run
through the engine's own runner and ONNX Runtime backend, as export's gates run them. Also, with ``--reduce-range``, the whole graph with 7-bit
weights, which cannot saturate on CPUs without VNNI.

    python benchmarks/dynamic_int8_search.py ARTIFACT --model minilm \\
        --search ../shared/data/rt-polarity/train.jsonl --test ../shared/data/rt-polarity/test.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--model", required=True)
    ap.add_argument("--search", type=Path, required=True, help="training texts (the last --search-rows are ranked on)")
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--search-rows", type=int, default=128)
    ap.add_argument("--ks", default="0,1,2,4,8,12")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from stackscore.export.int8_search import logit_error
    from stackscore.export.onnx_graph import GateInputs, compare
    from stackscore.manifest import load_manifest

    m = load_manifest(args.artifact)
    spec = next(s for s in m.models if s.name == args.model)
    fp32 = str(args.artifact / spec.graphs["fp32"])
    read = lambda p: [json.loads(line)["text"] for line in p.open(encoding="utf-8")]  # noqa: E731
    test = read(args.test)
    search = read(args.search)[-args.search_rows :]
    # The engine's own runner and ONNX Runtime backend, batched as scoring batches (as export's gates run)
    g = GateInputs(args.artifact / spec.tokenizer, spec.max_length, spec.pad_id, test, list(spec.inputs), len(m.labels), m.task, spec.flops_per_token, spec.truncation_side)
    tmpdir = tempfile.TemporaryDirectory()
    tmp = Path(tmpdir.name)

    def run(path: str, texts: list[str], reps: int = 1):
        runner = g.runner(g.ort(Path(path), "fp32"))
        best, out = float("inf"), None
        for _ in range(reps):
            t0 = time.perf_counter()
            out = runner.logits(texts, g.width)
            best = min(best, time.perf_counter() - t0)
        return out, len(texts) / best

    def quantized(exclude=(), reduce_range=False) -> str:
        path = str(tmp / "q.onnx")
        quantize_dynamic(fp32, path, weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce_range,
                         nodes_to_exclude=list(exclude), extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return path

    graph = onnx.load(fp32, load_external_data=False)
    inits = {i.name for i in graph.graph.initializer}
    nodes = [n.name for n in graph.graph.node if n.op_type in ("MatMul", "Gather") and any(i in inits for i in n.input)]
    search_ref, _ = run(fp32, search)
    t0 = time.perf_counter()
    base = logit_error(search_ref, run(quantized(), search)[0], g.task)
    gain = {n: base - logit_error(search_ref, run(quantized([n]), search)[0], g.task) for n in nodes}
    order = sorted(nodes, key=lambda n: -gain[n])
    print(f"{len(nodes)} nodes ranked on {len(search)} texts in {time.perf_counter() - t0:.0f}s (KL {base:.2e}); most sensitive: {order[:4]}")
    ref, fp32_rps = run(fp32, test, 3)
    rows = []
    for k, rr in [(int(k), False) for k in args.ks.split(",")] + [(0, True)]:
        got, rps = run(quantized(order[:k], rr), test, 3)
        rows.append({"fp32_nodes": k, "reduce_range": rr, "agreement": round(float(compare(ref, got, g.task)["label_agreement"]), 4), "speed_vs_fp32": round(rps / fp32_rps, 2)})
        print(f"| {k} in fp32{' (7-bit weights)' if rr else ''} | {rows[-1]['agreement']:.2%} | {rows[-1]['speed_vs_fp32']:.2f}x fp32 |")
    if args.json:
        args.json.write_text(json.dumps({"ranking": order[:16], "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
