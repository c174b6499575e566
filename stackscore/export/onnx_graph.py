"""Export a fine-tuned Hugging Face classifier to ONNX and prove it computes the same logits.

We export with ``torch.onnx.export`` (the TorchScript exporter) on transformers 5.x rather than
optimum: optimum-onnx 0.1.0 does not import with transformers 5.x, and the plain exporter gives a
graph with dynamic batch and sequence axes that ONNX Runtime optimizes at load time. The parity
gate and the precision gates run the *engine's own* model runner (``engine.runner``: its
tokenizer, batcher and backend classes, with the scorer's batch geometry) on sample texts, with
the PyTorch model as one more backend, so they compare exactly what scoring runs, batch for batch.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParityError, StackscoreError
from ..hf import activated, classifier_logits, ordered_logits
from ..manifest import ModelSpec
from ..roofline import graph_cost
from .variants import GATE_MIN_ROWS, PLAIN_ATTENTION_MIN_SPEEDUP, STATIC_INT8_MIN_SPEEDUP, VARIANTS

OPSET = 17
MAX_ERROR_GATE = 0.05  # multi-label / regression variants: largest probability (or relative value) error
# Single-label variants: the mean of each row's largest probability error. Top labels can agree
# while every probability moves (a graph that shrank its logits would pass on labels alone), and
# users read the probabilities (score, prob_*, a cascade's stopping rule). On rt-polarity (AVX2):
# RoBERTa's dynamic int8 0.0015 (99.61 % agreement), MiniLM's 0.016 at 98.63 % (failing on labels):
# honest quantization that passes the label gate stays well below the bound; a shifted or
# shrunk output (a shrink by 4x: ~0.2) does not.
MEAN_ERROR_GATE = 0.02
INPUTS = ["input_ids", "attention_mask"]


def write_engine_tokenizer(tok, path: Path) -> None:
    """The fast tokenizer's ``tokenizer.json`` without padding/truncation (the engine sets them)."""
    from tokenizers import Tokenizer

    raw = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    raw.no_padding()
    raw.no_truncation()
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.save(str(path))


def load_for_export(model_dir: Path):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    extra = {}
    config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=False)
    if getattr(config, "attention_type", None) == "block_sparse":
        # BigBird switches between block-sparse and full attention by sequence length inside
        # Python, which a traced graph cannot; full attention is exact at every length (and what
        # BigBird itself runs below its block-sparse threshold), so export and parity use it.
        extra["attention_type"] = "original_full"
    # Eager attention traces to plain MatMul/Softmax ops that ORT's fusions recognise.
    import torch

    # fp32 whatever the checkpoint was saved in (transformers 5 keeps a saved fp16/bf16): the fp32
    # graph is fp32, and the faster precisions are derived from it and gated against it.
    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), local_files_only=True, trust_remote_code=False, attn_implementation="eager", dtype=torch.float32, **extra
    ).eval()
    from ..hf import load_tokenizer, pad_like_config

    tok = load_tokenizer(Path(model_dir))
    pad_like_config(tok, model.config)
    return model, tok


def takes_token_types(model, tok) -> bool:
    """Whether transformers feeds this model token types: it accepts them and its tokenizer
    emits them (``model_input_names``), exactly what ``tok(a, b)`` + ``model(**enc)`` do."""
    import inspect

    accepts = "token_type_ids" in inspect.signature(model.forward).parameters
    return accepts and "token_type_ids" in getattr(tok, "model_input_names", [])


def label_ordered(model, order: list[int] | None, with_types: bool):
    """``model`` with its logits in the artifact's label order (``order[j]`` = the checkpoint's
    output index for artifact label j) and a fixed signature: (ids, mask[, token types]).

    Without token types the model computes zeros inside the graph, as transformers does when
    it is not given them."""
    import torch

    class LabelOrdered(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.zero = order is not None and min(order) < 0  # a one-output head: a 0 beside its logit
            shifted = [i + 1 for i in order] if self.zero else order
            self.register_buffer("order", torch.as_tensor(shifted if shifted is not None else [], dtype=torch.long))
            self.reorder = order is not None and list(order) != list(range(len(order)))

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kw = {"token_type_ids": token_type_ids} if with_types else {}
            logits = classifier_logits(self.inner, input_ids, attention_mask, **kw)
            if self.zero:
                logits = torch.cat([torch.zeros_like(logits[:, :1]), logits], 1)
            return logits.index_select(1, self.order) if self.reorder else logits

    return LabelOrdered(model).eval()


def torch_to_onnx(model, path: Path, pad_id: int, opset: int = OPSET, order: list[int] | None = None, with_types: bool = False) -> list[str]:
    """Trace ``model`` to ``path``: (input_ids, attention_mask[, token_type_ids]) -> logits. Returns the input names."""
    import torch

    ids = torch.full((2, 16), 5, dtype=torch.long)
    mask = torch.ones_like(ids)
    ids[1, 10:] = pad_id
    mask[1, 10:] = 0
    names = INPUTS + (["token_type_ids"] if with_types else [])
    args = (ids, mask) + ((torch.cat([torch.zeros(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long)], 1),) if with_types else ())
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    from ..quiet import native_stdout_muted

    with warnings.catch_warnings(), torch.inference_mode(), native_stdout_muted():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            label_ordered(model, order, with_types), args, str(path), input_names=names, output_names=["logits"],
            dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True,
        )
    return names


@dataclass
class GateInputs:
    """What every gate feeds a graph: the sample texts through the engine's own runner."""

    tok_path: Path
    max_length: int
    pad_id: int
    texts: list
    inputs: list[str]
    width: int  # logits per row
    task: str = "single_label"
    flops_per_token: float = 0.0  # the graph's (roofline.graph_cost): scoring's batch geometry for it
    truncation_side: str = "right"  # the checkpoint tokenizer's (ModelSpec.truncation_side)
    split_special_tokens: bool = False  # the checkpoint tokenizer's (ModelSpec.split_special_tokens)

    def spec(self, name: str = "gate") -> ModelSpec:
        return ModelSpec(name=name, kind="transformer", graphs={}, tokenizer=None, max_length=self.max_length, pad_id=self.pad_id, inputs=list(self.inputs),
                         flops_per_token=self.flops_per_token, truncation_side=self.truncation_side, split_special_tokens=self.split_special_tokens)

    def runner(self, backend, **options):
        from ..engine.runner import TransformerRunner
        from ..options import RunOptions

        return TransformerRunner.for_graph("gate", backend, self.tok_path, self.max_length, self.pad_id, RunOptions(**options), self.flops_per_token, self.truncation_side, self.split_special_tokens)

    def logits(self, backend) -> np.ndarray:
        """``backend``'s logits of the sample texts, batched exactly as scoring batches them."""
        return self.runner(backend).logits(self.texts, self.width)

    def ort(self, graph: Path, precision: str = "fp32"):
        """The engine's own ONNX Runtime backend on ``graph`` (CPU)."""
        from ..engine.backends.ort import OrtBackend
        from ..options import RunOptions

        return OrtBackend(graph, self.spec(), RunOptions(), precision)

    def openvino(self, graph: Path, precision: str, fused_attention: bool = True, streams: int = 1):
        from ..engine.backends.ov import OpenVinoBackend
        from ..options import RunOptions

        return OpenVinoBackend(graph, self.spec(), RunOptions(), precision, fused_attention=fused_attention, streams=streams)


class TorchBackend:
    """The PyTorch reference as one more backend, fed exactly like transformers feeds it (types for pairs)."""

    def __init__(self, model, order: list[int] | None = None, with_types: bool = False):
        self.wrapped = label_ordered(model, order, with_types)
        self.with_types = with_types

    def run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray | None = None) -> np.ndarray:
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(types) if (self.with_types and types is not None) else None
            return self.wrapped(torch.from_numpy(ids), torch.from_numpy(mask), t).float().numpy()


def truncation_side(tok) -> str:
    """Which end transformers cuts from a long text with this tokenizer (``truncation_side``)."""
    side = getattr(tok, "truncation_side", "right") or "right"
    if side not in ("right", "left"):
        raise StackscoreError(f"tokenizer truncation_side {side!r} is neither 'right' nor 'left'")
    return side


def long_parity_texts(texts: list, max_length: int) -> list:
    """Two texts (or pairs) built from ``texts``, each far longer than ``max_length`` tokens, so
    the parity check also sees where a long text is cut (short texts never truncate: a tokenizer
    that keeps the end would otherwise pass and be cut at the start on long rows)."""
    if not texts:
        return []
    pairs = isinstance(texts[0], tuple)
    firsts = [t[0] if pairs else t for t in texts[:64]]
    body = " ".join(firsts)
    reps = max(1, -(-max_length * 16 // max(1, len(body))))
    long = " ".join([body] * reps)
    rev = " ".join([" ".join(reversed(firsts))] * reps)
    return [(long, rev), (firsts[0], rev)] if pairs else [long, rev]


def splits_special_tokens(tok) -> bool:
    """Whether transformers splits special-token strings typed in a text (``split_special_tokens``)."""
    return bool(getattr(tok, "split_special_tokens", False))


def special_token_texts(tok, texts: list) -> list:
    """A text (or pair) with each of the tokenizer's special-token strings typed in it: whether a
    typed "[SEP]" is the separator or three word pieces is a tokenizer setting, and user rows
    seldom show which."""
    if not texts:
        return []
    typed = " ".join(str(t) for t in getattr(tok, "all_special_tokens", []))
    first = texts[0]
    return [(f"{first[0]} {typed}", f"{typed} {first[1]}")] if isinstance(first, tuple) else [f"{first} {typed} end"]


def check_token_ids(tok, tokenizer_json: Path, max_length: int, texts: list) -> dict[str, Any]:
    """The engine's ``tokenizer.json`` must give transformers' own ids (and token types) on ``texts``
    and on two long texts made of them (``long_parity_texts``: the side that is cut).

    Catches a slow tokenizer converted badly, a fast one whose saved form lost a setting, or a
    truncation side the engine would not follow.
    """
    from ..engine.tokenize import TextTokenizer
    from ..hf import hf_encode

    texts = list(texts) + long_parity_texts(texts, max_length) + special_token_texts(tok, texts)
    enc = TextTokenizer(tokenizer_json, max_length, truncation_side=truncation_side(tok), split_special_tokens=splits_special_tokens(tok)).encode(texts)
    ref = hf_encode(tok, texts, max_length, keep_types=True)
    ref_ids, ref_mask = ref["input_ids"].numpy(), ref["attention_mask"].numpy()
    ref_types = ref["token_type_ids"].numpy() if "token_type_ids" in ref else None
    bad = []
    for i in range(len(texts)):
        n = int(ref_mask[i].sum())
        lo, hi = int(enc.offsets[i]), int(enc.offsets[i] + enc.lengths[i])
        # transformers pads on the right or the left depending on the tokenizer; take the real tokens.
        real = ref_mask[i].astype(bool)
        same = n == hi - lo and np.array_equal(ref_ids[i][real], enc.flat[lo:hi])
        if same and enc.types is not None and ref_types is not None:
            same = np.array_equal(ref_types[i][real], enc.types[lo:hi])
        if not same:
            bad.append(i)
    result = {"rows": len(texts), "mismatched_rows": len(bad)}
    if bad:
        raise ParityError(
            f"{tokenizer_json}: the engine's tokenizer gives other ids than transformers on {len(bad)} of {len(texts)} "
            f"parity texts (first: row {bad[0]})"
        )
    return result


def compare(ref: np.ndarray, got: np.ndarray, task: str = "single_label") -> dict[str, Any]:
    """How far ``got`` is from ``ref`` in what the task answers.

    ``label_agreement``: rows with the same top label (single-label); rows with the same label
    set at 0.5 (multi-label); rows within 1 % of the reference values' range (regression), so a
    gate means the same thing for every task.
    """
    from ..tasks import activate

    diff = float(np.abs(got - ref).max()) if len(ref) else 0.0
    if task == "regression":
        scale = max(float(np.ptp(ref)) if len(ref) else 0.0, 1e-6)
        agree = float(np.mean(np.abs(got - ref).max(1) <= 0.01 * scale)) if len(ref) else 1.0
        mean = float(np.abs(got - ref).max(1).mean()) / scale if len(ref) else 0.0
        return {"rows": int(len(ref)), "max_abs_diff": diff, "max_prob_error": diff / scale, "mean_prob_error": mean, "label_agreement": agree}
    pa, pb = activate(task, ref), activate(task, got)
    if task == "multi_label":
        agree = float(np.mean(((pa >= 0.5) == (pb >= 0.5)).all(1)))
    else:
        agree = float(np.mean(got.argmax(1) == ref.argmax(1)))
    rows = np.abs(pa - pb).max(1) if len(ref) else np.zeros(1)
    return {"rows": int(len(ref)), "max_abs_diff": diff, "max_prob_error": float(rows.max()), "mean_prob_error": float(rows.mean()), "label_agreement": agree}


UNPADDED_ROWS = 24


def logit_bound(tol: float, ref: np.ndarray, factor: float = 1.0) -> float:
    """``factor x tol x max(1, max |logit|)``: fp32 rounding grows with the logits' magnitude."""
    return factor * tol * max(1.0, float(np.abs(ref).max()) if ref is not None and ref.size else 1.0)


def unpadded_logits(model, g: GateInputs, order: list[int] | None = None, with_types: bool = False) -> np.ndarray:
    """The checkpoint's own forward on each text alone: no padding, no batch, no wrapper.

    This is what a text's prediction means for the model as saved. The batched parity reference
    runs PyTorch on the engine's padded batches, so a model whose output depends on padding (one
    that reads its last position, or finds its last token by a pad id the tokenizer does not pad
    with) would agree with its graph there and still be wrong on every padded row."""
    import torch

    from ..engine.tokenize import TextTokenizer

    enc = TextTokenizer(g.tok_path, g.max_length, truncation_side=g.truncation_side, split_special_tokens=g.split_special_tokens).encode(list(g.texts))
    rows = []
    with torch.inference_mode():
        for lo, n in zip(enc.offsets.tolist(), enc.lengths.tolist()):
            ids = torch.from_numpy(enc.flat[lo : lo + n].astype(np.int64))[None]
            kw = {"token_type_ids": torch.from_numpy(enc.types[lo : lo + n].astype(np.int64))[None]} if with_types and enc.types is not None else {}
            rows.append(activated(model, model(input_ids=ids, attention_mask=torch.ones_like(ids), **kw).logits)[0].float().numpy())
    if not rows:
        return np.zeros((0, g.width), dtype=np.float32)
    return ordered_logits(np.stack(rows), order) if order is not None else np.stack(rows)


def check_unpadded(model, g: GateInputs, onnx_side, tol: float, order: list[int] | None = None, with_types: bool = False) -> float:
    """The graph on the engine's padded batches of ``g.texts`` must give each text's logits alone.

    10x the batched parity bound: padded and unpadded rows sum in other orders; a model that
    reads padding is off by far more."""
    if not g.texts:
        return 0.0
    alone, batched = unpadded_logits(model, g, order, with_types), g.logits(onnx_side)
    diff = float(np.abs(alone - batched).max())
    bound = logit_bound(tol, alone, 10)
    if diff > bound:
        config_pad = getattr(model.config, "pad_token_id", None)
        hint = (f"; its tokenizer pads with id {g.pad_id} but its config.pad_token_id is {config_pad}: make them the same"
                if config_pad is not None and int(config_pad) != g.pad_id else "")
        raise ParityError(
            f"the model's outputs change when a row is padded: max |diff| {diff:.2e} > {bound:.1e} between each text alone "
            f"(PyTorch) and the engine's padded batches (ONNX, padded on the right with id {g.pad_id}){hint}"
        )
    return diff


def check_parity(model, graph: Path, g: GateInputs, tol: float, order: list[int] | None = None, with_types: bool = False) -> tuple[dict[str, Any], np.ndarray]:
    """fp32 gate: max |ONNX - PyTorch| logit difference on the engine's batches of the sample texts.

    ``tol`` is relative to the logits' scale, ``tol x max(1, max |logit|)``: fp32 rounding
    grows with the magnitude, so a head with logits of 30 gets 3e-3 where one of 1 gets 1e-4.
    Two texts of ``max_length`` tokens (``long_parity_texts``) are compared too: the graph is
    traced on 16 tokens, and test splits of short texts would never run it at full length.
    """
    torch_side, onnx_side = TorchBackend(model, order, with_types), g.ort(graph)
    ref = g.logits(torch_side)
    got = g.logits(onnx_side)
    scaled = logit_bound(tol, ref)
    result = {"precision": "fp32", **compare(ref, got, g.task), "tolerance": scaled, "relative_tolerance": tol}
    if result["max_abs_diff"] > scaled:
        raise ParityError(f"ONNX/PyTorch parity failed for {graph}: max |diff| {result['max_abs_diff']:.2e} > {scaled:.1e} ({tol:.0e} x the largest logit)")
    from dataclasses import replace

    result["max_abs_diff_unpadded"] = check_unpadded(model, replace(g, texts=g.texts[:UNPADDED_ROWS]), onnx_side, tol, order, with_types)
    full = replace(g, texts=long_parity_texts(g.texts, g.max_length))
    if full.texts:
        long_ref, long_got = full.logits(torch_side), full.logits(onnx_side)
        diff = float(np.abs(long_ref - long_got).max())
        # 10x the short texts' bound: fp32 sums over max_length tokens round more, and what this
        # is for (a graph that only holds at its traced length) is off by far more than that.
        bound = logit_bound(tol, long_ref, 10)
        result["max_abs_diff_full_length"] = diff
        if diff > bound:
            raise ParityError(f"ONNX/PyTorch parity failed for {graph} on texts of {g.max_length} tokens: max |diff| {diff:.2e} > {bound:.1e} "
                              f"(10 x {tol:.0e} x the largest logit); short texts agreed")
    return result, ref


EXACT_DOT, SATURATED_DOT = 64 * 255 * 127, 32 * 32767  # 64 products of u8 255 x s8 127: exact, or clipped per int16 pair


def int8_probe_graph() -> bytes:
    """One MatMulInteger: a row of 64 u8 inputs times 64 x 16 s8 weights of 127."""
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "int8-probe",
                          [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 16])],
                          [numpy_helper.from_array(np.full((64, 16), 127, np.int8), "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def measured_int8_kernels() -> str:
    """This CPU's int8 kernels, measured rather than read from its flags ("exact", "saturating",
    or "unknown"): what export records in each int8 gate. A VNNI CPU whose flags cannot be read
    would otherwise record its gates as saturating, and CPUs that do saturate would trust them."""
    import onnxruntime as ort

    sess = ort.InferenceSession(int8_probe_graph(), providers=["CPUExecutionProvider"])
    got = int(sess.run(None, {"a": np.full((1, 64), 255, np.uint8)})[0][0, 0])
    return {EXACT_DOT: "exact", SATURATED_DOT: "saturating"}.get(got, "unknown")


def quantize_int8(fp32: Path, int8: Path) -> None:
    """Dynamic int8: QInt8 weights, per channel (QUInt8 weights measured 2.5x slower here)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ..quiet import muted

    with muted():
        quantize_dynamic(
            str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


FFN_OUT = r".*layers?\.\d+/output/dense/.*"  # each layer's FFN down-projection (BERT family names)


def fp32_scopes(graph: Path) -> list[list[str]]:
    """The fixed static-int8 ladder export used before ``int8_search`` (kept for
    ``benchmarks/int8_probe.py``'s comparisons): what to keep in floating point on each try, least first.

    1. nothing (the whole graph int8);
    2. every layer's FFN down-projection: its input carries the activation outliers that
       per-tensor int8 clips (the usual culprit in BERT-family int8);
    3. that, plus the last encoder layer and the classifier head, which decide the label.
    """
    import re

    import onnx

    names = [n.name for n in onnx.load(str(graph), load_external_data=False).graph.node]
    layers = {int(m.group(1)) for n in names if (m := re.search(r"layers?\.(\d+)/", n))}
    last = [rf".*layers?\.{max(layers)}/.*"] if layers else []
    return [[], [FFN_OUT], [FFN_OUT, *last, r".*classifier.*", r".*pooler.*"]]


def attention_fusable(config) -> bool:
    """Whether ONNX Runtime's BERT Attention fusion may rewrite this architecture's attention: not
    for encoder-decoders (BART, T5 and their kin, ``hf.EOS_POOLED``), whose padded rows it got
    wrong. Decoder-only graphs do not match the fusion's pattern at all."""
    from ..hf import EOS_POOLED

    return not (getattr(config, "is_encoder_decoder", False) or str(getattr(config, "model_type", "")) in EOS_POOLED)


def fp16_graph(fp32: Path, out: Path, num_heads: int, hidden_size: int, fuse_attention: bool = True) -> dict[str, int]:
    """The GPU graph: ONNX Runtime's transformer fusions, then fp16 weights and activations.

    The fusions (Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu) need the
    head count and hidden size from the model config (auto-detection fails on this exporter's
    graphs) and turn each layer into a few CUDA kernels that accumulate LayerNorm statistics and
    Softmax in fp32 internally; any LayerNormalization or Softmax left unfused is kept in fp32
    (``op_block_list``). Inputs and outputs stay int64 / fp32 (``keep_io_types``), so the engine
    feeds every precision the same way. Returns the fused-operator counts.

    ``fuse_attention=False`` (encoder-decoders: ``attention_fusable``): the BERT Attention fusion
    also matched BART's attention and dropped what padding does there: right on unpadded rows,
    0.8 label agreement on padded ones (the gate refused the graph every time); LayerNorm and
    Gelu fusions are kept.
    """
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_attention = fuse_attention
    model = optimizer.optimize_model(str(fp32), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0, use_gpu=True, optimization_options=options)
    fused = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
    model.convert_float_to_float16(
        keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST, "LayerNormalization", "Softmax"],
    )
    model.save_model_to_file(str(out))
    return fused


def quantize_static(fp32: Path, out: Path, calibration: list[dict[str, np.ndarray]], ignored: list[str] | None = None, **nncf_options) -> None:
    """Static int8 (NNCF, QDQ in ONNX): activations calibrated on training texts.

    OpenVINO runs the QDQ graph with int8 kernels (VNNI/AMX), which ONNX Runtime's dynamic
    quantization cannot give it; the artifact stays plain ONNX.
    """
    import logging

    import nncf
    import onnx

    logging.getLogger("nncf").setLevel(logging.ERROR)
    kw = {"ignored_scope": nncf.IgnoredScope(patterns=ignored, validate=False)} if ignored else {}
    from ..quiet import muted

    with muted():
        q = nncf.quantize(
            onnx.load(str(fp32)), nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(calibration), **kw, **nncf_options,
        )
    onnx.save(q, str(out))


def calibration_batches(g: GateInputs, texts: list, rows: int = 8) -> list[dict[str, np.ndarray]]:
    """The engine's own padded batches of ``texts`` (``rows`` per batch), as graph feeds, for calibration."""
    from ..engine.backends import graph_feeds

    runner = g.runner(None, token_budget=rows * g.max_length, max_batch_rows=rows, scale_batches=False)
    return [graph_feeds(b.input_ids, b.attention_mask, g.inputs, b.token_type_ids) for b in runner.batches(runner.encode(texts))]


# Besides scoring's own batches, each variant's gate rows run padded to the bucket lengths
# (16, 32, 64, ...): a static-int8 MiniLM with OpenVINO's fused attention was right on the gate's
# batches (padded to 11, 14, 17, ... 31, 34 tokens) and wrong on any batch padded to exactly 32
# (73 % agreement on such rows; 91 % on the gate rows bucketed), which scoring forms at will.
STRESS_GEOMETRY = {"bucket_lengths": True}


def _gate(make_backend, ref: np.ndarray, g: GateInputs, min_agreement: float, **extra) -> dict[str, Any]:
    """Build a variant's backend (quantizing first, where it has to) and compare it with PyTorch
    fp32, on scoring's batches and on the same rows padded to the bucket lengths
    (``STRESS_GEOMETRY``): the gate's figures are the worse of the two."""
    task = g.task
    try:
        backend = make_backend()
        got = g.logits(backend)
        gate = {**compare(ref, got, task), "min_agreement": min_agreement, **extra}
        stressed = compare(ref, g.runner(backend, **STRESS_GEOMETRY).logits(g.texts, g.width), task)
        gate["bucketed_agreement"] = stressed["label_agreement"]
        for key in ("label_agreement", "max_prob_error", "mean_prob_error", "max_abs_diff"):
            worse = min if key == "label_agreement" else max
            gate[key] = worse(gate[key], stressed[key])
    except Exception as exc:  # noqa: BLE001 - a failed optional precision is reported, not fatal
        gate = {"error": f"{type(exc).__name__}: {exc}", **extra}
    gate["passed"] = gate.get("label_agreement", 0.0) >= min_agreement
    if task == "single_label":
        gate["mean_error_gate"] = MEAN_ERROR_GATE
        if gate["passed"] and gate.get("mean_prob_error", 1.0) > MEAN_ERROR_GATE:
            gate["passed"] = False
            gate["reason"] = f"its probabilities moved: mean error {gate['mean_prob_error']:.3f} > {MEAN_ERROR_GATE} (the top labels agreed)"
    else:
        # Label sets are decided at tuned thresholds (not 0.5) and values have no labels:
        # the largest error must stay small too (probabilities; values relative to their range).
        gate["max_error_gate"] = MAX_ERROR_GATE
        gate["passed"] = gate["passed"] and gate.get("max_prob_error", 1.0) <= MAX_ERROR_GATE
    return gate


class Confirmation:
    """Rows apart from the gate rows, for a graph that was *chosen* on the gate rows.

    The int8 search's ladder keeps the first graph (most sensitive ops in float, fewest first)
    that passes the gate, and the ensemble gate tightens it until the fused answers pass: each
    stops at the first try that clears 99.5 % on the same 512 rows, so the recorded figure of
    what it kept is the luckiest of several tries (a review measured the searched graphs' figures
    0.7 points above fresh rows, unsearched ones 0.1). The graph it keeps must pass again on
    these rows, which took part in no choice; the reference is the fp32 graph's logits (PyTorch
    parity already checked), computed once, when first needed."""

    def __init__(self, g: GateInputs, fp32: Path):
        self.g, self.fp32 = g, fp32
        self._ref: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return len(self.g.texts)

    def gate(self, backend, min_agreement: float) -> dict[str, Any]:
        """``_gate``'s figures of an already built ``backend`` on the confirmation rows."""
        if self._ref is None:
            self._ref = self.g.logits(self.g.ort(self.fp32))
        found = _gate(lambda: backend, self._ref, self.g, min_agreement)
        return {k: found[k] for k in ("label_agreement", "max_prob_error", "mean_prob_error", "passed", "reason", "error") if k in found} | {"rows": self.rows}


def _keep(gate: dict[str, Any], path: Path, key: str, graphs: dict[str, str]) -> None:
    """A graph stays in the artifact only if its gate passed (fall back: the file goes)."""
    if gate["passed"]:
        graphs[key] = path.name
    elif path.exists():
        path.unlink()


@dataclass
class GateSettings:
    """Which variants (``variants.VARIANTS``) export tries for a model, and how strict their gates are
    (from the fit config, through the fit state)."""

    int8: bool = True  # ONNX Runtime dynamic int8
    static_int8: bool = True  # NNCF static int8 for OpenVINO
    fp16: bool = True  # fused fp16 graph for GPUs
    min_agreement: float = 0.995  # gate for int8, static int8, bf16
    fp16_agreement: float = 0.999
    calibration_texts: list[str] | None = None  # training texts for static int8 (calibration + its search set)
    static_int8_min_speedup: float = STATIC_INT8_MIN_SPEEDUP  # int8_static kept only this much faster than what auto runs otherwise (bf16, dynamic int8 or fp32)
    plain_attention_min_speedup: float = PLAIN_ATTENTION_MIN_SPEEDUP  # bf16's attention as plain nodes by default only this much faster than fused
    task: str = "single_label"  # what the gates compare (``compare``)
    min_rows: int = GATE_MIN_ROWS  # fewer gate rows: no faster precision passes


def plain_attention_gate(fp32: Path, precision: str, g: GateInputs, ref: np.ndarray, min_agreement: float, log, min_speedup: float = PLAIN_ATTENTION_MIN_SPEEDUP,
                         built: dict[str, Any] | None = None, streams: int | None = None) -> dict[str, Any]:
    """Whether an OpenVINO float variant should run attention as plain MatMul/Softmax nodes where
    `stackscore tune` has recorded nothing (``default``): that graph gated like any variant, then
    timed against the fused kernel on the gate rows, both at the streams an untuned run uses,
    taking turns (``int8_search.rows_per_s``), already warm.

    Which is faster depends on the lengths: on an AMX Xeon, plain nodes ran MiniLM 1.12-1.32x the
    fused kernel on 2,000 short rows (two streams) and 0.96-1.05x on IMDb rows cut at 64 tokens;
    `tune` chose plain on short texts, but an untuned run kept the fused kernel. The gate rows are
    the fit's own texts, so their lengths are what the model was fitted for. Tune's record, made
    on the scoring machine, still wins (``engine.runner.runner_for``).

    ``built``: backends already built and warm at ``streams`` (``"fused"``: the variant's own
    gate's), used instead of compiling again; the plain one is added there for later timings.
    ``streams``: what the caller built them at (None: ``default_streams``, as an untuned run)."""
    from ..engine.backends import cpu_key
    from ..engine.runner import default_streams
    from ..options import RunOptions
    from ..tuning import fused_kernel
    from .int8_search import rows_per_s

    streams, threads = streams or default_streams("openvino", RunOptions()), RunOptions().cpu_threads
    built = {} if built is None else built

    def plain():
        built["plain"] = g.openvino(fp32, precision, fused_attention=False, streams=streams)
        return built["plain"]

    # what the timing holds for (``engine.runner.export_plain_attention`` reads it): this CPU and
    # thread count, the streams an untuned run uses there, and the fused kernel it was timed against
    gate = _gate(plain, ref, g, min_agreement, streams=streams, threads=threads, cpu=cpu_key(), fused_kernel=fused_kernel())
    gate["default"] = False
    if gate["passed"] and "plain" in built:  # its gate's passes warmed it
        try:
            warm = "fused" in built  # its own gate's passes prepared its batch shapes
            fused = built["fused"] if warm else g.openvino(fp32, precision, streams=streams)
            plain_runner, fused_runner = g.runner(built["plain"]), g.runner(fused)
            enc, n = plain_runner.encode(g.texts), len(g.texts)  # one encoding for both: the kernels are what is timed

            def timed(runner):
                return lambda: runner.run_encoded(enc, n, g.width)

            if not warm:
                timed(fused_runner)()  # its batch shapes prepared (plain's were, by its gate)
            plain_rps, fused_rps = rows_per_s(timed(plain_runner), n, timed(fused_runner))
        except Exception as exc:  # noqa: BLE001 - no timing: the fused kernel stays the default
            gate["timing_error"] = f"{type(exc).__name__}: {exc}"
        else:
            gate.update(rows_per_s=round(plain_rps, 1), fused_rows_per_s=round(fused_rps, 1), speedup=round(plain_rps / fused_rps, 3), min_speedup=min_speedup)
            gate["default"] = gate["speedup"] >= min_speedup
    if "error" in gate:
        log(f"    {precision} plain attention: not available ({gate['error'][:120]})")
    elif "label_agreement" in gate:
        speed = f", {gate['rows_per_s']:,.0f} rows/s ({gate['speedup']:.2f}x fused, {streams} stream{'s' if streams > 1 else ''})" if "speedup" in gate else ""
        verdict = "the default where untuned" if gate["default"] else ("fused stays the default" if gate["passed"] else "not used (gate failed)")
        log(f"    {precision} plain attention: agreement {gate['label_agreement']:.2%}{speed} -> {verdict}")
    return gate


def precision_gates(graph_dir: Path, fp32: Path, g: GateInputs, ref: np.ndarray, log, variants: GateSettings, fp16_shape: tuple[int, int] | None = None,
                    searches: list | None = None, fp16_attention: bool = True, confirm_texts: list | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Try faster precisions (the variants table, ``variants.py``); keep each only if it agrees
    with PyTorch fp32 on the sample, run through the engine's own runner and backend classes.

    - ``int8``: ONNX Runtime dynamic quantization (a graph, kept only if its gate passes);
    - ``bf16``: OpenVINO's bf16 inference precision on the fp32 graph (a record, no graph); on a
      CPU with bf16, also gated and timed with attention as plain nodes (``plain_attention_gate``:
      the default where untuned if ``variants.plain_attention_min_speedup`` x the fused kernel);
    - ``int8_static``: NNCF static int8 (QDQ) for OpenVINO, calibrated on training texts; when
      the whole graph fails the gate, retried with the most sensitive ops in float, fewest first
      (``int8_search``), and kept only if faster by ``static_int8_min_speedup`` than what ``auto``
      would run instead (bf16, dynamic int8 or fp32); with ``searches`` given, a kept graph's
      search (``int8_search.StaticInt8Search``) is appended there, still open, for the ensemble
      gate (``tighter``), and the caller closes it; a graph the search chose on the gate rows
      must pass on ``confirm_texts`` too (``Confirmation``; at least ``min_rows`` of them, else
      none: 5 rows would "confirm" anything);
    - ``fp16``: the fused fp16 graph for GPUs (``fp16_shape`` = (heads, hidden); attention fused
      where ``fp16_attention``), gated at
      ``variants.fp16_agreement`` through ONNX Runtime's CPU fp16 kernels on the export machine (the
      GPU's own agreement is measured by ``benchmarks/gpu_check.sh``).
    Returns (gates, extra graph files by variant name).
    """
    from ..engine.backends import cpu_has_bf16, have

    if len(g.texts) < variants.min_rows:  # no faster precision can pass: none is built
        why = f"{len(g.texts)} gate rows are too few to measure its agreement (at least {variants.min_rows}: parity_rows, a larger test split, or gate_min_rows)"
        log(f"    faster precisions: not tried ({why})")
        tried = [v for v, on in (("int8", variants.int8), ("fp16", variants.fp16 and fp16_shape), ("bf16", have("openvino")),
                                 ("int8_static", variants.static_int8 and have("openvino") and have("nncf"))) if on]
        return {v: {"passed": False, "error": why} for v in tried}, {}
    kernels = measured_int8_kernels() if variants.int8 or variants.static_int8 else None

    graphs: dict[str, str] = {}
    gates: dict[str, Any] = {}
    min_agreement, calibration_texts = variants.min_agreement, variants.calibration_texts

    def path(name: str) -> Path:
        return graph_dir / VARIANTS[name].file

    if variants.int8:

        def ort_int8():
            quantize_int8(fp32, path("int8"))
            return g.ort(path("int8"), "int8")

        gates["int8"] = _gate(ort_int8, ref, g, min_agreement, method="dynamic", int8_kernels=kernels)
        _keep(gates["int8"], path("int8"), "int8", graphs)

    if variants.fp16 and fp16_shape:
        fused: dict[str, int] = {}

        def ort_fp16():
            fused.update(fp16_graph(fp32, path("fp16"), *fp16_shape, fuse_attention=fp16_attention))
            return g.ort(path("fp16"), "fp16")

        gates["fp16"] = _gate(ort_fp16, ref, g, variants.fp16_agreement, device="cpu")
        gates["fp16"]["fused_ops"] = fused
        _keep(gates["fp16"], path("fp16"), "fp16", graphs)

    if have("openvino"):
        from ..engine.runner import default_streams
        from ..options import RunOptions

        # bf16 at the streams an untuned run uses; each backend built once, for its gate, the
        # attention timing and static int8's baseline
        streams, bf16 = default_streams("openvino", RunOptions()), {}

        def bf16_fused():
            bf16["fused"] = g.openvino(fp32, "bf16", streams=streams)
            return bf16["fused"]

        gates["bf16"] = _gate(bf16_fused, ref, g, min_agreement, cpu_bf16=cpu_has_bf16(), streams=streams)
        if gates["bf16"]["passed"] and cpu_has_bf16():
            gates["bf16"]["plain_attention"] = plain_attention_gate(fp32, "bf16", g, ref, min_agreement, log, variants.plain_attention_min_speedup, built=bf16, streams=streams)
        if variants.static_int8 and have("nncf"):
            from .int8_search import StaticInt8Search

            # What ``--precision auto`` would run on this CPU if int8_static is not kept (the
            # engine's own choice over the gates so far): static int8 must beat that.
            from dataclasses import replace

            from ..engine.backends import auto_variant

            so_far = replace(g.spec(), graphs={"fp32": fp32.name, **graphs}, parity={"gates": gates})
            name = auto_variant(so_far, RunOptions(precision="auto"))
            # bf16 as auto would run it untuned here: its attention kind and streams (the
            # candidates are timed at the same streams), the backend its gates built
            kind = "plain" if gates["bf16"].get("plain_attention", {}).get("default", False) else "fused"
            runs = {"bf16": lambda: bf16.get(kind) or g.openvino(fp32, "bf16", fused_attention=kind == "fused", streams=streams), "int8": lambda: g.ort(path("int8"), "int8"), "fp32": lambda: g.ort(fp32, "fp32")}
            base = (name, runs[name])
            search = StaticInt8Search(
                fp32, path("int8_static"), g, ref, calibration_texts, min_agreement, log, base, min_speedup=variants.static_int8_min_speedup,
                record={"int8_kernels": kernels, "cpu_bf16": cpu_has_bf16(), "streams": streams},  # cpu_bf16: its float ops ran in bf16 where true
                confirm=Confirmation(replace(g, texts=list(confirm_texts)), fp32) if confirm_texts and len(confirm_texts) >= variants.min_rows else None,
                streams=streams,
            )
            gates["int8_static"] = search.run()
            _keep(gates["int8_static"], path("int8_static"), "int8_static", graphs)
            if searches is not None and gates["int8_static"]["passed"]:
                searches.append(search)
            else:
                search.close()
    for prec, gate in gates.items():
        if "error" in gate:
            log(f"    {prec}: not available ({gate['error'][:120]})")
        else:
            note = " (measured in fp32: this CPU has no bf16 instructions, so no CPU's auto will run bf16 from it)" if gate.get("cpu_bf16") is False and gate["passed"] else ""
            log(f"    {prec}: agreement {gate['label_agreement']:.2%}, max prob error {gate['max_prob_error']:.1e}"
                f"{', mean %.1e' % gate['mean_prob_error'] if 'mean_prob_error' in gate else ''} -> {'kept' if gate['passed'] else 'dropped (' + gate.get('reason', 'gate failed') + ')'}{note}")
    return gates, graphs


def export_transformer(model_dir: Path, artifact_dir: Path, name: str, max_length: int, sample_texts: list, tol: float = 1e-4, log=print, variants: GateSettings | None = None, label_order: list[int] | None = None, label_map: dict[str, str] | None = None,
                       searches: list | None = None, output_activation: str | None = None, confirm_texts: list | None = None) -> ModelSpec:
    """Write ``models/<name>/model.fp32.onnx`` (+ faster graphs whose gates pass) and ``tokenizer.json``.

    ``label_order`` (a checkpoint used as saved): the graph gathers the checkpoint's logits into
    the artifact's label order, and the PyTorch reference of the parity check is ordered the
    same way, so the check compares the *mapped* model with its graph. Sentence-pair samples
    give a graph that takes ``token_type_ids`` when the model uses them. ``searches``: see
    ``precision_gates`` (what the ensemble gate may ask of this model's static int8 later).
    ``output_activation`` ("sigmoid": a regression cross-encoder, as fit scored it): in the graph.
    ``confirm_texts``: rows apart from ``sample_texts`` for what a search chose (``Confirmation``).
    """
    model, tok = load_for_export(Path(model_dir))
    if output_activation:
        model.output_activation = output_activation
    arch = str(getattr(model.config, "model_type", ""))
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    pairs = bool(sample_texts) and isinstance(sample_texts[0], tuple)
    with_types = pairs and takes_token_types(model, tok)
    rel = Path("models") / name
    graph = artifact_dir / rel / VARIANTS["fp32"].file
    tok_path = artifact_dir / rel / "tokenizer.json"
    write_engine_tokenizer(tok, tok_path)
    side, split = truncation_side(tok), splits_special_tokens(tok)
    tokens = check_token_ids(tok, tok_path, max_length, sample_texts)
    # The TorchScript exporter leaves the traced module slightly changed (seen with transformers
    # 5.24 / torch 2.13: logits moved by ~1e-2 after export), so trace a copy and keep the
    # original as the parity reference.
    try:
        inputs = torch_to_onnx(copy.deepcopy(model), graph, pad_id, order=label_order, with_types=with_types)
        width = len(label_order) if label_order is not None else int(model.config.num_labels)
        flops = graph_cost(graph).per_token
        g = GateInputs(tok_path, int(max_length), int(pad_id), sample_texts, inputs, width, (variants or GateSettings()).task, flops, side, split)
        parity, ref = check_parity(model, graph, g, tol, label_order, with_types)
    except ParityError as exc:
        raise ParityError(f"model '{name}' ({arch}): {exc}") from None
    except Exception as exc:  # noqa: BLE001 - an architecture the exporter cannot trace: one line
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise StackscoreError(f"model '{name}' ({arch}): ONNX export failed: {type(exc).__name__}: {first}") from None
    parity["vocab_size"] = int(model.config.vocab_size)
    parity["tokenizer_ids"] = tokens
    heads = getattr(model.config, "num_attention_heads", None)
    hidden = getattr(model.config, "hidden_size", None)
    gates, extra = precision_gates(
        graph.parent, graph, g, ref, log, variants or GateSettings(), fp16_shape=(int(heads), int(hidden)) if heads and hidden else None, searches=searches,
        fp16_attention=attention_fusable(model.config), confirm_texts=confirm_texts,
    )
    parity["gates"] = gates
    graphs = {"fp32": (rel / VARIANTS["fp32"].file).as_posix(), **{p: (rel / f).as_posix() for p, f in extra.items()}}
    return ModelSpec(
        name=name, kind="transformer", graphs=graphs,
        tokenizer=(rel / "tokenizer.json").as_posix(), max_length=int(max_length), pad_id=int(pad_id),
        inputs=list(inputs), output="logits", opset=OPSET, parity=parity,
        label_map=dict(label_map or {}), architecture=arch, flops_per_token=flops, truncation_side=side, split_special_tokens=split,
    )
