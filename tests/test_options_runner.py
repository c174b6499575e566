"""Options validated once at the edge; one model runner behind scoring, gates and bench."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from dataclasses import FrozenInstanceError, replace

import numpy as np
import pytest

from stackscore import fusion
from stackscore.engine.pipeline import fingerprint
from stackscore.engine.readers import Window
from stackscore.engine.runner import TextRunner, TransformerRunner
from stackscore.engine.scorer import Scorer
from stackscore.errors import StackscoreError
from stackscore.export.variants import AUTO_ORDER, VARIANTS
from stackscore.options import ReadOptions, RunOptions, ScoreOptions, WriteOptions, fingerprint_options


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: RunOptions(precision="fp8"), "precision must be one of"),
        (lambda: RunOptions(backend="tensorflow"), "backend must be one of"),
        (lambda: RunOptions(long_text="summarize"), "--long-text must be one of"),
        (lambda: RunOptions(token_budget=0), "token budget must be a positive"),
        (lambda: ReadOptions(window_rows=-1), "--chunk-rows must be a positive"),
        (lambda: ReadOptions(encoding_errors="ignore"), "--encoding-errors must be one of"),
        (lambda: WriteOptions(on_error="drop"), "--on-error must be one of"),
        (lambda: ScoreOptions.from_kwargs(chunk_size=5), "unknown scoring option 'chunk_size'"),
        (lambda: RunOptions(streams=-1), "--streams must be 0"),
        # a string from a config file is truthy: "off" would turn the cascade on, "false" overwrite
        (lambda: RunOptions(cascade="off"), "cascade must be True or False, not 'off'"),
        (lambda: RunOptions(io_binding="yes"), r"io_binding must be True or False \(or None\)"),
        (lambda: RunOptions(threads="2"), "threads must be 0"),
        (lambda: WriteOptions(overwrite="false"), "overwrite must be True or False"),
        (lambda: WriteOptions(resume="no"), "resume must be True or False"),
        (lambda: ScoreOptions.from_kwargs(with_model_outputs=1), "with_model_outputs must be True or False, not 1"),
        (lambda: ScoreOptions(progress="no"), "progress must be True or False"),
    ],
)
def test_each_option_is_checked_when_built(make, message):
    with pytest.raises(StackscoreError, match=message):
        make()


def test_options_are_frozen_and_routed_by_name():
    opts = ScoreOptions.from_kwargs(text_field="body", chunk_rows=7, on_error="skip", precision="auto", progress=False)
    assert (opts.read.text_field, opts.read.window_rows, opts.write.on_error, opts.run.precision, opts.progress) == ("body", 7, "skip", "auto", False)
    with pytest.raises(FrozenInstanceError):
        opts.read.text_field = "other"  # type: ignore[misc]
    base = RunOptions(precision="int8", threads=1)
    assert ScoreOptions.from_kwargs(run=base, token_budget=512).run == replace(base, token_budget=512)


def test_the_cli_refuses_a_bad_option_before_it_opens_anything(tmp_path):
    """A bad --precision is named before the (missing) artifact or input is looked at."""
    r = subprocess.run(
        [sys.executable, "-m", "stackscore.cli", "score", str(tmp_path / "no-artifact"), str(tmp_path / "no-input.jsonl"), "-o", str(tmp_path / "o.jsonl"), "--precision", "fp8"],
        capture_output=True, text=True,
    )
    assert r.returncode == 2 and "precision must be one of" in r.stderr and "no-artifact" not in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_resume_fingerprint_follows_the_output_shaping_options(artifact, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "fine"}\n')
    scorer = Scorer(artifact)
    base = ScoreOptions.from_kwargs()
    fp = fingerprint(src, scorer, base)["options"]
    assert fp == {**fingerprint_options(base), "backends": scorer.describe()}
    for change in ({"with_model_outputs": True}, {"chunk_rows": 5}, {"text_field": "t"}, {"on_error": "skip"}):
        assert fingerprint(src, scorer, ScoreOptions.from_kwargs(**change))["options"] != fp, change
    for same in ({"overwrite": True}, {"label_field": "label"}, {"progress": False}):
        assert fingerprint(src, scorer, ScoreOptions.from_kwargs(**same))["options"] == fp, same


def test_score_file_refuses_a_scorer_built_with_other_run_options(artifact, tmp_path):
    from stackscore.engine.pipeline import score_file

    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "fine"}\n')
    with pytest.raises(StackscoreError, match="other run options"):
        score_file(Scorer(artifact, RunOptions(token_budget=512)), src, tmp_path / "o.jsonl", ScoreOptions.from_kwargs(progress=False))


def test_get_params_means_what_scikit_learn_means():
    rng = np.random.default_rng(0)
    outs = [rng.normal(size=(60, 2)) for _ in range(2)]
    y = rng.integers(0, 2, 60)
    for name, make in fusion.candidates("single_label", C=0.5).items():
        m = make().fit(outs, y)
        params = m.get_params()
        clone = type(m)(**params)
        assert clone.get_params() == params and not hasattr(clone, "n_classes_"), name
        assert all(not k.endswith("_") for k in params), name
    assert fusion.candidates("single_label", C=0.5)["stack"]().get_params()["C"] == 0.5


def test_variants_table_is_what_export_writes_and_choose_reads(artifact):
    from stackscore.manifest import load_manifest

    for spec in load_manifest(artifact).models:
        for key, rel in spec.graphs.items():
            assert key in VARIANTS and rel.endswith(VARIANTS[key].file), (key, rel)
        assert set(spec.parity.get("gates", {})) <= set(VARIANTS)
    assert AUTO_ORDER["cpu"][-1] == AUTO_ORDER["gpu"][-1] == "fp32"


@pytest.mark.parametrize("long_text", ["truncate", "windows"])
def test_a_runner_scores_any_subset_of_a_window_as_it_scores_the_whole(artifact, long_text):
    """What a cascade's later stages run: a subset of rows, batched on its own, same logits."""
    scorer = Scorer(artifact, RunOptions(long_text=long_text))
    texts = [("a long review that goes on " * (i % 7 + 1)) + str(i) for i in range(40)]
    window = scorer.encode(Window(0, list(range(40)), texts, [None] * 40))
    for name, runner in scorer.runners.items():
        full, full_stats = scorer.run_model(name, window)
        for rows in (np.array([3, 17, 5]), np.arange(40)[::-1], np.array([], dtype=np.int64)):
            part, stats = scorer.run_model(name, window, rows)
            assert part.shape == (len(rows), len(scorer.labels))
            np.testing.assert_allclose(part, full[rows], atol=1e-5, err_msg=f"{name} {rows}")
            if isinstance(runner, TransformerRunner) and len(rows) == 3:
                # only the subset's tokens were computed, in batches of their own
                assert 0 < stats.real_tokens < full_stats.real_tokens
        assert isinstance(runner, (TransformerRunner, TextRunner))


def test_a_model_smaller_than_minilm_gets_larger_batches_and_the_same_scores(artifact):
    """Export records each graph's FLOPs per token; on CPUs a model with a fraction of MiniLM's
    work per token gets that many times the token budget, row cap and per-batch overhead (capped
    at MAX_BATCH_SCALE): fewer batches, so fewer runtime calls and new shapes, same scores."""
    from stackscore.engine.batcher import BATCH_OVERHEAD_TOKENS, MAX_BATCH_SCALE, REFERENCE_FLOPS_PER_TOKEN, batch_scale
    from stackscore.manifest import load_manifest
    from stackscore.roofline import graph_cost

    assert [batch_scale(f) for f in (0.0, REFERENCE_FLOPS_PER_TOKEN * 4, REFERENCE_FLOPS_PER_TOKEN, REFERENCE_FLOPS_PER_TOKEN / 3, 1.0)] == [1, 1, 1, 3, MAX_BATCH_SCALE]
    spec = next(m for m in load_manifest(artifact).models if m.kind == "transformer")
    assert spec.flops_per_token == graph_cost(artifact / spec.graphs["fp32"]).per_token > 0
    scale = batch_scale(spec.flops_per_token)
    assert scale > 1  # the test models are far smaller than MiniLM
    opts = RunOptions(precision="fp32", token_budget=64, max_batch_rows=4)
    scaled = Scorer(artifact, opts)
    r = scaled.runners[spec.name]
    assert (r.token_budget, r.max_rows, r.overhead_tokens) == (64 * scale, 4 * scale, BATCH_OVERHEAD_TOKENS * scale)
    plain = Scorer(artifact, replace(opts, scale_batches=False))
    assert (plain.runners[spec.name].token_budget, plain.runners[spec.name].max_rows) == (64, 4)
    texts = [("a fine and moving film " * (i % 5 + 1)) + str(i) for i in range(60)]
    enc = r.encode(texts)
    assert len(list(r.batches(enc))) < len(list(plain.runners[spec.name].batches(enc)))
    a, b = scaled.score_texts(texts), plain.score_texts(texts)
    np.testing.assert_allclose(a.logits[spec.name], b.logits[spec.name], atol=1e-5)
    np.testing.assert_allclose(a.proba, b.proba, atol=1e-6)


def test_gpu_runners_keep_the_budget_their_shape_profiles_were_built_for(artifact):
    from stackscore.engine.batcher import BATCH_OVERHEAD_TOKENS, batch_scale
    from stackscore.engine.runner import batch_geometry
    from stackscore.manifest import load_manifest

    spec = next(m for m in load_manifest(artifact).models if m.kind == "transformer")
    k = batch_scale(spec.flops_per_token)
    assert batch_geometry(spec.flops_per_token, RunOptions(token_budget=100, max_batch_rows=5)) == (100 * k, 5 * k, BATCH_OVERHEAD_TOKENS * k)
    assert batch_geometry(spec.flops_per_token, RunOptions(token_budget=100, max_batch_rows=5, providers=("CUDAExecutionProvider",))) == (100, 5, BATCH_OVERHEAD_TOKENS)
    assert batch_geometry(spec.flops_per_token, RunOptions(token_budget=100, max_batch_rows=5, scale_batches=False)) == (100, 5, BATCH_OVERHEAD_TOKENS)


def test_export_gates_run_through_the_engine_runner(monkeypatch, artifact):
    """The parity gate's logits come from TransformerRunner (the scorer's class), not a side loop."""
    from stackscore.export import onnx_graph

    calls = []
    real = TransformerRunner.logits

    def spy(self, items, width):
        calls.append((self.token_budget, self.max_rows, len(items)))
        return real(self, items, width)

    monkeypatch.setattr(TransformerRunner, "logits", spy)
    from stackscore.manifest import load_manifest

    spec = next(m for m in load_manifest(artifact).models if m.kind == "transformer")
    g = onnx_graph.GateInputs(artifact / spec.tokenizer, spec.max_length, spec.pad_id, ["a fine film", "dull"], list(spec.inputs), 2)
    got = g.logits(g.ort(artifact / spec.graphs["fp32"]))
    scored = Scorer(artifact).score_texts(["a fine film", "dull"])
    np.testing.assert_allclose(got, scored.logits[spec.name], atol=1e-6)
    defaults = RunOptions()
    assert calls == [(defaults.token_budget, defaults.max_batch_rows, 2)]  # a graph of unknown work per token
    # export knows the graph's FLOPs per token: its gates batch exactly as scoring does
    sized = onnx_graph.GateInputs(artifact / spec.tokenizer, spec.max_length, spec.pad_id, ["a fine film"], list(spec.inputs), 2, flops_per_token=spec.flops_per_token)
    gate, scoring = sized.runner(None), Scorer(artifact).runners[spec.name]
    assert (gate.token_budget, gate.max_rows, gate.overhead_tokens) == (scoring.token_budget, scoring.max_rows, scoring.overhead_tokens) != (defaults.token_budget, defaults.max_batch_rows, 64)
    # calibration keeps its own rows per batch (what NNCF sees), whatever the model's size
    calib = onnx_graph.calibration_batches(sized, [f"a review of film {i}" for i in range(20)], rows=8)
    assert len(calib) >= 3 and max(len(b["input_ids"]) for b in calib) <= 8


def test_compiled_model_cache_is_keyed_and_changes_nothing(artifact, tmp_path):
    """--cache-dir: OpenVINO's compiled blobs under a key of graph sha256, runtime version, CPU
    and precision; the scores with a cold and a warm cache equal the uncached ones."""
    pytest.importorskip("openvino")
    from stackscore.manifest import load_manifest

    texts = ["a fine film", "dull and long", "not bad at all"]
    plain = Scorer(artifact, RunOptions(precision="bf16")).score_texts(texts).proba
    cache = tmp_path / "cache"
    for _ in range(2):  # fills, then reads the cache
        got = Scorer(artifact, RunOptions(precision="bf16", cache_dir=cache)).score_texts(texts).proba
        np.testing.assert_allclose(got, plain, atol=1e-6)
    m = load_manifest(artifact)
    shas = {m.files[s.graphs["fp32"]]["sha256"][:32] for s in m.models}
    dirs = sorted(p.name for p in cache.iterdir())
    assert len(dirs) == len(shas) and all(d.startswith("openvino-") and "-bf16-" in d for d in dirs)
    assert {d.rsplit("-", 1)[1] for d in dirs} == shas and all(any(p.iterdir()) for p in cache.iterdir())


def test_score_keeps_compiled_models_in_the_user_cache_dir_unless_told_not_to(artifact, corpus_rows, tmp_path):
    """A plain `score` keeps its compiled models in $XDG_CACHE_HOME/stackscore (a second run imports
    them, same bytes out); --no-cache keeps nothing; a default that cannot be created is no cache
    (the run still scores); a named --cache-dir that cannot be created stops in one line, exit 2."""
    import json
    import os

    pytest.importorskip("openvino")
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in corpus_rows[:40]))
    env = {k: v for k, v in os.environ.items() if k not in ("STACKSCORE_CACHE_DIR", "STACKSCORE_NO_CACHE")}

    def score(out: str, xdg: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "stackscore", "score", str(artifact), str(src), "-o", str(tmp_path / out), "--precision", "bf16", "--quiet", *extra],
                              capture_output=True, text=True, timeout=300, env={**env, "XDG_CACHE_HOME": str(xdg)})

    xdg = tmp_path / "xdg"
    for out in ("a.jsonl", "b.jsonl"):  # fills the cache, then reads it
        r = score(out, xdg)
        assert r.returncode == 0, r.stderr[-500:]
    cache = xdg / "stackscore"
    blobs = sorted(cache.glob("openvino-*/compiled-*.blob"))
    assert len(blobs) == 2 and (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    r = score("c.jsonl", tmp_path / "xdg2", "--no-cache")
    assert r.returncode == 0 and not (tmp_path / "xdg2").exists() and (tmp_path / "c.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes()
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    r = score("d.jsonl", blocked)  # $XDG_CACHE_HOME is a file: no cache, the run goes on
    assert r.returncode == 0 and (tmp_path / "d.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes(), r.stderr[-500:]
    r = score("e.jsonl", xdg, "--cache-dir", str(blocked / "cache"))
    assert r.returncode == 2 and "--cache-dir" in r.stderr and "cannot create it" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "e.jsonl").exists()


def test_the_user_cache_dir_is_never_relative(monkeypatch, tmp_path):
    """A relative XDG_CACHE_HOME is ignored (the XDG spec), and without an absolute home there is
    no default cache: never a cache under whatever directory the run started in."""
    from stackscore.options import cache_dir_for, user_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "stackscore"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "stackscore"
    monkeypatch.setattr("os.path.expanduser", lambda p: p)  # no HOME, no passwd entry: "~" stays "~"
    assert user_cache_dir() is None and cache_dir_for(None) is None
    assert cache_dir_for(tmp_path / "named") == tmp_path / "named" and (tmp_path / "named").is_dir()


def test_onnx_runtime_keeps_its_optimized_graph_under_the_graphs_key(artifact, corpus_rows, tmp_path):
    """With a cache dir, ONNX Runtime's optimized graph is kept per (graph sha256, ORT version,
    CPU, precision) and loaded instead of re-optimizing; scores are the same, cold and warm."""
    from stackscore.manifest import load_manifest

    texts = [r["text"] for r in corpus_rows[:30]]
    plain = Scorer(artifact, RunOptions(precision="fp32", backend="onnxruntime")).score_texts(texts).proba
    cache = tmp_path / "cache"
    for _ in range(2):  # writes, then loads the optimized graphs
        got = Scorer(artifact, RunOptions(precision="fp32", backend="onnxruntime", cache_dir=cache)).score_texts(texts).proba
        np.testing.assert_allclose(got, plain, atol=1e-6)
    m = load_manifest(artifact)
    shas = {m.files[s.graphs["fp32"]]["sha256"][:32] for s in m.models if s.kind == "transformer"}
    dirs = sorted(p for p in cache.iterdir() if p.name.startswith("onnxruntime-"))
    assert {d.name.rsplit("-", 1)[1] for d in dirs} == shas and all("-fp32-" in d.name for d in dirs)
    assert all([f.name for f in d.iterdir()] == ["model.optimized.onnx"] for d in dirs)  # no temporary file left


def _opened_graphs(monkeypatch) -> list[str]:
    """The graph files the scorer verifies from now on (``verify_opened``'s arguments)."""
    import stackscore.engine.scorer as scorer_module

    seen: list[str] = []
    inner = scorer_module.verify_opened

    def spy(directory, manifest, rels):
        seen.extend(r for r in rels if r.endswith(".onnx") and r.startswith("models/"))
        return inner(directory, manifest, rels)

    monkeypatch.setattr(scorer_module, "verify_opened", spy)
    return seen


@pytest.mark.parametrize("precision, backend", [("bf16", "openvino"), ("fp32", "onnxruntime")])
def test_a_cached_run_verifies_the_graph_only_where_it_opens_it(artifact, tmp_path, monkeypatch, precision, backend):
    """With --cache-dir, what was compiled (OpenVINO's blob) or optimized (ONNX Runtime's graph)
    from a verified graph is kept under that graph's checksum, and a cached run opens it instead
    of the graph: the graph is hashed when it is opened (the first run), not by every run (87 MB
    for MiniLM: a sixth of a cached first row). The blob is found from a copy of the artifact
    elsewhere (its key is the graph's checksum, not its path); one OpenVINO cannot import is a
    miss: the graph is verified and compiled again, and the blob written anew."""
    import shutil

    if backend == "openvino":
        pytest.importorskip("openvino")
    texts = ["a fine film", "dull and long", "not bad at all"]
    run = RunOptions(precision=precision, backend=backend, cache_dir=tmp_path / "cache")
    plain = Scorer(artifact, replace(run, cache_dir=None)).score_texts(texts).proba
    opened = _opened_graphs(monkeypatch)
    Scorer(artifact, run)
    transformers = sorted(opened)
    assert len(transformers) == 2  # both transformers' graphs, verified on the cold run
    moved = tmp_path / "moved"
    shutil.copytree(artifact, moved)
    opened.clear()
    np.testing.assert_allclose(Scorer(moved, run).score_texts(texts).proba, plain, atol=1e-6)
    assert opened == []  # neither graph opened, so neither hashed
    if backend == "openvino":
        blobs = sorted((tmp_path / "cache").rglob("compiled-*.blob"))
        assert len(blobs) == 2 and not list((tmp_path / "cache").rglob(".*tmp"))
        blobs[0].write_bytes(b"not a compiled model")
        np.testing.assert_allclose(Scorer(moved, run).score_texts(texts).proba, plain, atol=1e-6)
        assert len(opened) == 1 and blobs[0].stat().st_size > 1000  # that graph verified, compiled, kept again


def test_a_changed_graph_is_refused_before_it_is_compiled_into_the_cache(copy, tmp_path):
    """The graph's checksum still guards every compilation: a graph changed in the artifact with
    no blob for it yet is refused in one line, and nothing compiled from it is kept."""
    pytest.importorskip("openvino")
    from stackscore.errors import ArtifactError
    from stackscore.manifest import load_manifest

    spec = next(s for s in load_manifest(copy).models if s.kind == "transformer")
    graph = copy / spec.graphs["fp32"]
    data = bytearray(graph.read_bytes())
    data[-100] ^= 1  # a flipped bit, same size
    graph.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        Scorer(copy, RunOptions(precision="bf16", backend="openvino", cache_dir=cache))
    assert not [b for b in cache.rglob("*.blob") if load_manifest(copy).files[spec.graphs["fp32"]]["sha256"][:32] in str(b)]


def test_the_optimized_graph_cache_is_for_plain_cpu_sessions_and_leaves_nothing_behind(artifact, tmp_path):
    """Another provider (OpenVINO EP, DNNL ...) compiles nodes ORT cannot save and is not in the
    key: no cache for it. A session that fails to build leaves no temporary file in the cache."""
    import onnxruntime as ort

    from stackscore.engine.backends.ort import _optimized_cache
    from stackscore.manifest import load_manifest

    spec = load_manifest(artifact).models[0]
    graph = artifact / spec.graphs["fp32"]
    opts = RunOptions(precision="fp32", backend="onnxruntime", cache_dir=tmp_path / "cache")
    so = ort.SessionOptions()
    source, finish = _optimized_cache(ort, so, graph, opts, "ab" * 32, "fp32", ["DnnlExecutionProvider", "CPUExecutionProvider"])
    assert source == graph and so.optimized_model_filepath == "" and not (tmp_path / "cache").exists()
    finish(True)
    source, finish = _optimized_cache(ort, so, graph, opts, "ab" * 32, "fp32", ["CPUExecutionProvider"])
    assert source == graph and so.optimized_model_filepath
    Path(so.optimized_model_filepath).write_bytes(b"half a graph")  # what a session that then failed may have written
    finish(False)
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("precision, backend, imports_ahead", [("bf16", "auto", True), ("fp32", "onnxruntime", False)])
def test_openvino_is_imported_ahead_only_when_a_model_runs_on_it(monkeypatch, artifact, precision, backend, imports_ahead):
    """runners_for starts OpenVINO's import on its own thread (it overlaps the checksums and
    tokenizers) when some model will run on it, and never for an ONNX Runtime-only run; the
    models come out the same either way, each with its tokenizer (parsed beside its session)."""
    if precision == "bf16":
        pytest.importorskip("openvino")
    import threading

    from stackscore.engine import runner

    started = []
    real = threading.Thread

    class Spy(real):
        def start(self):
            started.append(self.name)
            return super().start()

    monkeypatch.setattr(runner.threading, "Thread", Spy)
    scorer = Scorer(artifact, RunOptions(precision=precision, backend=backend))
    assert ("import-openvino" in started) is imports_ahead
    transformers = [r for r in scorer.runners.values() if isinstance(r, TransformerRunner)]
    assert transformers and all(r.tokenizer is not None for r in transformers)
    assert {r.describe().split("/")[0] for r in transformers} == {"openvino" if imports_ahead else "onnxruntime"}
    assert scorer.score_texts(["a fine film", "dull"]).proba.shape == (2, len(scorer.labels))


def test_a_tfidf_graph_gets_long_texts_cut_at_its_character_cap():
    """A string-input graph counts n-grams over the whole string (a 12 MB line cost ~300 MB):
    texts reach it cut at TFIDF_MAX_CHARS, the rest untouched and in order."""
    from stackscore.engine.runner import TFIDF_MAX_CHARS, TextRunner

    class Recorder:
        def run_texts(self, texts):
            self.seen = list(texts)
            return np.zeros((len(texts), 2), np.float32)

    backend = Recorder()
    huge = "word " * (TFIDF_MAX_CHARS // 2)
    out, stats = TextRunner("tfidf", backend).run_texts(["short one", huge, "x"], 2)
    assert out.shape == (3, 2) and backend.seen[0] == "short one" and backend.seen[2] == "x"
    assert stats.truncated == 1  # counted in the summary's truncated rows
    assert backend.seen[1] == huge[:TFIDF_MAX_CHARS] and len(huge) > TFIDF_MAX_CHARS
