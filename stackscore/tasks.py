"""What a row's answer is: one label, any set of labels, or a number.

- ``single_label`` (binary / multi-class): softmax over the labels, the answer is the top one;
- ``multi_label``: each label independently on or off: sigmoid per label, a label is on when its
  probability reaches its own decision threshold (tuned for F1 at fit, stored in the manifest);
- ``regression``: one output, the value itself (``num_labels = 1`` heads).

The manifest's ``task`` field keeps its old values for single-label artifacts (``binary`` /
``multiclass``), so artifacts written before multi-label and regression existed still load.
Numpy only: the scoring world uses this module too.
"""

from __future__ import annotations

import numpy as np

from .metrics import EPS, softmax

TASKS = ("single_label", "multi_label", "regression")


def task_of(manifest_task: str) -> str:
    """The task family of a manifest's ``task`` field."""
    return manifest_task if manifest_task in ("multi_label", "regression") else "single_label"


def manifest_task(task: str, n_labels: int) -> str:
    if task == "single_label":
        return "binary" if n_labels == 2 else "multiclass"
    return task


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def activate(task: str, logits: np.ndarray) -> np.ndarray:
    """A base model's logits as what the task predicts: probabilities, or the value itself."""
    if task == "multi_label":
        return sigmoid(np.asarray(logits, dtype=np.float64))
    if task == "regression":
        return np.asarray(logits, dtype=np.float64)
    return softmax(np.asarray(logits, dtype=np.float64))


def bce(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean binary log-loss over every (row, label): multi-label's log-loss per label."""
    p = np.clip(proba, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.ravel(pred) - np.ravel(y)) ** 2)))


def tune_thresholds(y: np.ndarray, proba: np.ndarray, grid: np.ndarray | None = None) -> np.ndarray:
    """Per label, the decision threshold with the best F1 on (y, proba), the middle one where
    several tie; 0.5 for a label never on."""
    grid = np.round(np.arange(0.05, 0.951, 0.05), 2) if grid is None else grid
    out = np.full(proba.shape[1], 0.5)
    for j in range(proba.shape[1]):
        truth = y[:, j] > 0.5
        if not truth.any():
            continue
        pred = proba[:, j][None, :] >= grid[:, None]  # (grid, n)
        tp = (pred & truth).sum(1)
        f1 = 2 * tp / np.maximum(pred.sum(1) + truth.sum(), 1)
        # the middle of the best plateau: the first best sat next to the negatives' highest
        # probability wherever the fusion rows separate a label cleanly
        best = np.flatnonzero(f1 >= f1.max() - 1e-12)
        out[j] = float(grid[best[len(best) // 2]])
    return out


def decide(proba: np.ndarray, thresholds) -> np.ndarray:
    """(n, k) booleans: which labels are on."""
    return proba >= np.asarray(thresholds, dtype=np.float64)[None, :]


def f1_scores(y: np.ndarray, on: np.ndarray) -> tuple[float, float]:
    """(micro-F1, macro-F1) of multi-label decisions."""
    truth = y > 0.5
    tp = (on & truth).sum(0)
    fp = (on & ~truth).sum(0)
    fn = (~on & truth).sum(0)
    micro = 2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1)
    denom = 2 * tp + fp + fn
    macro = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return float(micro), float(macro.mean())


def multilabel_metrics(y: np.ndarray, proba: np.ndarray, thresholds) -> dict[str, float]:
    on = decide(proba, thresholds)
    micro, macro = f1_scores(y, on)
    return {"micro_f1": micro, "macro_f1": macro, "subset_accuracy": float(np.mean((on == (y > 0.5)).all(1))), "log_loss": bce(y, proba)}


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    p, t = np.ravel(pred), np.ravel(y)

    def ranks(a: np.ndarray) -> np.ndarray:  # average ranks (ties share one)
        order = np.argsort(a, kind="stable")
        r = np.empty(len(a))
        r[order] = np.arange(len(a))
        _, inv, counts = np.unique(a, return_inverse=True, return_counts=True)
        sums = np.bincount(inv, weights=r)
        return (sums / counts)[inv]

    def pearson(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")

    return {"rmse": rmse(t, p), "mae": float(np.mean(np.abs(p - t))), "pearson": pearson(p, t), "spearman": pearson(ranks(p), ranks(t))}


def cv_loss(task: str, y: np.ndarray, proba: np.ndarray) -> float:
    """What ``auto`` minimizes: log-loss, log-loss per label, or RMSE."""
    from .metrics import log_loss

    if task == "multi_label":
        return bce(y, proba)
    if task == "regression":
        return rmse(y, proba)
    return log_loss(y, proba)


def scale(values: np.ndarray) -> float:
    """What an absolute tolerance is relative to: ``max(1, max |value|)``. Probabilities give 1;
    a regression target in the thousands gives its magnitude (float32 graphs round relative to it)."""
    return max(1.0, float(np.abs(values).max())) if np.size(values) else 1.0


def agreement(task: str, a: np.ndarray, b: np.ndarray, thresholds=None, tol: float = 1e-3) -> float:
    """Share of rows with the same answer: top label; label set (at ``thresholds``); a value
    within ``tol`` x ``scale``."""
    if not len(a):
        return 1.0
    if task == "multi_label":
        t = thresholds if thresholds is not None and len(thresholds) else np.full(a.shape[1], 0.5)
        return float(np.mean((decide(a, t) == decide(b, t)).all(1)))
    if task == "regression":
        return float(np.mean(np.abs(a - b).max(1) <= tol * scale(a)))
    return float(np.mean(a.argmax(1) == b.argmax(1)))


def strata(y: np.ndarray) -> np.ndarray:
    """A stratification key per row: the class; the first label on (or none); a quantile bin."""
    y = np.asarray(y)
    if y.ndim == 2:
        on = y > 0.5
        return np.where(on.any(1), on.argmax(1), -1)
    if y.dtype.kind == "f":
        edges = np.quantile(y, [0.2, 0.4, 0.6, 0.8]) if len(y) else []
        return np.digitize(y, edges)
    return y
