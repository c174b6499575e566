"""The token-budget batcher: budget respected, every row exactly once, padding correct."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stackscore.engine.batcher import build_batch, plan_batches
from stackscore.engine.tokenize import Encoded


def encoded_from(lengths: list[int], max_length: int = 512) -> Encoded:
    lengths_a = np.asarray(lengths, dtype=np.int64)
    offsets = np.zeros(len(lengths_a), dtype=np.int64)
    if len(lengths_a) > 1:
        offsets[1:] = np.cumsum(lengths_a[:-1])
    flat = np.arange(int(lengths_a.sum()), dtype=np.int64) + 10  # distinct ids: 10, 11, ...
    return Encoded(flat, lengths_a, offsets, max_length)


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=300), min_size=0, max_size=400),
    budget=st.integers(min_value=1, max_value=5000),
    max_rows=st.integers(min_value=1, max_value=64),
    max_padding=st.sampled_from([0.0, 0.05, 0.2, 1.0]),
)
def test_every_row_once_and_budget_respected(lengths, budget, max_rows, max_padding):
    groups = plan_batches(np.asarray(lengths, dtype=np.int64), budget, max_rows, max_padding)
    seen = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for g in groups:
        assert 1 <= len(g) <= max_rows
        cost = len(g) * max(lengths[i] for i in g)
        # A single row longer than the budget still gets scored, alone.
        assert cost <= budget or len(g) == 1
        real = sum(lengths[i] for i in g)
        assert 1 - real / cost <= max_padding + 1e-9 or len(g) == 1


@settings(max_examples=100, deadline=None)
@given(lengths=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=100), budget=st.integers(10, 800))
def test_batches_hold_each_rows_own_tokens(lengths, budget):
    enc = encoded_from(lengths)
    for rows in plan_batches(enc.lengths, budget, 32):
        b = build_batch(enc, rows, pad_id=1)
        assert b.input_ids.shape == (len(rows), max(lengths[i] for i in rows))
        for r, row in enumerate(rows):
            n = lengths[row]
            expected = enc.flat[enc.offsets[row] : enc.offsets[row] + n]
            assert (b.input_ids[r, :n] == expected).all()
            assert (b.input_ids[r, n:] == 1).all()
            assert b.attention_mask[r].sum() == n


def test_sorted_batches_pad_little_even_in_a_small_window():
    rng = np.random.default_rng(0)
    for n in (300, 5000):
        lengths = rng.integers(5, 200, size=n)
        padded = real = 0
        for rows in plan_batches(lengths, 8192, 256):
            padded += len(rows) * lengths[rows].max()
            real += lengths[rows].sum()
        assert real / padded > 0.95, n
