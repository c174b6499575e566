"""Fusion methods: how base-model logits become one probability vector per row.

Every method follows scikit-learn's estimator style and round-trips through the manifest
(``to_manifest`` / ``from_manifest``); ``candidates`` (training: every method that applies to a
task, unfitted) and ``from_manifest`` (the engine) are the two entry points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import ArtifactError
from ..manifest import FusionSpec
from .auto import AutoFusion, cross_val_proba, stratified_folds
from .base import FusionMethod
from .mean import MeanFusion
from .multilabel import MultiLabelMean, MultiLabelStack, MultiLabelWeighted
from .regression import RegressionMean, RegressionStack, RegressionWeighted
from .stack import StackFusion
from .vote import VoteFusion
from .weighted import WeightedFusion

METHODS: dict[str, type[FusionMethod]] = {
    "mean": MeanFusion,
    "weighted": WeightedFusion,
    "vote": VoteFusion,
    "stack": StackFusion,
}
# Per task family (stackscore.tasks): voting has no meaning for label sets or values.
METHODS_BY_TASK: dict[str, dict[str, type[FusionMethod]]] = {
    "single_label": METHODS,
    "multi_label": {"mean": MultiLabelMean, "weighted": MultiLabelWeighted, "stack": MultiLabelStack},
    "regression": {"mean": RegressionMean, "weighted": RegressionWeighted, "stack": RegressionStack},
}


def candidates(task: str = "single_label", *, weights=None, C: float = 1.0, mode: str = "kfold", features: str = "logits", meta_learner: str = "logreg", labels: list[str] | None = None) -> dict[str, Callable[[], FusionMethod]]:
    """Every fusion method that applies to ``task``, as factories of unfitted estimators.

    ``vote`` is hard voting and ``soft_vote`` soft voting (single-label only); ``weights`` fixes
    the weighted average's weights (None: learned); ``C`` is the stacker's inverse regularization.
    """
    if task == "multi_label":
        return {
            "mean": lambda: MultiLabelMean(),
            "weighted": lambda: MultiLabelWeighted(weights),
            "stack": lambda: MultiLabelStack(C=C, mode=mode, label_names=labels),
        }
    if task == "regression":
        return {
            "mean": lambda: RegressionMean(),
            "weighted": lambda: RegressionWeighted(weights),
            "stack": lambda: RegressionStack(alpha=1.0 / C, mode=mode),
        }
    return {
        "mean": lambda: MeanFusion(),
        "vote": lambda: VoteFusion("hard"),
        "soft_vote": lambda: VoteFusion("soft"),
        "weighted": lambda: WeightedFusion(weights),
        "stack": lambda: StackFusion(features=features, meta_learner=meta_learner, C=C, mode=mode),
    }


def from_manifest(spec: FusionSpec, artifact_dir: Path, task: str = "single_label") -> FusionMethod:
    methods = METHODS_BY_TASK.get(task, METHODS)
    cls = methods.get(spec.method)
    if cls is None:
        raise ArtifactError(f"fusion.method '{spec.method}' is unknown to this stackscore for a {task} task ({', '.join(methods)})")
    try:
        return cls.from_manifest(spec, Path(artifact_dir))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ArtifactError(f"fusion.params for '{spec.method}' are incomplete or wrong: {exc}") from None


__all__ = [
    "AutoFusion",
    "FusionMethod",
    "MeanFusion",
    "METHODS",
    "METHODS_BY_TASK",
    "StackFusion",
    "VoteFusion",
    "WeightedFusion",
    "candidates",
    "cross_val_proba",
    "from_manifest",
    "stratified_folds",
]
