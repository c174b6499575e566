"""The fit config: a TOML file (see ``examples/fit-demo.toml``).

TOML because it is in the standard library (tomllib), readable, and typed. Relative paths are
relative to the config file's directory.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import StackscoreError
from ..export.variants import CALIBRATION_ROWS, GATE_MIN_ROWS, PLAIN_ATTENTION_MIN_SPEEDUP, STATIC_INT8_MIN_SPEEDUP
from ..options import TSV_QUOTES, ReadOptions
from .models import ModelConfig


@dataclass
class DataConfig:
    train: str = ""  # may be empty when every model is a fixed checkpoint (finetune = false)
    test: str = ""  # empty: split test_fraction off train (or off validation, with no train)
    # the rows whose base-model predictions train the fusion (the classic X_val); required by
    # fixed checkpoints, whose predictions on their own training rows would be in-sample
    validation: str = ""
    text_field: str = "text"
    text_pair_field: str = ""  # sentence pairs: the second text's field
    label_field: str = "label"
    max_train_rows: int = 0  # 0 = all; else a stratified subsample (say so in reports)
    max_test_rows: int = 0
    test_fraction: float = 0.2
    tsv_quotes: str = ReadOptions.tsv_quotes  # TSV files: none | csv | detect (options.ReadOptions)


@dataclass
class FusionConfig:
    method: str = "stack"  # mean | weighted | vote | stack | auto
    folds: int = 5
    mode: str = "kfold"  # kfold | holdout
    holdout_fraction: float = 0.2
    features: str = "logits"  # stack: logits | probs
    meta_learner: str = "logreg"  # stack: logreg | gbm
    C: float = 1.0
    weights: list[float] | None = None  # weighted: fixed weights instead of learned
    # Adaptive ensemble (fusion/cascade.py): cheapest models first, stop where they are sure.
    cascade: bool = False
    cascade_agreement: float = 0.995  # with the full ensemble, on the fusion rows (cross-validated)
    cascade_max_accuracy_drop: float = 0.003  # 0.3 points
    cascade_max_log_loss_increase: float = 0.01


@dataclass
class FitConfig:
    data: DataConfig
    models: list[ModelConfig]
    fusion: FusionConfig = field(default_factory=FusionConfig)
    labels: list[str] | None = None
    task: str = ""  # single_label | multi_label | regression; empty: from the data (see train/data.py)
    seed: int = 0
    parity_rows: int = 512  # test-split rows for the parity and precision gates
    gate_min_rows: int = GATE_MIN_ROWS  # fewer gate rows: no faster precision passes (0: any number, knowingly)
    calibration_rows: int = CALIBRATION_ROWS  # training rows for static int8 (never the gate rows): 1,024 calibrate, 128 rank ops (export/int8_search.py)
    int8: bool = True  # try ONNX Runtime dynamic int8 at export (gated)
    static_int8: bool = True  # try NNCF static int8 for OpenVINO at export (needs the openvino extra)
    static_int8_min_speedup: float = STATIC_INT8_MIN_SPEEDUP  # keep static int8 only this much faster than bf16 (0: agreement alone decides)
    plain_attention_min_speedup: float = PLAIN_ATTENTION_MIN_SPEEDUP  # OpenVINO bf16 runs attention as plain nodes where untuned only if export timed them this much faster than the fused kernel
    fp16: bool = True  # write the fused fp16 graph for GPUs (gated at 99.9 % agreement)
    base_dir: Path = Path(".")


def _build(cls, raw: dict[str, Any], where: str):
    known = {f.name for f in fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise StackscoreError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    try:
        return cls(**raw)
    except TypeError as exc:
        raise StackscoreError(f"{where}: {exc}") from None


def load_config(path: str | Path) -> FitConfig:
    path = Path(path)
    if not path.is_file():
        raise StackscoreError(f"{path}: config file does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise StackscoreError(f"{path}: invalid TOML: {exc}") from None
    return config_from_dict(raw, path.parent, str(path))


def config_from_dict(raw: dict[str, Any], base_dir: Path, where: str = "config") -> FitConfig:
    raw = dict(raw)
    data = _build(DataConfig, raw.pop("data", {}), f"{where} [data]")
    fusion = _build(FusionConfig, raw.pop("fusion", {}), f"{where} [fusion]")
    models_raw = raw.pop("models", [])
    if len(models_raw) < 1:
        raise StackscoreError(f"{where}: at least one [[models]] entry is required")
    models = [_build(ModelConfig, m, f"{where} [[models]] #{i + 1}") for i, m in enumerate(models_raw)]
    for m, given in zip(models, models_raw):
        if m.finetune is False and "max_length" not in given:
            # A checkpoint does not record the length it was fine-tuned with (its tokenizer's
            # model_max_length is usually the base model's limit): scored at another length, its
            # long rows give other predictions than the team's own, and nothing would say so.
            raise StackscoreError(
                f"{where} [[models]] '{m.name}': finetune = false needs max_length, the token length this checkpoint was "
                "fine-tuned and is scored with (texts are cut there; a checkpoint does not record it)"
            )
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise StackscoreError(f"{where}: model names must be unique, got {names}")
    for m in models:
        if not isinstance(m.finetune, bool):
            raise StackscoreError(f"{where} [[models]] '{m.name}': finetune must be true or false (unquoted), got {m.finetune!r}")
    fixed = [m.name for m in models if not m.finetune]
    if not data.train and len(fixed) < len(models):
        raise StackscoreError(f"{where} [data]: 'train' is required (models trained here: {', '.join(n for n in names if n not in fixed)})")
    if fixed and not data.validation:
        raise StackscoreError(
            f"{where} [data]: 'validation' is required with finetune = false ({', '.join(fixed)}): the fusion learns from "
            "predictions on rows those checkpoints never trained on"
        )
    for m in models:
        w = f"{where} [[models]] '{m.name}'"
        if m.kind not in ("transformer", "tfidf"):
            raise StackscoreError(f"{w}: kind '{m.kind}' is unknown (transformer, tfidf)")
        if not m.finetune and (m.kind != "transformer" or m.source.startswith("scratch:")):
            raise StackscoreError(f"{w}: finetune = false takes a saved checkpoint (source = a local Hugging Face directory)")
        if m.label_map is not None and (m.finetune or not isinstance(m.label_map, dict) or not all(isinstance(v, str) for v in m.label_map.values())):
            raise StackscoreError(f"{w}: label_map (checkpoint label -> data label, strings) applies to finetune = false checkpoints")
        if m.positive_label is not None and (m.finetune or not isinstance(m.positive_label, str)):
            raise StackscoreError(f"{w}: positive_label (a data label, a string) applies to finetune = false checkpoints with one output")
        if m.activation is not None and (m.finetune or m.activation not in ("sigmoid", "identity")):
            raise StackscoreError(f"{w}: activation (\"sigmoid\" or \"identity\": how the team's regression checkpoint predicts) applies to finetune = false checkpoints, got {m.activation!r}")
        if data.text_pair_field and m.kind == "tfidf":
            raise StackscoreError(f"{w}: a tfidf model reads one text; it cannot score sentence pairs (text_pair_field)")
    cfg = _build(FitConfig, {**raw, "data": data, "models": models, "fusion": fusion}, where)
    from ..tasks import TASKS

    if not (isinstance(cfg.fusion.C, (int, float)) and cfg.fusion.C > 0):
        raise StackscoreError(f"{where} [fusion]: C must be a positive number, got {cfg.fusion.C!r}")
    if not (isinstance(cfg.fusion.folds, int) and cfg.fusion.folds >= 2):
        raise StackscoreError(f"{where} [fusion]: folds must be an integer >= 2, got {cfg.fusion.folds!r}")
    if not isinstance(cfg.fusion.cascade, bool):
        raise StackscoreError(f"{where} [fusion]: cascade must be true or false (unquoted), got {cfg.fusion.cascade!r}")
    if cfg.fusion.cascade and len(models) < 2:
        raise StackscoreError(f"{where} [fusion]: cascade = true needs at least two base models")
    if not (isinstance(cfg.fusion.cascade_agreement, (int, float)) and 0.5 <= cfg.fusion.cascade_agreement <= 1):
        raise StackscoreError(f"{where} [fusion]: cascade_agreement must be a number between 0.5 and 1, got {cfg.fusion.cascade_agreement!r}")

    if cfg.data.tsv_quotes not in TSV_QUOTES:
        raise StackscoreError(f"{where} [data]: tsv_quotes must be one of {', '.join(TSV_QUOTES)}, got {cfg.data.tsv_quotes!r}")
    # parity_rows/calibration_rows 0 would gate on nothing, or calibrate on the gate rows
    for key, least, what in (("parity_rows", 1, "a positive whole number"), ("calibration_rows", 1, "a positive whole number"), ("gate_min_rows", 0, "a whole number >= 0")):
        value = getattr(cfg, key)
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= least):
            raise StackscoreError(f"{where}: {key} must be {what}, got {value!r}")
    for key in ("static_int8_min_speedup", "plain_attention_min_speedup"):  # export compares timings with them
        value = getattr(cfg, key)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0):
            raise StackscoreError(f"{where}: {key} must be a number >= 0 (unquoted), got {value!r}")
    if cfg.task and cfg.task not in TASKS:
        raise StackscoreError(f"{where}: task must be one of {', '.join(TASKS)} (or left out: from the data), not '{cfg.task}'")
    cfg.base_dir = Path(base_dir)
    return cfg
