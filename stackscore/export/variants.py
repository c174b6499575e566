"""The graph variants an artifact can hold: one table read by export's gates and the engine.

Export writes a variant's file and records its gate under the variant's name
(``parity.gates[name]``); ``engine.backends.choose`` picks a variant from this table by the
requested precision, the device and whether the gate passed. Nothing else ties the two sides, so
a new variant is one row here, one quantizer in ``onnx_graph`` and nothing in the engine.
This module is plain data (no runtime imports): the engine imports it freely.
"""

from __future__ import annotations

from dataclasses import dataclass

STATIC_INT8_MIN_SPEEDUP = 1.05
"""Static int8 is kept only if this much faster than what ``auto`` would run instead (0: the
agreement gate alone decides)."""
PLAIN_ATTENTION_MIN_SPEEDUP = 1.05
"""An OpenVINO float variant runs its attention as plain MatMul/Softmax nodes by default (where
`stackscore tune` recorded nothing) only if export timed that this much faster than the fused
kernel on its gate rows, both agreeing with PyTorch fp32 (``gates[name].plain_attention``)."""
CALIBRATION_ROWS = 1152
"""Training rows for static int8 (never gate rows): 1,024 calibrate, the rest rank ops for the search."""


@dataclass(frozen=True)
class Variant:
    name: str  # key in the manifest's ``graphs`` and ``parity.gates``
    file: str | None  # the graph file export writes; None: runs the fp32 graph with a runtime hint
    runtime: str  # onnxruntime | openvino
    precision: str  # the ``--precision`` it answers to
    device: str  # cpu | gpu
    gate: str  # what its export gate compares against PyTorch fp32


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("fp32", "model.fp32.onnx", "onnxruntime", "fp32", "any", "parity: max |logit diff| <= tol x max(1, |logit|)"),
        Variant("int8", "model.int8.onnx", "onnxruntime", "int8", "cpu", "label agreement (ONNX Runtime dynamic int8)"),
        Variant("int8_static", "model.int8-static.onnx", "openvino", "int8", "cpu", "label agreement (NNCF static int8 on OpenVINO)"),
        Variant("bf16", None, "openvino", "bf16", "cpu", "label agreement (OpenVINO bf16 hint on the fp32 graph)"),
        Variant("fp16", "model.fp16.onnx", "onnxruntime", "fp16", "gpu", "label agreement at fp16_agreement (fused fp16 graph)"),
    )
}

# Fewest gate rows on which a faster precision can pass its agreement gate: at 99.5 %, 200 rows
# allow one flipped label; on 24 rows a variant that truly agrees 97 % passed about half the time.
GATE_MIN_ROWS = 200
# ``--precision auto``: the first variant whose gate passed (and whose runtime and CPU can run it).
AUTO_ORDER = {"cpu": ("int8_static", "bf16", "int8", "fp32"), "gpu": ("fp16", "fp32")}


def graph_key(variant: Variant) -> str:
    """The manifest ``graphs`` key a variant runs: its own file, or the fp32 graph."""
    return variant.name if variant.file else "fp32"
