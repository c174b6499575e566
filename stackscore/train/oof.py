"""Out-of-fold outputs: each training row's logits come from a model that never saw that row.

``out_of_fold`` is generic over how a model is trained and applied, so the leakage property is
testable with a fake trainer that records the rows it was given.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..fusion import stratified_folds


def out_of_fold(
    train: Callable[[np.ndarray], Any],
    predict: Callable[[Any, np.ndarray], np.ndarray],
    y: np.ndarray,
    folds: int,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> np.ndarray:
    """``train(row_indices) -> model``; ``predict(model, row_indices) -> (len, k)`` logits."""
    y = np.asarray(y)
    if folds < 2:
        raise ValueError("K-fold stacking needs folds >= 2")
    fold_of = stratified_folds(y, folds, seed)
    out: np.ndarray | None = None
    for f in range(folds):
        tr = np.flatnonzero(fold_of != f)
        te = np.flatnonzero(fold_of == f)
        if log:
            log(f"    fold {f + 1}/{folds}: train {len(tr)}, predict {len(te)}")
        model = train(tr)
        pred = np.asarray(predict(model, te))
        if out is None:
            out = np.full((len(y), pred.shape[1]), np.nan, dtype=np.float32)
        out[te] = pred
    assert out is not None and not np.isnan(out).any(), "every row gets exactly one out-of-fold prediction"
    return out


def holdout_split(y: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, blend rows), stratified: the classic blending recipe's holdout."""
    from ..tasks import strata

    y = strata(np.asarray(y))
    rng = np.random.default_rng(seed)
    blend: list[int] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        blend.extend(idx[: max(1, int(round(len(idx) * fraction)))].tolist())
    mask = np.zeros(len(y), dtype=bool)
    mask[blend] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def take(seq: Sequence[str], idx: np.ndarray) -> list[str]:
    return [seq[i] for i in idx]
