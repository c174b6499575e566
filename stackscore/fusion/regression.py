"""Fusion for regression ensembles: one value per row from each base model's single output.

mean; weighted (least squares with the weights on the simplex); stacking with a linear
meta-learner (ridge regression, run in the engine as its skl2onnx graph; its coefficients also
give each base model's contribution).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..manifest import FusionSpec
from .base import FusionMethod, SimplexWeighted, check_outputs
from .stack import META_GRAPH, OnnxMeta


def _column(outputs) -> np.ndarray:
    """(n, m): each base model's one output."""
    outs = check_outputs(outputs)
    if outs[0].shape[1] != 1:
        raise ValueError(f"regression base models have one output, got {outs[0].shape[1]}")
    return np.concatenate(outs, axis=1)


class RegressionMean(FusionMethod):
    name = "mean"
    complexity = 0
    task = "regression"

    def predict_proba(self, outputs) -> np.ndarray:
        return _column(outputs).mean(axis=1, keepdims=True)

    @classmethod
    def from_manifest(cls, spec: FusionSpec, artifact_dir: Path) -> "RegressionMean":
        return cls()


class RegressionWeighted(SimplexWeighted):
    """Least squares with the weights on the simplex (non-negative, summing to one)."""

    task = "regression"

    def _loss(self, outputs, y):
        # over the target's variance: the optimizer's stopping tolerance is absolute, and on targets
        # of scale 1e-3 (errors ~1e-6) it stopped at its start, equal weights, recorded as learned
        X, t = _column(outputs), np.asarray(y, dtype=np.float64)
        scale = 1.0 / (float(np.var(t)) or 1.0)
        return lambda w: float(np.mean((X @ w - t) ** 2)) * scale

    def predict_proba(self, outputs) -> np.ndarray:
        return (_column(outputs) @ self.weights_)[:, None]


class RegressionStack(FusionMethod, OnnxMeta):
    name = "stack"
    complexity = 3
    task = "regression"

    def __init__(self, alpha: float = 1.0, mode: str = "kfold"):
        self.alpha = alpha
        self.mode = mode

    def fit(self, outputs, y):
        from sklearn.linear_model import Ridge

        super().fit(outputs, y)
        # The inputs are predictions of the target, in its units, so the squared error scales with
        # the target's variance and the penalty on the (unitless) weights does not: alpha is taken
        # relative to that variance (alpha=1 shrank a stacker on targets of scale 1e-2 to their mean).
        t = np.asarray(y, dtype=np.float64)
        self.meta_ = Ridge(alpha=self.alpha * (float(np.var(t)) or 1.0)).fit(_column(outputs).astype(np.float32), t)
        self.coef_ = np.asarray(self.meta_.coef_, dtype=np.float64)
        return self

    def predict_proba(self, outputs) -> np.ndarray:
        X = _column(outputs).astype(np.float32)
        if getattr(self, "meta_", None) is not None:
            return self.meta_.predict(X).astype(np.float64)[:, None]
        return np.asarray(self.run_graph(X), dtype=np.float64).reshape(-1, 1)

    def contributions(self, outputs) -> np.ndarray:
        """Each base model's additive share of the stacked value (intercept not included)."""
        return _column(outputs) * self.coef_[None, :]

    def manifest_params(self) -> dict:
        return {"alpha": self.alpha, "mode": self.mode, "n_models": self.n_models_, "n_classes": 1, "linear_coef": self.coef_.tolist()}

    def to_manifest(self, artifact_dir: Path, reason: str = "") -> FusionSpec:
        self.write_graph(Path(artifact_dir), self.n_models_)
        return FusionSpec(method=self.name, params=self.manifest_params(), graph=META_GRAPH, reason=reason)

    @classmethod
    def from_manifest(cls, spec: FusionSpec, artifact_dir: Path) -> "RegressionStack":
        p = spec.params
        m = cls(alpha=p.get("alpha", 1.0), mode=p.get("mode", "kfold"))
        m.n_models_, m.n_classes_ = int(p["n_models"]), 1
        m.coef_ = np.asarray(p["linear_coef"], dtype=np.float64)
        if m.coef_.shape != (m.n_models_,):
            raise ValueError(f"linear_coef has {m.coef_.size} values for {m.n_models_} models")
        m.load_graph(spec, Path(artifact_dir), output=0)
        if m.session_.get_inputs()[0].shape[-1] not in (None, m.n_models_):
            raise ValueError(f"the meta-learner graph does not take {m.n_models_} model outputs")
        return m
