"""The GPU path, checked on the CPU: provider options, length buckets, IOBinding, fp16 graphs,
and batches dealt over several devices (two CPU "devices" stand in for two GPUs).

What needs a real GPU (CUDA kernels, TensorRT engines, the speed) is measured by
``benchmarks/gpu_check.sh`` when a GPU is lent.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stackscore.engine.backends import choose
from stackscore.options import RunOptions
from stackscore.engine.backends.gpu import CPU, CUDA, TENSORRT, GpuOptions, buckets_for, provider_list, tensorrt_options
from stackscore.engine.batcher import build_batch, plan_batches
from stackscore.engine.scorer import Scorer
from stackscore.manifest import load_manifest

from test_batcher import encoded_from


def test_buckets_end_at_max_length():
    assert buckets_for(512) == (16, 32, 64, 128, 256, 384, 512)
    assert buckets_for(200) == (16, 32, 64, 128, 200)
    assert buckets_for(16) == (16,)


def test_tensorrt_profile_spans_every_batch_the_batcher_can_make(tmp_path):
    opts = tensorrt_options(1, GpuOptions(trt_cache_dir=tmp_path / "trt"), ["input_ids", "attention_mask"], max_length=512, max_rows=256, token_budget=8192, fp16=True)
    assert opts["device_id"] == "1" and opts["trt_fp16_enable"] == "1"
    assert tensorrt_options(1, GpuOptions(), ["input_ids"], max_length=512, max_rows=256, token_budget=8192)["trt_fp16_enable"] == "0"
    assert opts["trt_profile_min_shapes"] == "input_ids:1x16,attention_mask:1x16"
    assert opts["trt_profile_opt_shapes"] == "input_ids:64x128,attention_mask:64x128"
    assert opts["trt_profile_max_shapes"] == "input_ids:256x512,attention_mask:256x512"
    assert opts["trt_engine_cache_enable"] == "1" and (tmp_path / "trt").is_dir()
    assert opts["trt_engine_cache_path"] == str(tmp_path / "trt")


def test_tensorrt_runs_fp16_only_where_that_is_the_precision():
    """--precision fp32 on TensorRT is an fp32 engine (it was always fp16); auto is fp16 only on
    a model whose fp16 gate passed; the description names what runs; int8/bf16 are refused."""
    from stackscore.engine.backends import Choice, choose
    from stackscore.errors import StackscoreError
    from stackscore.manifest import ModelSpec
    from stackscore.options import RunOptions

    def spec(fp16_passed: bool) -> ModelSpec:
        return ModelSpec(name="m", kind="transformer", graphs={"fp32": "a.onnx", "fp16": "b.onnx"}, tokenizer="t.json", max_length=8, pad_id=0,
                         inputs=["input_ids", "attention_mask"], parity={"gates": {"fp16": {"passed": fp16_passed}}})

    trt = dict(providers=(TENSORRT, CUDA, CPU))
    assert choose(spec(True), RunOptions(precision="auto", **trt)) == Choice("onnxruntime", "fp16", "fp32")
    assert choose(spec(False), RunOptions(precision="auto", **trt)) == Choice("onnxruntime", "fp32", "fp32")
    assert choose(spec(True), RunOptions(precision="auto", gpu=GpuOptions(trt_fp16=False), **trt)).precision == "fp32"
    assert choose(spec(True), RunOptions(precision="fp32", **trt)) == Choice("onnxruntime", "fp32", "fp32")
    assert choose(spec(False), RunOptions(precision="fp16", **trt)) == Choice("onnxruntime", "fp16", "fp32")
    with pytest.raises(StackscoreError, match="--device tensorrt builds fp32 or fp16 engines"):
        choose(spec(True), RunOptions(precision="int8", **trt))
    kw = dict(input_names=["input_ids"], max_length=128, max_rows=64, token_budget=4096)
    assert provider_list([TENSORRT, CUDA, CPU], 0, GpuOptions(), **kw)[0][1]["trt_fp16_enable"] == "0"
    assert provider_list([TENSORRT, CUDA, CPU], 0, GpuOptions(), fp16=True, **kw)[0][1]["trt_fp16_enable"] == "1"


def test_provider_list_orders_tensorrt_cuda_cpu_with_device_options():
    gpu = GpuOptions(mem_limit_bytes=8 << 30)
    kw = dict(input_names=["input_ids", "attention_mask"], max_length=128, max_rows=64, token_budget=4096)
    trt = provider_list([TENSORRT, CUDA, CPU], 3, gpu, **kw)
    assert [p if isinstance(p, str) else p[0] for p in trt] == [TENSORRT, CUDA, CPU]
    assert trt[0][1]["device_id"] == "3" and "trt_engine_cache_enable" not in trt[0][1]
    cuda = provider_list([CUDA], 0, gpu, **kw)
    assert cuda[0] == (CUDA, {
        "device_id": "0", "arena_extend_strategy": "kSameAsRequested", "cudnn_conv_algo_search": "HEURISTIC",
        "do_copy_in_default_stream": "1", "gpu_mem_limit": str(8 << 30),
    })
    assert cuda[1] == CPU


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=300), min_size=0, max_size=300),
    budget=st.integers(min_value=16, max_value=8192),
    max_rows=st.integers(min_value=1, max_value=64),
)
def test_bucketed_batches_cover_every_row_once_at_bucket_widths(lengths, budget, max_rows):
    buckets = buckets_for(300)
    enc = encoded_from(lengths, 300)
    groups = plan_batches(enc.lengths, budget, max_rows, buckets=buckets)
    seen = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for g in groups:
        b = build_batch(enc, g, pad_id=0, buckets=buckets)
        width = b.input_ids.shape[1]
        assert width in buckets  # one of a few shapes, never a new one
        assert len(g) <= max_rows and (len(g) == 1 or len(g) * width <= budget)
        # the real tokens are all there, in order, followed by padding
        for row, r in zip(b.input_ids, g):
            n = lengths[r]
            assert row[:n].tolist() == enc.flat[enc.offsets[r] : enc.offsets[r] + n].tolist()
            assert not row[n:].any()


def test_io_binding_gives_the_same_logits_as_plain_run(artifact, corpus_rows):
    texts = [r["text"] for r in corpus_rows[:200]]
    plain = Scorer(artifact, RunOptions(precision="fp32", backend="onnxruntime")).score_texts(texts)
    bound_scorer = Scorer(artifact, RunOptions(precision="fp32", backend="onnxruntime", io_binding=True))
    assert all(b.io_binding for r in bound_scorer.runners.values() for b in r.backends)
    bound = bound_scorer.score_texts(texts)
    np.testing.assert_array_equal(bound.proba, plain.proba)


def test_two_devices_share_the_batches_and_keep_row_order(artifact, corpus_rows):
    """Two GPUs requested, none present: with fallback allowed, two CPU pools play the GPUs."""
    texts = [r["text"] for r in corpus_rows]
    one = Scorer(artifact, RunOptions(precision="fp32", bucket_lengths=True)).score_texts(texts)
    opts = RunOptions(precision="fp32", providers=[CUDA, CPU], allow_cpu_fallback=True, gpu=GpuOptions(device_ids=[0, 1]))
    with pytest.warns(RuntimeWarning, match="falling back"):
        two = Scorer(artifact, replace(opts, token_budget=256))
    assert len(two.runners["bert"].backends) == 2 and two.runners["bert"]._workers is not None
    assert all(w in two.runners["bert"].buckets for w in (16, 32, 64))  # GPU providers asked: lengths bucketed
    got = two.score_texts(texts)
    np.testing.assert_allclose(got.proba, one.proba, atol=1e-5)
    assert got.padded_tokens >= got.real_tokens > 0


def test_fp16_graph_is_fused_gated_and_runs(artifact, corpus_rows):
    import onnx

    m = load_manifest(artifact)
    for s in m.models:
        gate = s.parity["gates"]["fp16"]
        assert gate["min_agreement"] == 0.999 and gate["device"] == "cpu"
        assert gate["passed"] == (gate["label_agreement"] >= 0.999)
        assert ("fp16" in s.graphs) == gate["passed"]
        assert gate["fused_ops"].get("Attention", 0) >= 1, gate["fused_ops"]
        if gate["passed"]:
            g = onnx.load(str(artifact / s.graphs["fp16"])).graph
            assert any(n.op_type == "Attention" for n in g.node)
            assert {i.type.tensor_type.elem_type for i in g.input} == {onnx.TensorProto.INT64}
            assert g.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    if all("fp16" in s.graphs for s in m.models):
        texts = [r["text"] for r in corpus_rows[:200]]
        exact = Scorer(artifact, RunOptions(precision="fp32", backend="onnxruntime")).score_texts(texts)
        half = Scorer(artifact, RunOptions(precision="fp16")).score_texts(texts)
        assert np.abs(half.proba - exact.proba).max() < 0.01
        assert np.mean(half.proba.argmax(1) == exact.proba.argmax(1)) >= 0.99


def test_gpu_auto_precision_is_fp16_on_gpu_providers(artifact):
    gpu = RunOptions(precision="auto", providers=[CUDA, CPU])
    for s in load_manifest(artifact).models:
        assert choose(s, gpu).precision == ("fp16" if "fp16" in s.graphs else "fp32")
        assert choose(s, gpu).backend == "onnxruntime"  # never OpenVINO on a GPU request


def test_cli_device_cuda_without_a_gpu_fails_clearly_then_falls_back_when_allowed(artifact, corpus_rows, tmp_path):
    import json

    from test_end_to_end import run_cli

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in corpus_rows[:50]))
    out = tmp_path / "out.jsonl"
    res = run_cli("score", str(artifact), str(src), "-o", str(out), "--device", "cuda", "--quiet")
    assert res.returncode == 2, res.stderr
    assert "CUDAExecutionProvider not available" in res.stderr and "--allow-cpu-fallback" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_cli("score", str(artifact), str(src), "-o", str(out), "--device", "cuda", "--gpus", "0,1", "--allow-cpu-fallback", "--quiet")
    assert res.returncode == 0, res.stderr
    assert len(out.read_text().splitlines()) == 50
    bad = run_cli("score", str(artifact), str(src), "-o", str(out), "--device", "tpu", "--overwrite", "--quiet")
    assert bad.returncode == 2 and "--device must be cpu, cuda or tensorrt" in bad.stderr


def test_a_provider_lost_at_session_start_is_refused_unless_fallback_is_allowed():
    """ORT drops a GPU provider whose libraries fail to load and retries: that must not pass silently."""
    from stackscore.engine.backends.ort import check_active_providers
    from stackscore.errors import StackscoreError

    asked = [TENSORRT, CUDA, CPU]
    check_active_providers("m", asked, [TENSORRT, CUDA, CPU], allow_fallback=False)  # all there: fine
    with pytest.raises(StackscoreError, match="could not start TensorrtExecutionProvider"):
        check_active_providers("m", asked, [CUDA, CPU], allow_fallback=False)
    with pytest.warns(RuntimeWarning, match="TensorrtExecutionProvider"):
        check_active_providers("m", asked, [CUDA, CPU], allow_fallback=True)


def test_a_cpu_fallback_is_described_as_what_runs(artifact):
    """TensorRT fp16 asked, no GPU providers, fallback allowed: the CPU runs the fp32 graph, and
    the description (what `score` prints and `bench` records) says so, not fp16 on GPU 0."""
    opts = RunOptions(precision="fp16", providers=(TENSORRT, CUDA, CPU), allow_cpu_fallback=True)
    assert choose(load_manifest(artifact).models[0], opts).precision == "fp16"  # what was chosen for TensorRT
    with pytest.warns(RuntimeWarning, match="falling back"):
        s = Scorer(artifact, opts)
    for runner in s.runners.values():
        if hasattr(runner, "backends"):
            assert runner.describe().startswith("onnxruntime/fp32 on the CPU (GPU providers missing)"), runner.describe()
            assert runner.choice.precision == "fp32"


def test_tensorrt_engines_are_kept_per_graph_identity(tmp_path):
    """ONNX Runtime names a TensorRT engine by the model's file and node names, never its weights,
    and every artifact names its graphs alike: a re-fitted artifact scored to the same output, or
    two fine-tunes of one base in one ensemble, would run another model's engine. Each graph's
    engines get a directory of its own (its ``compiled_identity``); layer timings stay shared."""
    gpu = GpuOptions(trt_cache_dir=tmp_path / "trt")
    kw = dict(max_length=128, max_rows=64, token_budget=2048)
    a, b = (tensorrt_options(0, gpu, ["input_ids"], engine_key=k, **kw) for k in ("a" * 64, "b" * 64))
    assert a["trt_engine_cache_path"] != b["trt_engine_cache_path"] and a["trt_timing_cache_path"] == b["trt_timing_cache_path"] == str(tmp_path / "trt")
    assert a["trt_engine_cache_path"] == str(tmp_path / "trt" / ("engines-" + "a" * 32))
    assert provider_list([TENSORRT, CUDA, CPU], 0, gpu, input_names=["input_ids"], engine_key="b" * 64, **kw)[0][1] == b


def test_fp16_graph_of_an_encoder_decoder_keeps_attention_unfused_and_right_on_padded_rows(tmp_path):
    """ONNX Runtime's BERT Attention fusion matched BART's (eager) attention and lost what padding
    does there: padded rows' labels agreed 0.71 with fp32 here and the gate refused the graph every
    time. Encoder-decoders now get the LayerNorm / Gelu fusions only."""
    import sys
    from pathlib import Path

    import onnxruntime as ort
    from transformers import BartConfig, BertConfig

    from stackscore.export.onnx_graph import attention_fusable, fp16_graph, load_for_export, torch_to_onnx

    sys.path.insert(0, str(Path(__file__).parent))
    from checkpoints import make_checkpoint

    assert attention_fusable(BertConfig()) and not attention_fusable(BartConfig())
    model, tok = load_for_export(make_checkpoint(tmp_path / "ckpt", "bart", seed=5))
    torch_to_onnx(model, tmp_path / "fp32.onnx", pad_id=tok.pad_token_id)
    cfg = model.config
    fused = fp16_graph(tmp_path / "fp32.onnx", tmp_path / "fp16.onnx", cfg.num_attention_heads, cfg.hidden_size, fuse_attention=attention_fusable(cfg))
    assert "Attention" not in fused and fused.get("SkipLayerNormalization", 0) >= 1, fused
    rng = np.random.default_rng(0)
    ids = np.full((24, 40), tok.pad_token_id, dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(rng.integers(4, 40, 24)):  # <s> ... </s> then padding
        ids[i, :n] = np.r_[tok.bos_token_id, rng.integers(10, 100, n - 2), tok.eos_token_id]
        mask[i, :n] = 1
    feeds = {"input_ids": ids, "attention_mask": mask}
    ref = ort.InferenceSession(str(tmp_path / "fp32.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    half = ort.InferenceSession(str(tmp_path / "fp16.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.abs(half - ref).max() < 0.02 * max(1.0, np.abs(ref).max()), np.abs(half - ref).max()
    assert (half.argmax(1) == ref.argmax(1)).all()
