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
    overhead=st.sampled_from([0, 16, 64, 1000]),
)
def test_every_row_once_and_budget_respected(lengths, budget, max_rows, overhead):
    groups = plan_batches(np.asarray(lengths, dtype=np.int64), budget, max_rows, overhead)
    seen = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for g in groups:
        assert 1 <= len(g) <= max_rows
        cost = len(g) * max(lengths[i] for i in g)
        # A single row longer than the budget still gets scored, alone.
        assert cost <= budget or len(g) == 1


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=60), min_size=0, max_size=40),
    min_batches=st.integers(min_value=1, max_value=4),
)
def test_a_small_window_still_gives_every_stream_a_batch(lengths, min_batches):
    """With several streams, a window the planner would send as one batch (20 short rows) is
    halved until each stream has one: every row once, as many batches as rows allow."""
    lengths_a = np.asarray(lengths, dtype=np.int64)
    one = plan_batches(lengths_a, 4096, 256)
    groups = plan_batches(lengths_a, 4096, 256, min_batches=min_batches)
    seen = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    assert len(groups) == max(len(one), min(min_batches, len(lengths)))
    assert all(len(g) >= 1 for g in groups)


def plan_cost(lengths, groups, overhead):
    return sum(len(g) * max(lengths[i] for i in g) + overhead for g in groups)


def cheapest_split(lengths, budget, max_rows, cost):
    """Brute force: the least ``cost(groups)`` over every way of cutting the length-sorted rows
    into contiguous batches that respect the budget and the row cap."""
    import itertools

    order = np.argsort(lengths, kind="stable")
    n, best = len(lengths), None
    for cuts in itertools.product([0, 1], repeat=n - 1):
        bounds = [0, *[i + 1 for i, c in enumerate(cuts) if c], n]
        groups = [order[a:b] for a, b in zip(bounds, bounds[1:])]
        if all(len(g) <= max_rows and (len(g) == 1 or len(g) * max(lengths[i] for i in g) <= budget) for g in groups):
            best = cost(groups) if best is None else min(best, cost(groups))
    return best


SMALL_PLANS = {  # windows small enough to brute-force every split
    "lengths": st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=9),
    "budget": st.integers(min_value=1, max_value=200),
    "max_rows": st.integers(min_value=1, max_value=9),
}


@settings(max_examples=150, deadline=None)
@given(**SMALL_PLANS, overhead=st.sampled_from([0, 5, 64]))
def test_plan_is_the_cheapest_split_of_the_sorted_rows(lengths, budget, max_rows, overhead):
    """Against brute force: every way of cutting the length-sorted rows into contiguous batches."""
    got = plan_batches(np.asarray(lengths), budget, max_rows, overhead)
    assert plan_cost(lengths, got, overhead) == cheapest_split(lengths, budget, max_rows, lambda g: plan_cost(lengths, g, overhead))


@settings(max_examples=150, deadline=None)
@given(**SMALL_PLANS, penalty=st.sampled_from([1, 7, 40]))
def test_plan_with_preferred_shapes_is_the_cheapest_split_counting_other_shapes(lengths, budget, max_rows, penalty):
    """Against brute force, a batch costs ``penalty`` more unless it is its width's preferred
    shape: as many rows as the budget and the row cap allow."""

    def cost(groups):
        def extra(g):
            width = max(lengths[i] for i in g)
            return 0 if len(g) == min(max_rows, max(1, budget // width)) else penalty

        return sum(len(g) * max(lengths[i] for i in g) + 5 + extra(g) for g in groups)

    got = plan_batches(np.asarray(lengths), budget, max_rows, 5, new_shape_tokens=penalty)
    assert sorted(np.concatenate(got).tolist()) == list(range(len(lengths))) and cost(got) == cheapest_split(lengths, budget, max_rows, cost)


def test_a_small_window_is_not_cut_into_tiny_batches():
    """20 short rows of spread lengths: a fixed padding ratio made 11 batches of 1-3 rows (each a
    runtime call with its fixed cost); the planner weighs padding against calls."""
    lengths = np.array([13, 15, 22, 24, 28, 35, 45, 50, 54, 14, 16, 18, 22, 26, 29, 32, 37, 40, 46, 54])
    groups = plan_batches(lengths, 2048, 256)
    assert len(groups) <= 4
    assert min(len(g) for g in groups) >= 3


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
        assert real / padded > 0.93, n
