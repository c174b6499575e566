"""Tokenization stage: the fast tokenizer's batch encode, no padding (the batcher pads).

A window of texts becomes one flat int64 array of token ids plus per-row lengths (CSR layout),
so the batcher can sort rows and build padded batches with numpy alone, without touching Python
lists per row. Models that share a tokenizer file (same sha256) share one encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


@dataclass
class Encoded:
    """Token ids of ``len(lengths)`` rows: row i is ``flat[offsets[i]:offsets[i] + lengths[i]]``."""

    flat: np.ndarray  # int64
    lengths: np.ndarray  # int64
    offsets: np.ndarray  # int64
    max_length: int

    @property
    def n_rows(self) -> int:
        return len(self.lengths)

    @property
    def truncated(self) -> int:
        """Rows that reached the length cap (were, or may have been, truncated)."""
        return int(np.sum(self.lengths >= self.max_length))


class TextTokenizer:
    """Wraps one ``tokenizer.json``: truncation at ``max_length``, padding disabled."""

    def __init__(self, path: str | Path, max_length: int):
        self.path = Path(path)
        self.max_length = int(max_length)
        self.tok = Tokenizer.from_file(str(self.path))
        self.tok.no_padding()
        self.tok.enable_truncation(self.max_length)
        self._encode = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)
        self.max_chars = max(4096, self.max_length * 64)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, texts: list[str]) -> Encoded:
        # A 10 MB row would be normalized and split in full before truncation. Real text has far
        # more than max_length tokens in max_length * 64 characters, so the cut keeps the ids
        # (a row of nothing but whitespace for that long is the exception: documented).
        cap = self.max_chars
        texts = [t if len(t) <= cap else t[:cap] for t in texts]
        encs = self._encode(texts, add_special_tokens=True)
        lengths = np.fromiter((len(e) for e in encs), dtype=np.int64, count=len(encs))
        total = int(lengths.sum())
        flat = np.fromiter(chain.from_iterable(e.ids for e in encs), dtype=np.int64, count=total)
        offsets = np.zeros(len(lengths), dtype=np.int64)
        if len(lengths) > 1:
            np.cumsum(lengths[:-1], out=offsets[1:])
        return Encoded(flat, lengths, offsets, self.max_length)
