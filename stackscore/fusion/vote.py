"""Hard and soft voting.

Soft vote is the mean of probabilities. Hard vote returns each class's vote share; ties go to the
class with the higher mean probability, and then to the lower class index. To make that
deterministic tie-break visible in ``predict_proba`` (and keep log-loss finite), the share is
blended with the mean probability: ``p = (1 - SMOOTH) * share + SMOOTH * mean_prob``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..manifest import FusionSpec
from ..metrics import softmax
from .base import FusionMethod, check_outputs

SMOOTH = 1e-3


class VoteFusion(FusionMethod):
    name = "vote"
    complexity = 1

    def __init__(self, voting: str = "hard"):
        if voting not in ("hard", "soft"):
            raise ValueError("voting must be 'hard' or 'soft'")
        self.voting = voting

    def predict_proba(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        outs = check_outputs(outputs)
        probs = np.stack([softmax(o) for o in outs])  # (m, n, k)
        mean = probs.mean(axis=0)
        if self.voting == "soft":
            return mean
        m, n, k = probs.shape
        votes = probs.argmax(axis=2)  # (m, n)
        share = np.zeros((n, k))
        np.add.at(share, (np.tile(np.arange(n), m), votes.ravel()), 1.0)
        share /= m
        return (1.0 - SMOOTH) * share + SMOOTH * mean

    def manifest_params(self) -> dict:
        return {"voting": self.voting}

    @classmethod
    def from_manifest(cls, spec: FusionSpec, artifact_dir: Path) -> "VoteFusion":
        return cls(**spec.params)
