"""What OpenVINO charges for a batch shape it has not run before, per transformer of an artifact.

The engine's batches are all new shapes in a fresh process (one per length in a window), and
each costs a one-off preparation on top of its work. Three sets of 25 shapes, each shape run cold
(first call) and at once warm (best of two), the sets taking turns; the cost is (cold - warm) per shape:

1. ``new``: (rows, length) pairs not seen before;
2. ``same product``: new pairs whose rows x length equals one of set 1's (2 x rows, length / 2);
3. ``new again``: (rows + 1, length), new products.

With ``--bounded`` the graph's dynamic dimensions are bounded at compile time
([1..512] rows, [1..max_length] tokens) and the same sets run again, plus the warm time of
all 75 shapes for both compilations (whether bounding makes the work itself slower). With
``--plain-attention`` the same again with attention as plain MatMul/Softmax nodes instead of
OpenVINO's fused kernel (what `stackscore tune` may choose: ``tuning.prefer_plain``). With
``--data FILE`` each compilation also runs the engine's own batches of ``--rows`` texts three
times (the first pass in a fresh compilation is what a whole-process job pays).

    python benchmarks/shape_cost.py ARTIFACT [--bounded] [--plain-attention] [--data FILE.jsonl --rows 2000] [--json F]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def measure(compiled, names: list[str], sets: dict[str, list[tuple[int, int]]]) -> dict[str, float]:
    request = compiled.create_infer_request()

    def call(rows: int, length: int) -> float:
        ids = np.full((rows, length), 5, np.int64)
        feeds = {n: (np.ones_like(ids) if "mask" in n else np.zeros_like(ids) if "type" in n else ids) for n in names}
        t0 = time.perf_counter()
        request.infer(feeds)
        return (time.perf_counter() - t0) * 1e3

    call(3, 7)
    call(3, 7)  # the first call ever (thread pools, allocator) is not a shape's cost
    # Each shape's cold call is followed at once by its warm ones, and the sets take turns: on a
    # machine whose speed drifts within seconds (a shared VM), timing a whole set cold and then
    # the set warm read "same product" shapes at -121 to +98 ms apart from run to run.
    cost = {name: 0.0 for name in sets}
    warm_all = 0.0
    for i in range(max(len(shapes) for shapes in sets.values())):
        for name, shapes in sets.items():
            if i < len(shapes):
                cold = call(*shapes[i])
                warm = min(call(*shapes[i]), call(*shapes[i]))
                cost[name] += cold - warm
                warm_all += warm
    out = {f"{name}_ms_per_shape": round(cost[name] / len(shapes), 2) for name, shapes in sets.items()}
    out["warm_ms_all_shapes"] = round(warm_all, 1)
    return out


def shape_sets(n: int = 25, seed: int = 1) -> dict[str, list[tuple[int, int]]]:
    """``new`` and ``new_again`` shapes whose rows x length no other shape of either set has
    (what prepares a kernel is the product: a "new" shape sharing one with a shape run earlier
    would read cheap); ``same_product`` pairs each ``new`` shape's product with another shape."""
    rng = np.random.default_rng(seed)
    first: list[tuple[int, int]] = []
    products: set[int] = set()
    while len(first) < n:
        b, length = int(rng.integers(8, 30)) * 2, int(rng.integers(6, 28)) * 2
        again = (b + 1) * length
        if b * length in products or again in products or again == b * length:
            continue
        first.append((b, length))
        products |= {b * length, again}
    return {"new": first, "same_product": [(b * 2, length // 2) for b, length in first], "new_again": [(b + 1, length) for b, length in first]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--bounded", action="store_true", help="also compile with bounded dynamic dimensions")
    ap.add_argument("--plain-attention", action="store_true", help="also compile with attention as plain nodes (OpenVinoBackend(fused_attention=False))")
    ap.add_argument("--data", type=Path, help="also time the engine's batches of these texts")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from stackscore.engine.backends import choose
    from stackscore.engine.backends.ov import import_openvino
    from stackscore.manifest import load_manifest
    from stackscore.options import RunOptions

    ov = import_openvino()
    manifest = load_manifest(args.artifact)
    options = RunOptions(precision="auto", backend="openvino", streams=1)
    sets = shape_sets()
    batches: dict = {}
    if args.data:  # the engine's batches, planned and padded by its own runners
        from stackscore.bench import load_corpus
        from stackscore.engine.scorer import Scorer

        texts = load_corpus([str(args.data)], args.rows)
        planner = Scorer(args.artifact, RunOptions(precision="fp32", backend="onnxruntime", cascade=False, streams=1))
        batches = {n: list(r.batches(r.encode(texts))) for n, r in planner.runners.items() if r.kind == "transformer"}
    out: dict = {}
    for spec in manifest.models:
        if spec.kind != "transformer":
            continue
        choice = choose(spec, options)
        hint = "bf16" if choice.precision in ("bf16", "int8") else "f32"
        config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": options.cpu_threads, "PERFORMANCE_HINT": "LATENCY"}
        core = ov.Core()
        runs = {"dynamic": (None, {})}
        if args.bounded:
            runs["bounded"] = ([ov.Dimension(1, 512), ov.Dimension(1, max(spec.max_length, 64))], {})
        if args.plain_attention:  # what the engine's backend sets for fused_attention=False
            runs["dynamic_plain_attention"] = (None, {"SNIPPETS_MODE": "DISABLE"})
        out[spec.name] = {"variant": choice.variant}
        for label, (dims, extra) in runs.items():
            model = core.read_model(str(args.artifact / spec.graphs[choice.graph_key]))
            if dims is not None:
                model.reshape({i.get_any_name(): ov.PartialShape(dims) for i in model.inputs})
            compiled = core.compile_model(model, "CPU", {**config, **extra})
            r = measure(compiled, [i.get_any_name() for i in compiled.inputs], sets)
            if spec.name in batches:
                request, names = compiled.create_infer_request(), [i.get_any_name() for i in compiled.inputs]
                passes = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    for b in batches[spec.name]:
                        request.infer({n: (b.attention_mask if "mask" in n else np.zeros_like(b.input_ids) if "type" in n else b.input_ids) for n in names})
                    passes.append(round(time.perf_counter() - t0, 3))
                r["engine_batches"], r["engine_batch_passes_s"] = len(batches[spec.name]), passes
            out[spec.name][label] = r
            print(f"{spec.name} ({choice.variant}, {label}): new shape {r['new_ms_per_shape']} ms, same rows x length "
                  f"{r['same_product_ms_per_shape']} ms, new again {r['new_again_ms_per_shape']} ms; warm, all 75 shapes {r['warm_ms_all_shapes']} ms"
                  + (f"; engine's {r['engine_batches']} batches, passes {r['engine_batch_passes_s']} s" if "engine_batches" in r else ""))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
