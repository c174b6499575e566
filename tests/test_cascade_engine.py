"""Adaptive ensembles end to end: fit learns a cascade, export ships it, the engine routes by it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

from stackscore.api import Ensemble
from stackscore.engine.pipeline import score_file
from stackscore.fusion.cascade import NEVER
from stackscore.manifest import load_manifest
from stackscore.options import ScoreOptions

from conftest import fit_generated, tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def cascaded(tmp_path_factory) -> Path:
    """TF-IDF (cheap) + a tiny BERT, stacked, with ``[fusion] cascade = true``."""
    root = tmp_path_factory.mktemp("cascade")
    config = tiny_config(root / "data", labels=["negative", "positive"], folds=3, cascade=True)
    config["models"][1] = {"name": "tfidf", "kind": "tfidf"}
    return fit_generated(root, config, (600, 11), (200, 12, 3000))


def rows_file(path: Path, texts: list[str]) -> Path:
    lines = [orjson.dumps({"id": f"r{i}", "text": t}) for i, t in enumerate(texts)]
    lines.insert(3, b'{"id": "broken", "text": ')  # invalid JSON
    lines.insert(7, orjson.dumps({"id": "empty", "text": ""}))
    lines.insert(11, orjson.dumps({"id": "missing"}))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def read(path: Path) -> list[dict]:
    return [orjson.loads(l) for l in path.read_bytes().splitlines()]


def texts_of(cascaded: Path, n: int = 150) -> list[str]:
    from stackscore.train.corpus import generate

    return [e.text for e in generate(n, seed=21, start=9000)]


def with_thresholds(cascaded: Path, dst: Path, value: float) -> Path:
    """A copy of the artifact whose stage-1 threshold is ``value`` (the manifest's own JSON; no
    file it checksums changes)."""
    shutil.copytree(cascaded / "artifact", dst)
    raw = json.loads((dst / "manifest.json").read_text())
    raw["cascade"]["stages"][0]["threshold"] = value
    (dst / "manifest.json").write_text(json.dumps(raw))
    return dst


def test_fit_learns_a_cascade_on_the_fusion_rows_and_reports_it_on_the_test_split(cascaded):
    report = json.loads((cascaded / "report.json").read_text())
    c = report["cascade"]
    assert [st["models"] for st in c["stages"]] == [["tfidf"], ["tfidf", "bert"]]  # cheapest first, by measured cost
    assert abs(sum(st["stop_share"] for st in c["stages"]) - 1) < 1e-9 and c["rows"] == report["test_rows"]
    assert c["fusion_rows"]["n_rows"] == report["fusion_fitted_on"]["n"]  # learned there, not on the test split
    assert {"accuracy", "full_accuracy", "log_loss", "full_log_loss", "agreement", "expected_cost_per_row"} <= set(c)
    m = load_manifest(cascaded / "artifact")  # checksums verified, cascade graphs included
    assert m.format_version == "1.1" and m.cascade["order"] == ["tfidf", "bert"]
    graphs = [st["fusion"]["graph"] for st in m.cascade["stages"] if st.get("fusion") and st["fusion"].get("graph")]
    assert graphs and all(g in m.files for g in graphs)
    check = report["engine_vs_training"]["cascade"]
    assert check["stage_agreement"] >= 0.995 and check["label_agreement"] >= 0.995
    # out-of-fold thresholds (fold models) held to their planned stop share on the final models
    held = c["thresholds_held_on_test_split"]
    assert [h["models"] for h in held] == [["tfidf"]] and held[0]["threshold"] == c["stages"][0]["threshold"] == m.cascade["stages"][0]["threshold"]
    assert held[0]["threshold"] >= held[0]["threshold_fold_models"] and held[0]["held_out_stop_share"] <= held[0]["planned_stop_share"]
    assert held[0]["held_out_stop_share"] == pytest.approx(c["stages"][0]["stop_share"])  # the same test rows
    assert "Cascade" in (cascaded / "report.md").read_text()
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-m", "stackscore.cli", "inspect", str(cascaded / "artifact")], capture_output=True, text=True)
    assert shown.returncode == 0 and "cascade: tfidf (" in shown.stdout and "-> tfidf+bert (the full ensemble)" in shown.stdout


def test_routing_keeps_order_and_every_row_with_bad_rows_present(cascaded, tmp_path):
    src = rows_file(tmp_path / "in.jsonl", texts_of(cascaded))
    on, off = tmp_path / "on.jsonl", tmp_path / "off.jsonl"
    stats = score_file(cascaded / "artifact", src, on, ScoreOptions.from_kwargs(progress=False, with_model_outputs=True, chunk_rows=64))
    score_file(cascaded / "artifact", src, off, ScoreOptions.from_kwargs(progress=False, with_model_outputs=True, chunk_rows=64, cascade=False))
    got, full = read(on), read(off)
    n_in = len(src.read_bytes().splitlines())
    assert len(got) == n_in == stats.rows and [g["row"] for g in got] == list(range(n_in))
    assert [g["id"] for g in got] == [f["id"] for f in full]
    errors = [g for g in got if g["error"]]
    assert len(errors) == 3 and all(g["stage"] is None and g["label"] is None for g in errors)
    good = [g for g in got if not g["error"]]
    assert {g["stage"] for g in good} <= {1, 2} and "stage" not in full[0]
    assert stats.stage_rows and sum(stats.stage_rows) == stats.scored == len(good)
    reached = sum(stats.stage_rows[1:]) > 0  # bert ran (and was timed) only if some rows reached it
    assert set(stats.model_seconds) == ({"tfidf", "bert"} if reached else {"tfidf"})
    for g, f in zip(got, full):
        if g["stage"] == 2:  # the full ensemble answered: exactly what --cascade off gives
            assert abs(g["prob_positive"] - f["prob_positive"]) < 1e-5
            assert g["logit_bert_positive"] is not None
        elif g["stage"] == 1:  # bert never ran on this row
            assert g["logit_bert_positive"] is None and g["logit_tfidf_positive"] is not None


def test_engine_routing_equals_the_cascade_simulated_on_all_logits(cascaded, tmp_path):
    from stackscore.fusion import from_manifest
    from stackscore.fusion.cascade import Cascade

    texts = texts_of(cascaded)
    full = Ensemble(cascaded / "artifact", cascade=False)
    _, logits = full.predict_proba(texts, return_model_outputs=True)
    m = load_manifest(cascaded / "artifact")
    c = Cascade.from_manifest(m.cascade, cascaded / "artifact", from_manifest(m.fusion, cascaded / "artifact"), m.task)
    want, stage = c.predict_proba(logits)
    scored = Ensemble(cascaded / "artifact").scorer.score_texts(texts)
    np.testing.assert_array_equal(scored.stage, stage + 1)
    np.testing.assert_allclose(scored.proba, want, atol=1e-6)
    np.testing.assert_allclose(Ensemble(cascaded / "artifact").predict_proba(texts), want, atol=1e-6)


@pytest.mark.parametrize("threshold, stage", [(1e-6, 1), (NEVER, 2)])
def test_an_all_confident_and_an_all_unsure_window(cascaded, tmp_path, threshold, stage):
    art = with_thresholds(cascaded, tmp_path / "a", threshold)
    src = rows_file(tmp_path / "in.jsonl", texts_of(cascaded, 60))
    out, off = tmp_path / "o.jsonl", tmp_path / "off.jsonl"
    score_file(art, src, out, ScoreOptions.from_kwargs(progress=False, with_model_outputs=True))
    score_file(art, src, off, ScoreOptions.from_kwargs(progress=False, cascade=False))
    got = [g for g in read(out) if not g["error"]]
    assert {g["stage"] for g in got} == {stage}
    if stage == 1:  # the expensive model never ran
        assert all(g["logit_bert_positive"] is None for g in got)
    else:
        full = [f for f in read(off) if not f["error"]]
        np.testing.assert_allclose([g["prob_positive"] for g in got], [f["prob_positive"] for f in full], atol=1e-6)


def test_the_python_api_and_dataframes_route_the_same_way(cascaded):
    import pandas as pd

    texts = texts_of(cascaded, 40)
    ens = Ensemble(cascaded / "artifact")
    df = ens.score_dataframe(pd.DataFrame({"text": texts + [None]}))
    assert df["stage"].iloc[:-1].isin([1, 2]).all() and pd.isna(df["stage"].iloc[-1])
    np.testing.assert_allclose(df["prob_positive"].to_numpy()[:-1], ens.predict_proba(texts)[:, 1], atol=1e-6)
    assert [r["stage"] for r in ens.score_iter(texts)] == df["stage"].iloc[:-1].tolist()
    assert "stage" not in Ensemble(cascaded / "artifact", cascade=False).score_dataframe(pd.DataFrame({"text": texts}))


def test_cascade_needs_a_single_label_task_and_two_models(tmp_path):
    from stackscore.errors import StackscoreError
    from stackscore.train.config import config_from_dict

    with pytest.raises(StackscoreError, match="cascade = true needs at least two base models"):
        config_from_dict({"data": {"train": "t.jsonl"}, "fusion": {"cascade": True}, "models": [{"name": "t", "kind": "tfidf"}]}, tmp_path)
    with pytest.raises(StackscoreError, match="cascade must be true or false"):
        config_from_dict({"data": {"train": "t.jsonl"}, "fusion": {"cascade": "yes"}, "models": [{"name": "t", "kind": "tfidf"}, {"name": "u", "kind": "tfidf"}]}, tmp_path)


def test_contributions_and_skip_mode_under_a_cascade(cascaded, tmp_path):
    """Stacking shares exist only where the full stacker answered; skipped error rows stay out."""
    from stackscore.fusion import from_manifest
    from stackscore.fusion.cascade import Cascade

    texts = texts_of(cascaded, 80)
    _, logits = Ensemble(cascaded / "artifact", cascade=False).predict_proba(texts, return_model_outputs=True)
    m = load_manifest(cascaded / "artifact")
    c = Cascade.from_manifest(m.cascade, cascaded / "artifact", from_manifest(m.fusion, cascaded / "artifact"), m.task)
    confidence = c.stage_proba(0, {"tfidf": logits["tfidf"]})[0].max(axis=1)
    art = with_thresholds(cascaded, tmp_path / "a", float(np.median(confidence)))  # about half the rows stop at stage 1
    src = rows_file(tmp_path / "in.jsonl", texts)
    out = tmp_path / "o.jsonl"
    score_file(art, src, out, ScoreOptions.from_kwargs(progress=False, with_contributions=True, on_error="skip"))
    got = read(out)
    assert len(got) == 80 and all(g["error"] is None for g in got)
    assert {g["stage"] for g in got} == {1, 2}
    for g in got:
        assert (g["contrib_bert"] is None) == (g["stage"] == 1)


def test_ray_routes_the_same_way_byte_for_byte(cascaded, tmp_path):
    """`--engine ray` runs the same per-window code: with a cascade, the same bytes as local."""
    ray = pytest.importorskip("ray")
    import tempfile

    from stackscore.integrations.ray import RayOptions, score_ray

    src = rows_file(tmp_path / "in.jsonl", texts_of(cascaded, 90))
    local, remote = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    opts = ScoreOptions.from_kwargs(progress=False, chunk_rows=32, with_model_outputs=True)
    score_file(cascaded / "artifact", src, local, opts)
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=tmp, log_to_driver=False)
    try:
        score_ray(cascaded / "artifact", src, remote, opts, RayOptions(cpus_per_actor=0.5, actors=2, stall_timeout=120))
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    assert remote.read_bytes() == local.read_bytes()
    assert {r["stage"] for r in read(remote) if not r["error"]} <= {1, 2}


def test_the_ensemble_gate_measures_the_cascade_as_scoring_runs_it(cascaded, tmp_path, monkeypatch):
    """A cascade stops rows on its early stages' probabilities, which quantized graphs move: the
    export's ensemble gate measures auto against fp32 with the cascade on too, and drops the
    faster variants when only the cascade disagrees (here made to, by flipping its auto answers)."""
    from stackscore.engine.scorer import Scorer
    from stackscore.export.artifact import ensemble_gate
    from stackscore.fit_state import FitState

    record = load_manifest(cascaded / "artifact").fusion.parity["ensemble_auto"]
    assert record["cascade"]["rows"] == record["rows"] > 0 and record["cascade"]["label_agreement"] >= record["min_agreement"]
    art = tmp_path / "artifact"
    shutil.copytree(cascaded / "artifact", art)
    m = load_manifest(art)
    texts = FitState.load(cascaded).parity_texts
    lossy = [s.name for s in m.models if s.kind == "transformer" and set(s.graphs) - {"fp32"}]
    assert lossy, "the fixture's transformer has a faster graph for the gate to drop"
    real = Scorer.score_texts

    def flipped_when_cascading_at_auto(self, texts, pairs=None):
        out = real(self, texts, pairs)
        if self.cascade is not None and self.options.precision == "auto":
            out.proba = out.proba[:, ::-1].copy()
        return out

    monkeypatch.setattr(Scorer, "score_texts", flipped_when_cascading_at_auto)
    result = ensemble_gate(art, m, texts, 0.995, log=lambda *_: None)
    assert result["label_agreement"] >= 0.995  # the full ensemble at auto is untouched
    assert result["dropped"] and result["cascade"]["label_agreement"] < 0.995
    assert "int8" not in result["runs"]  # measured again on what still runs after the drops
    for item in result["dropped"]:
        name, key = item.split(":")
        reason = next(s for s in m.models if s.name == name).parity["gates"][key]["reason"]
        assert reason.startswith("dropped by the ensemble gate: the cascade at auto")


@pytest.mark.parametrize("threshold", [NEVER, 1.0])
def test_rows_cut_by_a_later_stage_are_counted_as_truncated(cascaded, tmp_path, threshold):
    """A cascade tokenizes its later stages' rows when they reach them: the summary counted only
    up-front tokenizations and said "truncated 0" for rows BERT saw cut; now it counts those.
    Behind a stage that never stops a row (``NEVER``) BERT's rows are all of them, tokenized up
    front on the reader's thread; behind one that could (1.0, which no row reaches here) they are
    tokenized when they reach it: both count the same rows and write the same bytes."""
    from stackscore.engine.scorer import Scorer

    art = with_thresholds(cascaded, tmp_path / "a", threshold)  # every row goes on to BERT
    assert bool(Scorer(art).eager_tokenizers) == (threshold == NEVER)
    long = [" ".join([t] * 40) for t in texts_of(cascaded, 12)]  # far past max_length tokens
    src = rows_file(tmp_path / "in.jsonl", long)
    on = score_file(art, src, tmp_path / "on.jsonl", ScoreOptions.from_kwargs(progress=False))
    off = score_file(art, src, tmp_path / "off.jsonl", ScoreOptions.from_kwargs(progress=False, cascade=False))
    assert on.truncated == off.truncated == len(long)
    assert all(r["stage"] == 2 for r in read(tmp_path / "on.jsonl") if "error" not in r)
    if threshold != NEVER:  # the lazy run's bytes against an eager run's (NEVER) on the same rows
        eager = with_thresholds(cascaded, tmp_path / "b", NEVER)
        score_file(eager, src, tmp_path / "eager.jsonl", ScoreOptions.from_kwargs(progress=False))
        assert (tmp_path / "eager.jsonl").read_bytes() == (tmp_path / "on.jsonl").read_bytes()


def test_the_cascade_holdout_benchmark_runs_on_a_fit(cascaded, tmp_path):
    """benchmarks/cascade_holdout.py, which RESULTS cites for the held thresholds: on a real
    cascaded fit it refits the cascade per cost order, holds it on the test split and reports
    agreement with the full ensemble on fresh rows, learned vs held, as a table and JSON."""
    import subprocess
    import sys

    from stackscore.train.corpus import generate

    fresh = tmp_path / "fresh.jsonl"
    fresh.write_bytes(b"".join(orjson.dumps({"text": e.text}) + b"\n" for e in generate(120, seed=31, start=20000)))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cascade_holdout.py"
    out = tmp_path / "holdout.json"
    r = subprocess.run([sys.executable, str(script), "--fit", str(cascaded), "--test", str(cascaded.parent / "data" / "test.jsonl"), "--fresh", str(fresh),
                        "--order", "tfidf,bert", "--order", "bert,tfidf", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| tfidf -> bert |" in r.stdout and "| bert -> tfidf |" in r.stdout
    res = json.loads(out.read_text())
    assert res["fresh_rows"] == 120 and [o["order"] for o in res["orders"]] == [["tfidf", "bert"], ["bert", "tfidf"]]
    for o in res["orders"]:
        for side in ("learned", "held"):
            assert 0.5 <= o[side]["agreement"] <= 1 and abs(sum(o[side]["stop_share"]) - 1) < 0.01
        # held: never more early stops at the first stage than learned
        assert o["held"]["stop_share"][0] <= o["learned"]["stop_share"][0] + 1e-9
