"""stackscore: ONNX-optimized batch scoring for ensembles of fine-tuned text classifiers.

The package is split in two worlds that share one file format (the artifact directory):
``train/`` and ``export/`` need torch, transformers and scikit-learn; ``engine/``, ``fusion/``,
``manifest`` and ``api`` need only onnxruntime, tokenizers, numpy and pyarrow, so a scoring
worker can be installed without the training stack.
"""

from __future__ import annotations

from .offline import disable_telemetry

disable_telemetry()  # before anything imports onnxruntime, openvino or nncf (see offline.py)

__version__ = "0.1.0"

__all__ = ["__version__", "Ensemble"]


def __getattr__(name: str):
    # Lazy: `import stackscore` must stay cheap and must not pull the engine's dependencies
    # into training-only code paths (and vice versa).
    if name == "Ensemble":
        from .api import Ensemble

        return Ensemble
    raise AttributeError(name)
