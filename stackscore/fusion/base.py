"""The fusion-method interface, in scikit-learn's estimator style.

``fit(outputs, y)`` takes one ``(n, k)`` logits array per base model (out-of-fold logits in
training) and integer labels; ``predict_proba(outputs)`` returns ``(n, k)`` probabilities.
Parameters live in ``__init__``, learned state in trailing-underscore attributes. The same object
runs in training (to compare methods) and in the engine (rebuilt from the manifest), so the two
cannot disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..manifest import FusionSpec


def check_outputs(outputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    outs = [np.asarray(o, dtype=np.float64) for o in outputs]
    if not outs:
        raise ValueError("fusion needs at least one base model's outputs")
    shape = outs[0].shape
    if len(shape) != 2 or any(o.shape != shape for o in outs):
        raise ValueError(f"every base model's outputs must be (n, k) of one shape, got {[o.shape for o in outs]}")
    return outs


def checked_weights(weights: Sequence[float], n_models: int) -> np.ndarray:
    """Fixed weights, normalized to sum to one; refused unless one non-negative weight per model."""
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != n_models or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be non-negative, one per base model, not all zero")
    return w / w.sum()


class FusionMethod:
    """Base class: subclasses set ``name`` and implement fit / predict_proba / params."""

    name: str = ""
    #: Order used to break ties in ``auto``: lower is simpler.
    complexity: int = 0

    def fit(self, outputs: Sequence[np.ndarray], y: np.ndarray) -> "FusionMethod":
        self.n_classes_ = check_outputs(outputs)[0].shape[1]
        self.n_models_ = len(outputs)
        return self

    def predict_proba(self, outputs: Sequence[np.ndarray]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def predict(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        return self.predict_proba(outputs).argmax(axis=1)

    def get_params(self) -> dict[str, Any]:
        """The constructor's parameters, as scikit-learn means it: ``type(self)(**get_params())``
        is the same method, unfitted. Learned state is in ``manifest_params``."""
        import inspect

        names = [p for p in inspect.signature(type(self).__init__).parameters if p not in ("self", "args", "kwargs")]
        return {n: getattr(self, n) for n in names}

    # -- manifest round trip -------------------------------------------------------------
    def manifest_params(self) -> dict[str, Any]:
        """Everything ``from_manifest`` needs, JSON-serializable (learned state included)."""
        return {}

    def to_manifest(self, artifact_dir: Path, reason: str = "") -> FusionSpec:
        return FusionSpec(method=self.name, params=self.manifest_params(), reason=reason)

    @classmethod
    def from_manifest(cls, spec: FusionSpec, artifact_dir: Path) -> "FusionMethod":
        raise NotImplementedError  # pragma: no cover

    def __repr__(self) -> str:  # noqa: D105
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"


class SimplexWeighted(FusionMethod):
    """A weighted average whose weights are given or learned on the simplex (non-negative, summing
    to one, parametrized as a softmax so the optimizer is unconstrained). Subclasses say what the
    average is over and which loss learns it (``_loss``)."""

    name = "weighted"
    complexity = 2

    def __init__(self, weights: Sequence[float] | None = None):
        self.weights = None if weights is None else [float(w) for w in weights]

    def _loss(self, outputs: Sequence[np.ndarray], y: np.ndarray):  # pragma: no cover - interface
        """``loss(weights) -> float`` on these outputs."""
        raise NotImplementedError

    def fit(self, outputs: Sequence[np.ndarray], y: np.ndarray) -> "SimplexWeighted":
        super().fit(outputs, y)
        if self.weights is not None:
            self.weights_ = checked_weights(self.weights, len(outputs))
            return self
        from scipy.optimize import minimize  # training world only

        from ..metrics import softmax

        loss = self._loss(outputs, y)
        res = minimize(lambda theta: loss(softmax(theta)), np.zeros(len(outputs)), method="L-BFGS-B")
        self.weights_ = softmax(res.x)
        return self

    def manifest_params(self) -> dict[str, Any]:
        return {"weights": [float(w) for w in self.weights_]}

    @classmethod
    def from_manifest(cls, spec: FusionSpec, artifact_dir: Path) -> "SimplexWeighted":
        m = cls(weights=spec.params["weights"])
        m.weights_ = np.asarray(spec.params["weights"], dtype=np.float64)
        return m
