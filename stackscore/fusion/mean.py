"""Simple average of the base models' probabilities (or of their logits)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..manifest import FusionSpec
from ..metrics import softmax
from .base import FusionMethod, check_outputs


class MeanFusion(FusionMethod):
    """Average probabilities (``space="probs"``, default) or logits then softmax (``"logits"``)."""

    name = "mean"
    complexity = 0

    def __init__(self, space: str = "probs"):
        if space not in ("probs", "logits"):
            raise ValueError("space must be 'probs' or 'logits'")
        self.space = space

    def predict_proba(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        outs = check_outputs(outputs)
        if self.space == "logits":
            return softmax(np.mean(outs, axis=0))
        return np.mean([softmax(o) for o in outs], axis=0)

    def manifest_params(self) -> dict:
        return {"space": self.space}

    @classmethod
    def from_manifest(cls, spec: FusionSpec, artifact_dir: Path) -> "MeanFusion":
        return cls(**spec.params)
