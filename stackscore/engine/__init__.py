"""Scoring world: readers -> tokenize -> batcher -> session_pool -> fusion_stage -> writers.

``pipeline.score_file`` wires the stages with threads and bounded queues; ``scorer.Scorer`` holds
an artifact's tokenizers, sessions and fusion stage. Imports no torch, transformers or sklearn.
"""

from .pipeline import ScoreOptions, score_file
from .scorer import EngineConfig, Scorer

__all__ = ["EngineConfig", "ScoreOptions", "Scorer", "score_file"]
