"""The fusion stage: base-model logits of a whole window -> fused probabilities, vectorized.

It rebuilds the manifest's fusion method with the same classes that training used
(``stackscore.fusion``), so the engine and ``stackscore fit`` compute the same function.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import fusion
from ..errors import ArtifactError
from ..manifest import Manifest
from ..tasks import task_of


class FusionStage:
    def __init__(self, manifest: Manifest, artifact_dir: Path):
        self.task = task_of(manifest.task)
        self.method = fusion.from_manifest(manifest.fusion, artifact_dir, self.task)
        # multi-label: a label is on when its fused probability reaches its threshold
        self.thresholds = np.asarray(manifest.fusion.params.get("thresholds", []), dtype=np.float64)
        if self.task == "multi_label" and len(self.thresholds) != len(manifest.labels):
            raise ArtifactError(f"fusion.params.thresholds must give one threshold per label ({len(manifest.labels)})")
        self.n_labels = len(manifest.labels)
        n_models = manifest.fusion.params.get("n_models")
        if n_models is not None and int(n_models) != len(manifest.models):
            raise ArtifactError(f"fusion was fitted on {n_models} base models, the artifact has {len(manifest.models)}")
        n_classes = manifest.fusion.params.get("n_classes")
        if n_classes is not None and int(n_classes) != self.n_labels:
            raise ArtifactError(f"fusion was fitted on {n_classes} classes, the artifact has {self.n_labels} labels")

    def __call__(self, logits: list[np.ndarray]) -> np.ndarray:
        if not len(logits[0]):
            return np.zeros((0, self.n_labels))
        return self.method.predict_proba(logits)

    def contributions(self, logits: list[np.ndarray]) -> np.ndarray | None:
        """Each base model's share (linear meta-learners), or None; shaped (0, m) for an empty
        window too, so every window of one run has the same columns."""
        fn = getattr(self.method, "contributions", None)
        return fn(logits) if fn is not None else None
