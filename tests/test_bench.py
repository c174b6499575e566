"""`stackscore bench` on the tiny fitted ensemble: every method runs, the JSON has the contract keys."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stackscore.bench import run_bench
from stackscore.engine.scorer import Scorer
from stackscore.options import RunOptions


def test_bench_runs_every_method_and_writes_the_contract(fitted, tmp_path):
    data = tmp_path / "corpus.jsonl"
    from stackscore.train.corpus import generate

    data.write_text("".join(json.dumps({"text": e.text}) + "\n" for e in generate(120, seed=11, start=9000)))
    r = run_bench(fitted, [str(data)], rows=120, baseline_rows=40, log=lambda *_: None)
    for key in ("rows", "engine_rows_per_s", "ratio_vs_classic", "ratio_vs_expert", "ratio_vs_ortmodel",
                "padding_fraction", "overhead_fraction", "agreement", "engine_cold_rows_per_s"):
        assert key in r, key
    assert r["rows"] == 120 and r["engine_rows_per_s"] > 0
    for name in ("engine", "engine_fp32", "classic", "expert", "expert_int8", "ortmodel"):
        assert r["methods"][name]["rows_per_s"] > 0, name
    # ratios are engine rows/s over each baseline's, measured in this run
    classic = r["methods"]["classic"]["rows_per_s"]
    assert abs(r["ratio_vs_classic"] - r["engine_rows_per_s"] / classic) < 0.02 * r["ratio_vs_classic"] + 0.01
    assert r["methods"]["engine_fp32"]["agreement_vs_classic_fp32"] == 1.0  # exact fp32 vs PyTorch fp32
    # the expert runs bf16 only where the CPU has bf16 instructions (emulated bf16 is slower than fp32)
    from stackscore.engine.backends import cpu_has_bf16

    assert r["expert_precision"] == ("bf16" if cpu_has_bf16() else "fp32")
    assert r["process_ratio_vs_expert_int8"] > 0 and 0.5 <= r["methods"]["expert_int8"]["agreement_vs_classic_fp32"] <= 1.0
    # The planner pads where a batch (or, on OpenVINO, a new batch shape) saved costs more than
    # the padding; the test models have a tiny fraction of MiniLM's work per token, so those
    # costs (8x, batch_scale) outweigh much of their compute and they pad far more than a real
    # model does (MiniLM: 1-4 %).
    assert 0.0 <= r["padding_fraction"] <= 0.6
    # streams measured per model (1 and 2 on a 2-core machine, more on more cores) and used;
    # the engine also timed as a whole process over all the rows
    assert set(r["streams"]) == {"bert", "roberta"}
    for t in r["streams"].values():
        assert "1" in t["rows_per_s"] and t["streams"] in range(1, len(t["rows_per_s"]) + 1)
    assert r["engine_process_rows_per_s"] > 0 and r["engine_process_seconds"] > 0
    # the headline process is a plain `score` (no cache dir); the tuned --cache-dir one beside it
    assert r["engine_process_cached_seconds"] > 0 and r["process_ratio_cached_vs_expert"] > 0
    assert r["engine_process_repeat_seconds"] > 0 and r["process_ratio_repeat_vs_expert"] > 0  # a later run: default cache dir, untuned
    # where each whole process's time went: its parts add up to the seconds the bench timed
    for which, timed in (("first", "engine_process_seconds"), ("later", "engine_process_repeat_seconds"), ("tuned", "engine_process_cached_seconds")):
        p = r["engine_process_phases"][which]
        assert p["seconds"] == r[timed], which
        assert set(p["models_s"]) == {"bert", "roberta"} and all(v > 0 for v in p["models_s"].values())
        assert min(p["start_s"], p["load_s"], p["exit_s"]) > 0 and p["rest_s"] > -0.005
        assert p["start_s"] + p["load_s"] + sum(p["models_s"].values()) + p["rest_s"] + p["exit_s"] == pytest.approx(p["seconds"], abs=0.006)
    assert r["cascade"] is False  # the bench's default: every model on every row, as the loops
    # process to process: a loop's start (a fresh interpreter importing torch and loading the
    # models) plus its warm pass, so never below the ratio against the warm loop alone
    assert r["loop_start_seconds"] > 0
    for k in ("classic", "expert", "expert_int8"):
        assert r[f"process_to_process_ratio_vs_{k}"] >= r[f"process_ratio_vs_{k}"] > 0, k
    # cold start: whole processes on a small file; roofline: work from the graphs, peak measured
    cold = r["cold_start"]
    assert 0 < cold["import_s"] < cold["time_to_first_row_s"] < cold["cold_start_s"] and cold["rows"] == 20
    assert 0 < cold["time_to_first_row_cached_s"] < cold["cold_start_cached_s"]
    roof = r["roofline"]
    assert set(roof) == {"bert", "roberta", "ensemble"}
    for name in ("bert", "roberta"):
        m = roof[name]
        assert m["gflops_per_row"] > 0 and m["achieved_gflops"] > 0 and m["layers"] == 1 and m["width"] == 32
        if m["peak_gflops"] is not None:  # the fraction is achieved over the same run's peak (both rounded)
            assert abs(m["fraction_of_peak"] - m["achieved_gflops"] / m["peak_gflops"]) < 0.01
        assert m["held_by"] is None or m["fraction_of_peak"] < 0.6  # a reason is given exactly when below the goal
        assert (m.get("ops") is not None) == (m["runtime"] == "openvino")  # the op profile: OpenVINO's per-node counters
    # the ceiling: every transformer's GEMMs at its measured peak; ratios are it over each loop's rows/s
    top = r["roofline_ceiling"]
    if not all(roof[n]["peak_gflops"] for n in ("bert", "roberta")):
        assert top is None  # no bound without every model's peak
    else:
        assert top["rows_per_s"] > 0 and abs(top["engine_fraction"] - r["engine_rows_per_s"] / top["rows_per_s"]) < 0.01
        assert abs(top["ratio_vs_classic"] - top["rows_per_s"] / classic) < 0.01 * top["ratio_vs_classic"] + 0.01
        assert top["engine_process_fraction"] < top["engine_fraction"]  # a whole process pays its start on top
        lines: list[str] = []
        from stackscore.bench import print_table

        print_table(r, log=lines.append)
        assert any(ln.startswith("ceiling: ") and f"{top['ratio_vs_classic']:.1f}x the classic loop" in ln for ln in lines)
        # the bound as a whole process: the ceiling's seconds plus the run's cached 20-row start
        assert top["process_start_s"] == cold["cold_start_cached_s"]
        assert top["process_rows_per_s"] == pytest.approx(r["rows"] / (r["rows"] / top["rows_per_s"] + cold["cold_start_cached_s"]), rel=1e-3)
        for k in ("classic", "expert", "expert_int8"):
            assert 0 < top[f"process_ratio_vs_{k}"] < top[f"ratio_vs_{k}"], k
        assert any(ln.startswith("  where the tuned process's time went: ") for ln in lines)
        assert any(ln.startswith("  as a whole process, with this run's cached start") and f"{top['process_ratio_vs_expert']:.1f}x the expert loop" in ln for ln in lines)


def test_graph_cost_counts_the_weight_gemms_and_attention(artifact):
    """1 layer of width 32, FFN 64 (TINY): Q, K, V, O are 32x32, FFN 32x64 + 64x32 per token; the
    pooler 32x32 and the classifier 32x2 once per row (counted per token, they overstated it)."""
    from stackscore.manifest import load_manifest
    from stackscore.roofline import graph_cost

    spec = load_manifest(artifact).models[0]
    cost = graph_cost(artifact / spec.graphs["fp32"])
    per_layer = 4 * 32 * 32 + 2 * 32 * 64
    head = 32 * 32 + 32 * 2  # pooler dense + classifier
    assert cost.width == 32 and cost.layers == 1
    assert (cost.per_token, cost.per_row) == (2.0 * per_layer, 2.0 * head)
    assert cost.batch_flops(2, 10) == 20 * (cost.per_token + 4 * 32 * 10 * 1) + 2 * cost.per_row


def test_graph_cost_tells_int8_weights_from_float_ones(tmp_path):
    """A static-int8 graph's GEMMs whose weight comes through a DequantizeLinear are its int8 part."""
    from onnx import TensorProto, helper, numpy_helper

    from stackscore.roofline import graph_cost

    w8 = numpy_helper.from_array(np.ones((8, 16), np.int8), "w8")
    scale, zero = numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "z")
    wf = numpy_helper.from_array(np.ones((16, 4), np.float32), "wf")
    nodes = [
        helper.make_node("DequantizeLinear", ["w8", "s", "z"], ["w8f"]),
        helper.make_node("MatMul", ["x", "w8f"], ["h"]),
        helper.make_node("MatMul", ["h", "wf"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [w8, scale, zero, wf])
    path = tmp_path / "g.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    cost = graph_cost(path)
    assert (cost.per_token, cost.per_token_int8) == (2.0 * (8 * 16 + 16 * 4), 2.0 * 8 * 16)


def test_op_profile_splits_an_openvino_models_time_and_names_what_holds_it(artifact):
    """The roofline's op profile: per-node counters of the model's own graph on the engine's
    batches, split into int8 GEMMs, float GEMMs and other ops, GEMM speed against the peak."""
    pytest.importorskip("openvino")
    from stackscore.roofline import graph_cost, op_profile

    scorer = Scorer(artifact, RunOptions(precision="fp32", backend="openvino"))
    runner = scorer.runners["bert"]
    spec = next(m for m in scorer.manifest.models if m.name == "bert")
    batches = list(runner.batches(runner.encode([f"a fine film number {i}" for i in range(40)])))
    ops = op_profile(scorer, runner, batches, graph_cost(artifact / spec.graphs["fp32"]), {"fp32": 100.0}.get)
    assert ops["int8_gemm_share"] == 0 and ops["float_gemm_share"] > 0 and ops["other_share"] > 0
    assert abs(ops["int8_gemm_share"] + ops["float_gemm_share"] + ops["other_share"] - 1) < 1e-6
    assert ops["float_gemm_precision"] == "fp32" and ops["float_gemm_gflops"] > 0
    assert ops["float_gemm_fraction_of_peak"] == round(ops["float_gemm_gflops"] / 100.0, 3)
    assert ops["other_top"] and ops["other_top"][0][1] > 0 and all(share >= 0 for _, share in ops["other_top"])
    # a model is profiled as one of its streams runs: on its share of the threads
    for streams in (1, 2):
        run = Scorer(artifact, RunOptions(precision="fp32", backend="openvino", streams=streams, threads=2))
        found = op_profile(run, run.runners["bert"], batches, graph_cost(artifact / spec.graphs["fp32"]), {"fp32": 100.0}.get)
        assert (found["streams"], found["threads_per_stream"]) == (streams, 2 // streams)


def test_int8_kernels_are_told_by_the_type_in_their_name():
    from stackscore.roofline import int8_kernel

    assert [int8_kernel(e) for e in ("brgemm_avx512_i8", "brgemm_avx512_I8", "brgemm_avx512_amx_u8", "jit_avx512_int8")] == [True] * 4
    assert [int8_kernel(e) for e in ("brgemm_avx512_bf16", "brgemm_avx512_f32", "gemm_mlas_fp32", "unknown")] == [False] * 4


def test_held_by_names_the_measured_stages_before_guessing_from_the_shape():
    from stackscore.roofline import held_by

    row = {"fraction_of_peak": 0.49, "padding_fraction": 0.01, "precision": "int8", "mean_padded_length": 27, "width": 384,
           "ops": {"int8_gemm_share": 0.48, "float_gemm_share": 0.24, "other_share": 0.28, "float_gemm_precision": "bf16",
                   "int8_gemm_fraction_of_peak": 0.99, "float_gemm_fraction_of_peak": 0.98, "other_top": [["Subgraph", 0.13], ["Add", 0.04]]}}
    said = held_by(row)
    assert said.startswith("ops outside the GEMMs 28% (Subgraph 13%, Add 4%")
    assert "GEMMs kept in float for accuracy 24% of its time, at 98% of the bf16 peak" in said and said.endswith("int8 GEMMs run at 99% of the int8 peak")
    assert held_by({**row, "fraction_of_peak": 0.61}) is None
    assert held_by({**row, "padding_fraction": 0.2}).startswith("padding")
    slow = {**row, "ops": {**row["ops"], "int8_gemm_fraction_of_peak": 0.3}}  # the GEMMs themselves are slow: the shape says why
    assert held_by(slow).startswith("small matrices (width 384")
    assert held_by({k: v for k, v in row.items() if k != "ops"}).startswith("small matrices")


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_peak_is_measured_on_every_installed_runtime(runtime):
    """The roofline's peak graph runs on each runtime the engine uses (None is only for a
    precision a runtime/CPU lacks: a broken import once turned every OpenVINO peak into None)."""
    from stackscore.roofline import measure_peak

    pytest.importorskip(runtime)
    for precision in ("fp32", "int8"):
        peak = measure_peak(precision, 1, runtime=runtime, n=128, depth=2, seconds=0.05)
        assert peak is not None and peak > 0, (runtime, precision)


def test_the_start_and_tokenizer_benchmarks_run(artifact, corpus_rows, tmp_path):
    """benchmarks/cold_phases.py, tokenize_cut.py, window_shapes.py, attention_kinds.py and
    attention_ab.py, which RESULTS cites, run on a real artifact
    (a cited benchmark that crashed once went unnoticed: int8_probe --search)."""
    import subprocess
    import sys
    from pathlib import Path

    from stackscore.manifest import load_manifest

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": " ".join([r["text"]] * 30)}) + "\n" for r in corpus_rows[:40]))
    res = subprocess.run([sys.executable, str(bench / "cold_phases.py"), str(artifact), "--data", str(data), "--rows", "5"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "scorer ready" in res.stdout and "first 5 rows scored" in res.stdout and res.stdout.count("model built") == len(load_manifest(artifact).models)
    spec = next(m for m in load_manifest(artifact).models if m.kind == "transformer")
    res = subprocess.run([sys.executable, str(bench / "tokenize_cut.py"), str(artifact / spec.tokenizer), "--data", str(data), "--rows", "40", "--max-length", "16"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "ids identical: True" in res.stdout
    pytest.importorskip("openvino")
    res = subprocess.run([sys.executable, str(bench / "window_shapes.py"), str(artifact), "--model", spec.name, "--data", str(data), "--windows", "2", "--window-rows", "20"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("\n| ") == 3 and "all windows: first passes" in res.stdout
    out = tmp_path / "kinds.json"
    res = subprocess.run([sys.executable, str(bench / "attention_kinds.py"), str(artifact / spec.graphs["fp32"]), "--lengths", "8,16", "--budget", "64", "--precision", "f32", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    kinds = json.loads(out.read_text())
    assert kinds["rewritten"] > 0 and [r["tokens"] for r in kinds["shapes"]] == [8, 16]
    assert all(r[k]["warm_ms"] >= 0 and r[k]["first_ms"] >= 0 for r in kinds["shapes"] for k in ("fused", "plain", "sdpa"))
    out = tmp_path / "ab.json"
    res = subprocess.run([sys.executable, str(bench / "attention_ab.py"), str(artifact), "--data", str(data), "--rows", "40", "--rounds", "1", "--precision", "fp32", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    ab = json.loads(out.read_text())
    transformers = {m.name for m in load_manifest(artifact).models if m.kind == "transformer"}
    assert set(ab["models"]) == transformers and ab["rows"] == 40
    for m in ab["models"].values():  # both forms timed, and the same model underneath
        assert m["warm_rows_per_s"]["fused"] > 0 and m["warm_rows_per_s"]["plain"] > 0 and m["agreement"] >= 0.99


def test_compare_trees_times_the_whole_process_and_the_first_row(artifact, corpus_rows, tmp_path):
    """benchmarks/compare_trees.py, which RESULTS cites for the start figures: two trees (here the
    same one twice), whole `stackscore score` processes, launch to exit and to the first row."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in corpus_rows[:20]))
    out = tmp_path / "cmp.json"
    res = subprocess.run([sys.executable, str(root / "benchmarks" / "compare_trees.py"), "--before", str(root), "--after", str(root), "--artifact", str(artifact),
                          "--input", str(data), "--repeats", "1", "--before-path", str(tmp_path), "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(out.read_text())
    assert got["identical_output"] is True and got["rows"] == 20
    for tree in ("before", "after"):
        (whole,), (first,) = got["seconds"][tree], got["first_row_seconds"][tree]
        assert 0 < first < whole


def test_skip_names_are_checked_and_the_old_expert_name_still_works():
    from stackscore.bench import skip_names
    from stackscore.errors import StackscoreError

    assert skip_names(["expert_bf16", "ortmodel"]) == ("expert", "ortmodel")
    with pytest.raises(StackscoreError, match="--skip: unknown method 'expret'"):
        skip_names(["expret"])


def test_the_expert_runs_bf16_only_on_cpus_with_bf16_instructions(monkeypatch):
    from stackscore import bench
    from stackscore.engine import backends

    for flags, want in ((" avx2 avx512f", "fp32"), (" avx2 avx512f avx512_bf16", "bf16"), (" avx2 amx_bf16", "bf16")):
        backends.cpu_has_bf16.cache_clear()
        monkeypatch.setattr(backends, "cpuinfo", lambda flags=flags: flags)
        assert bench.expert_precision() == want
    backends.cpu_has_bf16.cache_clear()


def test_the_int8_and_torch_precision_probes_run(fitted, corpus_rows, tmp_path):
    """benchmarks/dynamic_int8_search.py and torch_precisions.py, which RESULTS cites for why
    MiniLM stays fp32 on CPUs without VNNI and why the expert runs fp32 there."""
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in corpus_rows[:60]))
    res = subprocess.run([sys.executable, str(bench / "dynamic_int8_search.py"), str(fitted / "artifact"), "--model", "bert", "--search", str(data),
                          "--test", str(data), "--search-rows", "16", "--ks", "0,1", "--json", str(tmp_path / "d.json")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads((tmp_path / "d.json").read_text())["rows"]
    assert [(r["fp32_nodes"], r["reduce_range"]) for r in rows] == [(0, False), (1, False), (0, True)]
    assert all(0.0 <= r["agreement"] <= 1.0 and r["speed_vs_fp32"] > 0 for r in rows)
    res = subprocess.run([sys.executable, str(bench / "torch_precisions.py"), str(fitted), "--data", str(data), "--rows", "40"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count(" rows/s |") == 3 and "CPU has bf16 instructions" in res.stdout


def test_the_loops_time_whole_sorted_batches_spread_over_every_row():
    """The expert sorted only the first ``baseline_rows`` rows, so its batches padded 7-9 % more
    than the engine's sorted 4,096-row windows: the loops now time whole batches of the full
    length-sorted order, evenly spaced, in input order."""
    from types import SimpleNamespace

    from stackscore.bench import loop_rows

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 64, 2000)
    texts = [" ".join(["w"] * int(n)) for n in lengths]

    def tok(batch, truncation=True, max_length=64):
        return {"input_ids": [t.split() for t in batch]}

    ens = SimpleNamespace(models={"m": (None, tok, 64)})
    idx = loop_rows(ens, [SimpleNamespace(name="m", flops_per_token=1.0)], texts, 300)
    assert 288 <= len(idx) <= 320 and (np.diff(idx) > 0).all()  # input order, no row twice

    def padded_per_row(ls: np.ndarray) -> float:
        ls = np.sort(ls)
        return sum(len(b) * b.max() for b in (ls[s : s + 32] for s in range(0, len(ls), 32))) / len(ls)

    whole, sample, first = padded_per_row(lengths), padded_per_row(lengths[idx]), padded_per_row(lengths[:300])
    assert abs(sample - whole) < 0.03 * whole and first > 1.03 * whole  # sorting the first rows only padded more
    assert abs(lengths[idx].mean() - lengths.mean()) < 0.05 * lengths.mean()  # every length, in proportion


def test_the_process_ceiling_adds_the_cached_start_to_the_ceilings_seconds():
    """2,000 rows at a 1,000 rows/s ceiling take 2 s; with a 0.5 s start a process reaches at most
    800 rows/s: 2x a 400 rows/s loop warm, though the warm ceiling is 2.5x."""
    from stackscore.bench import _process_ceiling

    got = _process_ceiling(1000.0, 2000, {"cold_start_cached_s": 0.5}, {"expert": 400.0, "classic": 0.0})
    assert got == {"process_start_s": 0.5, "process_rows_per_s": 800.0, "process_ratio_vs_expert": 2.0}
    assert _process_ceiling(1000.0, 2000, None, {"expert": 400.0}) == {}  # no start measured: no bound claimed
    assert _process_ceiling(1000.0, 0, {"cold_start_cached_s": 0.5}, {"expert": 400.0}) == {}


def test_a_process_is_accounted_from_launch_to_exit_by_its_stats_timestamps():
    """Launched at t=100 and done in 3.0 s: it began loading at 100.2 (0.2 s of interpreter and
    imports), loaded for 0.3 s, ran its models 1.5 + 0.5 s, finished at 102.9 (0.4 s of the rest)
    and took 0.1 s to exit; the parts add up to the 3.0 s, models by their share."""
    from stackscore.bench import phase_line, process_phases

    stats = {"load_started_at": 100.2, "load_seconds": 0.3, "model_seconds": {"b": 0.5, "a": 1.5}, "finished_at": 102.9}
    got = process_phases(100.0, 3.0, stats)
    assert got.pop("models_s") == {"a": 1.5, "b": 0.5}
    assert got == pytest.approx({"seconds": 3.0, "start_s": 0.2, "load_s": 0.3, "rest_s": 0.4, "exit_s": 0.1})
    got = process_phases(100.0, 3.0, stats)
    assert list(got["models_s"]) == ["a", "b"]  # the largest first
    assert phase_line(got).startswith("3.00 s = start 0.20 s (interpreter, imports) + loading 0.30 s + a 1.50 s (50%), b 0.50 s (17%) + the rest 0.40 s")
    assert process_phases(100.0, 3.0, {"finished_at": 102.9, "load_seconds": None}) == {}  # a scorer built by the caller: not accounted


def test_the_ceiling_is_every_models_gemm_work_at_its_own_peak_one_after_another():
    """1,000 rows: 600 GFLOP at a 300 GFLOP/s peak (2 s) and 100 GFLOP at 50 (2 s) take at least
    4 s, so no engine exceeds 250 rows/s; a model without a measured peak leaves no bound, and
    work seen faster than a peak (the machine's speed drifted) raises that runtime and
    precision's peak to it, whichever model it was seen on."""
    from stackscore.roofline import ceiling, effective_peaks

    minilm = {"runtime": "openvino", "precision": "int8", "gflops_total": 600.0, "peak_gflops": 300.0, "achieved_gflops": 200.0}
    roberta = {"runtime": "openvino", "precision": "bf16", "gflops_total": 100.0, "peak_gflops": 50.0, "achieved_gflops": 40.0}
    roof = {"minilm": minilm, "roberta": roberta, "ensemble": {"gflops_total": None, "peak_gflops": None}}
    assert ceiling(roof, 1000) == pytest.approx(250.0)
    assert ceiling({**roof, "roberta": {**roberta, "peak_gflops": None}}, 1000) is None
    assert ceiling({"ensemble": {}}, 1000) is None and ceiling(roof, 0) is None
    # a whole model faster than its peak, no op profile: its own precision's peak goes up
    assert ceiling({**roof, "roberta": {**roberta, "achieved_gflops": 100.0}}, 1000) == pytest.approx(1000 / (2 + 1))
    # an int8 model's GEMMs: its int8 ones raise the int8 peak, its float ones the float peak
    # they ran at (here bf16: RoBERTa's), not the other way round
    profiled = {**minilm, "ops": {"int8_gemm_gflops": 600.0, "float_gemm_gflops": 100.0, "float_gemm_precision": "bf16"}}
    assert effective_peaks({**roof, "minilm": profiled}) == {("openvino", "int8"): 600.0, ("openvino", "bf16"): 100.0}
    assert ceiling({**roof, "minilm": profiled}, 1000) == pytest.approx(1000 / (1 + 1))
    # another runtime's speed does not count
    other = {**roberta, "runtime": "onnxruntime", "achieved_gflops": 500.0}
    assert effective_peaks({**roof, "tfidf_like": other})[("openvino", "bf16")] == 50.0
