"""Labelled datasets for ``fit``: JSONL/CSV/Parquet files, or a folder of per-label text files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..engine.readers import open_reader
from ..errors import InputError


def load_labelled(path: str | Path, text_field: str = "text", label_field: str = "label", pair_field: str | None = None) -> tuple[list, list[str]]:
    """(texts, labels as strings). A directory means ``<dir>/<label>/*.txt`` (the IMDb layout).

    With ``pair_field`` each text is a ``(text, text_pair)`` tuple. A row that cannot be used
    (bad JSON, missing text, missing label) stops the fit with one line naming file and row.
    """
    path = Path(path)
    if path.is_dir():
        if pair_field:
            raise InputError(f"{path}: a folder of <label>/*.txt files has no second text for text_pair_field")
        texts, labels = [], []
        subdirs = sorted(p for p in path.iterdir() if p.is_dir())
        if not subdirs:
            raise InputError(f"{path}: a dataset folder needs one sub-folder per label (e.g. pos/ and neg/)")
        for sub in subdirs:
            for f in sorted(sub.glob("*.txt")):
                texts.append(f.read_text(encoding="utf-8", errors="replace").strip())
                labels.append(sub.name)
        return texts, labels
    texts, labels = [], []
    for chunk in open_reader(path, text_field=text_field, label_field=label_field, chunk_rows=8192, pair_field=pair_field):
        for i, (t, lab, err) in enumerate(zip(chunk.texts, chunk.labels or [], chunk.errors)):
            if err is not None:
                raise InputError(f"{path}: {err}")
            if lab is None or isinstance(lab, (list, dict)):
                raise InputError(f"{path}: row {chunk.start + i}: field '{label_field}' is {'missing' if lab is None else type(lab).__name__}, not one label")
            texts.append((t, chunk.pairs[i]) if pair_field else t)
            labels.append(str(lab))
    if not texts:
        raise InputError(f"{path}: no rows")
    return texts, labels


def stratified_subsample(labels: list[str], n: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``n`` rows with the label proportions kept (sorted)."""
    y = np.asarray(labels)
    if n <= 0 or n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = max(1, int(round(n * len(idx) / len(y))))
        picked.extend(rng.choice(idx, size=min(k, len(idx)), replace=False).tolist())
    return np.sort(np.asarray(picked))


def split_off(labels: list[str], fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rest, split) stratified by label."""
    from .oof import holdout_split

    y = np.unique(np.asarray(labels), return_inverse=True)[1]
    return holdout_split(y, fraction, seed)
