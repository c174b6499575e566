"""Classification metrics in plain numpy (the scoring world has no scikit-learn)."""

from __future__ import annotations

import numpy as np

EPS = 1e-12


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def accuracy(y: np.ndarray, proba: np.ndarray) -> float:
    return float(np.mean(proba.argmax(axis=1) == y))


def macro_f1(y: np.ndarray, proba: np.ndarray) -> float:
    """Over the classes in ``y`` or predicted, as scikit-learn's ``f1_score(average="macro")``: a
    class the test split lacks and no model predicts is no 0 in the mean."""
    pred = proba.argmax(axis=1)
    f1s = []
    for c in np.union1d(np.unique(y), np.unique(pred)):
        tp = np.sum((pred == c) & (y == c))
        fp = np.sum((pred == c) & (y != c))
        fn = np.sum((pred != c) & (y == c))
        denom = 2 * tp + fp + fn
        f1s.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f1s))


def log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    p = np.clip(proba[np.arange(len(y)), y], EPS, 1.0)
    return float(-np.mean(np.log(p)))


def ece(y: np.ndarray, proba: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top-class confidence (equal-width bins)."""
    conf = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            total += sel.mean() * abs(conf[sel].mean() - correct[sel].mean())
    return float(total)


def all_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": accuracy(y, proba),
        "macro_f1": macro_f1(y, proba),
        "log_loss": log_loss(y, proba),
        "ece": ece(y, proba),
    }
