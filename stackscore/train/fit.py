"""``stackscore fit``: fine-tune base models, out-of-fold logits, fit and compare fusions, export.

Work directory layout (``--out DIR``)::

    DIR/models/<name>/     fine-tuned base models (Hugging Face directories, tokenizer included)
    DIR/oof.npz            out-of-fold logits per model, labels, training-side fused probabilities
    DIR/fusion/            the chosen fusion's files (meta.onnx for stacking)
    DIR/fit_state.json     what `stackscore export` needs to rebuild the artifact
    DIR/artifact/          the exported artifact (manifest.json + ONNX + tokenizers)
    DIR/report.json|.md    every base model and fusion method on the test split
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import fusion as fusion_mod
from ..errors import StackscoreError
from ..metrics import softmax
from .config import FitConfig
from .data import load_labelled, split_off, stratified_subsample
from .finetune import finetune, predict_logits
from .models import build_model
from .oof import holdout_split, out_of_fold, take
from .report import build_report, error_correlation, write_report


def _resolve(cfg: FitConfig, p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else cfg.base_dir / path


def fusion_candidates(cfg: FitConfig) -> dict[str, Callable[[], fusion_mod.FusionMethod]]:
    f = cfg.fusion
    return {
        "mean": lambda: fusion_mod.MeanFusion(),
        "vote": lambda: fusion_mod.VoteFusion("hard"),
        "soft_vote": lambda: fusion_mod.VoteFusion("soft"),
        "weighted": lambda: fusion_mod.WeightedFusion(f.weights),
        "stack": lambda: fusion_mod.StackFusion(features=f.features, meta_learner=f.meta_learner, C=f.C, mode=f.mode),
    }


def load_splits(cfg: FitConfig, log: Callable[[str], None]):
    d = cfg.data
    train_texts, train_labels = load_labelled(_resolve(cfg, d.train), d.text_field, d.label_field)
    if d.test:
        test_texts, test_labels = load_labelled(_resolve(cfg, d.test), d.text_field, d.label_field)
    else:
        rest, test = split_off(train_labels, d.test_fraction, cfg.seed)
        test_texts, test_labels = take(train_texts, test), take(train_labels, test)
        train_texts, train_labels = take(train_texts, rest), take(train_labels, rest)
    n_all = len(train_texts)
    idx = stratified_subsample(train_labels, d.max_train_rows, cfg.seed)
    train_texts, train_labels = take(train_texts, idx), take(train_labels, idx)
    idx = stratified_subsample(test_labels, d.max_test_rows, cfg.seed)
    test_texts, test_labels = take(test_texts, idx), take(test_labels, idx)
    labels = cfg.labels or sorted(set(train_labels))
    lab_index = {l: i for i, l in enumerate(labels)}
    unknown = sorted(set(train_labels + test_labels) - set(lab_index))
    if unknown:
        raise StackscoreError(f"labels {unknown} appear in the data but not in the config's 'labels' {labels}")
    if len(labels) < 2:
        raise StackscoreError(f"need at least two labels, found {labels}")
    y = np.asarray([lab_index[l] for l in train_labels])
    y_test = np.asarray([lab_index[l] for l in test_labels])
    log(f"data: {len(train_texts)} train rows (of {n_all}), {len(test_texts)} test rows, labels {labels}")
    return labels, train_texts, y, test_texts, y_test


def fit(cfg: FitConfig, out: str | Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels, texts, y, test_texts, y_test = load_splits(cfg, log)
    f = cfg.fusion
    if f.mode not in ("kfold", "holdout"):
        raise StackscoreError(f"[fusion] mode must be 'kfold' or 'holdout', got '{f.mode}'")
    if f.mode == "holdout":
        fit_rows, blend_rows = holdout_split(y, f.holdout_fraction, cfg.seed)
        y_meta = y[blend_rows]
    else:
        fit_rows, blend_rows, y_meta = np.arange(len(y)), None, y

    rng = np.random.default_rng(cfg.seed)
    parity_idx = rng.choice(len(test_texts), size=min(cfg.parity_rows, len(test_texts)), replace=False)
    parity_texts = [test_texts[i] for i in parity_idx]
    calib_idx = rng.choice(len(texts), size=min(cfg.calibration_rows, len(texts)), replace=False)
    calibration_texts = [texts[i] for i in calib_idx]
    oof: dict[str, np.ndarray] = {}
    test_logits: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {}
    for mcfg in cfg.models:
        if mcfg.kind not in ("transformer", "tfidf"):
            raise StackscoreError(f"model '{mcfg.name}': kind '{mcfg.kind}' is unknown (transformer, tfidf)")
        t0 = time.perf_counter()
        log(f"model {mcfg.name} ({mcfg.kind}{'' if mcfg.kind == 'tfidf' else ', ' + mcfg.source})")
        if mcfg.kind == "tfidf":
            from .tfidf import fit_tfidf, save_tfidf, tfidf_logits

            def train(rows: np.ndarray, mcfg=mcfg):
                return fit_tfidf(take(texts, rows), y[rows], mcfg)

            def predict(model, rows: np.ndarray):
                return tfidf_logits(model, take(texts, rows))

            def predict_texts(model, some: list[str]):
                return tfidf_logits(model, some)

            def save(model, mcfg=mcfg):
                save_tfidf(model, out / "models" / mcfg.name, parity_texts)
        else:
            factory, tok = build_model(mcfg, texts, labels, cfg.base_dir)

            def train(rows: np.ndarray, factory=factory, tok=tok, mcfg=mcfg):
                return finetune(factory(), tok, take(texts, rows), y[rows], mcfg, log)

            def predict(model, rows: np.ndarray, tok=tok, mcfg=mcfg):
                return predict_logits(model, tok, take(texts, rows), mcfg.max_length)

            def predict_texts(model, some: list[str], tok=tok, mcfg=mcfg):
                return predict_logits(model, tok, some, mcfg.max_length)

            def save(model, tok=tok, mcfg=mcfg):
                model.save_pretrained(out / "models" / mcfg.name)
                tok.save_pretrained(out / "models" / mcfg.name)

        if f.mode == "kfold":
            oof[mcfg.name] = out_of_fold(train, predict, y, f.folds, cfg.seed, log)
            log(f"    final model on all {len(y)} rows")
            final = train(fit_rows)
        else:
            final = train(fit_rows)
            oof[mcfg.name] = predict(final, blend_rows)
        test_logits[mcfg.name] = predict_texts(final, test_texts)
        save(final)
        timings[mcfg.name] = round(time.perf_counter() - t0, 1)

    names = [m.name for m in cfg.models]
    outs = [oof[n] for n in names]
    test_outs = [test_logits[n] for n in names]
    candidates = fusion_candidates(cfg)
    fitted = {name: make().fit(outs, y_meta) for name, make in candidates.items()}
    if f.method == "auto":
        auto = fusion_mod.AutoFusion({k: v for k, v in candidates.items()}, folds=max(2, f.folds), seed=cfg.seed).fit(outs, y_meta)
        chosen_name, chosen, reason = auto.chosen_, auto.method_, auto.reason_
        cv_scores = auto.cv_log_loss_
    else:
        key = {"vote": "vote", "hard_vote": "vote"}.get(f.method, f.method)
        if key not in fitted:
            raise StackscoreError(f"[fusion] method '{f.method}' unknown (mean, weighted, vote, soft_vote, stack, auto)")
        chosen_name, chosen = key, fitted[key]
        reason = f"configured: [fusion] method = '{f.method}'"
        cv_scores = None
    log(f"fusion: {chosen_name} ({reason})")

    spec = chosen.to_manifest(out, reason=reason)
    np.savez(out / "oof.npz", y=y_meta, fused_proba=chosen.predict_proba(outs), **{f"logits_{n}": oof[n] for n in names})
    state = {
        "labels": labels,
        "models": [{"name": m.name, "kind": m.kind, "max_length": m.max_length, "source": m.source} for m in cfg.models],
        "fusion": spec.__dict__,
        "parity_texts": parity_texts,
        "calibration_texts": calibration_texts,
        "int8": cfg.int8,
        "static_int8": cfg.static_int8,
        "fp16": cfg.fp16,
    }
    (out / "fit_state.json").write_text(json.dumps(state, indent=2) + "\n")

    from ..export import export_artifact

    log("export")
    manifest = export_artifact(out, out / "artifact", log)

    # The engine on the test split must reproduce the training-side fused probabilities.
    from ..engine.scorer import Scorer

    engine_proba = Scorer(out / "artifact", manifest=manifest).score_texts(test_texts).proba
    train_side = chosen.predict_proba(test_outs)
    engine_check = {
        "rows": len(test_texts),
        "max_abs_diff": float(np.abs(engine_proba - train_side).max()),
        "label_agreement": float(np.mean(engine_proba.argmax(1) == train_side.argmax(1))),
    }
    log(f"engine vs training on the test split: max |diff| {engine_check['max_abs_diff']:.2e}, agreement {engine_check['label_agreement']:.2%}")

    report = build_report(
        y_test,
        {n: softmax(test_logits[n]) for n in names},
        {n: m.predict_proba(test_outs) for n, m in fitted.items()},
        chosen_name,
        reason,
        {
            "train_rows": len(texts),
            "test_rows": len(test_texts),
            "labels": labels,
            "fusion_mode": f.mode,
            "folds": f.folds if f.mode == "kfold" else None,
            "cv_log_loss": cv_scores,
            "error_correlation": error_correlation(y_test, test_logits),
            "engine_vs_training": engine_check,
            "seconds": {"models": timings, "total": round(time.perf_counter() - t_start, 1)},
        },
    )
    write_report(out, report)
    log(report["verdict"])
    return report
