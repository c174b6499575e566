"""Fusion methods: hand-checked examples, learning, manifest round trips, OOF leakage."""

from __future__ import annotations

import numpy as np
import pytest

from stackscore import fusion
from stackscore.fusion import AutoFusion, MeanFusion, StackFusion, VoteFusion, WeightedFusion
from stackscore.metrics import log_loss, softmax
from stackscore.train.oof import out_of_fold


def logits_of(p):
    return np.log(np.asarray(p, dtype=np.float64))


A = logits_of([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]])
B = logits_of([[0.7, 0.3], [0.8, 0.2], [0.4, 0.6]])
C = logits_of([[0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])


def test_mean_by_hand():
    p = MeanFusion().predict_proba([A, B])
    np.testing.assert_allclose(p, [[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    pl = MeanFusion(space="logits").predict_proba([A, B])
    np.testing.assert_allclose(pl[0, 0], np.sqrt(0.9 * 0.7) / (np.sqrt(0.9 * 0.7) + np.sqrt(0.1 * 0.3)))


def test_weighted_fixed_weights_by_hand():
    w = WeightedFusion(weights=[3, 1]).fit([A, B], np.array([0, 1, 1]))
    np.testing.assert_allclose(w.weights_, [0.75, 0.25])
    np.testing.assert_allclose(w.predict_proba([A, B])[0], [0.75 * 0.9 + 0.25 * 0.7, 0.75 * 0.1 + 0.25 * 0.3])


def test_hard_vote_majority_and_tie_break():
    v = VoteFusion("hard")
    # Row 0: all vote 0. Row 1: A and C vote 1, B votes 0 -> 1. Row 2: A votes 1, B 1, C 0 -> 1.
    assert v.predict([A, B, C]).tolist() == [0, 1, 1]
    # Two models tie 1-1 on row 1: A says 1 (0.6), B says 0 (0.8) -> mean prob favours class 0.
    assert v.predict([A, B]).tolist()[1] == 0
    # Exact tie on mean probability too -> the lower class index.
    t1, t2 = logits_of([[0.6, 0.4]]), logits_of([[0.4, 0.6]])
    assert v.predict([t1, t2]).tolist() == [0]
    p = v.predict_proba([A, B, C])
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert p[1, 1] == pytest.approx((1 - 1e-3) * 2 / 3 + 1e-3 * np.mean([0.6, 0.2, 0.7]))


def test_soft_vote_is_mean_of_probabilities():
    np.testing.assert_allclose(VoteFusion("soft").predict_proba([A, B, C]), MeanFusion().predict_proba([A, B, C]))


def noisy_case(n=2000, k=2, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    good = rng.normal(0, 1, (n, k))
    good[np.arange(n), y] += 2.5
    noise = rng.normal(0, 3, (n, k))
    return y, good, noise


def test_learned_weights_beat_uniform_when_one_model_is_noise():
    y, good, noise = noisy_case()
    w = WeightedFusion().fit([good, noise], y)
    assert w.weights_[0] > 0.9
    assert log_loss(y, w.predict_proba([good, noise])) < log_loss(y, MeanFusion().predict_proba([good, noise])) - 0.05


@pytest.mark.parametrize("k", [2, 4])
def test_every_method_round_trips_through_the_manifest(tmp_path, k):
    y, good, noise = noisy_case(600, k)
    outs = [good, noise]
    for method in (MeanFusion(), MeanFusion("logits"), WeightedFusion(), VoteFusion("hard"), VoteFusion("soft"), StackFusion(), StackFusion(features="probs"), StackFusion(meta_learner="gbm")):
        m = method.fit(outs, y)
        spec = m.to_manifest(tmp_path)
        again = fusion.from_manifest(spec, tmp_path)
        assert not hasattr(again, "meta_")  # the engine side never holds a scikit-learn object
        np.testing.assert_allclose(again.predict_proba(outs), m.predict_proba(outs), atol=1e-5, err_msg=str(spec.params))


def test_stack_learns_and_exposes_linear_contributions():
    y, good, noise = noisy_case(1500)
    s = StackFusion().fit([good, noise], y)
    assert log_loss(y, s.predict_proba([good, noise])) < log_loss(y, softmax(good))
    contrib = s.contributions([good, noise])
    assert contrib.shape == (1500, 2)
    assert np.abs(contrib[:, 0]).mean() > 5 * np.abs(contrib[:, 1]).mean()


def test_multiclass_stack_contributions_explain_the_predicted_class():
    """Three classes: each row's shares (+ the intercept) add up to the logit of the class it
    is labelled with, not class 0's."""
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 900)
    a = np.eye(3)[y] * 3 + rng.normal(0, 1.5, (900, 3))
    b = rng.normal(0, 1, (900, 3))
    s = StackFusion().fit([a, b], y)
    pred = s.predict_proba([a, b]).argmax(1)
    assert len(set(pred.tolist())) == 3
    logits = s.features([a, b]) @ s.coef_.T + s.meta_.intercept_
    contrib = s.contributions([a, b])
    np.testing.assert_allclose(contrib.sum(1) + s.meta_.intercept_[pred], logits[np.arange(900), pred], atol=1e-6)
    assert s.contributions([a[:0], b[:0]]).shape == (0, 2)


def test_auto_picks_lowest_cv_log_loss_and_prefers_simpler_on_ties():
    y, good, noise = noisy_case(1000)
    cands = {"mean": MeanFusion, "weighted": WeightedFusion, "stack": StackFusion}
    auto = AutoFusion(cands, folds=3).fit([good, noise], y)
    assert auto.chosen_ in ("weighted", "stack")
    assert auto.cv_log_loss_[auto.chosen_] <= min(auto.cv_log_loss_.values()) + 1e-3
    assert auto.cv_log_loss_["mean"] > auto.cv_log_loss_[auto.chosen_]
    # Identical, calibrated base models: no method can beat the mean -> the simplest wins the tie.
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, (3000, 2))
    yc = (rng.random(3000) < softmax(z)[:, 1]).astype(int)
    tie = AutoFusion(cands, folds=3, tol=0.01).fit([z, z], yc)
    assert tie.chosen_ == "mean" and "auto" in tie.reason_


def test_out_of_fold_never_sees_its_own_rows():
    y = np.array([0, 1] * 50)
    seen_by_model: list[set[int]] = []

    def train(rows):
        seen_by_model.append(set(rows.tolist()))
        return len(seen_by_model) - 1

    predicted_by: dict[int, int] = {}

    def predict(model, rows):
        for r in rows:
            assert r not in seen_by_model[model], "a row's own label leaked into its meta-feature"
            predicted_by[int(r)] = model
        return np.zeros((len(rows), 2))

    out = out_of_fold(train, predict, y, folds=5)
    assert out.shape == (100, 2) and sorted(predicted_by) == list(range(100))
    assert len(seen_by_model) == 5


def test_stack_needs_every_class():
    with pytest.raises(ValueError, match="every class"):
        StackFusion().fit([np.zeros((4, 3))], np.array([0, 1, 0, 1]))


@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_regression_fusion_does_not_depend_on_the_targets_units(scale):
    """The same regression rows in other units (a target of scale 1e-3, or 1e3) give the same
    choice, weights and stacker, scaled: auto's tie was a fixed 1e-3 of RMSE (every method tied at
    scale 1e-3, mean won over a stacker 24x better), the learned weights stopped at 0.5/0.5 (the
    optimizer's absolute tolerance), and Ridge(alpha=1) shrank the stacker to the mean."""
    rng = np.random.default_rng(0)
    n = 400
    y = rng.normal(size=n)
    poor = 0.3 * y + rng.normal(scale=0.8, size=n)
    near = [(y + rng.normal(scale=0.05, size=n))[:, None], poor[:, None]]  # weights: nearly all on the first
    off = [(2 * y + rng.normal(scale=0.05, size=n))[:, None], poor[:, None]]  # off by a factor a stacker corrects

    def fitted(factor):
        cands = fusion.candidates("regression")
        auto = AutoFusion(cands, folds=4, task="regression").fit([o * factor for o in off], y * factor)
        weights = cands["weighted"]().fit([o * factor for o in near], y * factor).weights_
        stack = cands["stack"]().fit([o * factor for o in off], y * factor)
        return auto.chosen_, weights, stack.predict_proba([o * factor for o in off])[:, 0] / factor

    chosen, weights, stacked = fitted(1.0)
    chosen_s, weights_s, stacked_s = fitted(scale)
    assert chosen == chosen_s == "stack" and weights[0] > 0.9
    np.testing.assert_allclose(weights_s, weights, atol=1e-3)
    np.testing.assert_allclose(stacked_s, stacked, atol=1e-3 * np.abs(stacked).max())


def test_a_cascade_over_fixed_weights_weighs_each_prefix_with_its_own_models_weights():
    """``weights = [1, 2, 1]`` named every model, so each prefix's partial fusion refused the
    list and the cascade was dropped as "thresholds are not learnable" (fit's log said so)."""
    from stackscore.fusion.cascade import Cascade
    from stackscore.train.fit import partial_fusions

    rng = np.random.default_rng(0)
    n, k = 200, 3
    y = rng.integers(0, k, n)
    outs = {f"m{i}": rng.normal(size=(n, k)) + 3 * np.eye(k)[y] for i in range(3)}
    names = list(outs)
    cands = fusion.candidates("single_label", weights=[1, 2, 1])
    full = cands["weighted"]().fit([outs[m] for m in names], y)
    c = Cascade(folds=4).fit(outs, y, None, {"m0": 1, "m1": 2, "m2": 3}, partial_fusions("weighted", cands, "single_label", [1, 2, 1], names), full,
                             model_order=names, make_full=cands["weighted"])
    assert [st.models for st in c.stages_[:2]] == [["m0"], ["m0", "m1"]]
    np.testing.assert_allclose(c.stages_[1].fusion.weights_, [1 / 3, 2 / 3])
    assert c.stop_share_[0] > 0.5  # the first stage answers most rows


def test_stratified_folds_are_balanced_when_classes_are_smaller_than_the_fold_count():
    """Each class restarted at fold 0: 30 classes of 3 rows in 5 folds gave sizes 30, 30, 30, 0, 0."""
    from stackscore.fusion import stratified_folds

    for classes, per, folds in ((30, 3, 5), (20, 6, 5), (2, 50, 5), (7, 1, 3)):
        y = np.repeat(np.arange(classes), per)
        sizes = np.bincount(stratified_folds(y, folds, seed=1), minlength=folds)
        assert sizes.max() - sizes.min() <= 1, (classes, per, sizes)
        for c in range(classes):  # still stratified: a class's rows spread over distinct folds
            counts = np.bincount(stratified_folds(y, folds, seed=1)[y == c], minlength=folds)
            assert counts.max() - counts.min() <= 1


def test_verdict_judges_the_fusion_against_the_most_accurate_model_and_gives_its_noise():
    """The verdict compared accuracy with the lowest-log-loss model only: a fusion less accurate
    than another base model was said to beat "the best base model". Now both are named, and the
    primary metric's difference carries a paired bootstrap interval."""
    from stackscore.metrics import log_loss
    from stackscore.tasks import multilabel_metrics, regression_metrics
    from stackscore.train.report import build_report, from_sums, per_row

    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    onehot = np.eye(2)[y]
    calibrated = 0.6 * onehot + 0.2  # right on every row, p = 0.8: low log-loss, accuracy 1.0 ...
    wrong = rng.random(n) < 0.3
    t1 = np.where(wrong[:, None], 1 - calibrated, calibrated)  # ... but wrong on 30 %: accuracy 0.7
    t2 = np.where((rng.random(n) < 0.2)[:, None], 1 - onehot, onehot) * 0.98 + 0.01  # accuracy 0.8, overconfident
    w = np.where(rng.random(n) < 0.5, 0.7, 0.5)[:, None]
    fused = w * t1 + (1 - w) * t2  # lower log-loss than either, accuracy between theirs
    acc = {k: (p.argmax(1) == y).mean() for k, p in (("t1", t1), ("t2", t2), ("fused", fused))}
    assert log_loss(y, fused) < log_loss(y, t1) < log_loss(y, t2) and acc["t1"] < acc["fused"] < acc["t2"]
    r = build_report(y, {"t1": t1, "t2": t2}, {"mean": fused}, "mean", "", {})
    assert r["best_model"] == "t1" and r["ensemble_helps"] is False and "most accurate base model 't2'" in r["verdict"]
    d = r["difference_vs_best_model"]
    assert d["metric"] == "log_loss" and d["ci95"][0] <= d["value"] <= d["ci95"][1]
    # the same predictions: a difference of 0 that the verdict calls indistinguishable
    same = build_report(y, {"t1": t1}, {"mean": t1.copy()}, "mean", "", {})
    assert same["difference_vs_best_model"]["ci95"] == [0.0, 0.0] and "cannot tell them apart" in same["verdict"]
    # per-row parts sum back to each task's metric
    assert np.isclose(from_sums("single_label", per_row("single_label", y, t1).sum(0), n), log_loss(y, t1))
    ym, pm, th = (rng.random((n, 3)) < 0.3).astype(float), rng.random((n, 3)), np.array([0.4, 0.5, 0.6])
    assert np.isclose(from_sums("multi_label", per_row("multi_label", ym, pm, th).sum(0), n), multilabel_metrics(ym, pm, th)["micro_f1"])
    yr, pr = rng.normal(size=n), rng.normal(size=n)
    assert np.isclose(from_sums("regression", per_row("regression", yr, pr).sum(0), n), regression_metrics(yr, pr)["rmse"])


def test_macro_f1_is_scikit_learns_when_a_class_is_absent():
    from sklearn.metrics import f1_score

    from stackscore.metrics import macro_f1

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)  # 3 classes, the third never in the test split ...
    for proba in (rng.random((300, 3)) * [1, 1, 0], rng.random((300, 3))):  # ... nor predicted / predicted
        assert np.isclose(macro_f1(y, proba), f1_score(y, proba.argmax(1), average="macro"))
