"""Token-budget batching: sort a window of rows by length, cut batches by padded tokens.

A batch's cost is ``rows x padded_length``; cutting by a token budget (not a row count) keeps
every batch about the same amount of work, so short texts go in large batches and long texts in
small ones, and padding stays low because neighbours in sorted order have similar lengths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tokenize import Encoded


@dataclass
class Batch:
    rows: np.ndarray  # indices into the window's encoded rows
    input_ids: np.ndarray  # (b, L) int64
    attention_mask: np.ndarray  # (b, L) int64
    token_type_ids: np.ndarray | None = None  # (b, L) int64, sentence pairs only

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def padded_tokens(self) -> int:
        return int(self.input_ids.size)


def bucket_width(length: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket that holds ``length`` (the largest bucket if none does)."""
    i = int(np.searchsorted(buckets, length, side="left"))
    return int(buckets[min(i, len(buckets) - 1)])


def plan_bucketed(lengths: np.ndarray, token_budget: int, max_rows: int, buckets: tuple[int, ...]) -> list[np.ndarray]:
    """Batches whose rows share one length bucket, ``rows x bucket <= token_budget``.

    For backends that compile or plan per shape (CUDA arenas, TensorRT profiles), a few fixed
    widths beat tight padding: the extra padding is bounded by the bucket spacing, and every
    shape is seen again and again. Rows are in ascending length order, equal lengths in input order.
    """
    lengths = np.asarray(lengths)
    order = np.argsort(lengths, kind="stable")
    b = np.asarray(buckets)
    which = np.minimum(np.searchsorted(b, np.maximum(lengths[order], 1), side="left"), len(b) - 1)
    groups: list[np.ndarray] = []
    for k in np.unique(which):
        rows = order[which == k]
        per = max(1, min(max_rows, token_budget // int(b[k])))
        groups.extend(rows[s : s + per] for s in range(0, len(rows), per))
    return groups


BATCH_OVERHEAD_TOKENS = 64
"""What one more batch costs, in padded tokens: a runtime call has a fixed cost (dispatch, shape
setup, thread wake-up) besides its work. Measured on 2 EPYC cores through OpenVINO: ~0.4 ms per
call, which is ~170 tokens of a 2-layer RoBERTa and ~16-40 tokens of MiniLM-L6 (tiny batches also
run their GEMMs less efficiently); 64 sits between them."""


NEW_SHAPE_TOKENS = 256
"""What a batch shape the runtime has not prepared costs, in padded tokens of a MiniLM-sized
model, where the runtime prepares kernels per shape (OpenVINO: 7-21 ms for MiniLM-L6 on 2 EPYC
cores, ``benchmarks/shape_cost.py``, at ~20k tokens/s). A long job kept meeting new shapes: on
SST-2 sentences each 4,096-row window after the first brought 23-33 new ones among ~37 batches,
0.22-0.49 s over 2.4 s of work; charging this for shapes outside one fixed shape per width
(``plan_batches``) left 3-7, for 2.7 % more padding (RESULTS.md)."""

REFERENCE_FLOPS_PER_TOKEN = 2.2e7
"""Weight-GEMM FLOPs per token of MiniLM-L6-H384 (``roofline.graph_cost``: 2.15e7), the model the
token budget and ``BATCH_OVERHEAD_TOKENS`` were measured on."""

MAX_BATCH_SCALE = 8


def batch_scale(flops_per_token: float) -> int:
    """How many times the token budget, row cap and per-batch overhead a model gets (1 for a
    model as large as the reference or larger, or whose work per token is unknown).

    A batch's fixed costs do not shrink with the model: a runtime call, and in a fresh process
    the preparation of every shape OpenVINO has not run before (5-9 ms each for a 2-layer,
    width-128 RoBERTa: ``benchmarks/shape_cost.py``). A model with 1/k of the reference's work per
    token (that RoBERTa: 1/38) spends most of a reference-sized batch on them, so it gets k times
    the tokens per batch, capped at ``MAX_BATCH_SCALE`` (its batches stay a fraction of the
    reference's work, and memory stays small: activations grow with tokens x width). The
    overhead scales too, which trades some padding for fewer batches: on 2,000 short reviews
    (RESULTS.md, ``benchmarks/shape_cost.py``) that RoBERTa's batches went 37 -> 10, its first
    pass in a fresh process 0.41 -> 0.31 s, its warm pass 0.15 -> 0.17 s (padding 1 -> 7 %): a
    gain for every job of a window or a few, a small loss for a long one, on a model that takes
    ~6 % of the ensemble's time. ``RunOptions(scale_batches=False)`` keeps the options' geometry."""
    if not flops_per_token or flops_per_token <= 0:
        return 1
    return int(max(1, min(MAX_BATCH_SCALE, REFERENCE_FLOPS_PER_TOKEN // flops_per_token)))


def plan_batches(lengths: np.ndarray, token_budget: int, max_rows: int = 512, overhead_tokens: int = BATCH_OVERHEAD_TOKENS, buckets: tuple[int, ...] | None = None, min_batches: int = 1, new_shape_tokens: int = 0) -> list[np.ndarray]:
    """Groups of row indices, each with ``len(group) * max(length in group) <= token_budget``.

    Rows are taken in ascending length order (stable, so equal lengths keep input order) and cut
    into the batches that minimise ``padded tokens + overhead_tokens x batches``: an exact dynamic
    programme over cut points (a batch of sorted rows ``i..j-1`` costs ``(j - i) x length[j-1]``).
    A split is made only where the padding it saves outweighs the cost of one more runtime call,
    so a small window is not cut into batches of one or two rows (what a fixed padding ratio did:
    20 short rows became 11 batches) and a large one still pads little. A row longer than the
    budget on its own still gets a batch of one: nothing is ever dropped.
    With ``buckets`` (GPU backends), batches are cut per length bucket instead (``plan_bucketed``).

    ``new_shape_tokens`` (runtimes that prepare kernels per batch shape): a batch costs that much
    more unless it is the one shape its width is preferred in, as many rows as the budget and
    row cap allow, so a long job's windows keep meeting the same few shapes. The preferred shapes
    are fixed, not learned from earlier windows: a window's plan (so its output bytes) never
    depends on what ran before it (a resumed run, a Ray actor's share of the windows).

    ``min_batches``: a model running several requests at once (streams, each on its share of the
    cores) needs that many batches to keep every core busy; a window with fewer (a small job:
    20 rows make one batch) has its largest batches halved until there are enough.
    """
    groups = plan_bucketed(lengths, token_budget, max_rows, buckets) if buckets else _plan_sorted(lengths, token_budget, max_rows, overhead_tokens, new_shape_tokens)
    while len(groups) < min_batches:
        i = max(range(len(groups)), key=lambda g: len(groups[g]), default=None)
        if i is None or len(groups[i]) < 2:
            break
        half = (len(groups[i]) + 1) // 2
        groups[i : i + 1] = [groups[i][:half], groups[i][half:]]
    return groups


def _plan_sorted(lengths: np.ndarray, token_budget: int, max_rows: int, overhead_tokens: int, new_shape_tokens: int = 0) -> list[np.ndarray]:
    """``plan_batches``' exact programme over the rows in ascending length order."""
    lengths = np.asarray(lengths)
    order = np.argsort(lengths, kind="stable")
    s = np.maximum(lengths[order], 1).astype(np.int64)
    n = len(s)
    best = np.zeros(n + 1, dtype=np.int64)  # best[j]: least cost of batching the first j sorted rows
    cut = np.zeros(n + 1, dtype=np.int64)  # where the last batch of that best plan starts
    at = np.arange(n + 1, dtype=np.int64)
    for j in range(1, n + 1):
        width = int(s[j - 1])  # the longest row of any batch ending at j
        lo = max(0, j - max_rows, j - max(1, token_budget // width))
        # cost = best[i] + (j - i) * width + overhead (+ a new shape's cost), minimised over the batch's start i
        cand = best[lo:j] - width * at[lo:j]
        if new_shape_tokens:  # any start but the one that makes a full batch (the preferred shape)
            full = min(max_rows, max(1, token_budget // width))
            cand = cand + new_shape_tokens * (at[lo:j] != j - full)
        k = int(np.argmin(cand))
        best[j] = cand[k] + width * j + overhead_tokens
        cut[j] = lo + k
    groups: list[np.ndarray] = []
    j = n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = int(cut[j])
    return groups[::-1]


def build_batch(enc: Encoded, rows: np.ndarray, pad_id: int, buckets: tuple[int, ...] | None = None) -> Batch:
    """Pad the given rows to their longest length (or its bucket), with numpy fancy indexing only."""
    lens = enc.lengths[rows]
    width = int(lens.max()) if len(lens) else 0
    if buckets and len(lens):
        width = max(width, bucket_width(width, buckets))
    mask = np.arange(width)[None, :] < lens[:, None]
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    # Source positions of every real token, row by row, in the flat array.
    starts = np.repeat(enc.offsets[rows], lens)
    within = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    src = starts + within
    ids[mask] = enc.flat[src]
    types = None
    if enc.types is not None:
        types = np.zeros((len(rows), width), dtype=np.int64)
        types[mask] = enc.types[src]
    return Batch(rows=rows, input_ids=ids, attention_mask=mask.astype(np.int64), token_type_ids=types)
