"""What ties a fit to the checkpoints it used as saved (read by both fit and export).

A checkpoint used with ``finetune = false`` stays where the team keeps it; the fit state records
a fingerprint of its files, so ``stackscore export`` later refuses a checkpoint that changed
(re-saved with another ``id2label``, retrained weights) instead of pairing new weights with a
fusion learned from the old ones' predictions.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

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
