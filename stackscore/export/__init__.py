"""Training world -> artifact: ONNX graphs per base model, the fusion stage, and the manifest."""

from .artifact import export_artifact
from .onnx_graph import ParityError, export_transformer

__all__ = ["export_artifact", "export_transformer", "ParityError"]
