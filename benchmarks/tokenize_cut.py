"""Truncation with and without the word cut (``TextTokenizer.word_cut``): seconds to tokenize
``--rows`` texts at ``--max-length`` tokens, best of 3, and whether the ids are identical.

    python benchmarks/tokenize_cut.py TOKENIZER.json --data ../shared/data/imdb/test.jsonl [--rows 2000] [--max-length 64]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tokenizer", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--max-length", type=int, default=64)
    args = ap.parse_args()

    from stackscore.bench import load_corpus
    from stackscore.engine.tokenize import TextTokenizer

    texts = load_corpus([str(args.data)], args.rows)
    tok = TextTokenizer(args.tokenizer, args.max_length)
    cut = tok.word_cut
    if cut is None:
        raise SystemExit(f"{args.tokenizer}: no word cut for this tokenizer (it does not split at whitespace first)")
    results = {}
    for name, tok.word_cut in (("word cut", cut), ("whole texts", None)):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            enc = tok.encode(texts)
            best = min(best, time.perf_counter() - t0)
        results[name] = (best, enc)
        print(f"{name}: {best:.3f} s for {len(texts):,} texts")
    a, b = results["word cut"][1], results["whole texts"][1]
    same = np.array_equal(a.lengths, b.lengths) and np.array_equal(a.flat, b.flat)
    print(f"ids identical: {same}; {results['whole texts'][0] / results['word cut'][0]:.2f}x faster with the cut")


if __name__ == "__main__":
    main()
