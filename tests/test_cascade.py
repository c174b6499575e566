"""Adaptive ensembles (stackscore.fusion.cascade): synthetic logits only, no models."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest

from stackscore import fusion
from stackscore.errors import ArtifactError
from stackscore.fusion import MeanFusion, StackFusion, WeightedFusion, cross_val_proba
from stackscore.fusion.cascade import Cascade, _Rows
from stackscore.fusion.stack import META_GRAPH
from stackscore.metrics import softmax

COSTS = {"cheap": 1e-4, "mid": 5e-4, "big": 2e-3}


def two_models(n, seed, k=2, easy=0.7):
    """A cheap model confident and right on the easy rows (unsure, near noise elsewhere) and a
    better, expensive one that is decent everywhere."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    is_easy = rng.random(n) < easy
    cheap = rng.normal(0, 0.5, (n, k))
    cheap[np.arange(n), y] += np.where(is_easy, 6.0, 0.3)
    big = rng.normal(0, 1, (n, k))
    big[np.arange(n), y] += 3.0
    return {"cheap": cheap, "big": big}, y


def three_models(n, seed, k=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    d = rng.random(n)  # difficulty: cheap knows d < 0.5, mid knows d < 0.8
    cheap = rng.normal(0, 0.5, (n, k))
    cheap[np.arange(n), y] += np.where(d < 0.5, 7.0, 0.2)
    mid = rng.normal(0, 0.5, (n, k))
    mid[np.arange(n), y] += np.where(d < 0.8, 6.0, 0.5)
    big = rng.normal(0, 1, (n, k))
    big[np.arange(n), y] += 3.5
    return {"big": big, "cheap": cheap, "mid": mid}, y  # key order = the artifact's model order


def mean_then(kind):
    """Partial fusions: the model's own softmax for one model, ``kind`` for more."""
    return lambda p: MeanFusion() if len(p) == 1 else kind()


def fit_full(outs, y, names=None):
    names = names or list(outs)
    return StackFusion().fit([outs[m] for m in names], y)


def meets_constraints(c: Cascade, stats: dict) -> None:
    assert stats["agreement"] >= c.target_agreement
    assert stats["accuracy"] >= stats["full_accuracy"] - c.max_accuracy_drop - 1e-12
    assert stats["log_loss"] <= stats["full_log_loss"] + c.max_log_loss_increase + 1e-12


@pytest.fixture(scope="module")
def two():
    outs, y = two_models(3000, 0)
    test, y_test = two_models(3000, 1)
    full = fit_full(outs, y)
    c = Cascade().fit(outs, y, ["cheap", "big"], COSTS, mean_then(StackFusion), full)
    return c, outs, y, test, y_test


def test_cheap_confident_model_stops_most_rows_and_agrees_with_full(two):
    c, outs, y, test, y_test = two
    assert len(c.stages_) == 2 and c.stages_[0].models == ["cheap"] and c.stages_[1].threshold is None
    assert 0.5 < c.stages_[0].threshold <= 1.0
    assert c.stop_share_[0] >= 0.5 and sum(c.stop_share_) == pytest.approx(1.0)
    assert c.expected_cost_ == pytest.approx(np.dot(c.stop_share_, [1e-4, 1e-4 + 2e-3]))
    assert c.full_cost_ == pytest.approx(2.1e-3) and c.expected_cost_ < c.full_cost_ / 2
    meets_constraints(c, c._fit_stats())  # on the fusion rows, cross-validated
    ev = c.evaluate(test, y_test)  # on rows the cascade never saw
    assert ev["stages"][0]["stop_share"] >= 0.5 and ev["speedup"] > 2
    assert ev["agreement"] >= c.target_agreement
    assert ev["accuracy"] >= ev["full_accuracy"] - 0.005
    json.dumps(ev)


def test_plain_rule_spends_the_budget_exactly_on_fusion_rows(two):
    """z=0: the most permissive thresholds that meet the constraints, cross-validated; the
    margin (default) only ever stops fewer rows."""
    c, outs, y, *_ = two
    plain = Cascade(z=0).fit(outs, y, ["cheap", "big"], COSTS, mean_then(StackFusion), c.stages_[1].fusion)
    meets_constraints(plain, plain._fit_stats())
    assert plain.stop_share_[0] >= c.stop_share_[0]
    # one more row stopped would break a constraint: every lower split of the confidences fails
    cv = [cross_val_proba(MeanFusion, [outs["cheap"]], y, 5, 0), cross_val_proba(StackFusion, [outs["cheap"], outs["big"]], y, 5, 0)]
    rows = _Rows(cv, y)
    lower = np.sort(rows.conf[0][rows.conf[0] < plain.stages_[0].threshold])[::-1]
    for t in lower[:20]:
        stop = rows.conf[0] >= t
        assert not plain._feasible(rows.q[0][:, stop].sum(axis=1)[:, None], len(y))[0]


def test_thresholds_come_from_fusion_rows_only(two):
    c, _, _, test, y_test = two
    before = [(s.threshold, s.fusion) for s in c.stages_], list(c.stop_share_), c.agreement_
    c.evaluate(test, y_test)
    c.predict_proba(test)
    assert [(s.threshold, s.fusion) for s in c.stages_] == before[0]
    assert (c.stop_share_, c.agreement_) == (before[1], before[2])


def test_engine_stage_by_stage_equals_the_simulation(two):
    c, _, _, test, _ = two
    proba, stage_of = c.predict_proba(test)
    p0, stops0 = c.stage_proba(0, {"cheap": test["cheap"]})
    open_ = ~stops0
    p1, stops1 = c.stage_proba(1, {m: test[m][open_] for m in ("cheap", "big")})
    assert stops1.all()
    np.testing.assert_array_equal(stage_of, np.where(stops0, 0, 1))
    np.testing.assert_allclose(proba[stops0], p0[stops0])
    np.testing.assert_allclose(proba[open_], p1)
    e, s = c.stage_proba(0, {"cheap": test["cheap"][:0]})
    assert e.shape == (0, 2) and s.shape == (0,)


def test_all_confident_every_row_stops_at_the_cheap_model():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 1500)
    outs = {m: rng.normal(0, 0.3, (1500, 2)) for m in ("cheap", "big")}
    for o in outs.values():
        o[np.arange(1500), y] += 9.0
    c = Cascade().fit(outs, y, ["cheap", "big"], COSTS, mean_then(StackFusion), fit_full(outs, y))
    assert c.stop_share_ == [1.0, 0.0]
    assert c.expected_cost_ == pytest.approx(COSTS["cheap"])
    _, stage_of = c.predict_proba(outs)
    assert (stage_of == 0).mean() > 0.99


def test_all_unsure_nobody_stops_and_costs_the_full_ensemble():
    """Cheap model is noise: no threshold is worth it -> NEVER, and the cascade is the full
    ensemble. The full fusion was fitted in the artifact's order (big, cheap), not cost order."""
    rng = np.random.default_rng(3)
    n, k = 2000, 3
    y = rng.integers(0, k, n)
    big = rng.normal(0, 1, (n, k))
    big[np.arange(n), y] += 3.0
    outs = {"big": big, "cheap": rng.normal(0, 0.2, (n, k))}
    full = fit_full(outs, y, ["big", "cheap"])
    c = Cascade().fit(outs, y, ["cheap", "big"], COSTS, mean_then(StackFusion), full)
    assert c.stages_[0].threshold > 1 and c.stop_share_ == [0.0, 1.0]
    assert c.expected_cost_ == c.full_cost_
    assert c.stages_[1].inputs == ["big", "cheap"] and c.stages_[1].models == ["cheap", "big"]
    proba, stage_of = c.predict_proba(outs)
    assert (stage_of == 1).all()
    np.testing.assert_allclose(proba, full.predict_proba([big, outs["cheap"]]))
    ev = c.evaluate(outs, y)
    assert ev["speedup"] == pytest.approx(1.0) and ev["agreement"] == 1.0


def test_thresholds_held_to_the_planned_stop_share_on_more_confident_final_models():
    """Out-of-fold thresholds are learned on fold models; the engine runs final models trained
    on every row, more confident (here: the cheap model's logits x1.5). A fixed threshold then
    stops more rows than planned and agrees with the full ensemble below the target on new rows;
    held to the planned share on a few hundred held-out rows of the final models, it meets it."""
    sharpen = lambda o: {"cheap": o["cheap"] * 1.5, "big": o["big"]}  # noqa: E731
    outs, y = two_models(3000, 0, easy=0.5)
    full = fit_full(outs, y)
    c = Cascade().fit(outs, y, ["cheap", "big"], COSTS, mean_then(StackFusion), full)
    fresh = sharpen(two_models(20000, 200, easy=0.5)[0])

    def on_fresh():
        proba, stage = c.predict_proba(fresh)
        return float(np.mean(proba.argmax(1) == full.predict_proba([fresh["cheap"], fresh["big"]]).argmax(1))), float(np.mean(stage == 0))

    agree, share = on_fresh()
    assert agree < c.target_agreement and share > c.stop_share_[0] + 0.03  # the defect
    learned = c.stages_[0].threshold
    held = c.hold_stop_shares(sharpen(two_models(400, 100, easy=0.5)[0]))
    assert held[0]["threshold_fold_models"] == learned < c.stages_[0].threshold == held[0]["threshold"] <= 1.0
    assert held[0]["held_out_stop_share"] <= held[0]["planned_stop_share"] == c.stop_share_[0]
    agree, share = on_fresh()
    assert agree >= c.target_agreement and share <= c.stop_share_[0] + 0.01
    # final models as confident as the fold models (fixed checkpoints, or no shift): nothing moves
    again = c.stages_[0].threshold
    c.hold_stop_shares(sharpen(two_models(400, 100, easy=0.5)[0]))
    assert c.stages_[0].threshold == again


def test_held_thresholds_stay_clear_of_the_held_out_rows_and_only_rise(two):
    """A threshold placed between two held-out confidences stays HELD_GAP from both (the engine
    check replays those rows in float32); inside a block of saturated confidences no such place
    exists below the planned share, so that stage stops nothing; less confident rows raise nothing."""
    import copy

    from stackscore.fusion.cascade import HELD_GAP, NEVER

    c, outs, y, test, _ = two
    saturated = copy.deepcopy(c)
    held = saturated.hold_stop_shares({"cheap": np.eye(2)[test["cheap"].argmax(1)] * 40, "big": test["big"]})  # every confidence 1 - 4e-18
    assert held[0]["threshold"] == NEVER and held[0]["held_out_stop_share"] == 0.0
    raised = copy.deepcopy(c)
    sample = {"cheap": test["cheap"][:500] * 1.3, "big": test["big"][:500]}
    raised.hold_stop_shares(sample)
    conf = raised.stages_[0].fusion.predict_proba([sample["cheap"]]).max(1)
    assert raised.stages_[0].threshold > c.stages_[0].threshold
    assert np.abs(conf - raised.stages_[0].threshold).min() > HELD_GAP
    timid = copy.deepcopy(c)
    timid.hold_stop_shares({"cheap": test["cheap"] * 0.5, "big": test["big"]})
    assert timid.stages_[0].threshold == c.stages_[0].threshold


@pytest.fixture(scope="module")
def three():
    outs, y = three_models(4000, 0)
    test, y_test = three_models(4000, 1)
    return outs, y, test, y_test, fit_full(outs, y)


def test_three_models_two_thresholds(three):
    outs, y, test, y_test, full = three
    c = Cascade().fit(outs, y, None, COSTS, mean_then(WeightedFusion), full)  # order from the costs
    assert c.order_ == ["cheap", "mid", "big"] and [s.models for s in c.stages_] == [["cheap"], ["cheap", "mid"], ["cheap", "mid", "big"]]
    assert all(s.threshold <= 1 for s in c.stages_[:2]) and c.stages_[2].inputs == ["big", "cheap", "mid"]
    assert c.stop_share_[0] > 0.4 and c.stop_share_[1] > 0.2
    assert c.expected_cost_ < c.full_cost_ / 2
    meets_constraints(c, c._fit_stats())
    ev = c.evaluate(test, y_test)
    assert ev["agreement"] >= c.target_agreement and ev["speedup"] > 2
    assert [s["stop_share"] for s in ev["stages"]] == pytest.approx(c.stop_share_, abs=0.03)


def test_threshold_search_is_fast():
    """10k rows x 3 models: the search itself (the cross-validation is the fusions' own cost)."""
    outs, y = three_models(10_000, 5)
    order = ["cheap", "mid", "big"]
    cv = [softmax(outs["cheap"]), softmax((outs["cheap"] + outs["mid"]) / 2), softmax(outs["cheap"] + outs["mid"] + outs["big"])]
    c = Cascade()
    c.stage_costs_ = list(np.cumsum([COSTS[m] for m in order]))
    t = time.perf_counter()
    thresholds = c._search(_Rows(cv, y))
    assert time.perf_counter() - t < 1.0
    assert len(thresholds) == 2 and thresholds[0] <= 1


@pytest.mark.parametrize("kind", [StackFusion, WeightedFusion])
def test_manifest_round_trip(tmp_path, three, kind):
    outs, y, test, _, full = three
    c = Cascade().fit(outs, y, ["cheap", "mid", "big"], COSTS, lambda p: kind(), full)  # a one-model stack too
    full_spec = full.to_manifest(tmp_path)
    assert full_spec.graph == META_GRAPH  # default path unchanged
    full_sha = hashlib.sha256((tmp_path / META_GRAPH).read_bytes()).hexdigest()
    section, files = c.to_manifest(tmp_path)
    section = json.loads(json.dumps(section))  # strict JSON (no NaN / Infinity)
    if kind is StackFusion:
        assert files == ["fusion/cascade_0.onnx", "fusion/cascade_1.onnx"]
        assert [s["fusion"]["graph"] for s in section["stages"][:2]] == files
    else:
        assert files == []
    assert all((tmp_path / f).is_file() for f in files)
    assert hashlib.sha256((tmp_path / META_GRAPH).read_bytes()).hexdigest() == full_sha  # the full graph is untouched

    engine_full = fusion.from_manifest(full_spec, tmp_path)
    again = Cascade.from_manifest(section, tmp_path, engine_full, task="multiclass")
    assert not any(hasattr(s.fusion, "meta_") for s in again.stages_)  # ONNX graphs, no scikit-learn object
    assert [s.threshold for s in again.stages_] == [s.threshold for s in c.stages_]
    p_train, s_train = c.predict_proba(test)
    p_engine, s_engine = again.predict_proba(test)
    assert (s_train != s_engine).mean() < 1e-3  # fp32 graphs: only a row sitting on a threshold may move
    same = s_train == s_engine
    np.testing.assert_allclose(p_engine[same], p_train[same], atol=1e-6)
    assert again.evaluate(test, y)["fusion_rows"] == c._fit_stats()


def test_refusals(two):
    c, outs, y, *_ = two
    full = c.stages_[1].fusion
    mk = mean_then(StackFusion)
    with pytest.raises(ValueError, match="only single-label"):
        Cascade().fit(outs, y, ["cheap", "big"], COSTS, mk, full, task="multi_label")
    with pytest.raises(ValueError, match="only single-label"):
        Cascade().fit(outs, np.stack([y, y], 1), ["cheap", "big"], COSTS, mk, full)
    with pytest.raises(ValueError, match="only single-label"):
        Cascade().fit({m: o[:, :1] for m, o in outs.items()}, y.astype(float), ["cheap", "big"], COSTS, mk, full)
    with pytest.raises(ValueError, match="at least 2 base models"):
        Cascade().fit({"cheap": outs["cheap"]}, y, ["cheap"], COSTS, mk, full)
    with pytest.raises(ValueError, match="not learnable"):
        Cascade().fit({m: o[:6] for m, o in outs.items()}, y[:6], ["cheap", "big"], COSTS, mk, full)
    y1 = y.copy()
    y1[y1 == 1] = 0
    y1[0] = 1  # one row of class 1: no fold split can learn or judge it
    with pytest.raises(ValueError, match="not learnable"):
        Cascade().fit(outs, y1, ["cheap", "big"], COSTS, mk, full)
    with pytest.raises(ValueError, match="name each base model"):
        Cascade().fit(outs, y, ["cheap", "mid"], COSTS, mk, full)
    with pytest.raises(ValueError, match="no outputs or no cost"):
        Cascade().fit(outs, y, None, {"cheap": 1.0}, mk, full)
    with pytest.raises(ValueError, match="cost per row"):
        Cascade().fit(outs, y, ["cheap", "big"], {"cheap": -1.0, "big": 1.0}, mk, full)
    with pytest.raises(ValueError) as exc:
        Cascade().fit(outs, y, ["cheap", "big"], COSTS, mk, full, task="regression")
    assert "\n" not in str(exc.value)  # one line, for the CLI


def test_manifest_refusals(tmp_path, two):
    c, *_ = two
    section, _ = c.to_manifest(tmp_path)
    full = c.stages_[1].fusion
    with pytest.raises(ArtifactError, match="single-label"):
        Cascade.from_manifest(section, tmp_path, full, task="multi_label")
    bad = json.loads(json.dumps(section))
    bad["stages"][0]["threshold"] = "high"
    with pytest.raises(ArtifactError, match="threshold"):
        Cascade.from_manifest(bad, tmp_path, full)
    bad = json.loads(json.dumps(section))
    del bad["stages"][0]["models"]
    with pytest.raises(ArtifactError, match="incomplete or wrong"):
        Cascade.from_manifest(bad, tmp_path, full)
