"""Pick the fusion method with the lowest cross-validated log-loss on out-of-fold outputs.

Scoring a learned method on the rows it was fitted on would favour the most flexible one, so each
candidate is itself cross-validated over the out-of-fold rows (fit on K-1 folds, score the
held-out fold). Ties within ``tol`` go to the simpler method. The winner is refitted on all rows.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..metrics import log_loss
from .base import FusionMethod, check_outputs


def cross_val_proba(make: Callable[[], FusionMethod], outputs: Sequence[np.ndarray], y: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    outs = check_outputs(outputs)
    fold_of = stratified_folds(y, folds, seed)
    proba = np.zeros_like(outs[0])
    for f in range(folds):
        tr, te = fold_of != f, fold_of == f
        if not te.any():
            continue
        m = make().fit([o[tr] for o in outs], y[tr])
        proba[te] = m.predict_proba([o[te] for o in outs])
    return proba


def stratified_folds(y: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Fold number per row, balanced within each class (no scikit-learn needed)."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        fold_of[idx] = np.arange(len(idx)) % folds
    return fold_of


class AutoFusion:
    """Not a fusion method itself: a selector that returns the chosen, fitted one."""

    def __init__(self, candidates: dict[str, Callable[[], FusionMethod]], folds: int = 5, tol: float = 1e-3, seed: int = 0):
        self.candidates = candidates
        self.folds = folds
        self.tol = tol
        self.seed = seed

    def fit(self, outputs: Sequence[np.ndarray], y: np.ndarray) -> "AutoFusion":
        y = np.asarray(y)
        self.cv_log_loss_ = {}
        complexity = {}
        for name, make in self.candidates.items():
            proba = cross_val_proba(make, outputs, y, self.folds, self.seed)
            self.cv_log_loss_[name] = log_loss(y, proba)
            complexity[name] = make().complexity
        best = min(self.cv_log_loss_.values())
        tied = [n for n, v in self.cv_log_loss_.items() if v <= best + self.tol]
        self.chosen_ = min(tied, key=lambda n: (complexity[n], self.cv_log_loss_[n]))
        self.method_ = self.candidates[self.chosen_]().fit(outputs, y)
        scores = ", ".join(f"{n}={v:.4f}" for n, v in sorted(self.cv_log_loss_.items(), key=lambda kv: kv[1]))
        self.reason_ = (
            f"auto: lowest {self.folds}-fold cross-validated log-loss on out-of-fold outputs "
            f"(ties within {self.tol} go to the simpler method): {scores}"
        )
        return self
