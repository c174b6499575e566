"""Nothing overwritten or lost: output == input refused, one run per output (lock), a growing
input scored as its snapshot or refused, and a full disk reported before and while writing."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import time

import orjson
import pytest

from stackscore.engine import committer as committer_mod
from stackscore.engine.committer import OutputLock
from stackscore.engine.pipeline import score_file
from stackscore.options import ScoreOptions
from stackscore.engine.writers import JsonlWriter
from stackscore.errors import InputError, StackscoreError
from stackscore.train.corpus import generate


def lines(n, seed=3):
    return [orjson.dumps({"id": e.id, "text": e.text}) for e in generate(n, seed=seed)]


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    p = tmp_path_factory.mktemp("safety") / "in.jsonl"
    p.write_bytes(b"".join(l + b"\n" for l in lines(3000)))
    return p


# -- the output is the input -------------------------------------------------------------------
@pytest.mark.parametrize("link", ["same", "dot", "symlink", "hardlink"])
def test_output_that_is_the_input_is_refused_even_with_overwrite(artifact, medium, tmp_path, link):
    src = tmp_path / "in.jsonl"
    src.write_bytes(medium.read_bytes())
    out = {"same": src, "dot": tmp_path / "." / "in.jsonl", "symlink": tmp_path / "link.jsonl", "hardlink": tmp_path / "hard.jsonl"}[link]
    if link == "symlink":
        out.symlink_to(src)
    elif link == "hardlink":
        os.link(src, out)
    with pytest.raises(StackscoreError, match="this is the input file"):
        score_file(artifact, src, out, ScoreOptions.from_kwargs(progress=False, overwrite=True))
    assert src.read_bytes() == medium.read_bytes()


def test_stats_json_is_checked_before_the_run_and_never_replaces_the_input_or_output(artifact, medium, tmp_path):
    """--stats-json was written after the run, unchecked: naming the output replaced the
    predictions with the statistics, naming the input replaced the user's data (exit 0 both),
    and a missing directory failed after the whole run as "a bug"."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(medium.read_bytes().splitlines(keepends=True)[:40]))
    out = tmp_path / "o.jsonl"
    for stats_path, message in (
        (out, "--stats-json is the output"),
        (src, "--stats-json is the input file"),
        (tmp_path / "o.jsonl.lock", "--stats-json is the output's lock"),
        (tmp_path / "nodir" / "s.json", "--stats-json directory .*nodir does not exist"),
        (tmp_path, "--stats-json is a directory"),
    ):
        r = subprocess.run(cli(artifact, src, out, "--stats-json", str(stats_path)), capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and re.search(message, r.stderr) and "Traceback" not in r.stderr, (stats_path, r.stderr)
        assert not out.exists() and src.read_bytes().count(b"\n") == 40
    stats = tmp_path / "stats.json"
    r = subprocess.run(cli(artifact, src, out, "--stats-json", str(stats)), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and orjson.loads(stats.read_bytes())["rows"] == 40 and len(out.read_bytes().splitlines()) == 40
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".stats")] == []  # written beside, renamed


def test_a_file_where_the_parts_directory_goes_is_one_line_and_kept(artifact, medium, tmp_path):
    out = tmp_path / "o.jsonl"
    parts = tmp_path / "o.jsonl.parts"
    parts.write_text("the user's notes")
    for flags in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(StackscoreError, match="o.jsonl.parts: a file where this run keeps its parts directory"):
            score_file(artifact, medium, out, ScoreOptions.from_kwargs(progress=False, **flags))
    assert parts.read_text() == "the user's notes"


# -- one run per output ------------------------------------------------------------------------
def cli(artifact, src, out, *extra):
    return [sys.executable, "-m", "stackscore", "score", str(artifact), str(src), "-o", str(out), "--quiet", "--chunk-rows", "128", *extra]


def test_a_second_run_resume_or_overwrite_beside_a_live_run_is_refused(artifact, tmp_path):
    src = tmp_path / "big.jsonl"
    src.write_bytes(b"".join(l + b"\n" for l in lines(12000, seed=5)))
    out = tmp_path / "o.jsonl"
    clean = tmp_path / "clean.jsonl"
    subprocess.run(cli(artifact, src, clean), check=True, capture_output=True, timeout=300)
    first = subprocess.Popen(cli(artifact, src, out, "--backend", "onnxruntime", "--precision", "fp32"), stderr=subprocess.PIPE)
    progress = tmp_path / "o.jsonl.parts" / "progress.json"
    deadline = time.time() + 120
    while not progress.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    lock = tmp_path / "o.jsonl.lock"
    assert lock.read_text().split()[0] == str(first.pid)
    for extra in ([], ["--resume"], ["--overwrite"]):
        res = subprocess.run(cli(artifact, src, out, *extra), capture_output=True, text=True, timeout=120)
        if first.poll() is not None:
            pytest.skip("the first run finished before the second could try")
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip().splitlines() == [f"error: {out}: another stackscore run (pid {first.pid}) is writing this output (o.jsonl.lock); wait for it to finish (delete the lock only if that process is not a stackscore run)"]
    assert first.wait(timeout=300) == 0, first.stderr.read().decode()
    assert not lock.exists() and sum(1 for _ in open(out, "rb")) == 12000


def test_a_stale_lock_is_taken_over(artifact, medium, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "o.jsonl"
    (tmp_path / "o.jsonl.lock").write_text(f"{dead.pid} 1\n")  # a killed run's lock
    stats = score_file(artifact, medium, out, ScoreOptions.from_kwargs(progress=False))
    assert stats.rows == 3000 and not (tmp_path / "o.jsonl.lock").exists()
    held = OutputLock(out).acquire()  # a live holder (this process) is respected
    try:
        with pytest.raises(StackscoreError, match=f"another stackscore run \\(pid {os.getpid()}\\)"):
            score_file(artifact, medium, out, ScoreOptions.from_kwargs(progress=False, overwrite=True))
    finally:
        held.release()


# -- growing input -----------------------------------------------------------------------------
def test_input_growing_during_the_run_is_refused_or_scored_as_its_snapshot(artifact, tmp_path):
    rows = lines(2400, seed=9)
    head = b"".join(l + b"\n" for l in rows[:1500])
    torn = rows[1500][:12]  # the writer is in the middle of line 1501 when the run starts
    rest = rows[1500][12:] + b"\n" + b"".join(l + b"\n" for l in rows[1501:])

    def run(src, out, allow):
        src.write_bytes(head + torn)
        state = {"grown": False}

        def grow(stats):
            if not state["grown"]:
                state["grown"] = True
                with open(src, "ab") as fh:
                    fh.write(rest)

        return score_file(artifact, src, out, ScoreOptions.from_kwargs(progress=False, window_rows=64, queue_depth=1, on_progress=grow, allow_growing_input=allow))

    with pytest.raises(InputError, match=r"in.jsonl: the file changed while it was read \(.* bytes at the start, .* now.*--allow-growing-input"):
        run(tmp_path / "in.jsonl", tmp_path / "a.jsonl", allow=False)
    assert not (tmp_path / "a.jsonl").exists()
    stats = run(tmp_path / "in2.jsonl", tmp_path / "b.jsonl", allow=True)
    got = [orjson.loads(l) for l in (tmp_path / "b.jsonl").read_bytes().splitlines()]
    # The snapshot's 1,500 complete lines; the torn line is not an error row (it is valid in the final file).
    assert stats.rows == len(got) == 1500 and stats.errored == 0 and all(g["error"] is None for g in got)


def test_unterminated_last_line_of_an_unchanged_file_is_still_an_error_row(artifact, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"id": "a", "text": "fine"}\n{"id": "b", "te')
    stats = score_file(artifact, src, tmp_path / "o.jsonl", ScoreOptions.from_kwargs(progress=False))
    assert stats.rows == 2 and stats.errored == 1


# -- disk full ---------------------------------------------------------------------------------
def test_disk_full_is_said_before_assembling_and_resume_finishes(artifact, medium, tmp_path, monkeypatch):
    clean = tmp_path / "clean.jsonl"
    score_file(artifact, medium, clean, ScoreOptions.from_kwargs(progress=False, window_rows=256))
    out = tmp_path / "o.jsonl"
    real = committer_mod.shutil.disk_usage
    monkeypatch.setattr(committer_mod.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(StackscoreError, match=r"o.jsonl: assembling the output needs about .* MB free .*twice the output's size.*0.0 MB is free; the parts are kept .*--resume"):
        score_file(artifact, medium, out, ScoreOptions.from_kwargs(progress=False, window_rows=256))
    assert not out.exists() and (tmp_path / "o.jsonl.parts" / "progress.json").exists()
    monkeypatch.setattr(committer_mod.shutil, "disk_usage", real)
    score_file(artifact, medium, out, ScoreOptions.from_kwargs(progress=False, window_rows=256, resume=True))
    assert out.read_bytes() == clean.read_bytes()


def test_no_space_left_while_writing_is_one_line_and_resumable(artifact, medium, tmp_path, monkeypatch):
    clean = tmp_path / "clean.jsonl"
    score_file(artifact, medium, clean, ScoreOptions.from_kwargs(progress=False, window_rows=256))
    out = tmp_path / "o.jsonl"
    real_write, calls = JsonlWriter.write, {"n": 0}

    def full_disk(self, block):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        return real_write(self, block)

    monkeypatch.setattr(JsonlWriter, "write", full_disk)
    with pytest.raises(StackscoreError, match=r"o.jsonl: no space left on the device while writing .*writing.jsonl.*twice the output's size.*--resume") as err:
        score_file(artifact, medium, out, ScoreOptions.from_kwargs(progress=False, window_rows=256))
    assert "\n" not in str(err.value)
    monkeypatch.setattr(JsonlWriter, "write", real_write)
    stats = score_file(artifact, medium, out, ScoreOptions.from_kwargs(progress=False, window_rows=256, resume=True))
    assert stats.resumed_from == 3 * 256 and out.read_bytes() == clean.read_bytes()


def test_progress_line_shows_percent_rate_and_eta(tmp_path):
    import re

    from stackscore.engine.pipeline import _Progress
    from stackscore.engine.readers import Snapshot
    from stackscore.engine.stats import ScoreStats

    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"text": "x"}\n' * (1 << 20))  # 14 MiB
    snap = Snapshot(src)
    fh = snap.open()
    fh.read(snap.size // 4)  # a quarter, plus at most the 1 MiB read-ahead buffer
    stats = ScoreStats()
    stats.rows = 250
    line = _Progress(True, snap).line(stats, stats.started + 10.0)
    fh.close()
    pct = float(re.search(r"([\d.]+)% read", line).group(1))
    assert 25.0 <= pct <= 33.0 and "250 rows" in line and "25 rows/s" in line and re.search(r"ETA \d+s", line), line


def test_progress_percent_follows_the_windows_written_not_the_read_ahead(tmp_path):
    from stackscore.engine.pipeline import _Progress
    from stackscore.engine.readers import open_reader, Snapshot
    from stackscore.engine.stats import ScoreStats

    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(b'{"text": "row %d %s"}\n' % (i, b"x" * 200) for i in range(40_000)))  # ~9 MB
    snap = Snapshot(src)
    progress = _Progress(True, snap)
    chunks = progress.track(open_reader(src, window_rows=4000, snapshot=snap))
    for _ in range(5):  # the reader is five windows ahead ...
        next(chunks)
    stats = ScoreStats()
    stats.rows = 4000  # ... of the one window written
    line = progress.line(stats, stats.started + 1.0)
    pct = float(line.split("% read")[0])
    assert pct < 25.0, line  # ~10 % of the rows (plus the reader's 1 MiB buffer), not the 50 % read


def test_stats_percentiles_are_numpys_and_leave_numpy_ma_unimported():
    """The run statistics' batch-latency percentiles are np.percentile's (linear), computed
    without np.unique, whose first call imports numpy.ma at the end of every small job."""
    import subprocess
    import sys

    import numpy as np

    from stackscore.engine.stats import _percentiles

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 101):
        values = rng.random(n)
        np.testing.assert_allclose(_percentiles(values, (50, 95, 99)), np.percentile(values, [50, 95, 99]))
    code = ("import sys; from stackscore.engine.stats import ScoreStats; s = ScoreStats(batch_seconds=[0.1, 0.3, 0.2]); "
            "d = s.finish().to_dict(); assert d['batch_latency_ms']['p50'] == 200.0, d; print('numpy.ma' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip() == "False"


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    """On a shared file system a run on another machine cannot be checked from here: its lock
    stands (one line naming the host); a lock of this host's dead process is still taken over."""
    import subprocess
    import sys

    from stackscore.engine.committer import HOST, OutputLock
    from stackscore.errors import StackscoreError

    out = tmp_path / "o.jsonl"
    lock = tmp_path / "o.jsonl.lock"
    lock.write_text("1 12345 some-other-node\n")  # pid 1 is alive here, and means nothing there
    with pytest.raises(StackscoreError, match="another stackscore run \\(pid 1 on host some-other-node\\) is writing this output"):
        OutputLock(out).acquire()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{dead.pid} 1 {HOST}\n")
    held = OutputLock(out).acquire()
    assert lock.read_text().split()[0] == str(__import__("os").getpid()) and lock.read_text().split()[2] == HOST
    held.release()
    assert not lock.exists()


def test_directory_overwrite_checks_before_deleting_and_keeps_its_own_lock(tmp_path):
    """A sharded run's --overwrite: a user's file in the directory is refused *before* the old
    run is deleted; files named like shards (a Spark job's part-00000-...) that no run of ours
    recorded are the user's; the run's own lock, taken before, survives the clean-up."""
    import json

    from stackscore.engine.committer import OutputLock
    from stackscore.errors import StackscoreError
    from stackscore.integrations.ray import _prepare_dir
    from stackscore.integrations.shards import OutputDir
    from stackscore.options import WriteOptions

    d = tmp_path / "preds"
    d.mkdir()
    fp = {"inputs": [{"input": "a.jsonl", "output": "part-00000-a.jsonl"}]}
    (d / "_manifest.json").write_text(json.dumps({"fingerprint": fp, "shards": []}))
    (d / "part-00000-a.jsonl").write_text("{}\n")
    (d / "README.txt").write_text("the user's")
    out = OutputDir(str(d))
    with pytest.raises(StackscoreError, match="holds other files \\(README.txt\\)"):
        _prepare_dir(out, fp, WriteOptions(overwrite=True), [])
    assert (d / "_manifest.json").exists() and (d / "part-00000-a.jsonl").exists()  # nothing deleted
    (d / "README.txt").unlink()
    lock = OutputLock(d / "_run").acquire()
    assert _prepare_dir(out, fp, WriteOptions(overwrite=True), []) is None
    assert sorted(p.name for p in d.iterdir()) == ["_run.lock"]  # the old run gone, the lock kept
    lock.release()
    spark = tmp_path / "spark"
    spark.mkdir()
    (spark / "part-00000-1b2c-c000.snappy.parquet").write_bytes(b"PAR1")
    with pytest.raises(StackscoreError, match="holds other files \\(part-00000-1b2c-c000.snappy.parquet\\)"):
        _prepare_dir(OutputDir(str(spark)), fp, WriteOptions(overwrite=True), [])


def test_a_stale_lock_replaced_by_a_live_run_meanwhile_is_not_removed(tmp_path, monkeypatch):
    """Two runs find the same killed run's lock: the first takes it over and writes its own; the
    second must not remove that fresh lock as if it were the stale one (it re-reads the lock
    under a mutex before removing it) and stops in one line instead."""
    from stackscore.engine.committer import HOST, OutputLock
    from stackscore.errors import StackscoreError

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "o.jsonl"
    lock = tmp_path / "o.jsonl.lock"
    lock.write_text(f"{dead.pid} 1 {HOST}\n")
    real = OutputLock._owner
    calls = []

    def owner(self):
        calls.append(1)
        if len(calls) == 2:  # between judging it stale and removing it: another run took it over
            lock.write_text(f"{os.getpid()} - {HOST}\n")
        return real(self)

    monkeypatch.setattr(OutputLock, "_owner", owner)
    with pytest.raises(StackscoreError, match=f"another stackscore run \\(pid {os.getpid()}\\)"):
        OutputLock(out).acquire()
    assert lock.read_text().split()[0] == str(os.getpid()) and not (tmp_path / "o.jsonl.lock.takeover").exists()


def test_files_of_the_users_beside_the_output_are_never_deleted(artifact, tmp_path):
    """A file named OUTPUT.lock that is not a run's lock was taken for a stale lock and deleted;
    --resume over an OUTPUT.parts/ without a progress record, or --overwrite, removed the whole
    directory with whatever a user kept there. Now each stops in one line and deletes nothing;
    a parts directory holding only a run's own files is still cleared as before."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(orjson.dumps({"id": i, "text": t}).decode() + "\n" for i, t in enumerate(["good", "bad film"])))
    out = tmp_path / "out.jsonl"
    lock = tmp_path / "out.jsonl.lock"
    lock.write_text("my notes about this output\n")
    with pytest.raises(StackscoreError, match="out.jsonl.lock: exists and is not a stackscore output lock"):
        score_file(artifact, src, out, ScoreOptions.from_kwargs(progress=False))
    assert lock.read_text() == "my notes about this output\n" and not out.exists()
    lock.unlink()
    parts = tmp_path / "out.jsonl.parts"
    parts.mkdir()
    (parts / "keep.txt").write_text("mine")
    for flag in ("resume", "overwrite"):
        with pytest.raises(StackscoreError, match=r"out.jsonl.parts: holds files stackscore does not write there \(keep.txt\)"):
            score_file(artifact, src, out, ScoreOptions.from_kwargs(progress=False, **{flag: True}))
        assert (parts / "keep.txt").read_text() == "mine"
    (parts / "keep.txt").unlink()
    (parts / "part-000000.jsonl").write_text("{}\n")  # a run killed before its first commit
    score_file(artifact, src, out, ScoreOptions.from_kwargs(progress=False, resume=True))
    assert len(out.read_text().splitlines()) == 2 and not parts.exists()


def test_a_runs_own_part_names_past_a_million_parts_are_its_own():
    """part_path writes {i:06d}: seven digits from the millionth part on; those are still the
    run's own (a resume refused them as a user's files, and the cleanup misread their number)."""
    from stackscore.engine.committer import OWN_PART, PART_NUMBER

    for name in ("part-000000.jsonl", "part-1000000.jsonl.gz", "part-12345678.parquet", "writing.csv", "assembled.tsv.gz", "progress.json", ".DS_Store"):
        assert OWN_PART.match(name), name
    for name in ("keep.txt", "part-12.jsonl", "notes.progress.json"):
        assert not OWN_PART.match(name), name
    assert int(PART_NUMBER.match("part-1000000.jsonl").group(1)) == 1_000_000


def test_atomic_write_replaces_whole_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    """The one helper every small in-place write goes through (stats, progress, manifest, tuning
    record, compiled blobs): the old file survives a failed write, and no temporary is left."""
    from stackscore.atomic import atomic_write

    target = tmp_path / "stats.json"
    atomic_write(target, "old")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]


def test_parts_with_another_id_type_stop_a_parquet_run_at_once(tmp_path):
    """Several inputs into one Parquet output (Ray's one-file mode): JSONL ids are text, a Parquet
    input's may be int64; the first part fixed the file's schema and the run failed only at the
    end, assembling, with "unexpected ValueError ... this is a bug". Now the first part of the
    other type stops it in one line, its committed parts kept."""
    import numpy as np
    import pyarrow as pa

    from stackscore.engine.committer import CommittedOutput
    from stackscore.engine.writers import ResultBlock
    from stackscore.errors import StackscoreError

    out = CommittedOutput(tmp_path / "all.parquet", {"f": 1})
    cols = lambda n: {"label": ["pos"] * n, "score": np.full(n, 0.9)}  # noqa: E731
    out.commit(ResultBlock(["a", "b"], cols(2), [0, 1]), 2)
    out.commit(ResultBlock(["c"], cols(1), [2]), 1)  # the same types: fine
    with pytest.raises(StackscoreError, match=r"all\.parquet: 'id' is int64, earlier rows' string: a Parquet file holds one type per column"):
        out.commit(ResultBlock([7, 8], cols(2), [3, 4], id_type=pa.int64()), 2)
    assert out.parts == 2 and sorted(p.name for p in out.dir.iterdir()) == ["part-000000.parquet", "part-000001.parquet", "progress.json"]
