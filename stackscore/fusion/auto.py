"""Pick the fusion method with the lowest cross-validated loss on out-of-fold outputs.

The loss is the task's (``stackscore.tasks.cv_loss``): log-loss, log-loss per label
(multi-label) or RMSE (regression).

Scoring a learned method on the rows it was fitted on would favour the most flexible one, so each
candidate is itself cross-validated over the out-of-fold rows (fit on K-1 folds, score the
held-out fold). Ties within ``tol`` go to the simpler method. The winner is refitted on all rows.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..tasks import cv_loss, strata
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
    """Fold number per row, balanced within each class (no scikit-learn needed).

    Multi-label rows are balanced by their first label, regression rows by quantile bin.
    One count runs through the classes in turn (each shuffled), so folds differ by at most one
    row: restarting it at fold 0 for every class gave the first folds every class's remainder
    (30 classes of 3 rows in 5 folds: sizes 30, 30, 30, 0, 0; an empty fold's model trained on
    every row and predicted none, and TF-IDF stopped with a traceback)."""
    y = strata(np.asarray(y))
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=np.int64)
    start = 0
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        fold_of[idx] = (start + np.arange(len(idx))) % folds
        start += len(idx)
    return fold_of


class AutoFusion:
    """Not a fusion method itself: a selector that returns the chosen, fitted one."""

    def __init__(self, candidates: dict[str, Callable[[], FusionMethod]], folds: int = 5, tol: float = 1e-3, seed: int = 0, task: str = "single_label"):
        self.candidates = candidates
        self.folds = folds
        self.tol = tol
        self.seed = seed
        self.task = task

    def fit(self, outputs: Sequence[np.ndarray], y: np.ndarray) -> "AutoFusion":
        y = np.asarray(y)
        self.cv_log_loss_ = {}
        self.skipped_ = {}
        complexity = {}
        for name, make in self.candidates.items():
            try:
                proba = cross_val_proba(make, outputs, y, self.folds, self.seed)
            except ValueError as exc:  # e.g. stacking with a label that never changes in a fold
                self.skipped_[name] = str(exc)
                continue
            self.cv_log_loss_[name] = cv_loss(self.task, y, proba)
            complexity[name] = make().complexity
        best = min(self.cv_log_loss_.values())
        # RMSE is in the target's units: a tie is within ``tol`` standard deviations of it (a fixed
        # 1e-3 tied every method on targets of scale 1e-3, and mean won over a stacker 24x better)
        tol = self.tol * (float(np.std(y)) or 1.0) if self.task == "regression" else self.tol
        tied = [n for n, v in self.cv_log_loss_.items() if v <= best + tol]
        self.chosen_ = min(tied, key=lambda n: (complexity[n], self.cv_log_loss_[n]))
        self.method_ = self.candidates[self.chosen_]().fit(outputs, y)
        scores = ", ".join(f"{n}={v:.4f}" for n, v in sorted(self.cv_log_loss_.items(), key=lambda kv: kv[1]))
        metric = {"multi_label": "log-loss per label", "regression": "RMSE"}.get(self.task, "log-loss")
        self.reason_ = (
            f"auto: lowest {self.folds}-fold cross-validated {metric} on out-of-fold outputs "
            f"(ties within {tol:.3g} go to the simpler method): {scores}"
            + "".join(f"; {n} skipped: {why}" for n, why in self.skipped_.items())
        )
        return self
