"""Streams per model (and OpenVINO's attention kernels), chosen by measurement on this machine and
recorded (``stackscore tune``).

A model can run one request at a time on all cores (OpenVINO's LATENCY hint, one ONNX Runtime
caller) or several at once, each on its share of the cores (OpenVINO THROUGHPUT streams, ONNX
Runtime callers with fewer intra-op threads each). Which is faster depends on the CPU, the model
and its batch shapes: small GEMMs leave cores idle between kernels that a second request fills,
large ones do not. So it is measured, not assumed: ``measure`` times each model's own batches of
the user's rows (the engine's runner, the same backends) at 1, 2, ... streams, best of two, and
``record`` keeps the choice in the cache directory under a key that names the graph (sha256),
runtime, precision, thread count, token budget and CPU. ``RunOptions(streams=0)`` (the default) looks the key
up (``recorded``); without a record ``runner.default_streams`` decides (two for OpenVINO
on 2+ threads, as measured in sessions 8-12; one otherwise). A record is
never used for another graph, CPU, precision or thread count.

OpenVINO models are also timed with their attention blocks as plain nodes instead of its fused
kernels (``OpenVinoBackend(fused_attention=False)``): cheaper to prepare for each new batch shape,
slower on long sequences. ``RunOptions(fused_attention=None)`` (the default) reads that choice
the same way; without a record, what export timed faster on the gate rows where that timing
holds (``engine.runner.export_plain_attention``), else OpenVINO's own fused kernels.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .atomic import atomic_write
from .errors import StackscoreError

RECORD = "tuning.json"
MIN_GAIN = 0.03  # a second stream must be this much faster to be chosen (run-to-run noise is ~1-2 %)


def record_key(runtime: str, precision: str, graph_sha256: str, threads: int, token_budget: int) -> str:
    """What a choice depends on: the graph, runtime, precision, threads, batch size (the token
    budget shapes every batch) and the CPU."""
    from .engine.backends import cpu_key

    return f"{runtime}/{precision}/threads{threads}/budget{token_budget}/cpu{cpu_key()}/{graph_sha256[:32]}"


def fused_kernel() -> str:
    """What OpenVINO's fused attention is in this version (``ov.SDPA_TAG``: each block rewritten as
    one SDPA node, cheaper to prepare per new batch shape than the snippet measured before it). A
    record's fused-or-plain choice holds only against the kernel it was measured with."""
    from .engine.backends.ov import SDPA_TAG

    return SDPA_TAG.lstrip("-")


def current(key: str, entry: dict[str, Any]) -> bool:
    """Whether a record entry's attention choice was measured against this version's fused
    kernel: an OpenVINO entry that chose between fused and plain attention names it
    (``fused_kernel``); one made before the rewrite does not, and its choice is not read (its
    streams are: warm, the rewritten blocks run the same kernel)."""
    return not key.startswith("openvino/") or "fused_attention" not in entry or entry.get("fused_kernel") == fused_kernel()


def tuned(cache_dir: Path | None, manifest) -> bool:
    """Whether ``cache_dir``'s record holds a current entry (``current``) for one of the
    manifest's graphs (a key ends with the prefix of what keys the graph, ``compiled_identity``):
    `score`'s hint to run `tune` is not silenced by other artifacts' entries, nor by entries whose
    choice is no longer read."""
    from .manifest import compiled_identity

    if cache_dir is None:
        return False
    prefixes = {str(compiled_identity(manifest, g) or "")[:32] for spec in manifest.models for g in spec.graphs.values()} - {""}
    return any(k.rsplit("/", 1)[-1] in prefixes and isinstance(e, dict) and current(k, e) for k, e in _load(Path(cache_dir)).items())


def _load(cache_dir: Path) -> dict[str, Any]:
    path = Path(cache_dir) / RECORD
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def recorded(cache_dir: Path | None, runtime: str, precision: str, graph_sha256: str | None, threads: int, token_budget: int) -> dict[str, Any]:
    """What ``stackscore tune`` chose for this graph, runtime, precision, threads, token budget
    and CPU: ``streams`` and ``fused_attention``, each only where recorded and valid (``{}`` if
    nothing is)."""
    if cache_dir is None or not graph_sha256:
        return {}
    key = record_key(runtime, precision, graph_sha256, threads, token_budget)
    entry = _load(cache_dir).get(key)
    if not isinstance(entry, dict):
        return {}
    found: dict[str, Any] = {}
    streams = entry.get("streams")
    if isinstance(streams, int) and not isinstance(streams, bool) and 1 <= streams <= max(threads, 1):
        found["streams"] = streams
    if isinstance(entry.get("fused_attention"), bool) and current(key, entry):
        found["fused_attention"] = entry["fused_attention"]
    return found


def record(cache_dir: Path, key: str, entry: dict[str, Any]) -> Path:
    """Add one model's choice to the record (written to a temporary file, then renamed).

    Read, update and rename happen under an exclusive lock on ``.tuning.json.lock`` (``flock``, where
    the platform has it), so two `tune` runs sharing a cache dir (one per artifact, say) both
    keep their entries instead of the later rename dropping the other's."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f".{RECORD}.lock", "a") as lock:
        try:
            import fcntl

            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file is closed
        except ImportError:  # no flock (Windows): last writer wins, as before
            pass
        data = _load(cache_dir)
        data[key] = entry
        atomic_write(cache_dir / RECORD, json.dumps(data, indent=1, sort_keys=True))
    return cache_dir / RECORD


def measure(artifact_dir: Path, texts: list[str], options, window_rows: int = 4096, candidates: tuple[int, ...] | None = None, log=print) -> dict[str, dict[str, Any]]:
    """Rows/s of each transformer model's own batches of ``texts`` at each stream count, and for
    OpenVINO models with its fused attention kernels on and off.

    Returns per model: runtime, precision, graph sha256, ``rows_per_s`` per stream count (best of
    ``WARM_ROUNDS`` warm passes, the counts taking turns: ``taking_turns``), the chosen count
    (the fastest warm, if at least ``MIN_GAIN`` faster than one stream: a long job's speed),
    ``first_pass_rows_per_s`` (the pass that prepares every shape, what a one-window job waits
    for), ``fused_attention`` and the record key.

    Fused attention (``OpenVinoBackend``) is timed at the chosen stream count against plain
    attention nodes, the two taking turns (``plain_attention.fused_rows_per_s`` is fused's warm
    figure from those turns), and plain is chosen as ``prefer_plain`` says, where its outputs
    agree with the fused kernels' (``attention_agreement`` >= ``MIN_ATTENTION_AGREEMENT``).
    """
    from .engine.runner import TransformerRunner, gated_plain_attention, runner_for
    from .engine.scorer import Scorer
    from .manifest import compiled_identity

    threads = options.cpu_threads
    if not texts:
        raise StackscoreError("tuning needs at least one row to time")
    candidates = candidates or tuple(range(1, min(threads, 4) + 1))
    measured = replace(options, streams=1, fused_attention=True)  # every candidate explicit: no earlier record is read
    base = Scorer(artifact_dir, measured)
    work = base.prepared_batches(texts, window_rows)
    k = len(base.labels)
    out: dict[str, dict[str, Any]] = {}
    for spec in base.manifest.models:
        runner = base.runners[spec.name]
        if not isinstance(runner, TransformerRunner) or runner.choice is None:
            continue
        batches = work[spec.name]
        sha = compiled_identity(base.manifest, spec.graphs[runner.choice.graph_key]) or ""
        what = f"{spec.name} ({runner.choice.backend}/{runner.choice.precision})"

        # every stream count's runner at once (a compiled model each), timed taking turns
        runners = {n: runner if n == 1 else runner_for(spec, base.manifest, base.artifact_dir, replace(measured, streams=n)) for n in candidates}
        first, speeds = taking_turns(runners, batches, k, len(texts))
        for n in candidates:
            log(f"  {what}: {n} stream{'s' if n > 1 else ''} {speeds[n]:,.0f} rows/s (first pass {first[n]:,.0f})")
        fastest = max(speeds, key=speeds.get)
        chosen = fastest if speeds[fastest] >= speeds[1] * (1 + MIN_GAIN) else 1
        fused_runner = runners[chosen]
        del runners  # the other counts' compiled models go before plain attention's is built
        entry: dict[str, Any] = {
            "runtime": runner.choice.backend, "precision": runner.choice.precision, "graph_sha256": sha, "threads": threads,
            "rows_per_s": {str(n): round(v, 1) for n, v in speeds.items()}, "streams": chosen,
            "first_pass_rows_per_s": {str(n): round(v, 1) for n, v in first.items()},
            "gain": round(speeds[chosen] / speeds[1] - 1, 4), "rows": len(texts),
            "key": record_key(runner.choice.backend, runner.choice.precision, sha, threads, runner.token_budget), "token_budget": runner.token_budget,
        }
        if runner.choice.backend == "openvino":
            entry["fused_kernel"] = fused_kernel()  # what a fused-or-plain choice is measured against (``current``)
        if gated_plain_attention(spec, runner.choice):
            entry["fused_attention"] = False  # its gate measured plain nodes: nothing to choose
            log(f"  {what}: plain attention (its export gate measured it so)")
        elif runner.choice.backend == "openvino":
            plain_runner = runner_for(spec, base.manifest, base.artifact_dir, replace(measured, streams=chosen, fused_attention=False))
            # head to head: plain's first pass, then warm passes taking turns with the fused
            # runner at the same streams (its first pass was made above, on a fresh runner)
            both_first, both = taking_turns({"fused": fused_runner, "plain": plain_runner}, batches, k, len(texts), first_pass={"plain"})
            plain_first, plain, fused = both_first["plain"], both["plain"], both["fused"]
            agreement = attention_agreement(runner, plain_runner, batches, base.fusion.task)
            use_plain = agreement >= MIN_ATTENTION_AGREEMENT and prefer_plain(plain, plain_first, fused, first[chosen])
            entry["fused_attention"] = not use_plain
            entry["plain_attention"] = {"rows_per_s": round(plain, 1), "first_pass_rows_per_s": round(plain_first, 1), "agreement": round(agreement, 5),
                                        "fused_rows_per_s": round(fused, 1)}
            log(f"  {what}: {chosen} stream{'s' if chosen > 1 else ''}, plain attention {plain:,.0f} rows/s (first pass {plain_first:,.0f}, "
                f"agreement {agreement:.2%}) against fused {fused:,.0f} -> {'plain' if use_plain else 'fused'} attention")
        out[spec.name] = entry
    return out


WARM_ROUNDS = 2


def taking_turns(runners: dict, batches: list, width: int, rows: int, first_pass: set | None = None, rounds: int = WARM_ROUNDS) -> tuple[dict, dict]:
    """Rows/s of each runner's first pass (``first_pass``: which make one; default all), one
    after the other (each prepares every batch shape on its own compiled model), then the best
    of ``rounds`` warm passes, the runners taking turns in each round: on a machine whose
    speed drifts by tens of percent within a minute (a shared VM), candidates timed one after
    the other compared the drift as much as themselves (two benches' tune steps read MiniLM's
    plain attention 21 % slower, then 12 % faster, on the same rows: RESULTS.md)."""
    first: dict = {}
    best = dict.fromkeys(runners, float("inf"))
    for name, r in runners.items():
        if first_pass is None or name in first_pass:
            t0 = time.perf_counter()
            r.run_batches(batches, width)
            first[name] = rows / (time.perf_counter() - t0)
    for _ in range(rounds):
        for name, r in runners.items():
            t0 = time.perf_counter()
            r.run_batches(batches, width)
            best[name] = min(best[name], time.perf_counter() - t0)
    return first, {name: rows / t for name, t in best.items()}


MIN_ATTENTION_AGREEMENT = 0.999
"""Plain attention computes the same sums as the fused kernel in another order (in bf16, other
roundings): export gated the fused kernels, so plain ones are only chosen where their outputs
agree with them on the tuned rows in what the task answers, as export's gates compare (the
predicted class; the label set at 0.5; a value within 1 % of the values' range)."""

ATTENTION_CHECK_ROWS = 1024


def attention_agreement(fused, plain, batches: list, task: str = "single_label") -> float:
    """Share of up to ``ATTENTION_CHECK_ROWS`` tuned rows on which two runners of one model agree,
    in what ``task`` answers: ``export.onnx_graph.compare``, the export gates' own rules (once a
    copy here; before that a multi-label model was compared on its top label, a regression value
    on its sign)."""
    import numpy as np

    fused_out, plain_out, total = [], [], 0
    for b in batches:
        fused_out.append(fused.run_batch(b))
        plain_out.append(plain.run_batch(b))
        total += len(fused_out[-1])
        if total >= ATTENTION_CHECK_ROWS:
            break
    if not total:
        return 1.0
    from .export.onnx_graph import compare

    a, p = np.concatenate(fused_out), np.concatenate(plain_out)
    return compare(a, p, "regression" if a.shape[1] == 1 else task)["label_agreement"]  # one output: a value, whatever the task says


def summary(name: str, r: dict[str, Any]) -> str:
    """One model's measurements and choice as one line (`stackscore tune` and `stackscore bench`)."""
    speeds = ", ".join(f"{k}: {v:,.0f}" for k, v in r["rows_per_s"].items())
    firsts = ", ".join(f"{k}: {v:,.0f}" for k, v in (r.get("first_pass_rows_per_s") or {}).items())
    line = f"{name} ({r['runtime']}/{r['precision']}): rows/s by requests in flight {speeds} -> {r['streams']} ({r['gain']:+.1%})"
    if firsts:
        line += f"; first pass (new shapes) {firsts}"
    if "plain_attention" in r:
        p = r["plain_attention"]
        agreement = f", agreement {p['agreement']:.2%}" if "agreement" in p else ""
        fused = f" against fused {p['fused_rows_per_s']:,.0f}" if "fused_rows_per_s" in p else ""
        line += f"; plain attention {p['rows_per_s']:,.0f} (first pass {p['first_pass_rows_per_s']:,.0f}{agreement}){fused} -> {'fused' if r['fused_attention'] else 'plain'} attention"
    return line


def prefer_plain(plain: float, plain_first: float, fused: float, fused_first: float) -> bool:
    """Whether plain attention nodes beat OpenVINO's fused kernels (rows/s, warm and first pass):
    at least ``MIN_GAIN`` faster warm (a long job), or no more than ``MIN_GAIN`` slower warm and at
    least ``MIN_GAIN`` faster on the first pass (a fused kernel is compiled for every new batch
    shape, which a job of a window or two pays on nearly every batch). Otherwise the default stays."""
    return plain >= fused * (1 + MIN_GAIN) or (plain >= fused * (1 - MIN_GAIN) and plain_first >= fused_first * (1 + MIN_GAIN))


def tune(artifact_dir: Path, texts: list[str], options, cache_dir: Path, window_rows: int = 4096, log=print) -> dict[str, dict[str, Any]]:
    """``measure``, then ``record`` each model's choice in ``cache_dir``: `stackscore tune` and
    the first step of `stackscore bench`."""
    result = measure(artifact_dir, texts, options, window_rows, log=log)
    for r in result.values():
        record(cache_dir, r["key"], {k: v for k, v in r.items() if k != "key"})
    return result
