"""Weighted average of probabilities; weights given, or learned on out-of-fold outputs.

The classic recipe leaves weights to hand-tuning. Here they are learned by minimizing log-loss
with the weights on the simplex (parametrized as a softmax, so the optimizer is unconstrained).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..metrics import EPS, softmax
from .base import FusionMethod, SimplexWeighted, check_outputs, checked_weights


class WeightedFusion(SimplexWeighted):
    """Single-label: its log-loss has a closed-form gradient, so it fits with it (not numerically)."""

    def fit(self, outputs: Sequence[np.ndarray], y: np.ndarray) -> "WeightedFusion":
        FusionMethod.fit(self, outputs, y)
        if self.weights is not None:
            self.weights_ = checked_weights(self.weights, len(outputs))
            return self
        from scipy.optimize import minimize  # training world only

        probs = np.stack([softmax(o) for o in check_outputs(outputs)])  # (m, n, k)
        y = np.asarray(y)
        picked = probs[:, np.arange(len(y)), y]  # (m, n): each model's prob of the true class

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w = softmax(theta)
            p = np.clip(w @ picked, EPS, None)
            val = -np.mean(np.log(p))
            grad_w = -np.mean(picked / p, axis=1)  # d loss / d w
            grad_theta = w * (grad_w - w @ grad_w)  # through the softmax
            return val, grad_theta

        res = minimize(loss, np.zeros(len(outputs)), jac=True, method="L-BFGS-B")
        self.weights_ = softmax(res.x)
        return self

    def predict_proba(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        outs = check_outputs(outputs)
        probs = np.stack([softmax(o) for o in outs])
        return np.tensordot(self.weights_, probs, axes=1)
