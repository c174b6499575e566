"""Several requests in flight per model (streams): same rows out, in order; chosen by measurement
on this machine (`stackscore tune`), recorded under a key that names graph, runtime, precision,
threads and CPU, and read back only for exactly that key."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from stackscore.engine.scorer import Scorer
from stackscore.options import RunOptions
from stackscore.tuning import RECORD, fused_kernel, record, record_key, recorded, tuned


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_two_streams_score_the_same_rows_in_the_same_order(artifact, corpus_rows, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    texts = [r["text"] for r in corpus_rows[:300]]
    one = Scorer(artifact, RunOptions(precision="fp32", backend=backend, token_budget=256, scale_batches=False))
    two = Scorer(artifact, RunOptions(precision="fp32", backend=backend, token_budget=256, scale_batches=False, streams=2))
    assert all(r.backends[0].streams == 2 for r in two.runners.values() if hasattr(r, "backends"))
    a, b = one.score_texts(texts), two.score_texts(texts)
    assert len(b.proba) == len(texts)
    np.testing.assert_allclose(b.proba, a.proba, atol=1e-5)  # other thread counts: float sums may differ in the last bits
    assert (b.proba.argmax(1) == a.proba.argmax(1)).all()
    for name in a.logits:
        np.testing.assert_allclose(b.logits[name], a.logits[name], atol=1e-4)


def test_the_record_is_read_only_for_its_own_key(tmp_path):
    sha = "ab" * 32
    key = record_key("openvino", "bf16", sha, 2, 2048)
    assert "streams" not in recorded(tmp_path, "openvino", "bf16", sha, 2, 2048)  # nothing recorded yet
    record(tmp_path, key, {"streams": 2})
    assert recorded(tmp_path, "openvino", "bf16", sha, 2, 2048).get("streams") == 2
    assert "streams" not in recorded(tmp_path, "openvino", "int8", sha, 2, 2048)  # other precision
    assert "streams" not in recorded(tmp_path, "openvino", "bf16", "cd" * 32, 2, 2048)  # other graph
    assert "streams" not in recorded(tmp_path, "openvino", "bf16", sha, 4, 2048)  # other thread count
    assert "streams" not in recorded(tmp_path, "openvino", "bf16", sha, 2, 4096)  # other batch shapes
    assert "streams" not in recorded(None, "openvino", "bf16", sha, 2, 2048)  # no cache dir
    record(tmp_path, key, {"streams": 9})  # more streams than threads: not trusted
    assert "streams" not in recorded(tmp_path, "openvino", "bf16", sha, 2, 2048)
    (tmp_path / RECORD).write_text("{ not json")
    assert "streams" not in recorded(tmp_path, "openvino", "bf16", sha, 2, 2048)


def test_concurrent_records_keep_every_entry(tmp_path, monkeypatch):
    """Two `tune` runs sharing a cache dir: each read-update-rename is made under one lock
    (``flock`` on its own open file, so threads exclude each other as processes do), so no
    writer's entry is lost to another's rename."""
    import threading
    import time

    from stackscore import tuning

    load = tuning._load

    def slow_load(cache_dir):  # widen the read-to-rename window, as a slow disk would
        data = load(cache_dir)
        time.sleep(0.002)
        return data

    monkeypatch.setattr(tuning, "_load", slow_load)
    keys = [[record_key("openvino", "bf16", f"{w:032x}{i:032x}", 2, 2048) for i in range(40)] for w in range(6)]
    go = threading.Barrier(len(keys))

    def writer(mine: list[str]) -> None:
        go.wait()
        for k in mine:
            record(tmp_path, k, {"streams": 2})

    threads = [threading.Thread(target=writer, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(json.loads((tmp_path / RECORD).read_text())) == {k for mine in keys for k in mine}
    assert not list(tmp_path.glob(f".{RECORD}.*.tmp"))


def test_tune_records_and_score_uses_the_record(artifact, corpus_rows, tmp_path):
    """`stackscore tune` times each model at 1 and 2 streams and records its choice; a scorer with
    that cache dir (streams=0, the default) runs what was recorded, an explicit --streams wins."""
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in corpus_rows[:200]))
    cache = tmp_path / "cache"
    res = subprocess.run([sys.executable, "-m", "stackscore", "tune", str(artifact), "--data", str(data), "--cache-dir", str(cache),
                          "--rows", "200", "--precision", "fp32", "--backend", "onnxruntime", "--json", str(tmp_path / "t.json")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("first pass (new shapes) 1: ") == 2  # reported per model
    measured = json.loads((tmp_path / "t.json").read_text())
    recorded = json.loads((cache / RECORD).read_text())
    assert set(measured) == {"bert", "roberta"}
    for name, m in measured.items():
        assert set(m["rows_per_s"]) >= {"1"} and all(v > 0 for v in m["rows_per_s"].values())
        assert set(m["first_pass_rows_per_s"]) == set(m["rows_per_s"]) and all(v > 0 for v in m["first_pass_rows_per_s"].values())
        assert recorded[m["key"]]["streams"] == m["streams"]
        best = max(m["rows_per_s"].values())
        assert m["streams"] == 1 or m["rows_per_s"][str(m["streams"])] == best
    # Force a known record, then check the scorer reads it per model.
    for m in measured.values():
        record(cache, m["key"], {**m, "streams": 2})
    s = Scorer(artifact, RunOptions(precision="fp32", backend="onnxruntime", cache_dir=cache))
    assert [r.backends[0].streams for r in s.runners.values()] == [2, 2]
    assert "x2 streams" in s.describe()
    s = Scorer(artifact, RunOptions(precision="fp32", backend="onnxruntime", cache_dir=cache, streams=1))
    assert [r.backends[0].streams for r in s.runners.values()] == [1, 1]
    # without --cache-dir: the user cache dir, which `score` reads by default
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("STACKSCORE_CACHE_DIR", "STACKSCORE_NO_CACHE")}
    res = subprocess.run([sys.executable, "-m", "stackscore", "tune", str(artifact), "--data", str(data), "--rows", "50", "--precision", "fp32", "--backend", "onnxruntime"],
                         capture_output=True, text=True, timeout=300, env={**env, "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert res.returncode == 0 and (tmp_path / "xdg" / "stackscore" / RECORD).is_file() and "`stackscore score` uses it" in res.stdout, res.stderr[-500:]
    blocked = tmp_path / "file"
    blocked.write_text("")  # a cache dir that cannot be created
    res = subprocess.run([sys.executable, "-m", "stackscore", "tune", str(artifact), "--data", str(data)], capture_output=True, text=True, timeout=120,
                         env={**env, "XDG_CACHE_HOME": str(blocked)})
    assert res.returncode == 2 and "--cache-dir" in res.stderr and "Traceback" not in res.stderr


def test_without_a_record_openvino_runs_two_streams_on_a_multi_core_cpu(artifact, tmp_path):
    """No `tune` record: an OpenVINO model runs ``DEFAULT_OPENVINO_STREAMS`` requests in flight when
    it has that many threads, one on a single thread; ONNX Runtime keeps one caller; a record (here
    one stream) and an explicit ``streams`` win over the default."""
    from stackscore.engine.runner import DEFAULT_OPENVINO_STREAMS
    from stackscore.manifest import compiled_identity

    def streams(**kw) -> list[int]:
        s = Scorer(artifact, RunOptions(precision="fp32", **kw))
        return [r.backends[0].streams for r in s.runners.values() if hasattr(r, "backends")]

    assert DEFAULT_OPENVINO_STREAMS == 2
    assert streams(backend="openvino", threads=2) == [2, 2]
    assert streams(backend="openvino", threads=1) == [1, 1]
    assert streams(backend="onnxruntime", threads=2) == [1, 1]
    assert streams(backend="openvino", threads=2, streams=1) == [1, 1]
    s = Scorer(artifact, RunOptions(precision="fp32", backend="openvino", threads=2))
    for name, r in s.runners.items():
        spec = next(m for m in s.manifest.models if m.name == name)
        sha = compiled_identity(s.manifest, spec.graphs[r.choice.graph_key])
        record(tmp_path, record_key("openvino", "fp32", sha, 2, r.token_budget), {"streams": 1})
    assert streams(backend="openvino", threads=2, cache_dir=tmp_path) == [1, 1]


def test_a_variant_gated_with_plain_attention_always_runs_plain_attention(artifact, tmp_path):
    """A gate that measured OpenVINO's attention as plain nodes (``attention: "plain"``: the fused
    int8 kernels were wrong there) is what scoring runs, over an explicit or recorded choice of
    the fused kernels; other variants and runtimes are untouched."""
    from dataclasses import replace

    from stackscore.engine.runner import gated_plain_attention, runner_for
    from stackscore.manifest import load_manifest

    m = load_manifest(artifact)
    spec = next(s for s in m.models if s.name == "bert")
    gates = spec.parity["gates"]
    assert gates.get("bf16", {}).get("passed"), "the fixture's bert has a passing bf16 gate"
    plain = replace(spec, parity={**spec.parity, "gates": {**gates, "bf16": {**gates["bf16"], "attention": "plain"}}})
    fused_run = RunOptions(precision="bf16", backend="openvino", fused_attention=True)
    r = runner_for(plain, m, artifact, fused_run)
    assert r.backends[0].fused_attention is False and "plain attention" in r.describe() and gated_plain_attention(plain, r.choice)
    r = runner_for(spec, m, artifact, fused_run)
    assert r.backends[0].fused_attention is True and "plain attention" not in r.describe()
    r = runner_for(plain, m, artifact, RunOptions(precision="fp32", backend="onnxruntime"))
    assert not gated_plain_attention(plain, r.choice)


def test_a_fresh_process_with_two_openvino_streams_finishes(artifact, corpus_rows, tmp_path):
    """Regression: two streams making a process's first OpenVINO calls at once deadlocked it (the
    binding initializes C++ statics under the GIL on first use); each run is a new process."""
    pytest.importorskip("openvino")
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in corpus_rows[:400]))
    for i in range(3):
        out = tmp_path / f"out{i}.jsonl"
        res = subprocess.run([sys.executable, "-m", "stackscore", "score", str(artifact), str(data), "-o", str(out), "--quiet",
                              "--backend", "openvino", "--precision", "fp32", "--streams", "2", "--token-budget", "128"],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert len(out.read_text().splitlines()) == 400


def test_an_openvino_backends_first_call_is_made_alone(artifact, monkeypatch):
    """The mechanism behind the fix above (the race itself is rare on a tiny model): the process's
    first inference of a kind (input and output types) holds the module's first-call lock, and
    is made while the first model of that kind loads (a one-row batch), so every scoring call
    runs freely, concurrently: the first model's streams too, and every later model's (the
    binding's statics are the process's). A kind not called yet is made alone again; a load-time
    call that fails leaves the kind to the first real call."""
    pytest.importorskip("openvino")
    from stackscore.engine.backends import ov

    monkeypatch.setattr(ov, "_called", set())  # as in a fresh process
    scorer = Scorer(artifact, RunOptions(precision="fp32", backend="openvino", streams=2))
    backend = scorer.runners["bert"].backends[0]
    assert backend.signature in ov._called  # made while it loaded
    other = Scorer(artifact, RunOptions(precision="fp32", backend="openvino", streams=2)).runners["bert"].backends[0]
    assert other is not backend and other.signature == backend.signature
    seen = []

    class Spy:
        def __init__(self, infer):
            self.infer_real = infer

        def infer(self, feeds):
            seen.append(ov._FIRST_CALL.locked())
            return self.infer_real(feeds)

    for b in (backend, other):
        b.requests = [Spy(r.infer) for r in b.requests]
    ids = np.full((2, 8), 5, dtype=np.int64)
    for slot in (0, 1, 0):
        backend.run(ids, np.ones_like(ids), slot=slot)
    other.run(ids, np.ones_like(ids), slot=1)
    assert seen == [False, False, False, False]
    # a kind of call not made yet in this process (other input types) is made alone again
    other.signature = (("i32", "i32"), "f32")
    other.run(ids, np.ones_like(ids), slot=0)
    other.run(ids, np.ones_like(ids), slot=1)
    assert seen[-2:] == [True, False] and other.signature in ov._called

    # a load-time call that fails marks nothing: the first real call goes alone and reports
    class Failing:
        def infer(self, feeds):
            raise RuntimeError("no")

    other.requests, other.signature = [Failing()], (("i16", "i16"), "f32")
    other._first_call(scorer.manifest.models[0])
    assert other.signature not in ov._called


def test_a_first_call_of_a_kind_in_flight_holds_back_every_other_of_that_kind(artifact, monkeypatch):
    """While the process's first call of a kind runs (under the lock), another backend's call of
    the same kind waits for it, then runs without the lock: the kind is marked done only after
    the first call returned, and a waiter looks again once it has the lock (the path a scoring
    call takes where the load-time call failed)."""
    pytest.importorskip("openvino")
    import threading

    from stackscore.engine.backends import ov

    monkeypatch.setattr(ov, "_called", set())
    first, second = (Scorer(artifact, RunOptions(precision="fp32", backend="openvino", streams=1)).runners["bert"].backends[0] for _ in range(2))
    release, entered, second_entered = threading.Event(), threading.Event(), threading.Event()
    second_locked = []

    class Blocking:
        def __init__(self, infer):
            self.infer_real = infer

        def infer(self, feeds):
            entered.set()
            assert release.wait(30)
            return self.infer_real(feeds)

    class Recording:
        def __init__(self, infer):
            self.infer_real = infer

        def infer(self, feeds):
            second_locked.append(ov._FIRST_CALL.locked())
            second_entered.set()
            return self.infer_real(feeds)

    first.requests = [Blocking(first.requests[0].infer)]
    second.requests = [Recording(second.requests[0].infer)]
    ov._called.clear()  # as if the load-time call had failed: the first scoring call is the first of its kind
    ids = np.full((2, 8), 5, dtype=np.int64)
    threads = [threading.Thread(target=b.run, args=(ids, np.ones_like(ids))) for b in (first, second)]
    threads[0].start()
    try:
        assert entered.wait(30)
        threads[1].start()
        assert not second_entered.wait(0.3)  # the first call of its kind is still running
        assert first.signature not in ov._called
    finally:
        release.set()
        for t in threads:
            if t.is_alive():
                t.join(30)
    assert second_locked == [False] and first.signature in ov._called


def test_an_openvino_runner_keeps_meeting_the_same_few_shapes(artifact, corpus_rows):
    """OpenVINO prepares kernels per batch shape; its runner's plans prefer one fixed shape per
    width (a long job met ~30 new shapes per window), with the same scores, and a window's plan
    does not depend on the windows before it (resume and Ray stay byte-identical). ONNX Runtime
    runners plan as before."""
    pytest.importorskip("openvino")
    texts = [r["text"] for r in corpus_rows]
    windows = [texts[i : i + 150] for i in range(0, 600, 150)]
    lean = Scorer(artifact, RunOptions(precision="fp32", backend="openvino", token_budget=256, scale_batches=False)).runners["bert"]
    plain = Scorer(artifact, RunOptions(precision="fp32", backend="onnxruntime", token_budget=256, scale_batches=False)).runners["bert"]
    assert lean.new_shape_tokens > 0 and plain.new_shape_tokens == 0

    def new_shapes(runner):
        seen, fresh = set(), []
        for w in windows:
            shapes = {b.input_ids.shape for b in runner.batches(runner.encode(w))}
            fresh.append(len(shapes - seen))
            seen |= shapes
        return fresh

    lean_new, plain_new = new_shapes(lean), new_shapes(plain)
    assert sum(lean_new[1:]) < sum(plain_new[1:])
    fresh = Scorer(artifact, RunOptions(precision="fp32", backend="openvino", token_budget=256, scale_batches=False)).runners["bert"]
    enc = fresh.encode(windows[3])
    assert [b.rows.tolist() for b in fresh.batches(enc)] == [b.rows.tolist() for b in lean.batches(lean.encode(windows[3]))]
    np.testing.assert_allclose(lean.logits(windows[3], 2), plain.logits(windows[3], 2), atol=1e-4)


def test_a_multi_stream_runner_splits_a_one_batch_window_across_its_streams(artifact):
    """20 short rows plan as one batch; on two streams they run as two, same logits as one stream."""
    one = Scorer(artifact, RunOptions(precision="fp32", backend="onnxruntime", streams=1))
    two = Scorer(artifact, RunOptions(precision="fp32", backend="onnxruntime", streams=2))
    texts = [f"a short review {i}" for i in range(20)]
    for name, r in two.runners.items():
        if r.kind != "transformer":
            continue
        enc = r.encode(texts)
        assert len(list(one.runners[name].batches(enc))) == 1 and len(list(r.batches(enc))) == 2
    np.testing.assert_allclose(one.score_texts(texts).proba, two.score_texts(texts).proba, atol=1e-6)


def test_openvino_models_build_at_once_and_leave_the_locale_alone(artifact, tmp_path):
    """Models load on a thread each and their OpenVINO compilations run at once (a barrier in
    the compilation makes both models' be inside together, or fails), in the caller's locale:
    only a blob's export or import (with a cache directory) runs in the "C" locale that
    ``c_locale_while_building`` holds across them (OpenVINO's own cache manager, used before,
    left the process in "C" when two ran at once; seen: a later subprocess's UTF-8 output
    failed to decode). Six two-model loads, cold, cached (imports: no compilation) and uncached,
    never hang and put the caller's locale back."""
    pytest.importorskip("openvino")
    import locale
    import threading

    from stackscore.engine.backends import ov

    real, during = ov.OpenVinoBackend._compile, []
    together = threading.Barrier(2, timeout=60)

    def spy(*a, **k):
        during.append(locale.setlocale(locale.LC_ALL))
        together.wait()
        return real(*a, **k)

    before, seen = locale.setlocale(locale.LC_ALL), []
    caches = [tmp_path / "cache0", tmp_path / "cache1", None]

    def loads():
        for i in range(6):
            scorer = Scorer(artifact, RunOptions(precision="bf16", cache_dir=caches[i % 3]))
            seen.append((scorer.score_texts(["a fine film", "dull"]).proba.shape, locale.setlocale(locale.LC_ALL)))

    ov.OpenVinoBackend._compile = staticmethod(spy)
    try:
        worker = threading.Thread(target=loads, daemon=True)
        worker.start()
        worker.join(timeout=300)
    finally:
        ov.OpenVinoBackend._compile = staticmethod(real)
    assert not worker.is_alive(), "loading two OpenVINO models at once hung"
    assert seen == [((2, 2), before)] * 6, "a compilation did not overlap the other model's, or the locale moved"
    assert during == [before] * 8  # loads 0, 1, 2, 5 compile; 3 and 4 import their blobs


def test_c_locale_while_building_restores_the_callers_locale_once_the_last_build_ends():
    """Overlapping builds on two threads: "C" from the first's start to the last's end, then the
    caller's locale (a non-C one where the machine has it), whatever order they end in."""
    import locale
    import threading

    from stackscore.engine.backends.ov import c_locale_while_building

    before = locale.setlocale(locale.LC_ALL)
    for name in ("C.UTF-8", "en_US.UTF-8"):
        try:
            locale.setlocale(locale.LC_ALL, name)
            break
        except locale.Error:
            continue
    caller = locale.setlocale(locale.LC_ALL)
    if caller == "C":
        locale.setlocale(locale.LC_ALL, before)
        pytest.skip("no locale other than C on this machine: nothing to tell apart")
    try:
        first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
        seen = {}

        def first():
            with c_locale_while_building():
                first_in.set()
                second_in.wait(10)
                seen["first"] = locale.setlocale(locale.LC_ALL)
            first_out.set()

        def second():
            first_in.wait(10)
            with c_locale_while_building():
                second_in.set()
                first_out.wait(10)
                seen["second, after the first ended"] = locale.setlocale(locale.LC_ALL)

        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert seen == {"first": "C", "second, after the first ended": "C"}
        assert locale.setlocale(locale.LC_ALL) == caller
        with pytest.raises(RuntimeError, match="a build failed"):  # a failed build puts it back too
            with c_locale_while_building():
                raise RuntimeError("a build failed")
        assert locale.setlocale(locale.LC_ALL) == caller
    finally:
        locale.setlocale(locale.LC_ALL, before)


class _Failing:
    """A two-stream backend whose second call fails (and counts what it was asked to run)."""

    streams = 2

    def __init__(self):
        self.calls = 0

    def run(self, ids, mask, types=None, slot=0):
        import time

        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("device lost")
        time.sleep(0.01)
        return np.zeros((len(ids), 2), np.float32)


def test_a_failing_stream_stops_the_others_and_its_error_surfaces(artifact):
    """One caller's error stops the other at its next batch (not after the whole window) and is
    what the window raises; the pool is sized for every stream whatever the first window held."""
    from stackscore.engine.batcher import Batch
    from stackscore.engine.runner import TransformerRunner

    runner = Scorer(artifact, RunOptions(precision="fp32", backend="onnxruntime")).runners["bert"]
    backend = _Failing()
    r = TransformerRunner("x", runner.tokenizer, 0, [backend], 2048, 256)
    assert r._streams is not None and r._streams._max_workers == 2
    ids = np.ones((1, 4), np.int64)
    batches = [Batch(np.array([i]), ids, ids) for i in range(100)]
    with pytest.raises(RuntimeError, match="device lost"):
        r.run_batches(batches, 2)
    assert backend.calls < 10  # not the 100 batches of the window


def test_a_run_resumes_with_other_stream_counts(artifact, corpus_rows, tmp_path):
    """Streams split the same work like thread counts do: an interrupted run resumes after a
    `stackscore tune` changed them (the runtime and precision must still match)."""
    from stackscore.engine.pipeline import fingerprint
    from stackscore.engine.runner import streams_note, without_tuning
    from stackscore.options import ScoreOptions

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in corpus_rows[:10]))
    prints = []
    for streams in (1, 2):
        s = Scorer(artifact, RunOptions(precision="fp32", backend="onnxruntime", streams=streams))
        prints.append(fingerprint(data, s, ScoreOptions.from_kwargs(run=s.options), None))
    assert prints[0] == prints[1]
    assert without_tuning("bert: openvino/bf16 x2 streams, tfidf: onnxruntime/tfidf") == "bert: openvino/bf16, tfidf: onnxruntime/tfidf"
    assert all(without_tuning(f"bert: openvino/int8{streams_note(n)}") == "bert: openvino/int8" for n in (1, 2, 12))


def test_openvino_runs_attention_as_plain_nodes_where_tune_chose_it(artifact, corpus_rows, tmp_path):
    """A recorded ``fused_attention: false`` compiles each OpenVINO model with its attention blocks
    as plain MatMul/Softmax nodes (no fused "Subgraph" kernel), says so in the description, scores
    the same rows as the fused kernels, and does not change what a resume must match; an explicit
    ``RunOptions(fused_attention=True)`` wins over the record."""
    pytest.importorskip("openvino")
    from stackscore.engine.runner import without_tuning

    texts = [r["text"] for r in corpus_rows[:120]]
    run = RunOptions(precision="fp32", backend="openvino", cache_dir=tmp_path, streams=1)
    fused = Scorer(artifact, run)
    for spec in fused.manifest.models:
        sha = fused.manifest.files[spec.graphs["fp32"]]["sha256"]
        record(tmp_path, record_key("openvino", "fp32", sha, run.cpu_threads, fused.runners[spec.name].token_budget), {"streams": 1, "fused_attention": False, "fused_kernel": fused_kernel()})
    plain = Scorer(artifact, replace_run(run, streams=0))
    kinds = {name: {op.get_rt_info()["layerType"].astype(str) for op in r.backends[0].compiled.get_runtime_model().get_ordered_ops()} for name, r in plain.runners.items()}
    assert [r.backends[0].fused_attention for r in plain.runners.values()] == [False, False]
    assert all("Softmax" in k and "Subgraph" not in k for k in kinds.values()), kinds
    fused_kinds = {op.get_rt_info()["layerType"].astype(str) for r in fused.runners.values() for op in r.backends[0].compiled.get_runtime_model().get_ordered_ops()}
    if "Softmax" not in fused_kinds:  # this CPU fuses attention: the two compiled models (and caches) differ
        assert "Subgraph" in fused_kinds
    assert plain.describe().count("plain attention") == 2 and "plain attention" not in fused.describe()
    assert without_tuning(plain.describe()) == without_tuning(fused.describe())
    a, b = fused.score_texts(texts), plain.score_texts(texts)
    np.testing.assert_allclose(b.proba, a.proba, atol=1e-5)
    assert (b.proba.argmax(1) == a.proba.argmax(1)).all()
    again = Scorer(artifact, replace_run(run, streams=0, fused_attention=True))
    assert [r.backends[0].fused_attention for r in again.runners.values()] == [True, True]
    # A record made before fused attention became one SDPA node per block (no ``fused_kernel``):
    # its choice was measured against the old kernel and is not read; its streams still are.
    for spec in fused.manifest.models:
        sha = fused.manifest.files[spec.graphs["fp32"]]["sha256"]
        record(tmp_path, record_key("openvino", "fp32", sha, run.cpu_threads, fused.runners[spec.name].token_budget), {"streams": 2, "fused_attention": False})
    stale = Scorer(artifact, replace_run(run, streams=0))
    assert [(r.backends[0].fused_attention, r.backends[0].streams) for r in stale.runners.values()] == [(True, 2), (True, 2)]
    assert not tuned(tmp_path, fused.manifest)  # so `score` still says how to tune


def test_tune_times_openvino_attention_both_ways_and_records_the_choice(artifact, corpus_rows, tmp_path, monkeypatch):
    """Each candidate is built with its kernels named (an earlier record is never read while
    tuning), plain attention is really timed plain, agrees with the fused kernels on the rows, and
    the record says what ``prefer_plain`` makes of the figures."""
    pytest.importorskip("openvino")
    from stackscore.engine.backends import ov
    from stackscore.tuning import MIN_ATTENTION_AGREEMENT, measure, prefer_plain, recorded

    texts = [r["text"] for r in corpus_rows[:150]]
    run = RunOptions(precision="fp32", backend="openvino", cache_dir=tmp_path)
    base = Scorer(artifact, replace_run(run, streams=1))
    for spec in base.manifest.models:  # a stale record that would make every build plain, 2 streams
        sha = base.manifest.files[spec.graphs["fp32"]]["sha256"]
        record(tmp_path, record_key("openvino", "fp32", sha, run.cpu_threads, base.runners[spec.name].token_budget), {"streams": 2, "fused_attention": False, "fused_kernel": fused_kernel()})
    built = []
    init = ov.OpenVinoBackend.__init__

    def spy(self, *a, **kw):
        built.append((kw.get("streams"), kw.get("fused_attention")))
        init(self, *a, **kw)

    monkeypatch.setattr(ov.OpenVinoBackend, "__init__", spy)
    result = measure(artifact, texts, run, candidates=(1,), log=lambda *_: None)
    assert built == [(1, True), (1, True), (1, False), (1, False)]  # base builds (both models), then each model's plain candidate
    assert set(result) == {"bert", "roberta"}
    for m in result.values():
        plain, n = m["plain_attention"], str(m["streams"])
        assert plain["rows_per_s"] > 0 and plain["first_pass_rows_per_s"] > 0 and plain["agreement"] >= MIN_ATTENTION_AGREEMENT
        assert m["fused_attention"] is (not prefer_plain(plain["rows_per_s"], plain["first_pass_rows_per_s"], plain["fused_rows_per_s"], m["first_pass_rows_per_s"][n]))
        record(tmp_path, m["key"], {k: v for k, v in m.items() if k != "key"})
        assert recorded(tmp_path, "openvino", "fp32", m["graph_sha256"], run.cpu_threads, m["token_budget"]) == {"streams": m["streams"], "fused_attention": m["fused_attention"]}
        assert m["fused_kernel"] == fused_kernel()  # what the choice was measured against
    assert tuned(tmp_path, base.manifest)  # a fresh record silences `score`'s hint
    record(tmp_path, next(iter(result.values()))["key"], {"streams": 1, "fused_attention": "no"})  # not a bool: not trusted
    m = next(iter(result.values()))
    assert recorded(tmp_path, "openvino", "fp32", m["graph_sha256"], run.cpu_threads, m["token_budget"]) == {"streams": 1}


def test_tune_times_its_candidates_taking_turns():
    """Each candidate's first pass once, one after the other, then warm passes in rounds, the
    candidates taking turns (a drifting machine slows all of them alike), best of the rounds."""
    import time

    from stackscore.tuning import WARM_ROUNDS, taking_turns

    calls = []

    class Timed:
        def __init__(self, name, seconds):
            self.name, self.seconds = name, seconds

        def run_batches(self, batches, width):
            calls.append(self.name)
            time.sleep(self.seconds)

    first, warm = taking_turns({"a": Timed("a", 0.02), "b": Timed("b", 0.04)}, [], 2, 100, first_pass={"b"})
    assert calls == ["b"] + ["a", "b"] * WARM_ROUNDS
    assert set(first) == {"b"} and set(warm) == {"a", "b"}
    assert warm["a"] > warm["b"] and 100 / 0.02 >= warm["a"] > 100 / 0.2  # rows per second of the best round


@pytest.mark.parametrize("plain, plain_first, chosen", [
    (100, 150, "plain"),  # same warm speed, first pass half as fast again: plain
    (98, 150, "plain"),  # 2 % slower warm is noise; the first pass decides
    (95, 200, "fused"),  # 5 % slower for a long job: fused, whatever the first pass
    (104, 90, "plain"),  # faster for a long job, whatever the first pass
    (100, 101, "fused"),  # nothing gained beyond noise: OpenVINO's default stays
])
def test_plain_attention_is_chosen_only_where_it_pays(plain, plain_first, chosen):
    from stackscore.tuning import prefer_plain

    assert ("plain" if prefer_plain(plain, plain_first, 100, 100) else "fused") == chosen


def replace_run(run: RunOptions, **changes) -> RunOptions:
    from dataclasses import replace

    return replace(run, **changes)


def test_a_plain_score_of_a_large_file_says_how_to_tune_it(artifact, tmp_path):
    """Without a `tune` record a `score` runs the default streams and attention kernels: on large
    enough files it says how to measure them, once; not where the cache dir holds a record, nor
    with --streams given, nor with --quiet."""
    import os

    from stackscore.train.corpus import generate

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: nothing to tune")
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": e.text}) + "\n" for e in generate(1000, seed=3)))

    def hints(*extra: str) -> list[str]:
        r = subprocess.run([sys.executable, "-m", "stackscore", "score", str(artifact), str(src), "-o", str(tmp_path / "o.jsonl"), "--overwrite", *extra],
                           capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "STACKSCORE_CACHE_DIR"})
        assert r.returncode == 0, r.stderr[-500:]
        return [l for l in r.stderr.splitlines() if l.startswith("hint:")]

    plain = hints()  # the tests run with STACKSCORE_NO_CACHE=1 (conftest)
    assert len(plain) == 1 and "stackscore tune" in plain[0] and "--cache-dir DIR" in plain[0]
    cache = tmp_path / "cache"
    named = hints("--cache-dir", str(cache))
    assert len(named) == 1 and f"--cache-dir {cache}" in named[0]  # a cache dir without a record
    record(cache, "openvino/bf16/threads2/budget2048/cpuX/" + "ab" * 16, {"streams": 2})  # another artifact's record
    assert len(hints("--cache-dir", str(cache))) == 1
    from stackscore.manifest import load_manifest

    m = load_manifest(artifact)
    sha = m.files[m.models[0].graphs["fp32"]]["sha256"][:32]
    record(cache, "openvino/bf16/threads2/budget2048/cpuX/" + sha, {"streams": 2})  # this artifact's
    assert hints("--cache-dir", str(cache)) == [] and hints("--streams", "1") == [] and hints("--quiet") == []


def test_plain_attention_is_compared_in_what_the_task_answers():
    """`tune` compared a multi-label model's plain and fused attention on its top label and a
    regression value on its sign (any two values of one sign agreed)."""
    from stackscore.tuning import attention_agreement

    class R:
        def __init__(self, out):
            self.out = out

        def run_batch(self, b):
            return self.out[b]

    batches = [np.arange(0, 50), np.arange(50, 100)]
    values = np.linspace(1.0, 5.0, 100)[:, None]
    assert attention_agreement(R(values), R(values * 1.5), batches, "regression") < 0.1  # same sign, other values
    assert attention_agreement(R(values), R(values + 0.001), batches, "regression") == 1.0
    logits = np.tile([[4.0, 1.0, -2.0]], (100, 1))
    moved = logits.copy()
    moved[:30, 2] = 2.0  # a second label turns on; the top label stays
    assert attention_agreement(R(logits), R(moved), batches, "multi_label") == 0.7
    assert attention_agreement(R(logits), R(moved), batches, "single_label") == 1.0


def test_auto_on_a_mix_the_ensemble_gate_did_not_measure_says_so(artifact, tmp_path):
    """Export's ensemble gate measures the mix `auto` runs on the export machine; on another CPU,
    or under --backend, auto may run another mix (each model within its own gate): one note line."""
    from stackscore.manifest import load_manifest

    gated = load_manifest(artifact, verify=False).fusion.parity["ensemble_auto"]["runs"]
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a great film"}\n{"text": "dull"}\n')

    def notes(*extra: str) -> list[str]:
        r = subprocess.run([sys.executable, "-m", "stackscore", "score", str(artifact), str(src), "-o", str(tmp_path / "o.jsonl"), "--overwrite", *extra],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-500:]
        return [l for l in r.stderr.splitlines() if l.startswith("note: export's ensemble gate")]

    assert notes() == []  # the export machine's own mix
    assert len(notes("--backend", "onnxruntime")) == ("openvino" in gated)
    assert notes("--backend", "onnxruntime", "--precision", "fp32") == []  # exact: nothing to measure


def test_openvino_runs_each_encoder_attention_block_as_one_sdpa_node(artifact, tmp_path):
    """With OpenVINO's fused attention the graph's spelled-out attention blocks are rewritten as
    ``ScaledDotProductAttention`` nodes (the same kernel, a cheaper first call per batch shape):
    every block of each fixture encoder, the same outputs on padded batches of several shapes, at
    f32 and (where the CPU has it) bf16; never with plain attention; the compiled blobs kept in a
    directory of their own. A graph with a Softmax that is no attention block is left alone."""
    ov = pytest.importorskip("openvino")
    import onnx
    from onnx import TensorProto, helper

    from stackscore.engine.backends import compile_cache_dir, cpu_has_bf16, graph_feeds
    from stackscore.engine.backends.ov import SDPA_TAG, OpenVinoBackend, attention_as_sdpa
    from stackscore.manifest import load_manifest

    m = load_manifest(artifact)
    core = ov.Core()
    rng = np.random.default_rng(0)
    encoders = [s for s in m.models if s.kind == "transformer"]
    assert encoders
    for spec in encoders:
        graph = artifact / spec.graphs["fp32"]
        model = core.read_model(str(graph))
        blocks = sum(op.get_type_name() == "Softmax" for op in model.get_ordered_ops())
        assert attention_as_sdpa(model) == blocks > 0, spec.name
        types = [op.get_type_name() for op in model.get_ordered_ops()]
        assert types.count("ScaledDotProductAttention") == blocks and "Softmax" not in types
        names = [i.get_any_name() for i in model.inputs]
        for hint in ("f32", "bf16") if cpu_has_bf16() else ("f32",):
            cfg = {"INFERENCE_PRECISION_HINT": hint}
            spelled = core.compile_model(core.read_model(str(graph)), "CPU", cfg).create_infer_request()
            fused = core.compile_model(model, "CPU", cfg).create_infer_request()
            for rows, length in ((1, 2), (3, 9), (8, min(spec.max_length, 24)), (2, spec.max_length)):
                ids = rng.integers(5, 100, size=(rows, length)).astype(np.int64)
                mask = (np.arange(length)[None, :] < rng.integers(1, length + 1, size=(rows, 1))).astype(np.int64)
                feeds = graph_feeds(ids, mask, names)
                want, got = spelled.infer(feeds)[0], fused.infer(feeds)[0]
                np.testing.assert_allclose(got, want, rtol=1e-5 if hint == "f32" else 2e-2, atol=1e-5 if hint == "f32" else 2e-2, err_msg=f"{spec.name} {hint} {rows}x{length}")
                assert (got.argmax(-1) == want.argmax(-1)).all() or hint == "bf16"

    spec = encoders[0]
    graph = artifact / spec.graphs["fp32"]
    sha = m.files[spec.graphs["fp32"]]["sha256"]
    for fused_attention, rewritten in ((True, True), (False, False)):
        opts = RunOptions(precision="fp32", backend="openvino", cache_dir=tmp_path / f"cache-{fused_attention}")
        b = OpenVinoBackend(graph, spec, opts, "fp32", graph_sha256=sha, fused_attention=fused_attention)
        assert (b.sdpa_blocks or 0) > 0 if rewritten else b.sdpa_blocks == 0  # read, none rewritten
        kept = compile_cache_dir(opts, "openvino", ov.__version__, sha, "fp32" + (SDPA_TAG if fused_attention else "-plainattn"))
        assert any(kept.glob("compiled-*.blob")), kept
        again = OpenVinoBackend(graph, spec, opts, "fp32", graph_sha256=sha, fused_attention=fused_attention)
        assert again.sdpa_blocks is None  # imported from the blob: the graph was not read

    # a Softmax over a MatMul that is no attention block (no scale, no mask): nothing rewritten
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 3], rng.standard_normal(9).astype(np.float32).tolist())
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["s"]), helper.make_node("Softmax", ["s"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "w"], ["y"])], "g", [x], [y], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "plain.onnx"))
    other = core.read_model(str(tmp_path / "plain.onnx"))
    assert attention_as_sdpa(other) == 0
    assert [op.get_type_name() for op in other.get_ordered_ops()].count("Softmax") == 1


@pytest.mark.parametrize("form", ["as-exported", "operands-swapped", "k-heads-first", "scale-not-constant"])
def test_the_attention_rewrite_takes_the_block_in_any_operand_order_and_nothing_else(form, tmp_path):
    """The matcher on one synthetic block: the mask made by a Multiply (as older exports build it)
    with the Add's and the scale's operands in either order, K given as [batch, length, heads,
    size] or [batch, heads, length, size]; the same outputs after the rewrite. A scale that is not
    a constant is no attention block it knows: left alone."""
    ov = pytest.importorskip("openvino")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from stackscore.engine.backends.ov import attention_as_sdpa

    b, h, n, d = 2, 3, 5, 4
    rng = np.random.default_rng(0)
    swapped = form == "operands-swapped"
    heads_first = form == "k-heads-first"
    k_shape = [b, h, n, d] if heads_first else [b, n, h, d]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in
              (("q", [b, h, n, d]), ("k", k_shape), ("v", [b, h, n, d]), ("keep", [b, 1, 1, n]), ("s", []))]
    scale = "s" if form == "scale-not-constant" else "c"
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2] if heads_first else [0, 2, 3, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["qk"]),
        helper.make_node("Mul", [scale, "qk"] if swapped else ["qk", scale], ["scaled"]),
        helper.make_node("Sub", ["one", "keep"], ["drop"]),
        helper.make_node("Mul", ["drop", "big"], ["mask"]),  # (1 - mask) * -1e4: a Multiply too
        helper.make_node("Add", ["mask", "scaled"] if swapped else ["scaled", "mask"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["out"]),
    ]
    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "c"), numpy_helper.from_array(np.array(1.0, np.float32), "one"), numpy_helper.from_array(np.array(-1e4, np.float32), "big")]
    graph = helper.make_graph(nodes, "attention", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [b, h, n, d])], inits)
    path = tmp_path / "attention.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))

    core = ov.Core()
    model = core.read_model(str(path))
    assert attention_as_sdpa(model) == (0 if form == "scale-not-constant" else 1)
    keep = np.ones((b, 1, 1, n), np.float32)
    keep[0, ..., 3:] = 0
    feeds = {"q": rng.standard_normal((b, h, n, d)).astype(np.float32), "k": rng.standard_normal(k_shape).astype(np.float32),
             "v": rng.standard_normal((b, h, n, d)).astype(np.float32), "keep": keep, "s": np.array(0.5, np.float32)}
    want = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request().infer(feeds)[0]
    got = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request().infer(feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_graph_the_runtime_cannot_run_stops_in_one_line_naming_it(artifact, backend, monkeypatch):
    """A runtime that opened a graph and then fails on a batch (OpenVINO on a BigBird-Pegasus
    graph under a forced `--backend openvino`: an error in a fused kernel) is reported as the
    graph and the batch it could not run, an artifact error (exit 2), not a bug report."""
    if backend == "openvino":
        pytest.importorskip("openvino")
    from stackscore.errors import ArtifactError

    scorer = Scorer(artifact, RunOptions(precision="fp32", backend=backend))
    runner = scorer.runners["bert"]
    b = runner.backends[0]

    def broken(*a, **k):
        raise RuntimeError("Exception from src/plugins/intel_cpu/src/node.cpp:794:\n[CPU] Subgraph node failed to execute")

    if backend == "openvino":
        monkeypatch.setattr(b, "requests", [type("R", (), {"infer": staticmethod(broken)})() for _ in b.requests])
    else:
        monkeypatch.setattr(b, "session", type("S", (), {"run": staticmethod(broken)})())
    ids = np.ones((2, 3), np.int64)
    with pytest.raises(ArtifactError) as err:
        b.run(ids, ids)
    msg = str(err.value)
    assert str(b.graph) in msg and "cannot run this graph on a batch of 2 x 3 tokens" in msg and "[CPU] Subgraph node failed" in msg and "Exception from src/" not in msg
    assert "\n" not in msg


@pytest.mark.parametrize("fails", ["compile", "check call"])
def test_a_rewritten_graph_that_fails_runs_as_read_and_is_not_kept(artifact, tmp_path, monkeypatch, fails):
    """Where the graph with its attention rewritten does not compile, or fails its one check call
    (made for every freshly rewritten graph), the graph as read is compiled and runs instead, and
    no blob is kept under the rewrite's key (the next run tries the rewrite again)."""
    pytest.importorskip("openvino")
    from stackscore.engine.backends.ov import OpenVinoBackend
    from stackscore.errors import ArtifactError
    from stackscore.manifest import load_manifest

    m = load_manifest(artifact)
    spec = next(s for s in m.models if s.name == "bert")
    graph, sha = artifact / spec.graphs["fp32"], m.files[spec.graphs["fp32"]]["sha256"]
    seen = []
    if fails == "compile":
        real = OpenVinoBackend._compile

        def compile_(core, model, config, graph):
            rewritten = any(op.get_type_name() == "ScaledDotProductAttention" for op in model.get_ordered_ops())
            seen.append(rewritten)
            if rewritten:
                raise ArtifactError(f"{graph}: OpenVINO cannot open this graph: test")
            return real(core, model, config, graph)

        monkeypatch.setattr(OpenVinoBackend, "_compile", staticmethod(compile_))
    else:
        real = OpenVinoBackend._first_call

        def first_call(self, spec):
            seen.append(self.sdpa_blocks)
            return False if self.sdpa_blocks else real(self, spec)

        monkeypatch.setattr(OpenVinoBackend, "_first_call", first_call)
    cache = tmp_path / "cache"
    b = OpenVinoBackend(graph, spec, RunOptions(precision="fp32", backend="openvino", cache_dir=cache), "fp32", graph_sha256=sha)
    assert seen and seen[0] and b.sdpa_blocks == 0
    assert not list(cache.rglob("*.blob"))
    ids = np.full((2, 5), 7, np.int64)
    out = b.run(ids, np.ones_like(ids))
    assert out.shape[0] == 2 and np.isfinite(out).all()


def test_an_untuned_run_takes_the_attention_export_timed_faster(artifact, tmp_path):
    """A bf16 gate whose ``plain_attention.default`` is true (export timed plain nodes faster and
    they passed the gate) is how an untuned run compiles that model, where the run's CPU, threads,
    streams and fused kernel are the timing's; a `tune` record of this CPU and an explicit
    ``fused_attention`` both win over it; a default whose gate failed, one timed elsewhere, or
    another variant is not read."""
    pytest.importorskip("openvino")
    from dataclasses import replace

    from stackscore.engine.backends import cpu_key
    from stackscore.engine.runner import export_plain_attention, runner_for
    from stackscore.manifest import compiled_identity, load_manifest

    m = load_manifest(artifact)
    spec = next(s for s in m.models if s.name == "bert")
    gates = spec.parity["gates"]
    assert gates.get("bf16", {}).get("passed") and not gates["bf16"].get("plain_attention", {}).get("default"), "the fixture keeps fused by default (conftest)"
    run = RunOptions(precision="bf16", backend="openvino", cache_dir=tmp_path, streams=1)
    here = {"passed": True, "default": True, "speedup": 1.2, "cpu": cpu_key(), "threads": run.cpu_threads, "streams": 1, "fused_kernel": fused_kernel()}

    def with_plain(**changes):
        return replace(spec, parity={**spec.parity, "gates": {**gates, "bf16": {**gates["bf16"], "plain_attention": {**here, **changes}}}})

    faster = with_plain()
    r = runner_for(faster, m, artifact, run)
    assert export_plain_attention(faster, r.choice, 1, run.cpu_threads) and r.backends[0].fused_attention is False and "plain attention" in r.describe()
    assert runner_for(spec, m, artifact, run).backends[0].fused_attention is True
    for elsewhere in ({"passed": False}, {"streams": 2}, {"threads": run.cpu_threads + 1}, {"cpu": "another"}, {"fused_kernel": "sdpa0"}, {"cpu": None}):
        assert runner_for(with_plain(**elsewhere), m, artifact, run).backends[0].fused_attention is True, elsewhere
    assert runner_for(faster, m, artifact, replace_run(run, fused_attention=True)).backends[0].fused_attention is True
    sha = compiled_identity(m, spec.graphs["fp32"])
    record(tmp_path, record_key("openvino", "bf16", sha, run.cpu_threads, r.token_budget), {"streams": 1, "fused_attention": True, "fused_kernel": fused_kernel()})
    assert runner_for(faster, m, artifact, run).backends[0].fused_attention is True  # tune measured this CPU
    r = runner_for(faster, m, artifact, RunOptions(precision="fp32", backend="openvino", streams=1))
    assert not export_plain_attention(faster, r.choice, 1, run.cpu_threads) and r.backends[0].fused_attention is True
