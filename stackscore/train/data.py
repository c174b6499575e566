"""Labelled datasets for ``fit``: JSONL/CSV/Parquet files, or a folder of per-label text files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..engine.readers import detect_format, open_reader
from ..errors import InputError
from ..options import ReadOptions


def _number(value: Any) -> float | None:
    """A finite number from a JSON number or numeric text (CSV cells are text), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        f = float(value)
    elif isinstance(value, str):
        try:
            f = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return f if f == f and f not in (float("inf"), float("-inf")) else None


def _looks_fractional(value: Any) -> bool:
    if isinstance(value, float):
        return True
    return isinstance(value, str) and any(c in value for c in ".eE") and _number(value) is not None


def infer_task(labels: list, rows: int = 100_000) -> str:
    """The task a file's labels imply (the first ``rows`` non-null ones, as read).

    Any list of labels, or text joining several with ``|`` (as the engine's CSV output writes a
    row's labels): multi-label. Numbers (or numeric text, as CSV gives) of which at least
    one is written as a fraction (``3.8``, ``5.0``): regression. Anything else (names, integer
    class ids like SST-2's 0/1): single-label. Set ``task`` in the config to override.
    """
    all_numbers, fractional, seen = True, False, 0
    for lab in labels:
        if lab is None:
            continue
        if isinstance(lab, list) or (isinstance(lab, str) and "|" in lab):
            return "multi_label"
        all_numbers = all_numbers and _number(lab) is not None
        fractional = fractional or _looks_fractional(lab)
        seen += 1
        if seen >= rows:
            break
    return "regression" if seen and all_numbers and fractional else "single_label"


def _label_value(lab: Any, task: str, where: str, label_field: str, joined: bool = False):
    """A row's label as the task needs it, or one line saying why it cannot be. ``joined``: the
    file is CSV/TSV, whose cells hold a multi-label row's labels joined with ``|`` (as the
    engine's CSV output writes them; an empty cell: none on); JSON and Parquet hold lists."""
    if lab is None:
        raise InputError(f"{where}: field '{label_field}' is missing")
    if task == "multi_label":
        if joined and isinstance(lab, str):
            lab = [x for x in lab.split("|") if x]
        if not isinstance(lab, list) or not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in lab):
            raise InputError(f"{where}: field '{label_field}' must be a list of labels for a multi-label task, got {type(lab).__name__}")
        names = sorted({str(x) for x in lab})
        if any("|" in n for n in names):  # CSV outputs join the labels on with |
            raise InputError(f"{where}: label {next(n for n in names if '|' in n)!r} contains '|', which CSV outputs use to join labels")
        return names
    if task == "regression":
        value = _number(lab)
        if value is None:
            raise InputError(f"{where}: field '{label_field}' must be a finite number for a regression task, got {lab!r}")
        return value
    if isinstance(lab, (list, dict)):
        raise InputError(f"{where}: field '{label_field}' is {type(lab).__name__}, not one label (set task = \"multi_label\" for label lists)")
    if isinstance(lab, str) and not lab.strip():  # an empty CSV cell: no label, not a class named ''
        raise InputError(f"{where}: field '{label_field}' is empty")
    return str(lab)


def convert_labels(raw: list, task: str, path: str | Path, label_field: str = "label") -> list:
    """Labels as read -> what ``task`` needs, or one line naming file, row and field."""
    joined = Path(path).is_file() and detect_format(path)[0] in ("csv", "tsv")
    return [_label_value(lab, task, f"{path}: row {i}", label_field, joined) for i, lab in enumerate(raw)]


def load_labelled(path: str | Path, text_field: str = "text", label_field: str = "label", pair_field: str | None = None, task: str | None = "single_label", tsv_quotes: str = ReadOptions.tsv_quotes) -> tuple[list, list]:
    """(texts, labels). A directory means ``<dir>/<label>/*.txt`` (the IMDb layout).

    With ``pair_field`` each text is a ``(text, text_pair)`` tuple. Labels are strings
    (single-label), sorted lists of strings (multi-label) or floats (regression); with
    ``task=None`` they come as read (for ``infer_task``; then ``convert_labels``), so a file is
    read once. A row that cannot be used (bad JSON, missing text or label, a label of the wrong
    kind) stops the fit with one line naming file and row.
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
                text = f.read_text(encoding="utf-8", errors="replace").strip()
                if not text:  # nothing to learn from, and no prediction the engine would give it
                    raise InputError(f"{f}: the text file is empty")
                texts.append(text)
                labels.append(sub.name)
        return texts, labels
    texts, labels = [], []
    for chunk in open_reader(path, text_field=text_field, label_field=label_field, window_rows=8192, pair_field=pair_field, tsv_quotes=tsv_quotes):
        for i, (t, lab, err) in enumerate(zip(chunk.texts, chunk.labels or [], chunk.errors)):
            if err is not None:
                raise InputError(f"{path}: {err}")
            labels.append(lab)  # a missing label is refused by convert_labels, naming its row
            texts.append((t, chunk.pairs[i]) if pair_field else t)
    if not texts:
        raise InputError(f"{path}: no rows")
    return texts, (labels if task is None else convert_labels(labels, task, path, label_field))


def strata_keys(labels: list) -> np.ndarray:
    """Stratification keys for any task's labels (``stackscore.tasks.strata``)."""
    from ..tasks import strata

    if labels and isinstance(labels[0], list):
        return np.asarray([l[0] if l else "" for l in labels])
    if labels and isinstance(labels[0], float):
        return strata(np.asarray(labels, dtype=np.float64))
    return np.asarray(labels)


def stratified_subsample(labels: list, n: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``n`` rows with the label proportions kept (sorted)."""
    y = strata_keys(labels)
    if n <= 0 or n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = max(1, int(round(n * len(idx) / len(y))))
        picked.extend(rng.choice(idx, size=min(k, len(idx)), replace=False).tolist())
    return np.sort(np.asarray(picked))


def split_off(labels: list, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rest, split) stratified by label."""
    from .oof import holdout_split

    y = np.unique(strata_keys(labels), return_inverse=True)[1]
    return holdout_split(y, fraction, seed)
