"""Stacking: a meta-learner trained on the base models' out-of-fold outputs.

In training the meta-learner is a scikit-learn estimator (``meta_``). For the artifact it is
converted with skl2onnx (probabilities as a plain tensor, no ZipMap), and in the engine the same
class runs that ONNX graph (``session_``), so no pickle ever reaches the scoring path. Which
features the meta-learner reads (concatenated logits, or probabilities) is a parameter stored in
the manifest, and both paths build them with the same ``features()`` function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..manifest import FusionSpec
from ..metrics import softmax
from .base import FusionMethod, check_outputs

META_GRAPH = "fusion/meta.onnx"
META_LEARNERS = ("logreg", "gbm")


def make_meta_learner(kind: str, C: float = 1.0, seed: int = 0):
    """The scikit-learn meta-learners we know skl2onnx converts exactly."""
    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=C, max_iter=2000)
    if kind == "gbm":
        from sklearn.ensemble import GradientBoostingClassifier

        return GradientBoostingClassifier(n_estimators=100, max_depth=2, learning_rate=0.1, random_state=seed)
    raise ValueError(f"unknown meta-learner '{kind}' (choose from {', '.join(META_LEARNERS)})")


class OnnxMeta:
    """A scikit-learn meta-learner in training (``meta_``), its skl2onnx graph in the engine.

    Shared by every stacking method (single-label, multi-label, regression): the graph is
    written once by ``write_graph`` and run by ``run_graph``, so no pickle reaches scoring.
    """

    def write_graph(self, artifact_dir: Path, n_features: int, graph: str = META_GRAPH) -> Path:
        """``graph``: its path inside the artifact (another one when an artifact holds several)."""
        from skl2onnx import to_onnx

        path = Path(artifact_dir) / graph
        path.parent.mkdir(parents=True, exist_ok=True)
        X = np.zeros((1, n_features), dtype=np.float32)
        options = {id(self.meta_): {"zipmap": False}} if hasattr(self.meta_, "predict_proba") else None
        onx = to_onnx(self.meta_, X, options=options, target_opset={"": 17, "ai.onnx.ml": 3})
        path.write_bytes(onx.SerializeToString())
        return path

    def load_graph(self, spec: FusionSpec, artifact_dir: Path, output: int | None = None) -> None:
        """Open the graph; ``output``: which output to return (default: "probabilities", else the last)."""
        import onnxruntime as ort

        from ..errors import ArtifactError
        from ..manifest import resolve_inside

        if not spec.graph:
            raise ArtifactError(f"fusion.method is '{spec.method}' but fusion.graph names no meta-learner graph")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # a tiny graph: threads cost more than they give
        path = resolve_inside(Path(artifact_dir), spec.graph, "fusion.graph")
        try:
            self.session_ = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception classes
            from ..engine.backends import session_error

            raise session_error(path, "ONNX Runtime", exc) from None
        names = [o.name for o in self.session_.get_outputs()]
        self._out = names[output] if output is not None else ("probabilities" if "probabilities" in names else names[-1])

    def run_graph(self, X: np.ndarray):
        return self.session_.run([self._out], {self.session_.get_inputs()[0].name: X})[0]


class StackFusion(FusionMethod, OnnxMeta):
    name = "stack"
    complexity = 3

    def __init__(self, features: str = "logits", meta_learner: str = "logreg", C: float = 1.0, mode: str = "kfold"):
        if features not in ("logits", "probs"):
            raise ValueError("features must be 'logits' or 'probs'")
        self.features_kind = features
        self.meta_learner = meta_learner
        self.C = C
        self.mode = mode  # recorded only: how the outputs given to fit() were produced

    def features(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        outs = check_outputs(outputs)
        if self.features_kind == "probs":
            outs = [softmax(o) for o in outs]
        return np.concatenate(outs, axis=1).astype(np.float32)

    def fit(self, outputs: Sequence[np.ndarray], y: np.ndarray) -> "StackFusion":
        super().fit(outputs, y)
        y = np.asarray(y)
        missing = set(range(self.n_classes_)) - set(np.unique(y).tolist())
        if missing:
            raise ValueError(f"stacking needs every class in its training rows; missing {sorted(missing)}")
        self.meta_ = make_meta_learner(self.meta_learner, self.C).fit(self.features(outputs), y)
        return self

    def predict_proba(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        X = self.features(outputs)
        if getattr(self, "meta_", None) is not None:
            return self.meta_.predict_proba(X)
        return self.run_graph(X).astype(np.float64)

    def contributions(self, outputs: Sequence[np.ndarray]) -> np.ndarray | None:
        """Per base model, its additive share of the fused logit (linear meta-learner only).

        Returns ``(n, m)``: for binary tasks the shares of the positive class's logit (the
        meta-learner's one row of coefficients), for more classes the shares of each row's
        *predicted* class's logit (that class's row: the shares then explain the label written
        beside them); ``None`` when the meta-learner is not linear. The intercept is not shared out.
        """
        coef = self.coef_
        if coef is None:
            return None
        X = self.features(outputs)
        n, k = len(X), X.shape[1] // self.n_models_
        if coef.shape[0] == 1:
            rows = np.broadcast_to(coef[0], X.shape)
        elif n == 0:
            rows = np.zeros_like(X)
        else:
            rows = coef[self.predict_proba(outputs).argmax(axis=1)]
        return (X.reshape(n, self.n_models_, k) * rows.reshape(n, self.n_models_, k)).sum(axis=2)

    @property
    def coef_(self) -> np.ndarray | None:
        meta = getattr(self, "meta_", None)
        if meta is not None:
            return getattr(meta, "coef_", None)
        c = getattr(self, "linear_coef_", None)
        return None if c is None else np.asarray(c)

    def get_params(self) -> dict[str, Any]:
        return {"features": self.features_kind, "meta_learner": self.meta_learner, "C": self.C, "mode": self.mode}

    # -- manifest round trip -------------------------------------------------------------
    def manifest_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "features": self.features_kind,
            "meta_learner": self.meta_learner,
            "C": self.C,
            "mode": self.mode,
            "n_models": self.n_models_,
            "n_classes": self.n_classes_,
        }
        if self.coef_ is not None:
            params["linear_coef"] = np.asarray(self.coef_).tolist()
        return params

    def to_manifest(self, artifact_dir: Path, reason: str = "", graph: str = META_GRAPH) -> FusionSpec:
        """``graph``: where the meta-learner goes (a cascade's partial stacks each need their own)."""
        self.write_graph(Path(artifact_dir), self.n_models_ * self.n_classes_, graph)
        return FusionSpec(method=self.name, params=self.manifest_params(), graph=graph, reason=reason)

    @classmethod
    def from_manifest(cls, spec: FusionSpec, artifact_dir: Path) -> "StackFusion":
        params = spec.params
        m = cls(features=params["features"], meta_learner=params["meta_learner"], C=params.get("C", 1.0), mode=params.get("mode", "kfold"))
        m.n_models_ = int(params["n_models"])
        m.n_classes_ = int(params["n_classes"])
        m.linear_coef_ = params.get("linear_coef")
        m.load_graph(spec, Path(artifact_dir))
        outputs = {o.name: o.shape for o in m.session_.get_outputs()}
        width = (outputs[m._out] or [None])[-1]
        if isinstance(width, int) and width != m.n_classes_:
            from ..errors import ArtifactError

            raise ArtifactError(f"{spec.graph}: the meta-learner outputs {width} classes per row, fusion.params.n_classes is {m.n_classes_}")
        return m
