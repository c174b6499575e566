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


def engine_logits(run, tokenizer_json: Path, max_length: int, pad_id: int, texts: list[str]) -> np.ndarray:
    """Logits of ``texts`` through the engine's own tokenizer and batcher, in input order."""
    from ..engine.batcher import build_batch, plan_batches
    from ..engine.tokenize import TextTokenizer

    enc = TextTokenizer(tokenizer_json, max_length).encode(texts)
    out = None
    for rows in plan_batches(enc.lengths, 4096, 64):
        b = build_batch(enc, rows, pad_id)
        logits = run(b.input_ids, b.attention_mask)
        if out is None:
            out = np.zeros((len(texts), logits.shape[1]), dtype=np.float32)
        out[rows] = logits
    return out


def torch_runner(model):
    import torch

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.float().numpy()

    return run


def compare(ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    from ..metrics import softmax

    return {
        "rows": int(len(ref)),
        "max_abs_diff": float(np.abs(got - ref).max()),
        "max_prob_error": float(np.abs(softmax(got) - softmax(ref)).max()),
        "label_agreement": float(np.mean(got.argmax(1) == ref.argmax(1))),
    }


def check_parity(model, graph: Path, tokenizer_json: Path, max_length: int, pad_id: int, texts: list[str], tol: float) -> tuple[dict[str, Any], np.ndarray]:
    """fp32 gate: max |ONNX - PyTorch| logit difference on the engine's batches of ``texts``."""
    import onnxruntime as ort

    ref = engine_logits(torch_runner(model), tokenizer_json, max_length, pad_id, texts)
    sess = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    got = engine_logits(lambda i, m: sess.run(["logits"], {"input_ids": i, "attention_mask": m})[0], tokenizer_json, max_length, pad_id, texts)
    result = {"precision": "fp32", **compare(ref, got), "tolerance": tol}
    if result["max_abs_diff"] > tol:
        raise ParityError(f"ONNX/PyTorch parity failed for {graph}: max |diff| {result['max_abs_diff']:.2e} > {tol:.0e}")
    return result, ref


def quantize_int8(fp32: Path, int8: Path) -> None:
    """Dynamic int8: QInt8 weights, per channel (QUInt8 weights measured 2.5x slower here)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def precision_gates(graph_dir: Path, fp32: Path, tok_path: Path, max_length: int, pad_id: int, texts: list[str], ref: np.ndarray, min_agreement: float, log) -> tuple[dict[str, Any], dict[str, str]]:
    """Try faster precisions; keep each only if it agrees with PyTorch fp32 on the sample.

    int8 (ONNX Runtime dynamic quantization) is written as a graph only when its gate passes;
    bf16 (OpenVINO inference precision on the fp32 graph) needs no graph, only the record.
    Returns (gates, extra graphs by precision).
    """
    import onnxruntime as ort

    gates: dict[str, Any] = {}
    graphs: dict[str, str] = {}
    int8 = graph_dir / "model.int8.onnx"
    try:
        quantize_int8(fp32, int8)
        sess = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
        got = engine_logits(lambda i, m: sess.run(["logits"], {"input_ids": i, "attention_mask": m})[0], tok_path, max_length, pad_id, texts)
        gates["int8"] = {**compare(ref, got), "min_agreement": min_agreement}
    except Exception as exc:  # noqa: BLE001 - a failed optional precision is reported, not fatal
        gates["int8"] = {"error": f"{type(exc).__name__}: {exc}"}
    gates["int8"]["passed"] = gates["int8"].get("label_agreement", 0.0) >= min_agreement
    if gates["int8"]["passed"]:
        graphs["int8"] = int8.name
    elif int8.exists():
        int8.unlink()  # fall back: the artifact keeps only precisions that passed
    from ..engine.backends import cpu_has_bf16, have

    if have("openvino"):
        try:
            from ..engine.backends import BackendOptions
            from ..engine.backends.ov import OpenVinoBackend
            from ..manifest import ModelSpec

            spec = ModelSpec(name="gate", kind="transformer", graphs={}, tokenizer=None, max_length=max_length, pad_id=pad_id, inputs=INPUTS)
            ov = OpenVinoBackend(fp32, spec, BackendOptions(), "bf16")
            got = engine_logits(ov.run, tok_path, max_length, pad_id, texts)
            gates["bf16"] = {**compare(ref, got), "min_agreement": min_agreement, "cpu_bf16": cpu_has_bf16()}
        except Exception as exc:  # noqa: BLE001
            gates["bf16"] = {"error": f"{type(exc).__name__}: {exc}"}
        gates["bf16"]["passed"] = gates["bf16"].get("label_agreement", 0.0) >= min_agreement
    for prec, g in gates.items():
        if "error" in g:
            log(f"    {prec}: not available ({g['error'][:120]})")
        else:
            log(f"    {prec}: agreement {g['label_agreement']:.2%}, max prob error {g['max_prob_error']:.3f} -> {'kept' if g['passed'] else 'dropped (gate failed)'}")
    return gates, graphs


def export_transformer(model_dir: Path, artifact_dir: Path, name: str, max_length: int, sample_texts: list[str], tol: float = 1e-4, min_agreement: float = 0.995, log=print) -> ModelSpec:
    """Write ``models/<name>/model.fp32.onnx`` (+ int8 if its gate passes) and ``tokenizer.json``."""
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
    parity, ref = check_parity(model, graph, tok_path, max_length, pad_id, sample_texts, tol)
    parity["vocab_size"] = int(model.config.vocab_size)
    gates, extra = precision_gates(graph.parent, graph, tok_path, max_length, pad_id, sample_texts, ref, min_agreement, log)
    parity["gates"] = gates
    graphs = {"fp32": (rel / "model.fp32.onnx").as_posix(), **{p: (rel / f).as_posix() for p, f in extra.items()}}
    return ModelSpec(
        name=name, kind="transformer", graphs=graphs,
        tokenizer=(rel / "tokenizer.json").as_posix(), max_length=int(max_length), pad_id=int(pad_id),
        inputs=list(INPUTS), output="logits", opset=OPSET, parity=parity,
    )
