"""One transformer graph under OpenVINO's three ways to run attention, batch shape by shape: the
fused kernel built from the spelled-out block (``fused``), plain MatMul/Softmax nodes
(``plain``: ``SNIPPETS_MODE=DISABLE``) and the block rewritten as one ScaledDotProductAttention
node (``sdpa``: ``ov.attention_as_sdpa``, what the engine runs where attention is fused). Per
length, one batch of ``--budget`` tokens: a first call (a new shape, one row fewer) and the median of 5 warm
calls, the kinds taking turns; and whether each kind's output equals ``fused``'s byte for byte.

    python benchmarks/attention_kinds.py GRAPH.onnx [--lengths 17,25,64,128,256,512] [--budget 2048] [--precision bf16] [--json F]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("graph", type=Path)
    ap.add_argument("--lengths", default="17,25,64,128,256,512")
    ap.add_argument("--budget", type=int, default=2048)
    ap.add_argument("--precision", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import openvino as ov

    from stackscore.engine.backends import graph_feeds
    from stackscore.engine.backends.ov import attention_as_sdpa

    core = ov.Core()
    base = {"INFERENCE_PRECISION_HINT": args.precision, "INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY"}
    requests, rewritten = {}, 0
    for kind in ("fused", "plain", "sdpa"):
        model = core.read_model(str(args.graph))
        if kind == "sdpa":
            rewritten = attention_as_sdpa(model)
        requests[kind] = (core.compile_model(model, "CPU", {**base, **({"SNIPPETS_MODE": "DISABLE"} if kind == "plain" else {})}).create_infer_request(), [i.get_any_name() for i in model.inputs])
    rng = np.random.default_rng(0)

    def feeds(names: list[str], rows: int, length: int) -> dict[str, np.ndarray]:
        ids = rng.integers(5, 1000, size=(rows, length)).astype(np.int64)
        mask = (np.arange(length)[None, :] < rng.integers(max(1, length // 2), length + 1, size=(rows, 1))).astype(np.int64)
        return graph_feeds(ids, mask, names)

    for request, names in requests.values():  # the process's first call is no shape's cost
        request.infer(feeds(names, 1, 3))
    rows_out = []
    print(f"{rewritten} attention blocks rewritten; ms per {args.budget}-token batch, first call / warm median")
    print(f"| tokens | rows | {' | '.join(requests)} | identical to fused |")
    print("|---:|---:|" + "---|" * (len(requests) + 1))
    for length in [int(x) for x in args.lengths.split(",")]:
        rows = max(1, args.budget // length)
        same = feeds(requests["fused"][1], rows, length)
        outs = {k: np.array(r.infer({n: same[n] for n in names if n in same})[0]) for k, (r, names) in requests.items()}
        first, warm = {}, {k: [] for k in requests}
        for k, (request, names) in requests.items():  # a second shape, new to every kind
            f = feeds(names, rows - 1 if rows > 1 else rows, length)
            t0 = time.perf_counter()
            request.infer(f)
            first[k] = (time.perf_counter() - t0) * 1e3
        for _ in range(5):
            for k, (request, names) in requests.items():
                f = feeds(names, rows, length)
                t0 = time.perf_counter()
                request.infer(f)
                warm[k].append((time.perf_counter() - t0) * 1e3)
        row = {"tokens": length, "rows": rows, **{k: {"first_ms": round(first[k], 1), "warm_ms": round(float(np.median(warm[k])), 1)} for k in requests},
               "identical_to_fused": [k for k in requests if k != "fused" and np.array_equal(outs[k], outs["fused"])]}
        rows_out.append(row)
        print(f"| {length} | {rows} | " + " | ".join(f"{row[k]['first_ms']} / {row[k]['warm_ms']}" for k in requests) + f" | {', '.join(row['identical_to_fused']) or '-'} |")
    if args.json:
        args.json.write_text(json.dumps({"graph": str(args.graph), "precision": args.precision, "rewritten": rewritten, "shapes": rows_out}, indent=1))


if __name__ == "__main__":
    main()
