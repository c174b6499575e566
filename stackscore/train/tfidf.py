"""The classical base model: TF-IDF + LogisticRegression, exported with skl2onnx (string input).

Its "logits" are log-probabilities (softmax of them gives the probabilities back), so it fuses
with transformer logits like any other base model. Two details make the ONNX graph compute
exactly what scikit-learn does (checked at export, max |diff| ~1e-7): the tokenizer regex is
given in RE2's Unicode classes (RE2's ``\\w`` is ASCII-only, scikit-learn's is Unicode), and the
lower-casing locale is ``C.UTF-8`` (ONNX Runtime's default ``en_US.UTF-8`` is often not
installed). ``sublinear_tf`` is refused: the converter does not reproduce it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import StackscoreError
from ..export.tfidf import GRAPH  # the file export copies
from .models import ModelConfig

TOKEN_RE2 = r"[\p{L}\p{N}_]{2,}"  # = scikit-learn's default (?u)\b\w\w+\b
LOCALE = "C.UTF-8"


def fit_tfidf(texts: list[str], y: np.ndarray, cfg: ModelConfig, labels: list[str] | None = None):
    """TF-IDF + logistic regression on ``y`` (label indices into ``labels``). Its outputs are the
    labels it saw: a label with no row among these (a rare label's only rows in another fold,
    or none in the training split) would leave one column fewer, every later column shifted, so
    it is refused in one line."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    if cfg.sublinear_tf:
        raise StackscoreError(f"model '{cfg.name}': sublinear_tf is not supported (skl2onnx does not reproduce it)")
    vec = TfidfVectorizer(
        ngram_range=(1, cfg.ngram_max), min_df=cfg.min_df, max_features=cfg.max_features, dtype=np.float32,
    )
    if labels is not None:
        seen = set(np.unique(np.asarray(y)).tolist())
        missing = [label for i, label in enumerate(labels) if i not in seen]
        if missing:
            raise StackscoreError(
                f"model '{cfg.name}': label {missing[0]!r} has no row among the {len(y)} rows it trains on "
                "(a fold or the fit split): TF-IDF outputs only the labels it saw; give that label more rows"
            )
    clf = LogisticRegression(C=cfg.C, max_iter=2000)
    return Pipeline([("tfidf", vec), ("clf", clf)]).fit(texts, np.asarray(y))


def tfidf_logits(pipe, texts: list[str]) -> np.ndarray:
    return np.log(np.clip(pipe.predict_proba(texts), 1e-12, None)).astype(np.float32)


def to_onnx_bytes(pipe) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import StringTensorType

    vec, clf = pipe.named_steps["tfidf"], pipe.named_steps["clf"]
    onx = to_onnx(
        pipe, initial_types=[("text", StringTensorType([None, 1]))],
        options={id(clf): {"zipmap": False}, id(vec): {"locale": LOCALE, "tokenexp": TOKEN_RE2}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return onx.SerializeToString()


def save_tfidf(pipe, model_dir: Path, parity_texts: list[str]) -> None:
    """Write the ONNX graph and the scikit-learn reference outputs on the parity texts (no pickle)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / GRAPH).write_bytes(to_onnx_bytes(pipe))
    ref = {"texts": parity_texts, "logits": tfidf_logits(pipe, parity_texts).tolist()}
    (model_dir / "parity.json").write_text(json.dumps(ref))
