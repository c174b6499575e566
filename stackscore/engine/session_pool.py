"""The session pool: one inference session per base model, behind one small interface.

``Backend.run(input_ids, attention_mask) -> logits`` is all the engine needs. ONNX Runtime is the
backend here (CPU execution provider by default; CUDA/TensorRT are configuration of the same
class). The pool picks the graph for the requested precision from the manifest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, StackscoreError
from ..manifest import Manifest, ModelSpec, resolve_inside


@dataclass
class BackendOptions:
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    intra_op_threads: int = 0  # 0 = one per core
    precision: str = "fp32"


class OrtBackend:
    """An ONNX Runtime session for one transformer graph."""

    def __init__(self, graph: Path, spec: ModelSpec, options: BackendOptions):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = options.intra_op_threads or (os.cpu_count() or 1)
        so.inter_op_num_threads = 1
        available = set(ort.get_available_providers())
        missing = [p for p in options.providers if p not in available]
        if missing:
            raise StackscoreError(
                f"execution provider(s) {', '.join(missing)} not available in this onnxruntime "
                f"(available: {', '.join(sorted(available))})"
            )
        self.session = ort.InferenceSession(str(graph), sess_options=so, providers=options.providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        unknown = set(self.input_names) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown:
            raise ArtifactError(f"model '{spec.name}': graph has inputs the engine cannot feed: {sorted(unknown)}")
        self.output_name = spec.output

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        feeds = {k: v for k, v in feeds.items() if k in self.input_names}
        return self.session.run([self.output_name], feeds)[0]


class TextBackend:
    """A string-input graph (TF-IDF + linear model): texts in, log-probabilities out."""

    def __init__(self, graph: Path, options: BackendOptions | None = None, rows_per_run: int = 2048):
        import onnxruntime as ort

        options = options or BackendOptions()
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.intra_op_threads or (os.cpu_count() or 1)
        # String ops run on the CPU whatever the device; the graph is small.
        self.session = ort.InferenceSession(str(graph), sess_options=so, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        names = [o.name for o in self.session.get_outputs()]
        self.output_name = "probabilities" if "probabilities" in names else names[-1]
        self.rows_per_run = rows_per_run

    def run_texts(self, texts: list[str]) -> np.ndarray:
        out = []
        for s in range(0, len(texts), self.rows_per_run):
            arr = np.asarray(texts[s : s + self.rows_per_run], dtype=object).reshape(-1, 1)
            out.append(self.session.run([self.output_name], {self.input_name: arr})[0])
        proba = np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
        return np.log(np.clip(proba, 1e-12, None)).astype(np.float32)


class SessionPool:
    """One backend per base model, created from the manifest."""

    def __init__(self, manifest: Manifest, artifact_dir: Path, options: BackendOptions | None = None):
        self.options = options or BackendOptions()
        self.backends: dict[str, OrtBackend] = {}
        self.text_backends: dict[str, TextBackend] = {}
        for spec in manifest.models:
            if spec.kind == "tfidf":
                graph = resolve_inside(artifact_dir, spec.graphs.get("fp32", ""), f"models[{spec.name}].graphs.fp32")
                self.text_backends[spec.name] = TextBackend(graph, self.options)
                continue
            if spec.kind != "transformer":
                raise ArtifactError(f"model '{spec.name}': kind '{spec.kind}' is not supported by this engine")
            prec = self.options.precision
            if prec not in spec.graphs:
                raise StackscoreError(
                    f"model '{spec.name}' has no '{prec}' graph (has: {', '.join(spec.graphs)}); choose --precision"
                )
            graph = resolve_inside(artifact_dir, spec.graphs[prec], f"models[{spec.name}].graphs.{prec}")
            self.backends[spec.name] = OrtBackend(graph, spec, self.options)

    def run(self, name: str, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.backends[name].run(input_ids, attention_mask)
