"""The session pool: one inference session per base model, each behind the backend interface.

``run(name, input_ids, attention_mask) -> logits`` is all the engine needs. Which backend and
which of the manifest's graphs serve a model is decided per model by ``backends.choose``.
Models run one after another, each with all cores: measured faster on 2 cores than running
them side by side with the cores split (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArtifactError
from ..manifest import Manifest, resolve_inside
from .backends import BackendOptions, check_output_width, choose
from .backends.ort import OrtBackend, TextBackend

__all__ = ["BackendOptions", "SessionPool", "OrtBackend", "TextBackend"]


class SessionPool:
    """One backend per base model, created from the manifest, on one device.

    On a multi-GPU machine the scorer holds one pool per GPU (``device_id``) and spreads the
    batches of a window over them.
    """

    def __init__(self, manifest: Manifest, artifact_dir: Path, options: BackendOptions | None = None, device_id: int | None = None, token_budget: int = 2048, max_rows: int = 256):
        self.options = options or BackendOptions()
        self.device_id = device_id
        self.backends: dict[str, object] = {}
        self.text_backends: dict[str, TextBackend] = {}
        self.choices = {}
        for spec in manifest.models:
            if spec.kind == "tfidf":
                graph = resolve_inside(artifact_dir, spec.graphs.get("fp32", ""), f"models[{spec.name}].graphs.fp32")
                self.text_backends[spec.name] = TextBackend(graph, self.options)
                check_output_width(spec.name, self.text_backends[spec.name].output_width, len(manifest.labels), graph)
                continue
            if spec.kind != "transformer":
                raise ArtifactError(f"model '{spec.name}': kind '{spec.kind}' is not supported by this engine")
            choice = choose(spec, self.options)
            graph = resolve_inside(artifact_dir, spec.graphs[choice.graph_key], f"models[{spec.name}].graphs.{choice.graph_key}")
            if choice.backend == "openvino":
                from .backends.ov import OpenVinoBackend

                self.backends[spec.name] = OpenVinoBackend(graph, spec, self.options, choice.precision)
            else:
                self.backends[spec.name] = OrtBackend(graph, spec, self.options, choice.precision, device_id, token_budget, max_rows)
            self.choices[spec.name] = choice
            check_output_width(spec.name, getattr(self.backends[spec.name], "output_width", None), len(manifest.labels), graph)

    def describe(self) -> str:
        where = f" on GPU {self.device_id}" if self.device_id is not None else ""
        parts = [f"{n}: {c.backend}/{c.precision}{where}" for n, c in self.choices.items()]
        parts += [f"{n}: onnxruntime/tfidf" for n in self.text_backends]
        return ", ".join(parts)

    def run(self, name: str, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None) -> np.ndarray:
        return self.backends[name].run(input_ids, attention_mask, token_type_ids)
