"""``fit_state.json``: the typed hand-over from ``stackscore fit`` to ``stackscore export``.

Export depends on training only through this file (never through train's code): the labels and
task, each base model's directory and how its labels map, the fusion's manifest entry, the parity
and calibration texts, and which faster graph variants to try.

A checkpoint used with ``finetune = false`` stays where the team keeps it; the fit state records
a fingerprint of its files, so ``stackscore export`` later refuses a checkpoint that changed
(re-saved with another ``id2label``, retrained weights) instead of pairing new weights with a
fusion learned from the old ones' predictions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .errors import StackscoreError
from .export.variants import GATE_MIN_ROWS, PLAIN_ATTENTION_MIN_SPEEDUP, STATIC_INT8_MIN_SPEEDUP

FIT_STATE = "fit_state.json"

# config.json (id2label, problem_type), the weights, and every tokenizer file.
FINGERPRINTED = ("*.json", "*.safetensors", "*.bin", "*.txt", "*.model")


def checkpoint_fingerprint(model_dir: str | Path) -> str:
    """sha256 over the names and contents of a checkpoint's files (sorted, so stable)."""
    root = Path(model_dir)
    h = hashlib.sha256()
    files = sorted({p for pattern in FINGERPRINTED for p in root.glob(pattern) if p.is_file()})
    for p in files:
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def _items(rows: list | None) -> list | None:
    """JSON has no tuples: sentence pairs come back as [text, text_pair] lists."""
    return None if rows is None else [tuple(t) if isinstance(t, list) else t for t in rows]


@dataclass
class FitModel:
    """One base model as fit left it."""

    name: str
    kind: str = "transformer"  # transformer | tfidf
    max_length: int = 0
    source: str = ""
    finetune: bool = True
    model_dir: str | None = None  # default: <workdir>/models/<name>
    label_order: list[int] | None = None  # checkpoint output index per artifact label (used as saved)
    label_map: dict[str, str] | None = None  # checkpoint label -> artifact label
    checkpoint_sha256: str | None = None  # fingerprint of a checkpoint used as saved
    output_activation: str | None = None  # "sigmoid": a regression cross-encoder's outputs as it predicts (hf.activated)

    def directory(self, workdir: Path) -> Path:
        return Path(self.model_dir) if self.model_dir else Path(workdir) / "models" / self.name

    def check_unchanged(self, workdir: Path) -> None:
        if self.checkpoint_sha256 and checkpoint_fingerprint(self.directory(workdir)) != self.checkpoint_sha256:
            raise StackscoreError(
                f"model '{self.name}': {self.directory(workdir)} changed since it was fitted (config, weights or tokenizer files); "
                "its fusion was learned from the old checkpoint's predictions: run `stackscore fit` again"
            )


@dataclass
class FitState:
    labels: list[str]
    models: list[FitModel]
    fusion: dict[str, Any]  # the chosen fusion's FusionSpec fields
    parity_texts: list
    task: str = "single_label"
    text_pair: bool = False
    calibration_texts: list | None = None
    int8: bool = True
    static_int8: bool = True
    static_int8_min_speedup: float = STATIC_INT8_MIN_SPEEDUP
    plain_attention_min_speedup: float = PLAIN_ATTENTION_MIN_SPEEDUP
    gate_min_rows: int = GATE_MIN_ROWS
    fp16: bool = True
    cascade: dict[str, Any] | None = None  # the cascade's manifest section; its graphs are under fusion/
    confirmation_texts: list | None = None  # test-split rows apart from the gate rows: a choice made on the gate rows must pass here too (None: a state from before they were kept)

    def save(self, workdir: Path) -> Path:
        path = Path(workdir) / FIT_STATE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, workdir: Path) -> "FitState":
        path = Path(workdir) / FIT_STATE
        if not path.is_file():
            raise StackscoreError(f"{workdir}: no {FIT_STATE}; run `stackscore fit` first (or point at its --out directory)")
        try:
            raw = json.loads(path.read_text())
            known = {f.name for f in fields(FitModel)}
            models = [FitModel(**{k: v for k, v in m.items() if k in known}) for m in raw.pop("models")]
            own = {f.name for f in fields(cls)}
            state = cls(models=models, **{k: v for k, v in raw.items() if k in own})
        except (ValueError, KeyError, TypeError) as exc:
            raise StackscoreError(f"{path}: not a fit state this stackscore can read ({type(exc).__name__}: {exc})") from None
        state.parity_texts = _items(state.parity_texts)
        state.calibration_texts = _items(state.calibration_texts)
        state.confirmation_texts = _items(state.confirmation_texts)
        return state
