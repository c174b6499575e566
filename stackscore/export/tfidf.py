"""Export the classical base model (TF-IDF + linear model, a string-input ONNX graph fit wrote).

Fit saves the skl2onnx graph and scikit-learn's own outputs on the parity texts
(``parity.json``, no pickle); export copies the graph and checks it through the engine's
``TextRunner`` against those outputs, so it needs nothing from train's code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..errors import ParityError
from ..manifest import ModelSpec

GRAPH = "model.onnx"  # the file name fit writes (train/tfidf.py) and the artifact keeps


def export_tfidf(model_dir: Path, artifact_dir: Path, name: str, tol: float = 1e-4) -> ModelSpec:
    from ..engine.backends.ort import TextBackend
    from ..engine.runner import TextRunner

    rel = Path("models") / name / "model.onnx"
    (artifact_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_dir / GRAPH, artifact_dir / rel)
    ref = json.loads((model_dir / "parity.json").read_text())
    texts, expected = ref["texts"], np.asarray(ref["logits"])
    got = TextRunner(name, TextBackend(artifact_dir / rel)).run_texts(texts, expected.shape[1])[0]
    diff = float(np.abs(np.exp(got) - np.exp(expected)).max())
    agree = float(np.mean(got.argmax(1) == expected.argmax(1)))
    if diff > tol:
        raise ParityError(f"TF-IDF model '{name}': ONNX vs scikit-learn probabilities differ by {diff:.2e} > {tol:.0e}")
    return ModelSpec(
        name=name, kind="tfidf", graphs={"fp32": rel.as_posix()}, tokenizer=None, max_length=0, pad_id=0,
        inputs=["text"], output="probabilities", opset=17,
        parity={"precision": "fp32", "rows": len(texts), "max_abs_diff": diff, "label_agreement": agree, "tolerance": tol, "compared": "probabilities"},
    )
