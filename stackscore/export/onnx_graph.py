"""Export a fine-tuned Hugging Face classifier to ONNX and prove it computes the same logits.

We export with ``torch.onnx.export`` (the TorchScript exporter) on transformers 5.x rather than
optimum: optimum-onnx 0.1.0 does not import with transformers 5.x, and the plain exporter gives a
graph with dynamic batch and sequence axes that ONNX Runtime optimizes at load time. The parity
gate runs the *engine's* tokenizer and batcher on sample texts and compares ONNX Runtime's logits
with PyTorch's on the very same padded batches.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StackscoreError
from ..manifest import ModelSpec

OPSET = 17
INPUTS = ["input_ids", "attention_mask"]


class ParityError(StackscoreError):
    pass


def write_engine_tokenizer(tok, path: Path) -> None:
    """The fast tokenizer's ``tokenizer.json`` without padding/truncation (the engine sets them)."""
    from tokenizers import Tokenizer

    raw = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    raw.no_padding()
    raw.no_truncation()
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.save(str(path))


def load_for_export(model_dir: Path):
    from transformers import AutoModelForSequenceClassification

    # Eager attention traces to plain MatMul/Softmax ops that ORT's fusions recognise.
    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), local_files_only=True, trust_remote_code=False, attn_implementation="eager"
    ).eval()
    from ..train.models import load_tokenizer

    return model, load_tokenizer(Path(model_dir))


def torch_to_onnx(model, path: Path, pad_id: int, opset: int = OPSET) -> None:
    import torch

    class Wrapper(torch.nn.Module):
        """Fixes the graph's signature to (input_ids, attention_mask) -> logits."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    ids = torch.full((2, 16), 5, dtype=torch.long)
    mask = torch.ones_like(ids)
    ids[1, 10:] = pad_id
    mask[1, 10:] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Wrapper(model), (ids, mask), str(path), input_names=INPUTS, output_names=["logits"],
            dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True,
        )


def check_parity(model, graph: Path, tokenizer_json: Path, max_length: int, pad_id: int, texts: list[str], tol: float) -> dict[str, Any]:
    """Max |ONNX - PyTorch| logit difference on the engine's own batches of ``texts``."""
    import onnxruntime as ort
    import torch

    from ..engine.batcher import build_batch, plan_batches
    from ..engine.tokenize import TextTokenizer

    enc = TextTokenizer(tokenizer_json, max_length).encode(texts)
    sess = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    worst, agree, n = 0.0, 0, 0
    for rows in plan_batches(enc.lengths, 2048, 64):
        b = build_batch(enc, rows, pad_id)
        onnx_out = sess.run(["logits"], {"input_ids": b.input_ids, "attention_mask": b.attention_mask})[0]
        with torch.inference_mode():
            ref = model(input_ids=torch.from_numpy(b.input_ids), attention_mask=torch.from_numpy(b.attention_mask)).logits.numpy()
        worst = max(worst, float(np.abs(onnx_out - ref).max()))
        agree += int(np.sum(onnx_out.argmax(1) == ref.argmax(1)))
        n += len(rows)
    result = {"precision": "fp32", "rows": n, "max_abs_diff": worst, "label_agreement": agree / max(n, 1), "tolerance": tol}
    if worst > tol:
        raise ParityError(f"ONNX/PyTorch parity failed for {graph}: max |diff| {worst:.2e} > {tol:.0e}")
    return result


def export_transformer(model_dir: Path, artifact_dir: Path, name: str, max_length: int, sample_texts: list[str], tol: float = 1e-4) -> ModelSpec:
    """Write ``models/<name>/model.fp32.onnx`` and ``tokenizer.json``; return the manifest entry."""
    model, tok = load_for_export(Path(model_dir))
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    rel = Path("models") / name
    graph = artifact_dir / rel / "model.fp32.onnx"
    tok_path = artifact_dir / rel / "tokenizer.json"
    write_engine_tokenizer(tok, tok_path)
    # The TorchScript exporter leaves the traced module slightly changed (seen with transformers
    # 5.24 / torch 2.13: logits moved by ~1e-2 after export), so trace a copy and keep the
    # original as the parity reference.
    torch_to_onnx(copy.deepcopy(model), graph, pad_id)
    parity = check_parity(model, graph, tok_path, max_length, pad_id, sample_texts, tol)
    parity["vocab_size"] = int(model.config.vocab_size)
    return ModelSpec(
        name=name, kind="transformer", graphs={"fp32": (rel / "model.fp32.onnx").as_posix()},
        tokenizer=(rel / "tokenizer.json").as_posix(), max_length=int(max_length), pad_id=int(pad_id),
        inputs=list(INPUTS), output="logits", opset=OPSET, parity=parity,
    )
