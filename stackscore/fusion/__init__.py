"""Fusion methods: how base-model logits become one probability vector per row.

Every method follows scikit-learn's estimator style and round-trips through the manifest
(``to_manifest`` / ``from_manifest``); ``build`` and ``from_manifest`` are the two entry points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def build(method: str, **params: Any) -> FusionMethod:
    """An unfitted fusion method by name (``soft_vote``/``hard_vote`` are shorthands)."""
    if method == "soft_vote":
        return VoteFusion(voting="soft")
    if method == "hard_vote":
        return VoteFusion(voting="hard")
    if method not in METHODS:
        raise ValueError(f"unknown fusion method '{method}' (choose from {', '.join(METHODS)}, auto)")
    return METHODS[method](**params)


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
    "build",
    "cross_val_proba",
    "from_manifest",
    "stratified_folds",
]
