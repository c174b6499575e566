"""Ray: the local engine on a pool of actors, for corpora past one machine.

One engine, two executors. ``stackscore score --engine ray`` runs the local engine's own code on
Ray actors; nothing about a row depends on the executor:

- **Same options.** The driver builds ``RunOptions``/``ReadOptions``/``WriteOptions`` once (the
  CLI's, the Python API's) and ships them, frozen, to every actor.
- **Same rows.** Inputs are read by the engine's readers (``open_reader``), so an invalid JSON
  line, invalid UTF-8, a missing or empty text is the same error row as locally; each actor
  holds a ``Scorer`` and runs ``encode`` -> ``infer`` -> ``result_block`` (whatever columns it
  makes: none are picked here by name).

Two shapes of job, chosen by the output:

- **One output file** (``-o preds.jsonl``): the driver reads windows with the local readers (cheap
  next to inference), the actors score them, and the driver commits the blocks in input order
  through the local ``CommittedOutput`` with the local fingerprint. The output's bytes are the
  local engine's, and ``--resume`` continues an interrupted run of either engine.
- **A directory** (``-o preds/``, a trailing slash or an existing directory): one output shard
  per input shard, each scored by one actor with the local ``score_file`` (its three threads,
  its committed parts) and moved to a deterministic name (``part-00003-<input stem>.jsonl``)
  atomically by the actor itself, so no row goes through the driver. ``_manifest.json``, written
  last, lists the shards; ``--resume`` scores only the missing ones (and continues a shard from
  its committed parts).

Faults. Work is idempotent (a window is a pure function of its rows; a shard is written under a
temporary name and renamed), so the driver re-queues the work of an actor that died on any live
actor at once. Actors restart (``max_restarts``) and rejoin when they answer again; Ray's own task
retries are off (``max_task_retries=0``) on purpose: they wait for *the same* actor to come back,
which after a lost node may need capacity the cluster no longer has. A run that makes no
progress for ``stall_timeout`` seconds stops with one line saying why.

Sizing. One actor per ``cpus_per_actor`` CPUs (or per ``gpus_per_actor`` GPUs) the cluster has
free; readers need no Ray CPUs (the driver reads for one output file, each actor reads its own
shard), so no read stage can starve behind the actors (the old Ray Data path's deadlock on two
CPUs). Nothing leaves the machine: usage stats are off (the variable is set before ``ray`` is
imported in this code path) and no dashboard is started.
"""

from __future__ import annotations

import os

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # before ray is imported on this code path: no usage reports

import json
import logging
import shutil
import socket
import sys
import tempfile
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..engine.committer import CommittedOutput, OutputLock, check_output_path
from ..engine.pipeline import _Progress, _raise_first_error, _skip_done, check_pair_option, fingerprint, score_file
from ..engine.readers import Snapshot, Window, open_reader
from ..engine.runner import without_tuning
from ..engine.stats import ScoreStats
from ..errors import InputError, StackscoreError
from ..options import CPU, CUDA, ReadOptions, RunOptions, ScoreOptions, WriteOptions, fingerprint_options
from .shards import LOCK, MANIFEST, WORK, OutputDir, Source, is_uri, locate, is_ours, stage, count_output, expand_inputs, is_directory_output, shard_name
from .windows import ArtifactFacts, check_columns, empty_block, frame_options, merge_stats, planned_scorer, result_schema, score_arrow, score_window

OUTPUT_FORMATS = ("jsonl", "jsonl.gz", "csv", "csv.gz", "tsv", "tsv.gz", "parquet")


# -- options ---------------------------------------------------------------------------------
@dataclass
class RunState:
    """What ``RayOptions.on_progress`` is shown, about once a second and after each finished item."""

    done: int  # windows committed (one output file) or shards finished (a directory)
    total: int | None  # shards in the run; None for windows (the count is known only at the end)
    rows: int
    errored: int
    actors: list[dict]  # per actor: index, node_id, state (starting|ready|lost|dead), busy (items in flight)


@dataclass(frozen=True)
class RayOptions:
    """How the Ray executor runs; what is scored and written stays in ``ScoreOptions``."""

    address: str | None = None  # an existing cluster ("auto", "ray://..."); None: a local one on this machine
    actors: int | None = None  # None: one per cpus_per_actor CPUs (or gpus_per_actor GPUs) free
    cpus_per_actor: float = 1.0  # CPUs reserved per actor; also its inference threads unless --threads
    gpus_per_actor: float = 0.0  # > 0: actors on GPUs (CUDA providers), one per GPU at 1
    stall_timeout: float = 300.0  # seconds without a finished window/shard (or a shard's heartbeat) before stopping
    output_format: str = "jsonl"  # a directory output: each shard's format
    max_restarts: int = 3  # per actor (Ray restarts it after its process or node is lost)
    max_attempts: int = 3  # one window or shard losing its actor this often stops the run
    local_cpus: int | None = None  # a local cluster's CPUs (default: this machine's)
    on_progress: Callable[[RunState], None] | None = None

    def __post_init__(self) -> None:
        if self.actors is not None and (not isinstance(self.actors, int) or isinstance(self.actors, bool) or self.actors < 1):
            raise StackscoreError(f"--actors must be a positive whole number, not {self.actors!r}")
        if not self.cpus_per_actor > 0:
            raise StackscoreError(f"--cpus-per-actor must be more than 0 (e.g. 0.5, 1, 4), not {self.cpus_per_actor!r}")
        if not self.gpus_per_actor >= 0:
            raise StackscoreError(f"--gpus-per-actor must be 0 or more, not {self.gpus_per_actor!r}")
        if not self.stall_timeout > 0:
            raise StackscoreError(f"--stall-timeout must be more than 0 seconds, not {self.stall_timeout!r}")
        if self.output_format not in OUTPUT_FORMATS:
            raise StackscoreError(f"--output-format must be one of {', '.join(OUTPUT_FORMATS)}, not '{self.output_format}'")
        if self.max_restarts < 0 or self.max_attempts < 1:
            raise StackscoreError("max_restarts must be 0 or more and max_attempts at least 1")


def actor_run_options(run: RunOptions, ray_opts: RayOptions) -> RunOptions:
    """The run options every actor gets, derived once on the driver.

    - Threads: ``threads=0`` means "every core" locally; an actor gets the CPUs Ray reserved for
      it, so actors sharing a node do not oversubscribe it.
    - GPUs: Ray gives each actor its own device(s) through ``CUDA_VISIBLE_DEVICES``, so inside an
      actor the device is 0; the providers are CUDA (then CPU) unless TensorRT was asked for, and
      the precision is chosen by the same ``choose`` as locally (``auto`` -> fp16 on a GPU).
    """
    threads = run.threads or max(1, int(ray_opts.cpus_per_actor))
    if ray_opts.gpus_per_actor > 0:
        providers = run.providers if run.on_gpu else (CUDA, CPU)
        gpu = replace(run.gpu, device_ids=(0,))
        return replace(run, threads=threads, providers=providers, gpu=gpu)
    if run.on_gpu:
        raise StackscoreError("GPU providers with --engine ray need --gpus-per-actor (Ray gives each actor its GPU; --gpus applies to --engine local)")
    return replace(run, threads=threads)


# -- actors ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardTask:
    index: int
    source: Source
    output: str  # the shard's file name in the output directory


class ScorerActor:
    """One worker of the pool: the artifact's ``Scorer``, loaded once, then windows or shards.

    A failure to load (the artifact missing on this node, a provider missing) is kept and reported
    by ``ready()`` as one line, instead of raising in the constructor (Ray would restart the actor
    into the same error, ``max_restarts`` times)."""

    def __init__(self, artifact: str, driver_cwd: str, opts: ScoreOptions, digest: str):
        self.opts = opts
        self.driver_cwd = driver_cwd
        self.scorer = None
        self.error: tuple[str, str] | None = None
        try:
            self.scorer = planned_scorer(locate(artifact, driver_cwd), opts.run, digest)  # the driver's artifact, or one line
        except StackscoreError as exc:
            self.error = (type(exc).__name__, f"{socket.gethostname()}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot start here (CUDA, libraries)
            self.error = ("StackscoreError", f"{socket.gethostname()}: the ensemble could not be loaded: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    def ready(self) -> dict:
        import ray

        return {
            "node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid(),
            "describe": self.scorer.describe() if self.scorer is not None else None, "error": self.error,
        }

    def window(self, window: Window, source: str | None, source_path: str, before: int = 0) -> tuple[Any, ScoreStats]:
        """One window of the one-output-file job: the local pipeline's per-window step."""
        return score_window(self.scorer, window, self.opts.write, source, source_path, before)

    def shard(self, task: ShardTask, out: OutputDir, heartbeat: Any) -> tuple[dict, ScoreStats]:
        """Score one input shard into its output shard with the local ``score_file``.

        Locally (or on a shared file system) the shard is written in ``_work/`` with the local
        engine's committed parts, so an attempt after a lost actor continues from them; on an
        object store it is written to a local temporary file and uploaded. Either way it appears
        under its final name by one rename, after its record (rows, errors) is in ``_work/``.
        """
        src = task.source
        cleanup: Callable[[], None] = lambda: None
        if src.remote:
            local_in, cleanup = stage(src)
        else:
            local_in = Path(locate(src.path, self.driver_cwd))
        tmpdir = None
        try:
            st = local_in.stat() if local_in.exists() else None
            if st is None:
                raise InputError(f"{src.path}: input file does not exist on {socket.gethostname()} (inputs must be on a file system every node reads)")
            if (st.st_size, st.st_mtime_ns if not src.remote else src.mtime_ns) != (src.size, src.mtime_ns) and not self.opts.read.allow_growing_input:
                raise InputError(f"{src.path}: changed since the run listed it ({src.size:,} bytes then, {st.st_size:,} now); rerun once it is complete")
            if out.remote:
                tmpdir = Path(tempfile.mkdtemp(prefix="stackscore-shard-"))
                target = tmpdir / task.output
            else:
                target = Path(out.path(f"{WORK}/{task.output}"))
            parts = target.with_name(target.name + ".parts")
            if target.exists() and not parts.exists():
                target.unlink()  # finished by an attempt that was lost before the rename: score again
            last = [0.0]

            def beat(stats: ScoreStats) -> None:
                now = time.monotonic()
                if now - last[0] >= 0.5:
                    last[0] = now
                    heartbeat.beat.remote(task.index, stats.resumed_from + stats.rows)

            opts = replace(self.opts, write=replace(self.opts.write, resume=True, overwrite=False), progress=False, on_progress=beat)
            if not out.remote:
                _wait_for_earlier_attempt(target)
                self._drop_foreign_parts(parts, local_in, opts)
            stats = score_file(self.scorer, local_in, target, opts)
            record = self._record(task, target, stats)
            out.write_json(f"{WORK}/{task.output}.json", record)
            if out.remote:
                out.put(target, task.output)
            else:
                out.move(f"{WORK}/{task.output}", task.output)
            heartbeat.beat.remote(task.index, record["rows"])
            return record, stats
        finally:
            cleanup()
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)

    def _drop_foreign_parts(self, parts: Path, local_in: Path, opts: ScoreOptions) -> None:
        """Parts committed for this shard by an attempt whose fingerprint differs (another node
        resolved ``--precision auto`` to another backend) cannot be continued: start the shard over."""
        record = parts / "progress.json"
        if not record.is_file():
            return
        try:
            old = json.loads(record.read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            old = None
        if old != fingerprint(local_in, self.scorer, opts):
            shutil.rmtree(parts, ignore_errors=True)

    def _record(self, task: ShardTask, target: Path, stats: ScoreStats) -> dict:
        rows = stats.resumed_from + stats.rows
        on_error = self.opts.write.on_error
        if stats.resumed_from:  # counted from the file: this attempt's statistics cover only its rows
            out_rows, out_errors = count_output(target)
            errored = out_errors if on_error == "record" else rows - out_rows
        else:
            errored = stats.errored
            out_rows = stats.scored if on_error == "skip" else stats.rows
        return {
            "input": task.source.path, "input_size": task.source.size, "input_mtime_ns": task.source.mtime_ns,
            "output": task.output, "output_bytes": target.stat().st_size,
            "rows": rows, "output_rows": out_rows, "scored": rows - errored, "errored": errored,
            "backends": self.scorer.describe(),
        }


def _wait_for_earlier_attempt(target: Path, patience: float = 60.0) -> None:
    """The driver re-queues a shard once Ray reports its actor lost; the lost actor's process may
    still be on its way out (a node's workers notice its raylet died a moment later) and holds
    the shard's ``OutputLock``. Wait for it to go, rather than fail or write beside it."""
    from ..engine.committer import _alive, _here

    lock = OutputLock(target)
    owner = lock._owner()
    if owner is not None and not _here(owner[2]):
        # The earlier attempt ran on another node, which Ray reported lost (its process cannot
        # be checked from here): the driver's word stands, its lock is taken over.
        lock.path.unlink(missing_ok=True)
        return
    deadline = time.monotonic() + patience
    while (owner := lock._owner()) is not None and _alive(owner[0], owner[1]) and owner[0] != os.getpid():
        if time.monotonic() > deadline:
            raise StackscoreError(f"{target}: an earlier attempt at this shard (pid {owner[0]} on {socket.gethostname()}) is still running after {patience:g} s")
        time.sleep(0.2)


class Heartbeat:
    """Rows scored so far per shard in flight, reported by the actors after their windows: how
    the driver tells a long shard that is moving from one that is stuck."""

    def __init__(self) -> None:
        self.rows: dict[int, int] = {}

    def beat(self, shard: int, rows: int) -> None:
        self.rows[shard] = rows

    def read(self) -> dict[int, int]:
        return dict(self.rows)


# -- the pool --------------------------------------------------------------------------------
@dataclass
class _Item:
    key: int
    method: str
    args: tuple
    label: str  # how an error names it: "rows 4,096-8,191 of in.jsonl", "shard in/b.csv"
    attempts: int = 0
    actor: int = -1


def _unwrap(ray, exc: BaseException) -> BaseException:
    """A user error raised in an actor (``--on-error fail``, an unreadable shard) as the one line
    it is, not Ray's wrapper with the remote traceback; anything else stays as Ray raised it."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, StackscoreError):
        return type(cause)(*cause.args)
    return exc


class Pool:
    """The actors and the work in flight on them, on Ray's actors and ``ray.wait``.

    - Work goes only to actors that have answered ``ready()`` (one that cannot be placed never
      holds work), at most ``depth`` items each (2 for windows: one encodes while one infers).
    - Work whose actor died (process, node, or its result object lost with the node) is re-queued
      on the live actors at once; the dead actor is pinged and rejoins once Ray restarted it.
    - ``poll`` raises when nothing moved for ``stall_timeout`` seconds, saying why.
    """

    def __init__(self, ray, actors: list, ray_opts: RayOptions, depth: int, want: str, same_backends: bool):
        self.ray = ray
        self.actors = actors
        self.ray_opts = ray_opts
        self.depth = depth
        self.want = want  # "each asks for 1 CPU": for the stall message
        self.same_backends = same_backends
        n = len(actors)
        self.state = ["starting"] * n
        self.info: list[dict | None] = [None] * n
        self.load = [0] * n
        self.pings: dict[Any, int] = {a.ready.remote(): i for i, a in enumerate(actors)}
        self.ping_later: dict[int, float] = {}
        self.flight: dict[Any, _Item] = {}
        self.queue: deque[_Item] = deque()
        self.last = time.monotonic()
        self.description: str | None = None
        ex = ray.exceptions
        self.lost_errors = (ex.RayActorError, ex.WorkerCrashedError, ex.NodeDiedError, ex.ObjectLostError, ex.OutOfMemoryError)

    # -- bookkeeping ---------------------------------------------------------------------
    def pending(self) -> int:
        return len(self.flight) + len(self.queue)

    def ready_count(self) -> int:
        return self.state.count("ready")

    def touch(self) -> None:
        """Progress seen elsewhere (a shard's heartbeat): not a stall."""
        self.last = time.monotonic()

    def snapshot(self) -> list[dict]:
        return [{"index": i, "node_id": (self.info[i] or {}).get("node_id"), "state": s, "busy": self.load[i]} for i, s in enumerate(self.state)]

    def submit(self, item: _Item) -> None:
        self.queue.append(item)
        self._dispatch()

    def _dispatch(self) -> None:
        while self.queue:
            free = [i for i, s in enumerate(self.state) if s == "ready" and self.load[i] < self.depth]
            if not free:
                return
            i = min(free, key=lambda j: self.load[j])
            item = self.queue.popleft()
            item.actor = i
            self.flight[getattr(self.actors[i], item.method).remote(*item.args)] = item
            self.load[i] += 1

    # -- events --------------------------------------------------------------------------
    def poll(self, timeout: float = 1.0) -> list[tuple[int, Any]]:
        """Wait up to ``timeout`` s; return the finished items' ``(key, result)``."""
        ray = self.ray
        now = time.monotonic()
        for i, when in list(self.ping_later.items()):
            if when <= now:
                del self.ping_later[i]
                self.pings[self.actors[i].ready.remote()] = i
        refs = list(self.flight) + list(self.pings)
        results: list[tuple[int, Any]] = []
        if refs:
            done, _ = ray.wait(refs, num_returns=1, timeout=timeout)
            if done:
                done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in done:
                if ref in self.pings:
                    self._answered(self.pings.pop(ref), ref)
                    continue
                item = self.flight.pop(ref)
                self.load[item.actor] -= 1
                try:
                    results.append((item.key, ray.get(ref)))
                    self.last = time.monotonic()
                except self.lost_errors as exc:
                    self._lost(item.actor)
                    item.attempts += 1
                    if item.attempts >= self.ray_opts.max_attempts:
                        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                        raise StackscoreError(f"{item.label}: lost its actor {item.attempts} times (last: {type(exc).__name__}: {first}); what was committed is kept: rerun with --resume") from None
                    self.queue.appendleft(item)
                except ray.exceptions.RayTaskError as exc:
                    raise _unwrap(ray, exc) from None
        else:
            time.sleep(min(timeout, 0.2))
        self._dispatch()
        if time.monotonic() - self.last > self.ray_opts.stall_timeout:
            raise StackscoreError(self._why_stalled())
        return results

    def _answered(self, i: int, ref) -> None:
        ray = self.ray
        try:
            info = ray.get(ref)
        except ray.exceptions.ActorDiedError:
            self.state[i] = "dead"  # its restarts are used up (or it cannot be created)
            return
        except self.lost_errors:
            self.state[i] = "lost"
            self.ping_later[i] = time.monotonic() + 1.0
            return
        if info["error"]:
            kind, msg = info["error"]
            raise (InputError if kind == "InputError" else StackscoreError)(msg)
        if self.description is None:
            self.description = info["describe"]
        elif self.same_backends and without_tuning(info["describe"]) != without_tuning(self.description):  # as a resume compares them
            raise StackscoreError(
                f"actors resolved the backends differently (here: {self.description}; on {info['host']}: {info['describe']}); "
                "one output file must come from one set of backends: pin --precision/--backend, or write a directory of shards"
            )
        self.info[i] = info
        self.state[i] = "ready"
        self.last = time.monotonic()

    def _lost(self, i: int) -> None:
        if self.state[i] == "ready":
            self.state[i] = "lost"
            self.pings[self.actors[i].ready.remote()] = i

    def _why_stalled(self) -> str:
        t = self.ray_opts.stall_timeout
        counts = {s: self.state.count(s) for s in ("ready", "starting", "lost", "dead")}
        if counts["ready"] == 0 and self.description is None:
            try:
                total = self.ray.cluster_resources()
                have = f"{total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU"
            except Exception:  # noqa: BLE001 - only for the message
                have = "unknown resources"
            return (f"no progress for {t:g} s (--stall-timeout): none of the {len(self.actors)} actors started; {self.want}, "
                    f"and the Ray cluster has {have} in all (lower --actors/--cpus-per-actor/--gpus-per-actor, or add nodes)")
        if counts["ready"] == 0:
            return (f"no progress for {t:g} s (--stall-timeout): every actor was lost ({counts['lost']} waiting for a restart, "
                    f"{counts['dead']} gone) and none came back (lost nodes, no capacity left?); what was committed is kept: rerun with --resume")
        return (f"no progress for {t:g} s (--stall-timeout): {len(self.flight)} item(s) in flight on {counts['ready']} actor(s) "
                f"and none finished (a hung node, or a window/shard slower than the timeout: raise --stall-timeout); rerun with --resume")

    def wait_ready(self) -> None:
        """Block until one actor answers (its ``describe()`` is part of the fingerprint). Call it
        before submitting work: results that came in meanwhile would not be returned."""
        while self.description is None:
            self.poll(1.0)

    def kill(self) -> None:
        """Stop every actor and wait (at most 10 s) until Ray reports them gone, so that a run
        resumed right after this one does not find a shard's lock held by a dying process."""
        refs = []
        for a in self.actors:
            try:
                self.ray.kill(a, no_restart=True)
                refs.append(a.ready.remote())  # resolves (with an error) once the actor is dead
            except Exception:  # noqa: BLE001 - already gone
                pass
        if refs:
            self.ray.wait(refs, num_returns=len(refs), timeout=10)


# -- cluster ---------------------------------------------------------------------------------
def _import_ray():
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        import ray
    except ImportError:
        raise StackscoreError("--engine ray needs Ray: pip install 'stackscore[ray]'") from None
    return ray


@contextmanager
def cluster(ray_opts: RayOptions):
    """Connected to Ray for the block: the given cluster, the one this process is already
    connected to, or a local one (shut down at the end). No dashboard; Ray's own log lines
    below errors are not shown (the CLI's stderr has the progress line)."""
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        try:
            if ray_opts.address:
                ray.init(address=ray_opts.address, **kw)
            else:  # "local": a new cluster here, never one found through RAY_ADDRESS or a stale file
                ray.init(address="local", num_cpus=ray_opts.local_cpus or os.cpu_count() or 1, **kw)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = ray_opts.address or "this machine"
            raise StackscoreError(f"cannot start or reach the Ray cluster at {where}: {(str(exc).strip().splitlines() or [''])[0]}") from None
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def default_actors(ray, ray_opts: RayOptions, items: int | None) -> int:
    """One actor per ``gpus_per_actor`` GPUs, or per ``cpus_per_actor`` CPUs, free at the start
    (what other jobs leave), never more than there are shards. Readers need no Ray CPUs here."""
    if ray_opts.actors:
        return ray_opts.actors
    free, total = ray.available_resources(), ray.cluster_resources()
    if ray_opts.gpus_per_actor > 0:
        if total.get("GPU", 0) < ray_opts.gpus_per_actor:
            raise StackscoreError(f"--gpus-per-actor {ray_opts.gpus_per_actor:g}: the Ray cluster has {total.get('GPU', 0):g} GPUs (give --actors to wait for an autoscaler)")
        n = int(free.get("GPU", 0) // ray_opts.gpus_per_actor)
    else:
        n = int(free.get("CPU", 0) // ray_opts.cpus_per_actor)
    n = max(1, n)
    return min(n, items) if items else n


def _start_pool(ray, artifact: Path, digest: str, opts: ScoreOptions, ray_opts: RayOptions, n: int, depth: int, same_backends: bool) -> Pool:
    threads = opts.run.threads
    actor_cls = ray.remote(ScorerActor).options(
        num_cpus=ray_opts.cpus_per_actor,
        num_gpus=ray_opts.gpus_per_actor or None,
        max_restarts=ray_opts.max_restarts,
        max_task_retries=0,  # the pool re-queues lost work on live actors itself (see the module docstring)
        max_concurrency=2,  # windows: one is tokenized while the other runs (the local pipeline's overlap)
        scheduling_strategy="SPREAD",  # across nodes: a lost node takes as few actors as possible
        runtime_env={"env_vars": {"RAYON_NUM_THREADS": str(threads)}},  # the tokenizer's threads: the CPUs reserved
    )
    actors = [actor_cls.remote(str(artifact), os.getcwd(), opts, digest) for _ in range(n)]
    want = f"each asks for {ray_opts.cpus_per_actor:g} CPU" + (f" and {ray_opts.gpus_per_actor:g} GPU" if ray_opts.gpus_per_actor else "")
    return Pool(ray, actors, ray_opts, depth, want, same_backends)


@dataclass
class RayResult:
    stats: ScoreStats
    actors: int
    output: str
    shards: list[dict] | None = None  # a directory output: the manifest's shard records
    done_before: int = 0  # shards an earlier, interrupted run had finished


def score_ray(artifact: str | Path, inputs: str | Path | Iterable[str | Path], output: str | Path, opts: ScoreOptions | None = None, ray_opts: RayOptions | None = None) -> RayResult:
    """Score ``inputs`` (files, directories, globs, URIs) into ``output`` on a Ray cluster.

    ``output`` is one file (input order, the local engine's bytes) or a directory (one shard per
    input file, written by the actors, ``_manifest.json`` last). Everything checkable is checked
    before the cluster starts (options, inputs, output, artifact), each as one line.
    """
    opts = opts or ScoreOptions()
    ray_opts = ray_opts or RayOptions()
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    sources = expand_inputs(inputs)
    artifact = Path(artifact)
    facts = ArtifactFacts(artifact, opts.run)
    check_pair_option(facts, opts.read.text_pair_field)
    actor_opts = replace(opts, run=actor_run_options(opts.run, ray_opts), progress=False, on_progress=None)
    output = str(output)
    if is_directory_output(output):
        return _score_to_dir(artifact, facts, sources, OutputDir(output), opts, actor_opts, ray_opts)
    if is_uri(output):
        raise StackscoreError(f"{output}: one output file is written by the driver, to a local path; for an object store write a directory of shards (-o {output.rsplit('/', 1)[0]}/)")
    return _score_to_file(artifact, facts, sources, Path(output), opts, actor_opts, ray_opts)


# -- one output file -------------------------------------------------------------------------
def _multi_fingerprint(sources: list[Source], facts: ArtifactFacts, opts: ScoreOptions) -> dict:
    return {
        "inputs": [{"input": s.abspath, "size": s.size, "mtime_ns": s.mtime_ns} for s in sources],
        "manifest_sha256": facts.digest,
        "options": {**fingerprint_options(opts), "backends": without_tuning(facts.describe())},
    }


def _windows(sources: list[Source], read: ReadOptions, snapshots: dict[int, Snapshot], field_check: bool = True) -> Iterator[tuple[Window, Source, Path, int]]:
    """Every source's windows in order, numbered as one input (``Window.start`` is the row in
    the concatenation: the output's ``row``), with the rows before the window's own file (its
    messages name the file's own row); a remote source is copied here first."""
    offset = 0
    for i, src in enumerate(sources):
        cleanup: Callable[[], None] = lambda: None
        path = Path(src.path)
        if src.remote:
            path, cleanup = stage(src)
        try:
            end = offset
            for w in open_reader(path, read.text_field, read.id_field, read.label_field, read.window_rows, encoding_errors=read.encoding_errors,
                                 snapshot=snapshots.get(i), pair_field=read.text_pair_field, allow_growing_input=read.allow_growing_input, tsv_quotes=read.tsv_quotes,
                                 field_check=field_check):
                w.start += offset
                end = w.start + len(w)
                yield w, src, path, offset
            offset = end
        finally:
            cleanup()


def _score_to_file(artifact: Path, facts: ArtifactFacts, sources: list[Source], output: Path, opts: ScoreOptions, actor_opts: ScoreOptions, ray_opts: RayOptions) -> RayResult:
    for s in sources:
        if not s.remote:
            check_output_path(output, Path(s.path))
    check_output_path(output)
    # The committer's own refusals, made before the cluster starts (it needs the actors'
    # backends for its fingerprint, so it is built once they answer).
    parts = output.with_name(output.name + ".parts")
    if output.exists() and not opts.write.overwrite:
        raise StackscoreError(f"{output}: output exists; pass --overwrite to replace it")
    if parts.exists() and not (opts.write.resume or opts.write.overwrite):
        raise StackscoreError(f"{output}: an interrupted run left {parts.name}/; pass --resume to continue it or --overwrite to start over")
    read = opts.read
    with OutputLock(output):  # before the cluster starts: a second run fails fast
        snapshots = {i: Snapshot(s.path, read.allow_growing_input) for i, s in enumerate(sources) if not s.remote}
        with cluster(ray_opts) as ray:
            n = default_actors(ray, ray_opts, None)
            pool = _start_pool(ray, artifact, facts.digest, actor_opts, ray_opts, n, depth=2, same_backends=True)
            try:
                pool.wait_ready()
                facts.description = pool.description
                one = len(sources) == 1 and not sources[0].remote
                fp = fingerprint(Path(sources[0].path), facts, opts, snapshots[0]) if one else _multi_fingerprint(sources, facts, opts)
                out = CommittedOutput(output, fp, resume=opts.write.resume, overwrite=opts.write.overwrite)
                try:
                    stats = _run_windows(pool, facts, sources, out, opts, snapshots, ray_opts)
                except BaseException:
                    out.discard_if_empty()  # as the local run: nothing committed, nothing left to resume
                    raise
            finally:
                pool.kill()
        return RayResult(stats, n, str(output))


def _run_windows(pool: Pool, facts: ArtifactFacts, sources: list[Source], out: CommittedOutput, opts: ScoreOptions, snapshots: dict[int, Snapshot], ray_opts: RayOptions) -> ScoreStats:
    """The ordered loop: read windows (bounded: ``depth`` per actor in flight), score them on the
    pool, commit them in input order, exactly as ``pipeline._run`` does with its threads."""
    if out.rows_done and opts.progress:
        print(f"  resuming after {out.rows_done:,} committed rows", file=sys.stderr)
    stats = ScoreStats(resumed_from=out.rows_done, backends=pool.description or "")
    progress = _Progress(opts.progress, snapshots.get(0) if len(sources) == 1 else None)
    several = len(sources) > 1
    stream = _windows(sources, opts.read, snapshots, field_check=opts.field_check)
    cap = pool.depth * len(pool.actors)
    sizes: dict[int, int] = {}
    finished: dict[int, tuple[Any, ScoreStats]] = {}
    seq = committed = 0
    exhausted = False

    def track(it):
        for w, src, _, before in it:
            for cut in _skip_done(iter([w]), out.rows_done):  # the rows a resumed run has committed
                yield cut, src, before

    windows = track(stream)
    try:
        while True:
            while not exhausted and pool.pending() < cap:
                try:
                    w, src, before = next(windows)
                except StopIteration:
                    exhausted = True
                    break
                if opts.write.on_error == "fail":
                    _raise_first_error(w, Path(src.path))
                if progress.snapshot is not None and progress.snapshot.bytes_read is not None:
                    progress.marks.append((w.start + len(w), progress.snapshot.bytes_read))
                sizes[seq] = len(w)
                label = f"rows {w.start:,}-{w.start + len(w) - 1:,} of {src.path if not several else 'the inputs'}"
                pool.submit(_Item(seq, "window", (w, src.name if several else None, src.path, before), label))
                seq += 1
            if exhausted and committed == seq:
                break
            for key, result in pool.poll(1.0):
                finished[key] = result
            while committed in finished:
                block, part = finished.pop(committed)
                out.commit(block, sizes.pop(committed))
                merge_stats(stats, part)
                if stats.first_row_at is None:  # as the local pipeline: time to the first row
                    stats.first_row_at = time.time()
                committed += 1
                progress(stats)
                if opts.on_progress is not None:
                    opts.on_progress(stats)
            if ray_opts.on_progress is not None:
                ray_opts.on_progress(RunState(committed, None, stats.rows, stats.errored, pool.snapshot()))
        if out.parts == 0:  # an empty input still gives a well-formed, empty output
            out.commit(empty_block(facts, opts.write), 0)
        for snap in snapshots.values():
            if snap.change() is not None:  # changed after it was read
                snap.changed()
        out.finish()
    finally:
        progress.done()
    return stats.finish()


# -- a directory of shards -------------------------------------------------------------------
def _run_fingerprint(sources: list[Source], tasks: list[ShardTask], facts: ArtifactFacts, opts: ScoreOptions, fmt: str) -> dict:
    """What must not change between an interrupted sharded run and its resumption: the inputs
    (sizes, mtimes), the artifact, the output-shaping options and the requested precision and
    backend (each shard also keeps its own resolved backends, in its record)."""
    return {
        "inputs": [{"input": s.path, "size": s.size, "mtime_ns": s.mtime_ns, "output": t.output} for s, t in zip(sources, tasks)],
        "manifest_sha256": facts.digest,
        "options": {**fingerprint_options(opts), "precision": opts.run.precision, "backend": opts.run.backend, "gpu": opts.run.on_gpu},
        "output_format": fmt,
    }


def _prepare_dir(out: OutputDir, fp: dict, write: WriteOptions, sources: list[Source]) -> dict | None:
    """Check the directory against ``--resume``/``--overwrite``; returns a finished run's manifest
    when a ``--resume`` finds nothing left to do."""
    if not out.remote:
        base = Path(out.base).resolve()
        inside = [s.path for s in sources if not s.remote and base in Path(s.abspath).resolve().parents]
        if inside:
            raise StackscoreError(f"{out.given}: the output directory holds input files ({inside[0]}); write the shards elsewhere")
    names = out.names()
    recorded = None
    if MANIFEST in names or WORK in names:
        recorded = (out.read_json(MANIFEST) or {}).get("fingerprint") if MANIFEST in names else out.read_json(f"{WORK}/run.json")
    # Checked before anything is deleted: an --overwrite that removed the old run and then found
    # a file of the user's would leave neither. Shards count as the run's own only when its
    # record names them (a Spark job's part-00000-... files are not ours to mix with or delete).
    shards = {i.get("output") for i in (recorded or {}).get("inputs", []) if isinstance(i, dict)}
    others = [n for n in names if not is_ours(n, shards)]
    if others:
        raise StackscoreError(f"{out.given}: the output directory holds other files ({', '.join(others[:3])}); give a new or empty directory")
    if MANIFEST in names or WORK in names:
        if write.overwrite:
            for name in names:
                if name != LOCK:  # this run's own lock, taken before: removing it would let a second run in
                    out.remove(name)
        elif not write.resume:
            what = "a finished run (_manifest.json)" if MANIFEST in names else f"an interrupted run's {WORK}/"
            raise StackscoreError(f"{out.given}: holds {what}; pass --resume to continue it or --overwrite to start over")
        elif recorded != fp:
            raise StackscoreError(f"{out.given}: cannot resume: the inputs, artifact or options differ from the interrupted run's; use --overwrite to start over")
        elif MANIFEST in names:
            return out.read_json(MANIFEST)
    return None


def _score_to_dir(artifact: Path, facts: ArtifactFacts, sources: list[Source], out: OutputDir, opts: ScoreOptions, actor_opts: ScoreOptions, ray_opts: RayOptions) -> RayResult:
    fmt = ray_opts.output_format
    tasks = [ShardTask(i, s, shard_name(i, s, fmt)) for i, s in enumerate(sources)]
    fp = _run_fingerprint(sources, tasks, facts, opts, fmt)
    lock = None
    if not out.remote:
        out.mkdir()
        lock = OutputLock(Path(out.path(LOCK[: -len(".lock")]))).acquire()
    try:
        finished = _prepare_dir(out, fp, opts.write, sources)
        if finished is not None:
            stats = ScoreStats(resumed_from=finished.get("rows", 0))
            if opts.progress:
                print(f"  {out.given}: every shard is done already ({len(tasks)} shards)", file=sys.stderr)
            return RayResult(stats.finish(), 0, out.given, finished.get("shards"), len(tasks))
        out.mkdir(WORK)
        out.write_json(f"{WORK}/run.json", fp)
        records: dict[int, dict] = {}
        for t in tasks:  # finished by an earlier run: the shard is in place and its record kept
            if out.exists(t.output):
                rec = out.read_json(f"{WORK}/{t.output}.json")
                if rec is not None:
                    records[t.index] = rec
        todo = [t for t in tasks if t.index not in records]
        if records and opts.progress:
            print(f"  resuming: {len(records)} of {len(tasks)} shards are done, {len(todo)} to score", file=sys.stderr)
        stats = ScoreStats(resumed_from=sum(r["rows"] for r in records.values()))
        n = 0
        if todo:
            with cluster(ray_opts) as ray:
                n = default_actors(ray, ray_opts, len(todo))
                pool = _start_pool(ray, artifact, facts.digest, actor_opts, ray_opts, n, depth=1, same_backends=False)
                here = ray.get_runtime_context().get_node_id()
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                heartbeat = ray.remote(Heartbeat).options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()
                try:
                    _run_shards(ray, pool, heartbeat, todo, out, records, stats, opts, ray_opts, len(tasks))
                finally:
                    pool.kill()
                    ray.kill(heartbeat)
        shards = [records[t.index] for t in tasks]
        stats.backends = "; ".join(sorted({r["backends"] for r in shards}))
        manifest = {
            "format": "stackscore-shards", "format_version": "1.0",
            "artifact": str(artifact), "output_format": fmt,
            "columns": ["id", "row", *empty_block(facts, opts.write).columns],
            "rows": sum(r["rows"] for r in shards), "output_rows": sum(r["output_rows"] for r in shards),
            "scored": sum(r["scored"] for r in shards), "errored": sum(r["errored"] for r in shards),
            "shards": shards, "fingerprint": fp,
        }
        out.write_json(MANIFEST, manifest)  # last: its presence says every shard is in place
        out.remove(WORK)
        return RayResult(stats.finish(), n, out.given, shards, len(tasks) - len(todo))
    finally:
        if lock is not None:
            lock.release()


def _run_shards(ray, pool: Pool, heartbeat, todo: list[ShardTask], out: OutputDir, records: dict[int, dict], stats: ScoreStats, opts: ScoreOptions, ray_opts: RayOptions, total: int) -> None:
    pool.wait_ready()
    stats.started = time.perf_counter()  # throughput from the first actor ready: starting is not scoring
    for t in todo:
        pool.submit(_Item(t.index, "shard", (t, out, heartbeat), f"shard {t.source.path}"))
    beats: dict[int, int] = {}
    last_read = 0.0
    shown = 0.0
    left = len(todo)
    while left:
        for key, (record, part) in pool.poll(1.0):
            records[key] = record
            merge_stats(stats, part)
            beats.pop(key, None)
            left -= 1
        now = time.monotonic()
        if now - last_read >= 1.0:
            last_read = now
            try:
                fresh = ray.get(heartbeat.read.remote(), timeout=10)
            except Exception:  # noqa: BLE001 - a missed heartbeat read is not an error
                fresh = beats
            if any(fresh.get(k, 0) > beats.get(k, 0) for k in fresh):
                pool.touch()
            beats = {k: v for k, v in fresh.items() if k not in records}
        rows = stats.rows + sum(beats.values())
        if ray_opts.on_progress is not None:
            ray_opts.on_progress(RunState(len(records), total, rows, stats.errored, pool.snapshot()))
        if opts.progress and sys.stderr is not None and (now - shown >= 1.0 or not left):
            shown = now
            elapsed = max(time.perf_counter() - stats.started, 1e-9)
            print(f"\r  {len(records)}/{total} shards  {rows:,} rows  {rows / elapsed:,.0f} rows/s  errors {stats.errored:,}  actors {pool.ready_count()}/{len(pool.actors)}",
                  end="" if left else "\n", file=sys.stderr, flush=True)


# -- Ray Data --------------------------------------------------------------------------------
class EnsemblePredictor:
    """Callable class for ``Dataset.map_batches`` (Arrow batches): one ``Scorer`` per actor,
    loaded once; rows checked and scored by the engine's own per-window code (``windows.py``)."""

    def __init__(self, artifact_dir: str, opts: ScoreOptions, prefix: str = "", *, digest: str | None = None):
        from ..engine.scorer import Scorer

        self.opts = opts
        self.prefix = prefix
        # Ray Data runs lazily: the dataset may execute long after score_dataset() (an artifact
        # exported again since), and an actor may start on a node with another copy. score_dataset
        # passes the driver's digest; a predictor built directly loads what is there.
        self.scorer = planned_scorer(artifact_dir, opts.run, digest) if digest is not None else Scorer(artifact_dir, opts.run)
        self.schema = result_schema(self.scorer, opts.write)
        self._checked = False

    def __call__(self, batch):
        import pyarrow as pa

        if not self._checked:  # where the driver could not see the schema without running the dataset
            check_columns(batch.schema.names, self.opts.read, self.schema.names, self.prefix)
            self._checked = True
        out = list(score_arrow(self.scorer, [batch], self.opts.read, self.opts.write, self.schema, self.prefix))
        if out:
            return pa.Table.from_batches(out)
        empty = [pa.array([], type=f.type) for f in self.schema]
        return pa.Table.from_arrays([*batch.columns, *empty], names=[*batch.schema.names, *[self.prefix + f.name for f in self.schema]])


def score_dataset(
    ds,
    artifact_dir: str | Path,
    text_column: str = "text",
    num_actors: int = 2,
    num_cpus_per_actor: float = 1,
    num_gpus_per_actor: float = 0,
    batch_size: int = 2048,
    precision: str = "fp32",
    providers: list[str] | None = None,
    preserve_order: bool = True,
    text_pair_column: str | None = None,
    prefix: str = "",
    **options: Any,
):
    """``ds`` with the engine's result columns (those of ``result_block``) added, scored by an
    actor pool; ``options`` are ``stackscore score``'s flat names (``with_model_outputs``,
    ``on_error``, ``long_text``, ``token_budget`` ...). A null, empty or non-text row gets no
    prediction and its reason in ``error``, as a Parquet file's row would. With
    ``on_error="fail"`` the first such row raises in the actor when the dataset is consumed:
    Ray wraps it (``RayTaskError``), the one-line reason in its message.

    Order: ``preserve_order=True`` sets ``DataContext.execution_options.preserve_order`` on the
    dataset's context; with ``False``, keep an id column to restore order by a sort.
    """
    import ray.data

    run = {"precision": precision, "threads": max(1, int(num_cpus_per_actor))}
    if num_gpus_per_actor and providers is None:
        providers = [CUDA, CPU]
    if providers:
        run["providers"] = tuple(providers)
    set_by = {"text_field": "pass text_column=", "text_pair_field": "pass text_pair_column=", "threads": "each actor runs num_cpus_per_actor= threads",
              "progress": "actors print no progress line (Ray Data shows the job's)"}
    opts = frame_options("score_dataset", set_by, options, text_field=text_column, text_pair_field=text_pair_column, progress=False, **run)
    facts = ArtifactFacts(artifact_dir, opts.run)
    check_pair_option(facts, text_pair_column, "text_pair_column=")  # one line here, not a failure in every actor
    known = ds.schema(fetch_if_missing=False)  # without running the dataset: read_* knows it, a map may not
    if known is not None:
        check_columns(known.names, opts.read, result_schema(facts, opts.write).names, prefix)
    if preserve_order:
        # A Dataset snapshots the DataContext when it is created: set it on the dataset itself.
        ctx = getattr(ds, "context", None) or ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
    return ds.map_batches(
        EnsemblePredictor,
        fn_constructor_kwargs={"artifact_dir": str(Path(artifact_dir).resolve()), "opts": opts, "prefix": prefix, "digest": facts.digest},
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_cpus=num_cpus_per_actor,
        num_gpus=num_gpus_per_actor or None,
    )
