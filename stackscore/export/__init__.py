"""Training world -> artifact: ONNX graphs per base model, the fusion stage, and the manifest.

Export reads train's typed outputs (``stackscore.fit_state.FitState``), never train's code.
Names are imported lazily so the engine can read the variants table (``variants``) without
loading the exporter.
"""

from __future__ import annotations

from typing import Any

__all__ = ["export_artifact", "export_transformer"]


def __getattr__(name: str) -> Any:
    if name == "export_artifact":
        from .artifact import export_artifact

        return export_artifact
    if name == "export_transformer":
        from .onnx_graph import export_transformer

        return export_transformer
    raise AttributeError(name)
