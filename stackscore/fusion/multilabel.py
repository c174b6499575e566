"""Fusion for multi-label ensembles: each label on or off independently (sigmoid outputs).

Every method predicts per-label probabilities and carries per-label decision thresholds, tuned
for F1 on the fusion rows' fused probabilities (out-of-fold or validation predictions of the
base models), stored in the manifest and applied by the engine. Stacking is one logistic
regression per label over all base models' logits (scikit-learn's ``MultiOutputClassifier``),
run in the engine as its skl2onnx graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..manifest import FusionSpec
from ..tasks import bce, sigmoid, tune_thresholds
from .base import FusionMethod, SimplexWeighted, check_outputs
from .stack import META_GRAPH, OnnxMeta


class _Thresholded(FusionMethod):
    task = "multi_label"

    def _tune(self, outputs: Sequence[np.ndarray], y: np.ndarray) -> None:
        self.thresholds_ = tune_thresholds(np.asarray(y, dtype=np.float64), self.predict_proba(outputs))

    def _params(self) -> dict[str, Any]:
        return {"thresholds": [float(t) for t in self.thresholds_]}


class MultiLabelMean(_Thresholded):
    name = "mean"
    complexity = 0

    def fit(self, outputs, y):
        super().fit(outputs, y)
        self._tune(outputs, y)
        return self

    def predict_proba(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        return np.mean([sigmoid(o) for o in check_outputs(outputs)], axis=0)

    def manifest_params(self) -> dict:
        return self._params()

    @classmethod
    def from_manifest(cls, spec: FusionSpec, artifact_dir: Path) -> "MultiLabelMean":
        m = cls()
        m.thresholds_ = np.asarray(spec.params["thresholds"], dtype=np.float64)
        return m


class MultiLabelWeighted(SimplexWeighted, _Thresholded):
    """Weights on the simplex minimizing the per-label log-loss of the weighted probabilities."""

    def _loss(self, outputs, y):
        probs = np.stack([sigmoid(o) for o in check_outputs(outputs)])
        y = np.asarray(y, dtype=np.float64)
        return lambda w: bce(y, np.tensordot(w, probs, axes=1))

    def fit(self, outputs, y):
        super().fit(outputs, y)
        self._tune(outputs, y)
        return self

    def predict_proba(self, outputs):
        return np.tensordot(self.weights_, np.stack([sigmoid(o) for o in check_outputs(outputs)]), axes=1)

    def manifest_params(self) -> dict:
        return {**super().manifest_params(), **self._params()}

    @classmethod
    def from_manifest(cls, spec: FusionSpec, artifact_dir: Path) -> "MultiLabelWeighted":
        m = super().from_manifest(spec, artifact_dir)
        m.thresholds_ = np.asarray(spec.params["thresholds"], dtype=np.float64)
        return m


class MultiLabelStack(_Thresholded, OnnxMeta):
    """One logistic regression per label, each over every base model's logits for every label."""

    name = "stack"
    complexity = 3

    def __init__(self, C: float = 1.0, mode: str = "kfold", label_names: list[str] | None = None):
        self.C = C
        self.mode = mode
        self.label_names = label_names  # for error messages only

    def features(self, outputs) -> np.ndarray:
        return np.concatenate(check_outputs(outputs), axis=1).astype(np.float32)

    def fit(self, outputs, y):
        from sklearn.linear_model import LogisticRegression
        from sklearn.multioutput import MultiOutputClassifier

        super().fit(outputs, y)
        y = (np.asarray(y) > 0.5).astype(np.int64)
        constant = [j for j in range(y.shape[1]) if y[:, j].min() == y[:, j].max()]
        if constant:
            which = self.label_names[constant[0]] if self.label_names else f"index {constant[0]}"
            raise ValueError(
                f"stacking needs every label both on and off in its fusion rows; label {which!r} is "
                f"{'always' if y[0, constant[0]] else 'never'} on there (use method = \"auto\" or \"mean\")"
            )
        self.meta_ = MultiOutputClassifier(LogisticRegression(C=self.C, max_iter=2000)).fit(self.features(outputs), y)
        self._tune(outputs, y)
        return self

    def predict_proba(self, outputs) -> np.ndarray:
        X = self.features(outputs)
        if getattr(self, "meta_", None) is not None:
            return np.stack([p[:, 1] for p in self.meta_.predict_proba(X)], axis=1)
        per_label = self.run_graph(X)  # a sequence of (n, 2) tensors, one per label
        return np.stack([np.asarray(p)[:, 1] for p in per_label], axis=1).astype(np.float64)

    def manifest_params(self) -> dict:
        return {"C": self.C, "mode": self.mode, "n_models": self.n_models_, "n_classes": self.n_classes_, **self._params()}

    def to_manifest(self, artifact_dir: Path, reason: str = "") -> FusionSpec:
        self.write_graph(Path(artifact_dir), self.n_models_ * self.n_classes_)
        return FusionSpec(method=self.name, params=self.manifest_params(), graph=META_GRAPH, reason=reason)

    @classmethod
    def from_manifest(cls, spec: FusionSpec, artifact_dir: Path) -> "MultiLabelStack":
        p = spec.params
        m = cls(C=p.get("C", 1.0), mode=p.get("mode", "kfold"))
        m.n_models_, m.n_classes_ = int(p["n_models"]), int(p["n_classes"])
        m.thresholds_ = np.asarray(p["thresholds"], dtype=np.float64)
        if len(m.thresholds_) != m.n_classes_:
            raise ValueError(f"{len(m.thresholds_)} thresholds for {m.n_classes_} labels")
        m.load_graph(spec, Path(artifact_dir), output=1)
        if len(m.session_.get_outputs()) != 2 or m.session_.get_inputs()[0].shape[-1] not in (None, m.n_models_ * m.n_classes_):
            raise ValueError(f"the meta-learner graph does not take {m.n_models_} x {m.n_classes_} logits and give per-label probabilities")
        return m
