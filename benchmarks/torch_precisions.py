"""Which PyTorch precision an expert would pick on this CPU: a fit directory's ensemble through
``stackscore bench``'s own expert loop (sorted batches of 32, best of 2) in fp32, under
``torch.autocast(bfloat16)`` and in dynamic int8. On a CPU without bf16 instructions PyTorch
emulates bf16 (7x slower than fp32 for the rt-polarity ensemble on an AVX2 EPYC), which is why the bench's
expert runs fp32 there.

    python benchmarks/torch_precisions.py fit-runs/rt-polarity --data ../shared/data/rt-polarity/test.jsonl
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=256)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from stackscore.bench import TorchEnsemble, load_corpus, torch_loop
    from stackscore.engine.backends import cpu_has_bf16
    from stackscore.engine.scorer import Scorer
    from stackscore.options import RunOptions

    texts = load_corpus([str(args.data)], args.rows)
    ens = TorchEnsemble(args.workdir, Scorer(args.workdir / "artifact", RunOptions(precision="fp32")))
    runs = {"fp32": (ens, False), "bf16 autocast": (ens, True), "dynamic int8": (ens.dynamic_int8(), False)}
    print(f"CPU has bf16 instructions: {cpu_has_bf16()}; models: {', '.join(ens.models)}")
    for name, (e, bf16) in runs.items():
        best = min((torch_loop(e, texts, name, sort=True, bf16=bf16) for _ in range(2)), key=lambda m: m.seconds)
        print(f"| {name} | {best.rows_per_s:,.1f} rows/s |")


if __name__ == "__main__":
    main()
