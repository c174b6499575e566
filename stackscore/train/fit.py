"""``stackscore fit``: fine-tune base models (or take checkpoints as saved), fit and compare fusions, export.

The fusion learns from base-model predictions on rows each model never trained on: out-of-fold
logits over the training rows, a held-out slice, or ``[data] validation``, which checkpoints
used as saved (``finetune = false``) require. The report records which rows and how.

Work directory layout (``--out DIR``)::

    DIR/models/<name>/     fine-tuned base models (Hugging Face directories, tokenizer included)
    DIR/oof.npz            out-of-fold logits per model, labels, training-side fused probabilities
    DIR/fusion/            the chosen fusion's files (meta.onnx for stacking)
    DIR/fit_state.json     what `stackscore export` needs to rebuild the artifact (``FitState``)
    DIR/artifact/          the exported artifact (manifest.json + ONNX + tokenizers)
    DIR/report.json|.md    every base model and fusion method on the test split
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import fusion as fusion_mod
from ..errors import StackscoreError
from ..fit_state import FitModel, FitState, checkpoint_fingerprint
from ..hf import ordered_logits
from .config import FitConfig
from .data import convert_labels, infer_task, load_labelled, split_off, stratified_subsample
from .finetune import finetune, predict_logits
from .models import ModelConfig, build_model
from .oof import holdout_split, out_of_fold, take
from .report import build_report, error_correlation, write_report


def _resolve(cfg: FitConfig, p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else cfg.base_dir / path


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:  # a missing file: read_labelled names it
        return a.resolve() == b.resolve()


@dataclass
class Splits:
    """The labelled rows of a fit. ``pool`` is train then validation rows (one index space)."""

    labels: list[str]
    pool: list  # texts, or (text, text_pair) tuples
    y_pool: np.ndarray  # class ids (n,); multi-hot (n, k); or values (n,)
    n_train: int
    test: list
    y_test: np.ndarray
    task: str = "single_label"

    @property
    def has_validation(self) -> bool:
        return len(self.pool) > self.n_train


def load_splits(cfg: FitConfig, log: Callable[[str], None]) -> Splits:
    d = cfg.data
    pair = d.text_pair_field or None
    named = [(k, p) for k, p in (("train", d.train), ("validation", d.validation), ("test", d.test)) if p]
    for i, (k1, p1) in enumerate(named):  # the same rows twice: a stacker scored on what it learned from
        for k2, p2 in named[i + 1 :]:
            if _same_path(_resolve(cfg, p1), _resolve(cfg, p2)):
                raise StackscoreError(f"{_resolve(cfg, p2)}: [data] {k2} is the same file as {k1}; the report would score the ensemble on rows it learned from (leave test empty to split it off)")
    # Each file is read once, labels as read; the task comes from them (train, else validation).
    raw = {p: load_labelled(_resolve(cfg, p), d.text_field, d.label_field, pair, None, d.tsv_quotes) if p else ([], []) for p in (d.train, d.validation, d.test)}
    task = cfg.task or infer_task(raw[d.train or d.validation][1])

    def read(p: str):
        texts, labels = raw[p]
        return texts, convert_labels(labels, task, _resolve(cfg, p), d.label_field) if p else []

    train, train_labels = read(d.train)
    val, val_labels = read(d.validation)
    test, test_labels = read(d.test)
    known: set = set()
    if task != "regression":
        multi = task == "multi_label"
        known = set(cfg.labels or ({l for ls in train_labels + val_labels for l in ls} if multi else set(train_labels + val_labels)))
        for path, rows in ((d.train, train_labels), (d.validation, val_labels), (d.test, test_labels)):
            for i, lab in enumerate(rows):
                bad = sorted(set(lab) - known) if multi else ([lab] if lab not in known else [])
                if bad:
                    where = "the config's 'labels'" if cfg.labels else "the labels of train/validation"
                    raise StackscoreError(f"{_resolve(cfg, path)}: row {i}: label {bad[0]!r} is not in {where} {sorted(known)}")
    if not d.test:
        # No test file: split test_fraction off train (or off validation when there is no train).
        # Fixed checkpoints were trained on their team's data, likely the train file: their test
        # rows come from validation, which none of them saw.
        fixed = any(not m.finetune for m in cfg.models)
        src, src_labels = (train, train_labels) if train and not fixed else (val, val_labels)
        rest, cut = split_off(src_labels, d.test_fraction, cfg.seed)
        test, test_labels = take(src, cut), take(src_labels, cut)
        if src is train:
            train, train_labels = take(train, rest), take(train_labels, rest)
        else:
            val, val_labels = take(val, rest), take(val_labels, rest)
    n_all = len(train)
    idx = stratified_subsample(train_labels, d.max_train_rows, cfg.seed)
    train, train_labels = take(train, idx), take(train_labels, idx)
    idx = stratified_subsample(test_labels, d.max_test_rows, cfg.seed)
    test, test_labels = take(test, idx), take(test_labels, idx)
    described = f", sentence pairs ({d.text_field}, {pair})" if pair else ""
    if task == "regression":
        log(f"data: {len(train)} train rows (of {n_all}), {len(val)} validation rows, {len(test)} test rows, regression on '{d.label_field}'{described}")
        y = np.asarray(train_labels + val_labels, dtype=np.float64)
        return Splits(["value"], train + val, y, len(train), test, np.asarray(test_labels, dtype=np.float64), task)
    multi = task == "multi_label"
    labels = cfg.labels or sorted(known)  # from all train/validation rows, before any split or subsample
    lab_index = {l: i for i, l in enumerate(labels)}
    used = {l for ls in train_labels + val_labels + test_labels for l in ls} if multi else set(train_labels + val_labels + test_labels)
    unknown = sorted(used - set(lab_index))
    if unknown:
        raise StackscoreError(f"labels {unknown} appear in the data but not in the config's 'labels' {labels}")
    if len(labels) < 2:
        raise StackscoreError(f"need at least two labels, found {labels}")
    log(f"data: {len(train)} train rows (of {n_all}), {len(val)} validation rows, {len(test)} test rows, {task} labels {labels}{described}")
    from ..engine.pipeline import check_column_names
    from ..tasks import task_of

    check_column_names(labels, [m.name for m in cfg.models], task_of(task))  # before any training: scoring with model outputs would refuse the artifact

    def encode(rows: list) -> np.ndarray:
        if not multi:
            return np.asarray([lab_index[l] for l in rows], dtype=np.int64)
        y = np.zeros((len(rows), len(labels)), dtype=np.float32)
        for i, ls in enumerate(rows):
            y[i, [lab_index[l] for l in ls]] = 1.0
        return y

    return Splits(labels, train + val, encode(train_labels + val_labels), len(train), test, encode(test_labels), task)


@dataclass
class FusionRows:
    """Which pool rows train the fusion, and how models trained here predict them."""

    fusion: np.ndarray  # pool indices whose base-model predictions train the fusion
    fit: np.ndarray  # pool indices a model trained here is (finally) trained on
    kfold: bool  # models trained here predict ``fusion`` out-of-fold (else: a model trained on ``fit``)
    describe: str


def check_tfidf_rows(cfg: FitConfig, s: Splits, rows: FusionRows) -> None:
    """A TF-IDF model outputs the labels its training rows hold (``fit_tfidf`` refuses fewer):
    checked here for every training it will have, before any model trains. Out-of-fold, a label
    needs 2 rows (stratified folds then leave one in every fold's training rows); otherwise 1
    among the rows models trained here train on."""
    tfidf = [m.name for m in cfg.models if m.kind == "tfidf"]
    if not tfidf or s.task != "single_label":
        return
    need = 2 if rows.kfold else 1
    counts = np.bincount(np.asarray(s.y_pool)[rows.fit], minlength=len(s.labels))
    short = [label for label, n in zip(s.labels, counts) if n < need]
    if short:
        where = "out-of-fold predictions need 2 rows of each label" if rows.kfold else "it trains on the rows models trained here train on"
        raise StackscoreError(
            f"model '{tfidf[0]}': label {short[0]!r} has {int(counts[s.labels.index(short[0])])} row(s) to train a TF-IDF model on ({where}); "
            "a TF-IDF model outputs only the labels it saw: add rows of that label"
        )


def fusion_rows(cfg: FitConfig, s: Splits) -> FusionRows:
    f = cfg.fusion
    if f.mode not in ("kfold", "holdout"):
        raise StackscoreError(f"[fusion] mode must be 'kfold' or 'holdout', got '{f.mode}'")
    everything = np.arange(len(s.pool))
    if f.mode == "kfold" and len(s.pool) < 2 * f.folds:
        raise StackscoreError(f"[fusion] {f.folds}-fold out-of-fold predictions need at least {2 * f.folds} labelled rows, got {len(s.pool)}")
    if s.has_validation:
        val = np.arange(s.n_train, len(s.pool))
        if f.mode == "kfold":
            return FusionRows(val, everything, True, f"validation ({len(val)} rows); models trained here: {f.folds}-fold out-of-fold over train + validation")
        return FusionRows(val, np.arange(s.n_train), False, f"validation ({len(val)} rows); models trained here: trained on train ({s.n_train} rows)")
    if f.mode == "kfold":
        return FusionRows(everything, everything, True, f"train ({len(everything)} rows), {f.folds}-fold out-of-fold")
    fit_rows, blend = holdout_split(s.y_pool, f.holdout_fraction, cfg.seed)
    return FusionRows(blend, fit_rows, False, f"a held-out {f.holdout_fraction:.0%} of train ({len(blend)} rows)")


@dataclass
class BaseOutputs:
    """One base model's predictions: on the fusion rows and on the test split."""

    fusion: np.ndarray
    test: np.ndarray
    how: str  # how the fusion-row predictions were made (the report shows it: leakage is visible)
    state: FitModel  # what export needs (fit_state.json's models[] entry)
    seconds_per_row: float = 0.0  # predicting the test split: the cost a cascade orders models by


def check_models(cfg: FitConfig, labels: list[str], task: str = "single_label") -> dict[str, tuple]:
    """Everything that can be wrong with a model, found before any training: one line each.

    Returns the fixed checkpoints, loaded (model, tokenizer, label order, mapping).
    """
    from .models import check_max_length, load_fixed, model_dir, read_checkpoint_config

    fixed = {}
    for m in cfg.models:
        if m.kind == "tfidf" or m.source.startswith("scratch:"):
            continue
        path = model_dir(m, cfg.base_dir)
        check_max_length(m.name, read_checkpoint_config(m.name, path), m.max_length)
        if not m.finetune:
            fixed[m.name] = (path, *load_fixed(m, path, labels, task, pairs=bool(cfg.data.text_pair_field)))
    return fixed


def flat_texts(items: list) -> list[str]:
    """Every text of ``items`` (a sentence pair gives both), for training a tokenizer."""
    return [t for item in items for t in ((item,) if isinstance(item, str) else item)]


def fit_base_model(mcfg: ModelConfig, cfg: FitConfig, s: Splits, rows: FusionRows, out: Path, parity_texts: list, fixed, log) -> BaseOutputs:
    """Train (or take as saved) one base model; its fusion-row and test-split logits."""
    f = cfg.fusion
    texts, y = s.pool, s.y_pool
    entry = FitModel(name=mcfg.name, kind=mcfg.kind, max_length=mcfg.max_length, source=mcfg.source, finetune=mcfg.finetune)
    if fixed is not None:
        path, model, tok, order, mapping = fixed
        act = getattr(model, "output_activation", None)
        log(f"    as saved (finetune = false); labels by name: {mapping}" + (f"; its outputs through a {act}, as its CrossEncoder predicts" if act else ""))
        fusion_logits = ordered_logits(predict_logits(model, tok, take(texts, rows.fusion), mcfg.max_length), order)
        t0 = time.perf_counter()
        test_logits = ordered_logits(predict_logits(model, tok, s.test, mcfg.max_length), order)
        per_row = (time.perf_counter() - t0) / max(len(s.test), 1)
        entry.model_dir, entry.label_order, entry.label_map = str(path), [int(i) for i in order], mapping
        entry.output_activation = act
        entry.checkpoint_sha256 = checkpoint_fingerprint(path)
        return BaseOutputs(fusion_logits, test_logits, "checkpoint as saved (never trained here)", entry, per_row)
    if mcfg.kind == "tfidf":
        from .tfidf import fit_tfidf, save_tfidf, tfidf_logits

        def train(rws: np.ndarray):
            return fit_tfidf(take(texts, rws), y[rws], mcfg, s.labels)

        def predict(model, some: list) -> np.ndarray:
            return tfidf_logits(model, some)

        def save(model):
            save_tfidf(model, out / "models" / mcfg.name, parity_texts)
    else:
        # A scratch tokenizer learns its vocabulary from the rows its model trains on: one trained
        # on every text had seen each held-out fold's (and a holdout's blend rows') words, which
        # new texts at scoring time never are. A pretrained model's tokenizer is its own.
        scratch = mcfg.source.startswith("scratch:")
        pretrained = None if scratch else build_model(mcfg, [], s.labels, cfg.base_dir, s.task)

        def train(rws: np.ndarray):
            factory, tok = build_model(mcfg, flat_texts(take(texts, rws)), s.labels, cfg.base_dir, s.task) if scratch else pretrained
            return finetune(factory(), tok, take(texts, rws), y[rws], mcfg, log), tok

        def predict(trained, some: list) -> np.ndarray:
            model, tok = trained
            return predict_logits(model, tok, some, mcfg.max_length)

        def save(trained):
            model, tok = trained
            model.save_pretrained(out / "models" / mcfg.name)
            tok.save_pretrained(out / "models" / mcfg.name)

    if rows.kfold:
        oof = out_of_fold(train, lambda model, r: predict(model, take(texts, r)), y, f.folds, cfg.seed, log)
        fusion_logits = oof[rows.fusion]
        log(f"    final model on all {len(rows.fit)} rows")
        final = train(rows.fit)
        how = f"out-of-fold ({f.folds} folds)"
    else:
        final = train(rows.fit)
        fusion_logits = predict(final, take(texts, rows.fusion))
        how = f"trained on {len(rows.fit)} other rows"
    save(final)
    entry.model_dir = str((out / "models" / mcfg.name).resolve())
    t0 = time.perf_counter()
    test_logits = predict(final, s.test)
    return BaseOutputs(fusion_logits, test_logits, how, entry, (time.perf_counter() - t0) / max(len(s.test), 1))


def fusion_candidates(cfg: FitConfig, task: str, labels: list[str] | None):
    f = cfg.fusion
    return fusion_mod.candidates(task, weights=f.weights, C=f.C, mode=f.mode, features=f.features, meta_learner=f.meta_learner, labels=labels)


def select_fusion(cfg: FitConfig, outs: list[np.ndarray], y_meta: np.ndarray, log, task: str = "single_label", labels: list[str] | None = None):
    """Every fusion method fitted on the fusion rows; the chosen one and why."""
    f = cfg.fusion
    candidates = fusion_candidates(cfg, task, labels)
    key = {"vote": "vote", "hard_vote": "vote"}.get(f.method, f.method)
    if f.method != "auto" and key not in candidates:
        raise StackscoreError(f"[fusion] method '{f.method}' does not apply to a {task} ensemble ({', '.join(candidates)}, auto)")
    fitted = {}
    for name, make in candidates.items():
        try:
            fitted[name] = make().fit(outs, y_meta)
        except ValueError as exc:  # e.g. multi-label stacking with a label never on in the fusion rows
            if name == key:
                raise StackscoreError(f"[fusion] method '{name}': {exc}") from None
            log(f"fusion {name}: skipped ({exc})")
    if f.method == "auto":
        auto = fusion_mod.AutoFusion(dict(candidates), folds=max(2, f.folds), seed=cfg.seed, task=task).fit(outs, y_meta)
        chosen_name, chosen, reason, cv = auto.chosen_, auto.method_, auto.reason_, auto.cv_log_loss_
    else:
        chosen_name, chosen, reason, cv = key, fitted[key], f"configured: [fusion] method = '{f.method}'", None
    log(f"fusion: {chosen_name} ({reason})")
    return fitted, chosen_name, chosen, reason, cv


# The engine (ONNX, exact fp32) must reproduce the training side's fused probabilities.
ENGINE_TOLERANCE = 1e-3
ENGINE_MIN_AGREEMENT = 0.995  # hard votes may flip on exact ties; nothing else may


def _engine_scores(artifact: Path, manifest, test: list, cascade: bool):
    from ..engine.scorer import Scorer
    from ..options import RunOptions

    pairs = bool(test) and isinstance(test[0], tuple)
    scorer = Scorer(artifact, RunOptions(cascade=cascade), manifest=manifest)
    return scorer, (scorer.score_texts([t[0] for t in test], [t[1] for t in test]) if pairs else scorer.score_texts(test))


def engine_check(artifact: Path, manifest, test: list, train_side: np.ndarray, method: str) -> dict[str, Any]:
    """The full ensemble (cascade off) in the engine vs the training side, on the test split."""
    from ..tasks import agreement, scale

    scorer, scored = _engine_scores(artifact, manifest, test, cascade=False)
    if len(scored.valid) != len(test):
        raise StackscoreError(f"{artifact}: the exported ensemble gives non-finite outputs on {len(test) - len(scored.valid)} test rows; do not use this artifact")
    engine_proba = scored.proba
    check = {
        "rows": len(test),
        "max_abs_diff": float(np.abs(engine_proba - train_side).max()) if len(test) else 0.0,
        "label_agreement": agreement(scorer.fusion.task, engine_proba, train_side, scorer.fusion.thresholds, ENGINE_TOLERANCE),
        "tolerance": ENGINE_TOLERANCE * scale(train_side),  # values in the thousands round relative to them
        "min_agreement": ENGINE_MIN_AGREEMENT,
    }
    bad_diff = check["max_abs_diff"] > check["tolerance"] and method != "vote"
    if bad_diff or check["label_agreement"] < ENGINE_MIN_AGREEMENT:
        raise StackscoreError(
            f"{artifact}: the exported ensemble does not reproduce the training side on the test split "
            f"(max |diff| {check['max_abs_diff']:.2e}, label agreement {check['label_agreement']:.2%}); do not use this artifact"
        )
    return check


def cascade_engine_check(artifact: Path, manifest, test: list, train_proba: np.ndarray, train_stage: np.ndarray) -> dict[str, Any]:
    """The cascade in the engine (partial graphs, routing) vs the training side's cascade.

    The partial stacks run as float32 graphs, so a row sitting exactly on a threshold may stop
    one stage apart; such rows are counted, and the probabilities compared where both agree on
    the stage. Labels must agree as for the full ensemble."""
    _, scored = _engine_scores(artifact, manifest, test, cascade=True)
    if len(scored.valid) != len(test):
        raise StackscoreError(f"{artifact}: the exported cascade gives non-finite outputs on {len(test) - len(scored.valid)} test rows; do not use this artifact")
    same = scored.stage == train_stage + 1
    check = {
        "rows": len(test),
        "stage_agreement": float(np.mean(same)) if len(test) else 1.0,
        "max_abs_diff_same_stage": float(np.abs(scored.proba[same] - train_proba[same]).max()) if same.any() else 0.0,
        "label_agreement": float(np.mean(scored.proba.argmax(1) == train_proba.argmax(1))) if len(test) else 1.0,
        "tolerance": ENGINE_TOLERANCE,
        "min_agreement": ENGINE_MIN_AGREEMENT,
    }
    if check["max_abs_diff_same_stage"] > ENGINE_TOLERANCE or min(check["label_agreement"], check["stage_agreement"]) < ENGINE_MIN_AGREEMENT:
        raise StackscoreError(
            f"{artifact}: the exported cascade does not reproduce the training side on the test split "
            f"(stage agreement {check['stage_agreement']:.2%}, label agreement {check['label_agreement']:.2%}, "
            f"max |diff| {check['max_abs_diff_same_stage']:.2e}); do not use this artifact"
        )
    return check


@dataclass
class Samples:
    """Rows export needs besides the models: parity texts (from the test split) and calibration
    texts for static int8 (from the training rows, never the test split)."""

    parity: list
    calibration: list
    confirmation: list = field(default_factory=list)


def sample_rows(cfg: FitConfig, s: Splits) -> Samples:
    """Gate rows and, from the rest of the test split, up to as many confirmation rows (for a
    choice made on the gate rows: ``int8_search``, the ensemble gate), then calibration texts."""
    rng = np.random.default_rng(cfg.seed)
    parity_idx = rng.choice(len(s.test), size=min(cfg.parity_rows, len(s.test)), replace=False)
    calib_src = s.pool[: s.n_train] or s.pool
    calib_idx = rng.choice(len(calib_src), size=min(cfg.calibration_rows, len(calib_src)), replace=False)
    rest = np.setdiff1d(np.arange(len(s.test)), parity_idx)
    confirm_idx = rng.choice(rest, size=min(cfg.parity_rows, len(rest)), replace=False) if len(rest) else rest
    return Samples([s.test[i] for i in parity_idx], [calib_src[i] for i in calib_idx], [s.test[i] for i in confirm_idx])


def train_base_models(cfg: FitConfig, s: Splits, rows: FusionRows, out: Path, samples: Samples, fixed: dict, log) -> tuple[dict[str, BaseOutputs], dict[str, float]]:
    """Every base model in config order: its fusion-row and test-split logits, and seconds taken."""
    base: dict[str, BaseOutputs] = {}
    timings: dict[str, float] = {}
    for mcfg in cfg.models:
        t0 = time.perf_counter()
        log(f"model {mcfg.name} ({mcfg.kind}{'' if mcfg.kind == 'tfidf' else ', ' + mcfg.source})")
        base[mcfg.name] = fit_base_model(mcfg, cfg, s, rows, out, samples.parity, fixed.get(mcfg.name), log)
        timings[mcfg.name] = round(time.perf_counter() - t0, 1)
    return base, timings


@dataclass
class Selection:
    """Every fusion method fitted on the fusion rows, the chosen one and why."""

    fitted: dict[str, fusion_mod.FusionMethod]
    name: str
    chosen: fusion_mod.FusionMethod
    reason: str
    cv_log_loss: dict[str, float] | None


def partial_fusions(chosen: str, candidates: dict, task: str, weights: list[float] | None, names: list[str]):
    """``make_partial(prefix)`` for the cascade: the chosen method over the models run so far
    (votes: a soft mean). Fixed weights name every model: a prefix averages with its own models'
    weights (renormalized), as the full fusion weighs them; the whole list was refused by every
    prefix, and the cascade dropped as "not learnable"."""
    partial = chosen if chosen in ("stack", "weighted", "mean") else "mean"

    def make_partial(prefix: list[str]):
        if partial == "weighted" and weights is not None:
            own = [weights[names.index(m)] for m in prefix]
            return fusion_mod.candidates(task, weights=own if sum(own) > 0 else None)["weighted"]()
        return candidates[partial]()

    return make_partial


def fit_cascade(cfg: FitConfig, s: Splits, names: list[str], base: dict[str, BaseOutputs], sel: Selection, y_meta: np.ndarray, log, kfold: bool = False):
    """The cascade (``[fusion] cascade = true``): models ordered by measured cost per row, a
    partial fusion per prefix (the chosen method, over the models run so far), stop thresholds
    learned on the fusion rows. Out-of-fold (``kfold``), those rows were scored by fold models,
    less confident than the final ones the engine runs: the thresholds are then raised to keep
    the planned stop shares on the test split's final-model outputs (``Cascade.hold_stop_shares``;
    label-free). Returns the fitted ``Cascade`` (or a one-line reason it is not used) and the
    held thresholds' record (``None`` when not held)."""
    from ..fusion.cascade import Cascade

    f = cfg.fusion
    candidates = fusion_candidates(cfg, s.task, s.labels)
    costs = {n: base[n].seconds_per_row for n in names}
    make_partial = partial_fusions(sel.name, candidates, s.task, f.weights, names)
    try:
        c = Cascade(f.cascade_agreement, f.cascade_max_accuracy_drop, f.cascade_max_log_loss_increase, folds=max(2, f.folds), seed=cfg.seed).fit(
            {n: base[n].fusion for n in names}, y_meta, None, costs, make_partial, sel.chosen,
            model_order=names, make_full=candidates.get(sel.name),
        )
    except ValueError as exc:
        log(f"cascade: not used ({exc})")
        return str(exc), None
    held = None
    if kfold and len(s.test):
        held = c.hold_stop_shares({n: base[n].test for n in names})
        raised = [f"{'+'.join(h['models'])} {h['threshold_fold_models']:.4f} -> {h['threshold']:.4f}" for h in held if h["threshold"] != h["threshold_fold_models"]]
        if raised:
            log(f"cascade: thresholds raised to keep the planned stop shares on the final models (test split, {len(s.test)} rows): {', '.join(raised)}")
    shares = ", ".join(f"{'+'.join(st.models)} {share:.0%}" for st, share in zip(c.stages_, c.stop_share_))
    log(f"cascade: {' -> '.join(c.order_)} by cost; rows stopping per stage (fusion rows, cross-validated): {shares}; "
        f"expected {c.full_cost_ / max(c.expected_cost_, 1e-12):.2f}x less model time, agreement {c.agreement_:.2%}")
    return c, held


def write_fit_state(cfg: FitConfig, s: Splits, out: Path, names: list[str], base: dict[str, BaseOutputs], sel: Selection, y_meta: np.ndarray, samples: Samples, cascade=None) -> None:
    """``oof.npz`` (fusion-row logits, training-side fused probabilities) and ``fit_state.json``:
    everything export reads, so ``stackscore export`` can rebuild the artifact on its own."""
    outs = [base[n].fusion for n in names]
    spec = sel.chosen.to_manifest(out, reason=sel.reason)
    np.savez(out / "oof.npz", y=y_meta, fused_proba=sel.chosen.predict_proba(outs), **{f"logits_{n}": base[n].fusion for n in names})
    FitState(
        labels=s.labels, task=s.task, text_pair=bool(cfg.data.text_pair_field), models=[base[n].state for n in names],
        fusion=spec.__dict__, parity_texts=samples.parity, calibration_texts=samples.calibration, confirmation_texts=samples.confirmation,
        int8=cfg.int8, static_int8=cfg.static_int8, static_int8_min_speedup=cfg.static_int8_min_speedup, plain_attention_min_speedup=cfg.plain_attention_min_speedup, fp16=cfg.fp16,
        gate_min_rows=cfg.gate_min_rows, cascade=cascade.to_manifest(out)[0] if cascade is not None else None,
    ).save(out)


def export_checked(out: Path, s: Splits, sel: Selection, test_outs: list[np.ndarray], log, cascade=None, names: list[str] | None = None) -> dict[str, Any]:
    """Export the artifact; it is put in place only if the engine reproduces the training side
    (the full ensemble, and the cascade when there is one)."""
    from ..export import export_artifact

    log("export")
    checked: dict[str, Any] = {}

    def check_engine(artifact: Path, manifest) -> None:  # on the finished artifact, before it is put in place
        checked.update(engine_check(artifact, manifest, s.test, sel.chosen.predict_proba(test_outs), sel.name))
        if cascade is not None:
            proba, stage = cascade.predict_proba(dict(zip(names, test_outs)))
            checked["cascade"] = cascade_engine_check(artifact, manifest, s.test, proba, stage)

    export_artifact(out, out / "artifact", log, check=check_engine)
    log(f"engine vs training on the test split: max |diff| {checked['max_abs_diff']:.2e}, agreement {checked['label_agreement']:.2%}")
    return checked


def fit(cfg: FitConfig, out: str | Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Splits -> base models -> fusion selection -> fit state -> export + engine check -> report."""
    t_start = time.perf_counter()
    out = Path(out)
    s = load_splits(cfg, log)
    rows = fusion_rows(cfg, s)
    if s.task != "single_label":
        tfidf = [m.name for m in cfg.models if m.kind == "tfidf"]
        if tfidf:
            raise StackscoreError(f"model '{tfidf[0]}': tfidf models are single-label only; this is a {s.task} ensemble")
    if cfg.fusion.cascade and s.task != "single_label":
        raise StackscoreError(f"[fusion] cascade = true applies to single-label ensembles (a confident top label); this is a {s.task} ensemble")
    check_tfidf_rows(cfg, s, rows)
    fixed = check_models(cfg, s.labels, s.task)  # every one-line refusal before any training
    out.mkdir(parents=True, exist_ok=True)
    y_meta = s.y_pool[rows.fusion]
    samples = sample_rows(cfg, s)
    base, timings = train_base_models(cfg, s, rows, out, samples, fixed, log)

    names = [m.name for m in cfg.models]
    outs = [base[n].fusion for n in names]
    test_outs = [base[n].test for n in names]
    sel = Selection(*select_fusion(cfg, outs, y_meta, log, s.task, s.labels))
    cascade, held = fit_cascade(cfg, s, names, base, sel, y_meta, log, rows.kfold) if cfg.fusion.cascade else (None, None)
    fitted_cascade = cascade if not isinstance(cascade, str) else None
    write_fit_state(cfg, s, out, names, base, sel, y_meta, samples, fitted_cascade)
    check = export_checked(out, s, sel, test_outs, log, fitted_cascade, names)
    report = fit_report(cfg, s, rows, names, base, sel, y_meta, test_outs, check, timings, t_start)
    if cascade is not None:
        report["cascade"] = cascade_report(cascade, names, base, s, held) if fitted_cascade else {"skipped": cascade}
    write_report(out, report)
    log(report["verdict"])
    return report


def fit_report(cfg: FitConfig, s: Splits, rows: FusionRows, names: list[str], base: dict[str, BaseOutputs], sel: Selection, y_meta: np.ndarray, test_outs: list[np.ndarray], check: dict[str, Any], timings: dict[str, float], t_start: float) -> dict[str, Any]:
    """Every base model and fusion method on the test split, and whether the ensemble helps."""
    from ..tasks import activate, tune_thresholds

    # Multi-label base models are judged at thresholds tuned on the fusion rows too (fair to them).
    model_thresholds = {n: tune_thresholds(y_meta, activate(s.task, base[n].fusion)) for n in names} if s.task == "multi_label" else {}
    fusion_thresholds = {n: m.thresholds_ for n, m in sel.fitted.items() if hasattr(m, "thresholds_")}
    return build_report(
        s.y_test,
        {n: activate(s.task, base[n].test) for n in names},
        {n: m.predict_proba(test_outs) for n, m in sel.fitted.items()},
        sel.name,
        sel.reason,
        {
            "task": s.task,
            "train_rows": s.n_train,
            "validation_rows": len(s.pool) - s.n_train,
            "test_rows": len(s.test),
            "labels": s.labels,
            "text_pair": bool(cfg.data.text_pair_field),
            "fusion_mode": cfg.fusion.mode,
            "folds": cfg.fusion.folds if rows.kfold else None,
            "fusion_fitted_on": {"rows": rows.describe, "n": int(len(rows.fusion)), "models": {n: base[n].how for n in names}},
            "cv_log_loss": sel.cv_log_loss,
            "error_correlation": error_correlation(s.y_test, {n: base[n].test for n in names}) if s.task == "single_label" else None,
            "engine_vs_training": check,
            "seconds": {"models": timings, "total": round(time.perf_counter() - t_start, 1)},
        },
        task=s.task,
        thresholds=(model_thresholds, fusion_thresholds),
    )


def cascade_report(c, names: list[str], base: dict[str, BaseOutputs], s: Splits, held: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The cascade on the test split (rows it never learned from), and why it saves little when it
    does. ``held``: ``fit_cascade``'s record of thresholds held to the plan on these same rows."""
    r = c.evaluate({n: base[n].test for n in names}, s.y_test)
    r["costs_measured"] = "seconds per row predicting the test split at fit time (PyTorch / scikit-learn)"
    if held:  # its stop shares were held to the plan on these same rows (their texts, not labels)
        r["thresholds_held_on_test_split"] = held
    first = r["stages"][0]
    if first["stop_share"] < 0.3:
        at = "no threshold kept the criteria, so it never stops a row" if first["threshold"] > 1 else f"threshold {first['threshold']:.4f}"
        r["why_no_gain"] = (
            f"the cheapest model '{first['models'][0]}' is rarely confident enough to decide alone "
            f"({first['stop_share']:.0%} of test rows stop there; {at})"
        )
    return r
