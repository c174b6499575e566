"""``--engine ray``: the local engine on Ray actors. Same options, same rows, same bytes.

One small local cluster (2 logical CPUs) serves the module; the node-loss test, which needs a
cluster of several nodes, is in ``test_ray_faults.py``.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pytest

from stackscore.engine.committer import CommittedOutput
from stackscore.engine.pipeline import score_file
from stackscore.errors import InputError, StackscoreError
from stackscore.options import CPU, CUDA, RunOptions, ScoreOptions

ray = pytest.importorskip("ray")

from stackscore.integrations.ray import RayOptions, _wait_for_earlier_attempt, actor_run_options, score_ray  # noqa: E402
from stackscore.integrations.shards import expand_inputs, shard_name  # noqa: E402

BAD = [
    b'{"id": "badjson", "text": ',  # invalid JSON
    b'{"id": "notext", "body": "no text field"}',  # missing text
    b'{"id": "empty", "text": "   "}',  # empty text
    b'{"id": "utf8", "text": "caf\xe9 au lait"}',  # invalid UTF-8
    b'{"id": "null", "text": null}',
    b'{"id": "number", "text": 7}',
    b'{"id": 1000000000000000000000000000000, "text": "a big integer id, kept digit for digit"}',
    b"[1, 2]",  # not an object
]


def write_jsonl(path: Path, rows: list[dict], bad_every: int = 0) -> Path:
    lines = [orjson.dumps(r) for r in rows]
    if bad_every:
        for k, i in enumerate(range(bad_every // 2, len(lines), bad_every)):
            lines[i] = BAD[k % len(BAD)]
    lines.insert(len(lines) // 2, b"")  # a blank line is not a row
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture(scope="module")
def ray_local():
    """One local cluster for the module; ``score_ray`` uses a cluster it finds connected."""
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=tmp, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def corpus(corpus_rows, tmp_path_factory):
    """1,400 rows with every kind of bad row, once every 90 rows."""
    root = tmp_path_factory.mktemp("rayin")
    rows = [{"id": r["id"], "text": r["text"], "label": r["label"]} for r in corpus_rows] * 2
    rows = [{**r, "id": f"{r['id']}-{i}"} for i, r in enumerate(rows)]
    return write_jsonl(root / "in.jsonl", rows, bad_every=90)


@pytest.fixture(scope="module")
def shards(corpus_rows, tmp_path_factory):
    """A directory of shards in every input format, plus files a directory listing must skip."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("shards") / "in"
    (root / "sub").mkdir(parents=True)
    rows = [{"id": r["id"], "text": r["text"]} for r in corpus_rows]
    write_jsonl(root / "a.jsonl", rows[:220], bad_every=40)
    with gzip.open(root / "b.jsonl.gz", "wb") as fh:
        fh.write(b"".join(orjson.dumps(r) + b"\n" for r in rows[220:380]))
    texts = [r["text"] for r in rows[380:560]]
    texts[3], texts[9] = None, "  "
    table = pa.table({"id": [r["id"] for r in rows[380:560]], "text": texts})
    pq.write_table(table, root / "sub" / "c.parquet")
    pacsv.write_csv(table, root / "d.csv")
    (root / "e.txt").write_bytes(b"\n".join(r["text"].encode() for r in rows[560:640]) + b"\n\xff\xfe broken line\n")
    (root / "_SUCCESS").write_text("")
    (root / ".d.csv.crc").write_text("x")
    (root / "notes.md").write_text("not an input")
    return root


def local_bytes(artifact, src, tmp_path, name="local.jsonl", **kw) -> bytes:
    out = tmp_path / name
    score_file(artifact, src, out, ScoreOptions.from_kwargs(progress=False, overwrite=True, **kw))
    return out.read_bytes()


def ray_opts(**kw) -> RayOptions:
    return RayOptions(**{"cpus_per_actor": 0.5, "actors": 2, "stall_timeout": 120, **kw})


OPTION_SETS = [
    ("local.jsonl", {"chunk_rows": 128}),
    ("local.csv.gz", {"chunk_rows": 200, "with_model_outputs": True, "with_contributions": True, "label_field": "label", "long_text": "head-tail", "token_budget": 512}),
    ("local.parquet", {"chunk_rows": 300, "on_error": "skip", "encoding_errors": "replace", "id_field": "id"}),
]


@pytest.mark.parametrize("name,kw", OPTION_SETS, ids=["jsonl", "csv-gz-model-outputs", "parquet-skip-replace"])
def test_one_output_file_equals_the_local_engine_byte_for_byte(artifact, corpus, tmp_path, ray_local, name, kw):
    expected = local_bytes(artifact, corpus, tmp_path, name, precision="auto", **kw)
    out = tmp_path / ("ray-" + name)
    result = score_ray(artifact, corpus, out, ScoreOptions.from_kwargs(progress=False, precision="auto", **kw), ray_opts())
    assert out.read_bytes() == expected
    local_stats = score_file(artifact, corpus, tmp_path / ("again-" + name), ScoreOptions.from_kwargs(progress=False, precision="auto", **kw))
    got = result.stats
    assert (got.rows, got.scored, got.errors, got.labelled, got.correct) == (local_stats.rows, local_stats.scored, local_stats.errors, local_stats.labelled, local_stats.correct)
    assert got.rows == 1400 and got.errored == (12 if kw.get("encoding_errors") == "replace" else 14) and result.actors == 2
    assert got.first_row_at is not None  # what bench reports as time to the first row (was always null)
    if kw.get("label_field"):
        assert got.accuracy is not None


def test_error_rows_are_the_local_engines(artifact, corpus, tmp_path, ray_local):
    out = tmp_path / "ray.jsonl"
    score_ray(artifact, corpus, out, ScoreOptions.from_kwargs(progress=False, chunk_rows=100), ray_opts())
    rows = [orjson.loads(l) for l in out.read_bytes().splitlines()]
    errors = {r["id"]: r["error"] for r in rows if r["error"] and r["id"] is not None}
    anonymous = [r["error"] for r in rows if r["error"] and r["id"] is None]  # no readable id
    assert any("invalid JSON" in e for e in anonymous) and any("expected a JSON object" in e for e in anonymous)
    assert "missing field 'text'" in errors["notext"] and "is empty" in errors["empty"]
    assert "invalid UTF-8" in errors["utf8"] and "is null" in errors["null"] and "not text" in errors["number"]
    big = next(l for l in out.read_bytes().splitlines() if b"big integer" not in l and b"1000000000000000000000000000000" in l)
    assert big.startswith(b'{"id":1000000000000000000000000000000,')  # a big id survives the trip to the actors
    assert [r["row"] for r in rows] == list(range(1400))


def test_directory_of_shards_equals_local_engine_per_shard(artifact, shards, tmp_path, ray_local):
    out = tmp_path / "preds"
    result = score_ray(artifact, shards, str(out) + "/", ScoreOptions.from_kwargs(progress=False, chunk_rows=64), ray_opts())
    sources = expand_inputs([shards])
    assert [Path(s.path).name for s in sources] == ["a.jsonl", "b.jsonl.gz", "d.csv", "e.txt", "c.parquet"]  # sorted by path: sub/ last
    manifest = json.loads((out / "_manifest.json").read_text())
    names = sorted(p.name for p in out.iterdir())
    assert names == ["_manifest.json", *sorted(r["output"] for r in manifest["shards"])]  # no _work/, no temp files
    for i, (src, rec) in enumerate(zip(sources, manifest["shards"])):
        assert rec["output"] == shard_name(i, src, "jsonl") and rec["input"] == src.path
        expected = local_bytes(artifact, Path(src.path), tmp_path, f"l{i}.jsonl", chunk_rows=64)
        assert (out / rec["output"]).read_bytes() == expected, rec["output"]
        assert rec["rows"] == rec["output_rows"] == expected.count(b"\n")
        assert rec["errored"] == expected.count(b'"error":"') and rec["output_bytes"] == len(expected)
    assert manifest["rows"] == 220 + 160 + 180 + 180 + 81 == result.stats.rows
    assert manifest["columns"][:3] == ["id", "row", "label"] and manifest["columns"][-1] == "error"
    assert result.stats.errored == manifest["errored"] >= 2 + 2 + 2 + 1


def test_globs_several_paths_and_one_output_file_in_input_order(artifact, shards, tmp_path, ray_local):
    out = tmp_path / "all.jsonl"
    inputs = [str(shards / "a.jsonl"), str(shards / "**" / "*.parquet"), str(shards / "d.csv")]
    result = score_ray(artifact, inputs, out, ScoreOptions.from_kwargs(progress=False, chunk_rows=50), ray_opts())
    got = [orjson.loads(l) for l in out.read_bytes().splitlines()]
    parts = [[orjson.loads(l) for l in local_bytes(artifact, shards / p, tmp_path, f"p{i}.jsonl", chunk_rows=50).splitlines()]
             for i, p in enumerate(["a.jsonl", "sub/c.parquet", "d.csv"])]
    expected = [r for part in parts for r in part]
    assert len(got) == len(expected) == result.stats.rows == 580
    assert [g["row"] for g in got] == list(range(580))  # rows of the inputs taken as one
    for g, e, name in zip(got, expected, ["a.jsonl"] * 220 + ["c.parquet"] * 180 + ["d.csv"] * 180):
        assert (g["id"], g["label"], g["score"]) == (e["id"], e["label"], e["score"])
        assert g["error"] == (None if e["error"] is None else f"{name} {e['error']}")  # each error names its file


def test_empty_inputs_give_the_local_engines_empty_outputs(artifact, tmp_path, ray_local):
    src = tmp_path / "empty.jsonl"
    src.write_bytes(b"")
    for name in ("e.jsonl", "e.parquet"):
        expected = local_bytes(artifact, src, tmp_path, "local-" + name)
        result = score_ray(artifact, src, tmp_path / name, ScoreOptions.from_kwargs(progress=False), ray_opts())
        assert (tmp_path / name).read_bytes() == expected and result.stats.rows == 0
    result = score_ray(artifact, src, str(tmp_path / "d") + "/", ScoreOptions.from_kwargs(progress=False), ray_opts(output_format="parquet"))
    manifest = json.loads((tmp_path / "d" / "_manifest.json").read_text())
    assert manifest["rows"] == 0 and (tmp_path / "d" / "part-00000-empty.parquet").read_bytes() == (tmp_path / "local-e.parquet").read_bytes()


def test_expand_inputs_lists_directories_globs_and_uris(shards):
    by_dir = [s.abspath for s in expand_inputs([shards])]
    assert [s.abspath for s in expand_inputs([f"file://{shards}/"])] == ["file://" + p for p in by_dir]  # a pyarrow file system URI
    assert [Path(s.path).name for s in expand_inputs([str(shards / "*.csv"), str(shards / "e.txt")])] == ["d.csv", "e.txt"]
    with pytest.raises(InputError, match="named more than once"):
        expand_inputs([shards / "d.csv", str(shards / "*.csv")])
    with pytest.raises(InputError, match="no input files match"):
        expand_inputs([str(shards / "*.xml")])
    with pytest.raises(InputError, match="does not exist"):
        expand_inputs([shards / "missing.jsonl"])
    with pytest.raises(InputError, match="cannot tell the format"):
        expand_inputs([shards / "notes.md"])


def test_object_store_paths_through_pyarrow_filesystems(artifact, shards, tmp_path, ray_local):
    """file:// goes through the same pyarrow FileSystem code as s3:// (staged reads, uploads by
    temporary name + move): the shards equal a local directory run's."""
    local = tmp_path / "plain"
    score_ray(artifact, [shards / "a.jsonl", shards / "d.csv"], str(local) + "/", ScoreOptions.from_kwargs(progress=False), ray_opts())
    remote = tmp_path / "remote"
    score_ray(artifact, [f"file://{shards}/a.jsonl", f"file://{shards}/d.csv"], f"file://{remote}/", ScoreOptions.from_kwargs(progress=False), ray_opts(output_format="jsonl"))
    for name in ("part-00000-a.jsonl", "part-00001-d.jsonl"):
        assert (remote / name).read_bytes() == (local / name).read_bytes()
    m = json.loads((remote / "_manifest.json").read_text())
    assert [r["input"] for r in m["shards"]] == [f"file://{shards}/a.jsonl", f"file://{shards}/d.csv"]
    with pytest.raises(StackscoreError, match="write a directory of shards"):
        score_ray(artifact, shards / "a.jsonl", f"file://{tmp_path}/one.jsonl", ScoreOptions.from_kwargs(progress=False), ray_opts())


class Crash(RuntimeError):
    pass


def crash_after(monkeypatch, n: int):
    real = CommittedOutput.commit
    calls = {"n": 0}

    def commit(self, block, rows):
        calls["n"] += 1
        if calls["n"] > n:
            raise Crash()
        return real(self, block, rows)

    monkeypatch.setattr(CommittedOutput, "commit", commit)
    return real


def test_one_output_file_resumes_a_run_of_either_engine(artifact, corpus, tmp_path, monkeypatch, ray_local):
    kw = dict(chunk_rows=128, precision="auto")
    clean = local_bytes(artifact, corpus, tmp_path, **kw)
    # a local run crashes after 3 windows; Ray continues it (the fingerprints are the same)
    out = tmp_path / "o.jsonl"
    real = crash_after(monkeypatch, 3)
    with pytest.raises(Crash):
        score_file(artifact, corpus, out, ScoreOptions.from_kwargs(progress=False, **kw))
    monkeypatch.setattr(CommittedOutput, "commit", real)
    with pytest.raises(StackscoreError, match="--resume"):
        score_ray(artifact, corpus, out, ScoreOptions.from_kwargs(progress=False, **kw), ray_opts())
    result = score_ray(artifact, corpus, out, ScoreOptions.from_kwargs(progress=False, resume=True, **kw), ray_opts())
    assert result.stats.resumed_from == 3 * 128 and result.stats.rows == 1400 - 3 * 128
    assert out.read_bytes() == clean
    # a Ray run crashes after 5 windows (its driver commits); Ray resumes it
    out2 = tmp_path / "o2.jsonl"
    real = crash_after(monkeypatch, 5)
    with pytest.raises(Crash):
        score_ray(artifact, corpus, out2, ScoreOptions.from_kwargs(progress=False, **kw), ray_opts())
    monkeypatch.setattr(CommittedOutput, "commit", real)
    assert not out2.exists()
    result = score_ray(artifact, corpus, out2, ScoreOptions.from_kwargs(progress=False, resume=True, **kw), ray_opts())
    assert result.stats.resumed_from == 5 * 128 and out2.read_bytes() == clean


def test_directory_resume_scores_only_missing_shards_and_ends_byte_identical(artifact, shards, tmp_path, monkeypatch, ray_local):
    opts = dict(chunk_rows=20)
    clean = tmp_path / "clean"
    score_ray(artifact, shards, str(clean) + "/", ScoreOptions.from_kwargs(progress=False, **opts), ray_opts())

    out = tmp_path / "out"

    def interrupt(state):
        if state.done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        score_ray(artifact, shards, str(out) + "/", ScoreOptions.from_kwargs(progress=False, **opts), ray_opts(actors=1, cpus_per_actor=1, on_progress=interrupt))
    assert not (out / "_manifest.json").exists() and (out / "_work" / "run.json").exists()
    done_before = sorted(p.name for p in out.glob("part-*"))
    assert len(done_before) >= 2
    # a shard that an actor had half written when it was lost: the local engine's committed parts
    sources = expand_inputs([shards])
    half = next(i for i, s in enumerate(sources) if shard_name(i, s, "jsonl") not in done_before)
    target = out / "_work" / shard_name(half, sources[half], "jsonl")
    _wait_for_earlier_attempt(target)  # the interrupted run's actor on it may still be exiting
    shutil.rmtree(target.with_name(target.name + ".parts"), ignore_errors=True)
    target.unlink(missing_ok=True)
    real = crash_after(monkeypatch, 2)
    with pytest.raises(Crash):  # the actors' run options: fp32 (the API's default), one thread
        score_file(artifact, Path(sources[half].path), target, ScoreOptions.from_kwargs(run=RunOptions(threads=1), progress=False, resume=True, **opts))
    monkeypatch.setattr(CommittedOutput, "commit", real)
    assert (target.with_name(target.name + ".parts") / "progress.json").exists()
    clean_manifest = json.loads((clean / "_manifest.json").read_text())
    rows_done = sum(r["rows"] for r in clean_manifest["shards"] if r["output"] in done_before)

    with pytest.raises(StackscoreError, match="--resume"):
        score_ray(artifact, shards, str(out) + "/", ScoreOptions.from_kwargs(progress=False, **opts), ray_opts())
    result = score_ray(artifact, shards, str(out) + "/", ScoreOptions.from_kwargs(progress=False, resume=True, **opts), ray_opts())
    assert result.done_before == len(done_before)
    assert result.stats.resumed_from == rows_done + 2 * 20  # the half-written shard went on from its 2 parts
    assert result.stats.rows + result.stats.resumed_from == clean_manifest["rows"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in clean.iterdir())
    for p in clean.iterdir():
        assert (out / p.name).read_bytes() == p.read_bytes(), p.name  # shards and _manifest.json
    again = score_ray(artifact, shards, str(out) + "/", ScoreOptions.from_kwargs(progress=False, resume=True, **opts), ray_opts())
    assert again.done_before == len(sources) and again.stats.rows == 0  # nothing left to do
    with pytest.raises(StackscoreError, match="differ"):
        score_ray(artifact, shards, str(out) + "/", ScoreOptions.from_kwargs(progress=False, resume=True, chunk_rows=21), ray_opts())
    score_ray(artifact, shards, str(out) + "/", ScoreOptions.from_kwargs(progress=False, overwrite=True, **opts), ray_opts())
    assert (out / "_manifest.json").read_bytes() == (clean / "_manifest.json").read_bytes()


def test_directory_output_refuses_foreign_files_and_its_own_inputs(artifact, shards, tmp_path, ray_local):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("someone's file")
    with pytest.raises(StackscoreError, match="holds other files"):
        score_ray(artifact, shards / "a.jsonl", busy, ScoreOptions.from_kwargs(progress=False), ray_opts())
    with pytest.raises(StackscoreError, match="holds input files"):
        score_ray(artifact, shards / "a.jsonl", str(shards) + "/", ScoreOptions.from_kwargs(progress=False), ray_opts())
    assert (busy / "keep.txt").exists()


def test_on_error_fail_is_one_line_naming_file_line_and_field(artifact, shards, tmp_path, ray_local):
    for out in (tmp_path / "f.jsonl", str(tmp_path / "fdir") + "/"):
        with pytest.raises(InputError) as info:
            score_ray(artifact, shards / "a.jsonl", out, ScoreOptions.from_kwargs(progress=False, on_error="fail"), ray_opts())
        msg = str(info.value)
        assert "a.jsonl" in msg and "line 21" in msg and "--on-error fail" in msg and "\n" not in msg and "Traceback" not in msg
    # nothing was committed, so nothing is left to resume: running again says the same, as a
    # local run does (an empty f.jsonl.parts/ made it ask for --resume or --overwrite)
    assert not (tmp_path / "f.jsonl.parts").exists() and not (tmp_path / "f.jsonl").exists()
    with pytest.raises(InputError, match="line 21"):
        score_ray(artifact, shards / "a.jsonl", tmp_path / "f.jsonl", ScoreOptions.from_kwargs(progress=False, on_error="fail"), ray_opts())


def test_a_run_that_cannot_progress_stops_with_one_line(artifact, shards, tmp_path, ray_local):
    started = time.monotonic()
    with pytest.raises(StackscoreError) as info:
        score_ray(artifact, shards / "a.jsonl", tmp_path / "g.jsonl", ScoreOptions.from_kwargs(progress=False), ray_opts(actors=1, gpus_per_actor=1, stall_timeout=3))
    assert time.monotonic() - started < 60
    msg = str(info.value)
    assert "no progress for 3 s" in msg and "1 GPU" in msg and "0 GPU in all" in msg and "\n" not in msg
    with pytest.raises(StackscoreError, match="has 0 GPUs"):  # the default actor count needs GPUs to exist
        score_ray(artifact, shards / "a.jsonl", tmp_path / "g.jsonl", ScoreOptions.from_kwargs(progress=False), RayOptions(gpus_per_actor=1))
    # the pending GPU actor of the first run was killed, not left holding the cluster
    score_ray(artifact, shards / "e.txt", tmp_path / "after.jsonl", ScoreOptions.from_kwargs(progress=False), ray_opts(stall_timeout=60))


def test_actor_run_options_for_cpus_and_gpus():
    cpu = actor_run_options(RunOptions(precision="auto"), RayOptions(cpus_per_actor=4))
    assert cpu.threads == 4 and cpu.providers == (CPU,)
    assert actor_run_options(RunOptions(threads=2), RayOptions(cpus_per_actor=0.5)).threads == 2
    gpu = actor_run_options(RunOptions(precision="auto", gpu=RunOptions().gpu.__class__(device_ids=(3,))), RayOptions(gpus_per_actor=1))
    assert gpu.providers == (CUDA, CPU) and gpu.gpu.device_ids == (0,) and gpu.on_gpu  # Ray's CUDA_VISIBLE_DEVICES: device 0
    trt = actor_run_options(RunOptions(providers=("TensorrtExecutionProvider", CUDA, CPU)), RayOptions(gpus_per_actor=1))
    assert trt.providers[0] == "TensorrtExecutionProvider"
    with pytest.raises(StackscoreError, match="--gpus-per-actor"):
        actor_run_options(RunOptions(providers=(CUDA, CPU)), RayOptions())
    for bad in (dict(actors=0), dict(cpus_per_actor=0), dict(stall_timeout=0), dict(output_format="xml"), dict(gpus_per_actor=-1)):
        with pytest.raises(StackscoreError):
            RayOptions(**bad)


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "stackscore", "score", *map(str, args)]


def test_cli_defaults_on_two_cpus_finish_a_2000_row_file_quickly(artifact, corpus_rows, tmp_path):
    """The old path's defaults (2 actors x 1 CPU) starved Ray Data's read tasks on 2 CPUs and sat
    there; readers now need no Ray CPUs, so the defaults (one actor per CPU) finish."""
    rows = [{"id": f"r{i}", "text": corpus_rows[i % len(corpus_rows)]["text"]} for i in range(2000)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    env = {**os.environ, "RAY_ADDRESS": ""}
    local = tmp_path / "local.jsonl"
    subprocess.run(cli(artifact, src, "-o", local, "--quiet"), check=True, capture_output=True, timeout=300)
    out = tmp_path / "ray.jsonl"
    started = time.monotonic()
    proc = subprocess.run(cli(artifact, src, "-o", out, "--engine", "ray", "--stats-json", tmp_path / "s.json"), capture_output=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert time.monotonic() - started < 120
    assert out.read_bytes() == local.read_bytes()
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["engine"] == "ray" and stats["actors"] == os.cpu_count() and stats["rows"] == 2000
    assert b"Traceback" not in proc.stderr


@pytest.mark.parametrize("args,fragment", [
    (["--engine", "ray", "--gpus", "0,1"], "--gpus applies to --engine local"),
    (["--actors", "2"], "--actors applies to --engine ray"),
    (["--engine", "ray", "--output-format", "csv"], "--output-format applies to a directory output"),
    (["--engine", "ray", "--cpus-per-actor", "0"], "--cpus-per-actor must be more than 0"),
    (["--engine", "ray", "--text-pair-field", "t2"], "scores single texts"),
    (["--engine", "ray", "--precision", "fp64"], "precision must be one of"),
    (["--engine", "ray", "--device", "cuda"], "need --gpus-per-actor"),
])
def test_cli_refusals_are_one_line(artifact, shards, tmp_path, args, fragment):
    proc = subprocess.run(cli(artifact, shards / "a.jsonl", "-o", tmp_path / "x.jsonl", *args), capture_output=True, timeout=120)
    err = proc.stderr.decode().strip()
    assert proc.returncode == 2, err
    assert fragment in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_inputs_that_do_not_exist_are_one_line(artifact, tmp_path):
    for args in ([tmp_path / "none", "--engine", "ray"], [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]):
        proc = subprocess.run(cli(artifact, *args, "-o", tmp_path / "x.jsonl"), capture_output=True, timeout=120)
        err = proc.stderr.decode().strip()
        assert proc.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_nothing_is_reported_usage_stats_off_and_no_dashboard(monkeypatch):
    """Ray's usage reporting is off on our code path whatever the environment said, and the
    clusters stackscore starts have no dashboard."""
    import stackscore.integrations.ray as R
    from ray._common.usage import usage_lib

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")
    R._import_ray()
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0" and not usage_lib.usage_stats_enabled()
    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    monkeypatch.setattr(ray, "shutdown", lambda: seen.update(shutdown=True))
    with R.cluster(RayOptions(local_cpus=2)):
        pass
    assert seen["include_dashboard"] is False and seen["address"] == "local" and seen["num_cpus"] == 2 and seen["shutdown"]
