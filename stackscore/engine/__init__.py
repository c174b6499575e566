"""Scoring world: readers -> tokenize -> runner (batcher + backends) -> fusion_stage -> writers.

``pipeline.score_file`` wires the stages with threads and bounded queues; ``scorer.Scorer`` holds
one ``runner`` per base model and the fusion stage. Imports no torch, transformers or sklearn.
"""

from ..options import RunOptions, ScoreOptions
from .pipeline import score_file
from .scorer import Scorer

__all__ = ["RunOptions", "ScoreOptions", "Scorer", "score_file"]
