"""`stackscore bench` on the tiny fitted ensemble: every method runs, the JSON has the contract keys."""

from __future__ import annotations

import json

from stackscore.bench import run_bench


def test_bench_runs_every_method_and_writes_the_contract(fitted, tmp_path):
    data = tmp_path / "corpus.jsonl"
    from stackscore.train.corpus import generate

    data.write_text("".join(json.dumps({"text": e.text}) + "\n" for e in generate(120, seed=11, start=9000)))
    r = run_bench(fitted, [str(data)], rows=120, baseline_rows=40, log=lambda *_: None)
    for key in ("rows", "engine_rows_per_s", "ratio_vs_classic", "ratio_vs_expert_bf16", "ratio_vs_ortmodel",
                "padding_fraction", "overhead_fraction", "agreement", "engine_cold_rows_per_s"):
        assert key in r, key
    assert r["rows"] == 120 and r["engine_rows_per_s"] > 0
    for name in ("engine", "engine_fp32", "classic", "expert_bf16", "ortmodel"):
        assert r["methods"][name]["rows_per_s"] > 0, name
    # ratios are engine rows/s over each baseline's, measured in this run
    classic = r["methods"]["classic"]["rows_per_s"]
    assert abs(r["ratio_vs_classic"] - r["engine_rows_per_s"] / classic) < 0.02 * r["ratio_vs_classic"] + 0.01
    assert r["methods"]["engine_fp32"]["agreement_vs_classic_fp32"] == 1.0  # exact fp32 vs PyTorch fp32
    assert 0.0 <= r["padding_fraction"] <= 0.05
