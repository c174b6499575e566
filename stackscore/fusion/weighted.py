"""Weighted average of probabilities; weights given, or learned on out-of-fold outputs.

The classic recipe leaves weights to hand-tuning. Here they are learned by minimizing log-loss
with the weights on the simplex (parametrized as a softmax, so the optimizer is unconstrained).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..manifest import FusionSpec
from ..metrics import EPS, softmax
from .base import FusionMethod, check_outputs, checked_weights


class WeightedFusion(FusionMethod):
    name = "weighted"
    complexity = 2

    def __init__(self, weights: Sequence[float] | None = None):
        self.weights = None if weights is None else [float(w) for w in weights]

    def fit(self, outputs: Sequence[np.ndarray], y: np.ndarray) -> "WeightedFusion":
        super().fit(outputs, y)
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

    def get_params(self) -> dict:
        return {"weights": [float(w) for w in self.weights_]}

    @classmethod
    def from_manifest(cls, spec: FusionSpec, artifact_dir: Path) -> "WeightedFusion":
        m = cls(weights=spec.params["weights"])
        m.weights_ = np.asarray(spec.params["weights"], dtype=np.float64)
        return m
