"""``stackscore bench``: the engine against the loops a user would otherwise write, in one run.

Every way of scoring runs on the same corpus and the same ensemble, on this machine, one after
another, and is reported as rows/s and as a ratio to the others (ratios measured in one run are
what to compare on a shared, noisy machine):

- ``classic``: PyTorch fp32, batches of 32 in input order, padded to the batch's longest row
  (what ``Trainer.predict`` does), every base model, then the fusion;
- ``expert``: PyTorch with length-sorted batches of 32, under ``torch.autocast(bfloat16)`` where
  the CPU computes bf16 natively (AVX512-BF16 or AMX) and in fp32 elsewhere: on an AVX2-only CPU
  PyTorch emulates bf16 and the ensemble ran 7x slower under autocast than in fp32 (2-core AMD EPYC
  Zen 3), so an expert there runs fp32, and a bf16 "expert" would flatter the engine
  (``expert_precision`` in the JSON says which ran);
- ``expert_int8``: the expert loop on PyTorch's dynamic int8 (``quantize_dynamic`` on the Linear
  layers), which no gate checks: its agreement with the classic loop is in the table;
- ``ortmodel``: optimum's ``ORTModelForSequenceClassification`` used as a user would. optimum-onnx
  0.1.0 does not import with transformers 5.x, so a plain ONNX Runtime session on the same
  exported fp32 graph, fed batches of 32 in input order, stands in for it;
- ``engine``: ``stackscore score`` from a JSONL file on disk to a predictions file (reading,
  tokenizing, batching, fusion and writing included), with the requested precision.

The slow baselines run on the first ``baseline_rows`` rows of the same shuffled corpus (rows/s
does not depend on how many rows are timed once there are enough); agreement is measured on
those rows against the classic fp32 loop. Every method is timed best of two (first passes pay
for per-shape kernel selection in every runtime); the engine's cold first run is reported as
``engine_cold_rows_per_s``. The engine as a whole process is compared with each loop's warm
pass (``process_ratio_vs_*``) and with a floor of the loop's own process, its start timed in a
fresh interpreter plus its warm pass (``process_to_process_ratio_vs_*``, ``loop_start_seconds``),
and each process is split into where its time went (``engine_process_phases``: start, loading,
each model, the rest, exit), so a process goal can be checked against the model that holds it.
``overhead_fraction`` is the warm engine's wall time, file to file,
over the time its sessions alone take on the same pre-tokenized batches, minus one.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson

from .engine.pipeline import score_file
from .engine.readers import open_reader
from .engine.runner import TextRunner
from .engine.scorer import Scorer
from .hf import classifier_logits, ordered_logits, pad_like_config
from .errors import StackscoreError
from .manifest import Manifest
from .options import ReadOptions, RunOptions, ScoreOptions


@dataclass
class Method:
    name: str
    rows: int
    seconds: float
    tokens: int = 0
    batch_seconds: list[float] = field(default_factory=list)
    labels: np.ndarray | None = None  # fused top label per row (the timed rows)
    proba: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def latency(self) -> dict[str, float]:
        lat = np.asarray(self.batch_seconds or [0.0]) * 1e3
        return {q: round(float(np.percentile(lat, int(q[1:]))), 2) for q in ("p50", "p95", "p99")}


def load_corpus(files: list[str], rows: int, seed: int = 0, text_field: str = "text", tsv_quotes: str = ReadOptions.tsv_quotes) -> list[str]:
    """Equal shares of ``rows`` from each file (a 50/50 mix for two files), shuffled."""
    rng = random.Random(seed)
    per_file = -(-rows // len(files))
    texts: list[str] = []
    for f in files:
        pool = [t for c in open_reader(f, text_field=text_field, tsv_quotes=tsv_quotes) for t, e in zip(c.texts, c.errors) if e is None]
        if not pool:
            raise StackscoreError(f"{f}: no scorable rows")
        rng.shuffle(pool)
        while len(pool) < per_file:  # small files are repeated to fill their share
            pool = pool + pool
        texts.extend(pool[:per_file])
    rng.shuffle(texts)
    return texts[:rows]


def load_torch_models(workdir: Path, manifest: "Manifest") -> tuple[dict[str, tuple[Any, Any, int]], dict[str, list[int]]]:
    """Each transformer of the artifact as the PyTorch loops run it: (model, tokenizer, max
    length) by name, and the label order of checkpoints used as saved. What a user's loop script
    does before its first batch, so `loop_start` times exactly this in a fresh process."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from .hf import load_tokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    models = {}
    # Checkpoints used as saved live where the team keeps them, with their own label order.
    from .fit_state import FIT_STATE, FitState

    entries = {m.name: m for m in FitState.load(workdir).models} if (workdir / FIT_STATE).is_file() else {}
    label_order: dict[str, list[int]] = {}
    for spec in manifest.models:
        if spec.kind == "tfidf":
            continue
        entry = entries.get(spec.name)
        d = entry.directory(workdir) if entry is not None else workdir / "models" / spec.name
        model = AutoModelForSequenceClassification.from_pretrained(str(d), local_files_only=True, dtype=torch.float32).eval()
        tok = load_tokenizer(d)
        pad_like_config(tok, model.config)  # as fit and export pad it
        if entry is not None and entry.output_activation:
            model.output_activation = entry.output_activation  # as fit scored it and the graph computes it
        models[spec.name] = (model, tok, spec.max_length)
        if entry is not None and entry.label_order:
            label_order[spec.name] = list(entry.label_order)
    return models, label_order


def loop_start(workdir: Path) -> float:
    """Seconds a user's PyTorch loop script waits before its first batch, as a fresh process:
    the interpreter, ``import torch, transformers``, every transformer and tokenizer loaded
    (`load_torch_models`; its TF-IDF model and meta-learner, a pickle each, left out), best of
    two. With the loop's warm rows/s this gives a floor for the loop's whole process (its first
    pass's per-shape kernel selection, its reading and writing left out), so the process-to-
    process ratio it yields is a floor for the engine's."""
    import sys

    code = ("import sys; from pathlib import Path; from stackscore.bench import load_torch_models; "
            "from stackscore.manifest import load_manifest; w = Path(sys.argv[1]); "
            "load_torch_models(w, load_manifest(w / 'artifact', verify=False))")
    return min(_wall([sys.executable, "-c", code, str(workdir)]) for _ in range(2))


class TorchEnsemble:
    """The fine-tuned Hugging Face models of a fit directory, for the PyTorch baselines."""

    def __init__(self, workdir: Path, scorer: Scorer):
        self.models, self.label_order = load_torch_models(workdir, scorer.manifest)
        self.text_models = {n: r for n, r in scorer.runners.items() if isinstance(r, TextRunner)}
        self.width = len(scorer.labels)
        self.fusion = scorer.fusion
        self.order = scorer.model_names

    def dynamic_int8(self) -> "TorchEnsemble":
        """The same ensemble with each transformer's Linear layers in PyTorch's dynamic int8
        (``quantize_dynamic``: int8 weights, activations quantized per batch), quantized once
        here, outside any timing: the next thing an expert tries on a CPU, and on one without
        bf16 instructions the fastest PyTorch loop (1.19x fp32 for the rt-polarity ensemble on an AVX2 EPYC, `benchmarks/torch_precisions.py`)."""
        import copy

        import torch

        q = copy.copy(self)
        q.models = {n: (torch.ao.quantization.quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8), tok, ml) for n, (m, tok, ml) in self.models.items()}
        return q


def _fused(ens: TorchEnsemble, logits: dict[str, np.ndarray]) -> np.ndarray:
    return ens.fusion([logits[n] for n in ens.order])


def torch_loop(ens: TorchEnsemble, texts: list[str], name: str, sort: bool, bf16: bool, batch: int = 32) -> Method:
    import contextlib

    import torch

    t0 = time.perf_counter()
    logits: dict[str, np.ndarray] = {}
    lat: list[float] = []
    tokens = 0
    for mname, (model, tok, max_len) in ens.models.items():
        order = np.arange(len(texts))
        encoded = None
        if sort:  # the expert tokenizes once, sorts by true length, and pads each batch
            encoded = tok(texts, truncation=True, max_length=max_len)
            order = np.argsort(np.asarray([len(x) for x in encoded["input_ids"]]), kind="stable")
        out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            for s in range(0, len(order), batch):
                idx = order[s : s + batch]
                b0 = time.perf_counter()
                if encoded is not None:
                    enc = tok.pad({k: [encoded[k][i] for i in idx] for k in ("input_ids", "attention_mask")}, return_tensors="pt")
                else:
                    enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
                tokens += int(enc["attention_mask"].sum())
                out[idx] = classifier_logits(model, enc["input_ids"], enc["attention_mask"]).float().numpy()
                lat.append(time.perf_counter() - b0)
        logits[mname] = ordered_logits(out, ens.label_order[mname]) if mname in ens.label_order else out
    for mname, runner in ens.text_models.items():
        logits[mname] = runner.run_texts(texts, ens.width)[0]
    proba = _fused(ens, logits)
    return Method(name, len(texts), time.perf_counter() - t0, tokens, lat, proba.argmax(1), proba)


def loop_rows(ens: TorchEnsemble, specs: list, texts: list[str], n: int, batch: int = 32) -> np.ndarray:
    """Indices (in input order) of the ``n`` rows the loops time: whole batches of ``batch``,
    evenly spaced through every row sorted by the costliest transformer's token length. The
    expert, sorting these, gets the batches (and the padding) it would sorting the whole file,
    as the engine sorts its 4,096-row windows; sorting only the first ``n`` rows padded its
    batches 7-9 % more. The loops in input order see rows of every length, as in the file."""
    if n >= len(texts) or not ens.models:
        return np.arange(min(n, len(texts)))
    name = max((s for s in specs if s.name in ens.models), key=lambda s: s.flops_per_token).name
    _, tok, max_len = ens.models[name]
    order = np.argsort(np.asarray([len(x) for x in tok(texts, truncation=True, max_length=max_len)["input_ids"]]), kind="stable")
    batches = [order[s : s + batch] for s in range(0, len(order) - batch + 1, batch)] or [order]  # whole batches: a short last one would weigh its lengths less
    picks = np.unique(np.linspace(0, len(batches) - 1, max(1, -(-n // batch))).round().astype(int))
    return np.sort(np.concatenate([batches[i] for i in picks]))


def ort_input_order(ens: TorchEnsemble, scorer: Scorer, texts: list[str], batch: int = 32) -> Method:
    """The ORTModel stand-in: the exported fp32 graph, batches of 32 in input order."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count() or 1
    from .manifest import verify_opened

    # The scorer checked only the graphs it opened (auto may have chosen another variant).
    # Checksums and sessions before the timer: the engine's warm runs and the PyTorch loops
    # leave their loading out too (it was 9-16 % of this loop's time at 100-300 rows).
    verify_opened(scorer.artifact_dir, scorer.manifest, [m.graphs["fp32"] for m in scorer.manifest.models if m.kind != "tfidf"])
    sessions = {spec.name: ort.InferenceSession(str(scorer.artifact_dir / spec.graphs["fp32"]), sess_options=so, providers=["CPUExecutionProvider"])
                for spec in scorer.manifest.models if spec.kind != "tfidf"}
    t0 = time.perf_counter()
    logits: dict[str, np.ndarray] = {}
    lat: list[float] = []
    tokens = 0
    for spec in scorer.manifest.models:
        if spec.kind == "tfidf":
            logits[spec.name] = ens.text_models[spec.name].run_texts(texts, ens.width)[0]
            continue
        sess = sessions[spec.name]
        _, tok, max_len = ens.models[spec.name]
        out = []
        for s in range(0, len(texts), batch):
            b0 = time.perf_counter()
            enc = tok(texts[s : s + batch], padding=True, truncation=True, max_length=max_len, return_tensors="np")
            tokens += int(enc["attention_mask"].sum())
            out.append(sess.run(["logits"], {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)})[0])
            lat.append(time.perf_counter() - b0)
        logits[spec.name] = np.concatenate(out)
    proba = _fused(ens, logits)
    return Method("ortmodel", len(texts), time.perf_counter() - t0, tokens, lat, proba.argmax(1), proba)


def engine_run(artifact: Path, texts: list[str], workdir: Path, run: RunOptions, chunk_rows: int, scorer: Scorer | None = None) -> tuple[Method, dict]:
    src = workdir / "bench-input.jsonl"
    if not src.exists():  # the same texts for every engine run of one bench
        src.write_bytes(b"".join(orjson.dumps({"id": i, "text": t}) + b"\n" for i, t in enumerate(texts)))
    out = workdir / "bench-output.jsonl"
    scorer = scorer or Scorer(artifact, run)
    t0 = time.perf_counter()
    stats = score_file(scorer, src, out, ScoreOptions.from_kwargs(run=scorer.options, progress=False, overwrite=True, window_rows=chunk_rows))
    seconds = time.perf_counter() - t0
    rows = [orjson.loads(l) for l in out.read_bytes().splitlines()]
    labels = np.asarray([scorer.labels.index(r["label"]) for r in rows])
    proba = np.asarray([[r[f"prob_{l}"] for l in scorer.labels] for r in rows])
    m = Method("engine", len(texts), seconds, stats.real_tokens, stats.batch_seconds, labels, proba, {"backends": stats.backends})
    return m, {"stats": stats.to_dict(), "scorer": scorer}


def pure_inference_seconds(scorer: Scorer, texts: list[str], chunk_rows: int) -> float:
    """The runners' backends alone on the engine's own pre-tokenized, pre-padded batches."""
    work = scorer.prepared_batches(texts, chunk_rows)
    k = len(scorer.labels)
    t0 = time.perf_counter()
    for name, payloads in work.items():
        runner = scorer.runners[name]
        if isinstance(runner, TextRunner):
            for payload in payloads:
                runner.run_texts(payload, k)
        else:
            runner.run_batches(payloads, k)
    return time.perf_counter() - t0


def cold_start(artifact: Path, texts: list[str], workdir: Path, run: RunOptions, rows: int = 20) -> dict[str, float]:
    """What a small job waits for: whole `stackscore score` processes on a ``rows``-row file
    (interpreter start, imports, manifest checksums, sessions, scoring, writing), best of two,
    without and with the cache dir (compiled models and the streams recorded there: what a user
    with `--cache-dir` runs), and the import alone. Time to the first row is
    from launch to the commit of the first window (``first_row_at`` in the run's stats): the
    interpreter's exit, which the whole-process time includes, is not waited for by a reader."""
    import sys

    src = workdir / "cold-input.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"id": i, "text": t}) + b"\n" for i, t in enumerate(texts[:rows])))
    out, stats = workdir / "cold-output.jsonl", workdir / "cold-stats.json"
    cmd = _score_cmd(artifact, src, out, replace(run, cache_dir=None)) + ["--stats-json", str(stats)]

    def first_row(args: list[str]) -> tuple[float, float]:
        """(whole process, launch to the first committed row) in seconds."""
        launched = time.time()
        whole = _wall(args)
        return whole, json.loads(stats.read_text())["first_row_at"] - launched

    uncached = min(first_row(cmd), first_row(cmd))
    cache = workdir / "compile-cache" if run.cache_dir is None else run.cache_dir
    cached_cmd = _score_cmd(artifact, src, out, replace(run, cache_dir=cache)) + ["--stats-json", str(stats)]
    _wall(cached_cmd)  # fills the compiled-model cache
    cached = min(first_row(cached_cmd), first_row(cached_cmd))
    imports = min(_wall([sys.executable, "-c", "import stackscore.cli, stackscore.engine.pipeline"]) for _ in range(2))
    return {
        "rows": rows, "cold_start_s": round(uncached[0], 3), "time_to_first_row_s": round(uncached[1], 3),
        "cold_start_cached_s": round(cached[0], 3), "time_to_first_row_cached_s": round(cached[1], 3), "import_s": round(imports, 3),
    }


def _score_cmd(artifact: Path, src: Path, out: Path, run: RunOptions, window_rows: int = ScoreOptions().read.window_rows) -> list[str]:
    """The `stackscore score` command line for ``run`` (its streams: as given, or what the cache
    dir's record says when 0)."""
    import sys

    cmd = [sys.executable, "-m", "stackscore.cli", "score", str(artifact), str(src), "-o", str(out), "--overwrite", "--quiet",
           "--precision", run.precision, "--backend", run.backend, "--cascade", "on" if run.cascade else "off",
           "--token-budget", str(run.token_budget), "--chunk-rows", str(window_rows), "--streams", str(run.streams)]
    return cmd + (["--cache-dir", str(run.cache_dir)] if run.cache_dir is not None else ["--no-cache"])


def _wall(args: list[str]) -> float:
    import subprocess

    import os

    # the command line says which cache dir the run has (``_score_cmd``), never the environment
    env = {k: v for k, v in os.environ.items() if k not in ("STACKSCORE_CACHE_DIR", "STACKSCORE_NO_CACHE")}
    t0 = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True, env=env)
    if r.returncode:
        raise StackscoreError(f"bench run failed: {r.stderr.strip()[-300:]}")
    return time.perf_counter() - t0


def engine_process(artifact: Path, workdir: Path, run: RunOptions, window_rows: int = ScoreOptions().read.window_rows) -> tuple[float, dict[str, Any]]:
    """Seconds of a whole `stackscore score` process on the bench's input file, start to exit,
    best of two: what a user waits for (interpreter, imports, checksums, sessions, scoring,
    writing), against which the loops' warm, in-process figures are a conservative comparison.
    With where the best run's time went (``process_phases``)."""
    stats = workdir / "process-stats.json"
    cmd = _score_cmd(artifact, workdir / "bench-input.jsonl", workdir / "process-output.jsonl", run, window_rows) + ["--stats-json", str(stats)]

    def once() -> tuple[float, dict[str, Any]]:
        launched = time.time()
        whole = _wall(cmd)
        return whole, process_phases(launched, whole, json.loads(stats.read_text()))

    return min(once(), once(), key=lambda r: r[0])


def process_phases(launched: float, whole: float, stats: dict[str, Any]) -> dict[str, Any]:
    """Where a whole process's ``whole`` seconds went, from its --stats-json: ``start`` (launch
    to loading: interpreter, imports, the manifest read, the output locked), ``load`` (checksums,
    sessions or imported compiled models, tokenizers), each model's seconds on the scoring thread
    (``models``), ``rest`` (the scoring thread waiting for the first window, fusing, the writer's
    last commit) and ``exit``. They add up to ``whole``; empty for stats without the timestamps."""
    begun, finished, load = stats.get("load_started_at"), stats.get("finished_at"), stats.get("load_seconds")
    if begun is None or finished is None or load is None:
        return {}
    spent = stats.get("model_seconds") or {}
    models = {m: round(v, 3) for m, v in sorted(spent.items(), key=lambda kv: -kv[1])}
    return {"seconds": round(whole, 3), "start_s": round(begun - launched, 3), "load_s": round(load, 3), "models_s": models,
            "rest_s": round(finished - begun - load - sum(spent.values()), 3), "exit_s": round(whole - (finished - launched), 3)}


def single_row_latency(scorer: Scorer, texts: list[str], n: int = 50) -> dict[str, float]:
    lat = []
    for t in texts[:n]:
        t0 = time.perf_counter()
        scorer.score_texts([t])
        lat.append((time.perf_counter() - t0) * 1e3)
    return {"p50": round(float(np.percentile(lat, 50)), 2), "p99": round(float(np.percentile(lat, 99)), 2)}


SKIPPABLE = ("classic", "expert", "expert_int8", "ortmodel", "engine_fp32", "roofline", "tune")
_SKIP_ALIASES = {"expert_bf16": "expert"}  # the expert loop's name before it ran fp32 on CPUs without bf16


def skip_names(skip: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``--skip`` values, checked once at the edge: a misspelt method would otherwise run anyway."""
    names = tuple(_SKIP_ALIASES.get(n, n) for n in skip)
    bad = [n for n in names if n not in SKIPPABLE]
    if bad:
        raise StackscoreError(f"--skip: unknown method {bad[0]!r} (one of {', '.join(SKIPPABLE)})")
    return names


def expert_precision() -> str:
    """What the expert loop computes in: bf16 autocast only where this CPU has bf16 instructions
    (the same test ``--precision auto`` uses for OpenVINO bf16); fp32 elsewhere (see the module
    docstring)."""
    from .engine.backends import cpu_has_bf16

    return "bf16" if cpu_has_bf16() else "fp32"


def run_bench(
    workdir: str | Path,
    data: list[str],
    rows: int = 5000,
    baseline_rows: int = 500,
    precision: str = "auto",
    backend: str = "auto",
    token_budget: int = RunOptions.token_budget,
    chunk_rows: int = ScoreOptions().read.window_rows,
    skip: tuple[str, ...] = (),
    log: Callable[[str], None] = print,
    cascade: bool = False,
    tsv_quotes: str = ReadOptions.tsv_quotes,
) -> dict[str, Any]:
    """``cascade``: off by default, so the engine runs every model on every row as the loops do
    (on, it skips later models on the rows the first ones decide: faster, and not the same work)."""
    skip = skip_names(skip)
    workdir = Path(workdir)
    artifact = workdir / "artifact"
    texts = load_corpus(data, rows, tsv_quotes=tsv_quotes)
    opts = RunOptions(precision=precision, backend=backend, token_budget=token_budget, cascade=cascade)
    expert_prec = expert_precision()
    results: dict[str, Method] = {}
    streams = None
    with tempfile.TemporaryDirectory() as tmp:
        if "tune" not in skip:  # what `stackscore tune` records, into this run's own cache dir
            from .tuning import tune

            log("streams: each model's batches at 1, 2, ... requests in flight (best of 2), as `stackscore tune`")
            cache = Path(tmp) / "cache"
            streams = tune(artifact, texts, opts, cache, chunk_rows, log=log)
            opts = replace(opts, cache_dir=cache)
        log(f"engine ({precision}): {len(texts):,} rows from {', '.join(data)}")
        cold, info = engine_run(artifact, texts, Path(tmp), opts, chunk_rows)
        scorer: Scorer = info["scorer"]
        # Every method is timed best of two (the first pass of any runtime pays for kernel
        # selection per new shape: oneDNN under PyTorch, ORT, OpenVINO alike), and the engine's
        # overhead compares like with like: the warm engine, file to file, against its
        # sessions alone on the same batches, alternating so a noisy neighbour hits both.
        warm_runs, pure_runs = [], []
        for _ in range(2):
            warm_runs.append(engine_run(artifact, texts, Path(tmp), opts, chunk_rows, scorer=scorer)[0])
            pure_runs.append(pure_inference_seconds(scorer, texts, chunk_rows))
        engine = min(warm_runs, key=lambda m: m.seconds)
        inference_s = min(pure_runs)
        results["engine"] = engine
        log(f"  {engine.rows_per_s:,.1f} rows/s warm ({cold.rows_per_s:,.1f} cold) on {engine.extra['backends']}")
        if precision != "fp32" and "engine_fp32" not in skip:
            log("engine (fp32, exact)")
            fp32_opts = RunOptions(precision="fp32", backend="onnxruntime", token_budget=token_budget)
            first, fp32_info = engine_run(artifact, texts, Path(tmp), fp32_opts, chunk_rows)
            second, _ = engine_run(artifact, texts, Path(tmp), fp32_opts, chunk_rows, scorer=fp32_info["scorer"])
            results["engine_fp32"] = min(first, second, key=lambda m: m.seconds)
            results["engine_fp32"].name = "engine_fp32"
        ens = TorchEnsemble(workdir, scorer)
        base_idx = loop_rows(ens, scorer.manifest.models, texts, baseline_rows)
        base_texts = [texts[i] for i in base_idx]

        def best_of_two(fn: Callable[[], Method]) -> Method:
            return min((fn(), fn()), key=lambda m: m.seconds)

        if "classic" not in skip:
            log(f"classic: PyTorch fp32, batch 32, input order, {len(base_texts)} rows (best of 2)")
            results["classic"] = best_of_two(lambda: torch_loop(ens, base_texts, "classic", sort=False, bf16=False))
        if "expert" not in skip:
            log(f"expert: PyTorch {expert_prec}{' autocast' if expert_prec == 'bf16' else ''}, sorted batches of 32, {len(base_texts)} rows (best of 2)")
            results["expert"] = best_of_two(lambda: torch_loop(ens, base_texts, "expert", sort=True, bf16=expert_prec == "bf16"))
        if "expert_int8" not in skip:
            log(f"expert int8: PyTorch dynamic int8 (quantize_dynamic, Linear layers), sorted batches of 32, {len(base_texts)} rows (best of 2)")
            q = ens.dynamic_int8()
            results["expert_int8"] = best_of_two(lambda: torch_loop(q, base_texts, "expert_int8", sort=True, bf16=False))
        if "ortmodel" not in skip:
            log(f"ortmodel stand-in: ORT fp32 session, batch 32, input order, {len(base_texts)} rows (best of 2)")
            results["ortmodel"] = best_of_two(lambda: ort_input_order(ens, scorer, base_texts))
        single = single_row_latency(scorer, texts)
        log("cold start: whole `stackscore score` processes on 20 rows")
        cold_start_info = cold_start(artifact, texts, Path(tmp), opts)
        log(f"engine as a whole process: `stackscore score` on the {len(texts):,} rows, start to exit, as run by default and with the tuned --cache-dir (best of 2 each)")
        process, phases_first = engine_process(artifact, Path(tmp), replace(opts, cache_dir=None), chunk_rows)  # no cache: what a first `score` pays (or --no-cache)
        # a later `score` with the default cache dir and no `tune` record: compiled models imported,
        # default streams and attention (best of two: the first fills its fresh cache dir)
        process_repeat, phases_repeat = engine_process(artifact, Path(tmp), replace(opts, cache_dir=Path(tmp) / "default-cache"), chunk_rows)
        process_cached, phases_cached = engine_process(artifact, Path(tmp), opts, chunk_rows) if opts.cache_dir is not None else (None, None)
        loop_start_s = None
        if any(k in results for k in ("classic", "expert", "expert_int8")):
            log("loops' start as a fresh process: import torch and transformers, load every transformer and tokenizer (best of 2)")
            loop_start_s = loop_start(workdir)
        roof = None
        if "roofline" not in skip:
            from .roofline import model_roofline

            log("roofline: FLOPs from the graphs on the engine's batches, peak from a chain of MatMuls per runtime and precision")
            roof = model_roofline(scorer, texts, chunk_rows, opts.cpu_threads)
    reference = results.get("classic")
    table = {}
    for name, m in results.items():
        row = {
            "rows_timed": m.rows,
            "rows_per_s": round(m.rows_per_s, 2),
            "tokens_per_s": round(m.tokens / m.seconds, 1) if m.seconds else 0.0,
            "batch_latency_ms": m.latency(),
        }
        if reference is not None and m.labels is not None:
            on = base_idx if len(m.labels) == len(texts) and len(texts) != len(base_idx) else slice(None)  # the engine's: the loops' rows
            row["agreement_vs_classic_fp32"] = round(float(np.mean(m.labels[on] == reference.labels)), 4)
            row["max_prob_error_vs_classic_fp32"] = round(float(np.abs(m.proba[on] - reference.proba).max()), 5)
        table[name] = row
    eng = results["engine"].rows_per_s

    def ratio(name: str) -> float | None:
        return round(eng / results[name].rows_per_s, 2) if name in results and results[name].rows_per_s else None

    def process_ratio(name: str, seconds: float | None = None) -> float | None:  # the whole process (start to exit) against a warm loop
        seconds = seconds or process
        return round(len(texts) / seconds / results[name].rows_per_s, 2) if name in results and results[name].rows_per_s else None

    def loop_process_ratio(name: str, seconds: float | None = None) -> float | None:  # process against a floor of the loop's own process
        if loop_start_s is None or name not in results or not results[name].rows_per_s:
            return None
        return round((loop_start_s + len(texts) / results[name].rows_per_s) / (seconds or process), 2)

    stats = info["stats"]
    top = None
    if roof and scorer.cascade is None:  # with the cascade on, later models skip rows: every model on every row is no bound
        from .roofline import ceiling

        top = ceiling(roof, len(texts))
    summary = {
        "rows": len(texts),
        "data": data,
        "precision": precision,
        "backends": results["engine"].extra["backends"],
        "engine_rows_per_s": round(eng, 2),
        "ratio_vs_classic": ratio("classic"),
        "ratio_vs_expert": ratio("expert"),
        "expert_precision": expert_prec,
        "ratio_vs_expert_int8": ratio("expert_int8"),
        "ratio_vs_ortmodel": ratio("ortmodel"),
        "engine_process_rows_per_s": round(len(texts) / process, 2),
        "engine_process_seconds": round(process, 3),  # `stackscore score` as run by default: no cache dir
        **{f"process_ratio_vs_{k}": process_ratio(k) for k in ("classic", "expert", "expert_int8")},
        "loop_start_seconds": None if loop_start_s is None else round(loop_start_s, 3),
        **{f"process_to_process_ratio_vs_{k}": loop_process_ratio(k) for k in ("classic", "expert", "expert_int8")},
        "engine_process_repeat_seconds": round(process_repeat, 3),  # a later run with the default cache dir, untuned
        **{f"process_ratio_repeat_vs_{k}": process_ratio(k, process_repeat) for k in ("classic", "expert", "expert_int8")},
        **{f"process_to_process_ratio_repeat_vs_{k}": loop_process_ratio(k, process_repeat) for k in ("classic", "expert", "expert_int8")},
        # with `--cache-dir` filled by `stackscore tune` (compiled models, the measured streams)
        "engine_process_cached_seconds": None if process_cached is None else round(process_cached, 3),
        **({f"process_ratio_cached_vs_{k}": process_ratio(k, process_cached) for k in ("classic", "expert", "expert_int8")} if process_cached else {}),
        **({f"process_to_process_ratio_cached_vs_{k}": loop_process_ratio(k, process_cached) for k in ("classic", "expert", "expert_int8")} if process_cached else {}),
        # where each process's time went (``process_phases``): start, load, each model, rest, exit
        "engine_process_phases": {"first": phases_first, "later": phases_repeat, **({"tuned": phases_cached} if phases_cached else {})},
        "loop_rows": "whole sorted batches of 32 evenly through every row (the expert's padding as sorting the whole file), timed in input order by the unsorted loops",
        # the names these ratios had when the expert always ran bf16: kept where it still does
        **({"ratio_vs_expert_bf16": ratio("expert"), "process_ratio_vs_expert_bf16": process_ratio("expert")} if expert_prec == "bf16" and "expert" in results else {}),
        "streams": streams,
        "ortmodel_is": "plain ONNX Runtime session, fp32 graph, batches of 32 in input order (optimum-onnx 0.1.0 does not import with transformers 5.x)",
        "padding_fraction": round(1.0 - stats["padding_efficiency"], 4),
        "overhead_fraction": round(engine.seconds / inference_s - 1.0, 4),
        "inference_seconds": round(inference_s, 3),
        "engine_seconds": round(engine.seconds, 3),
        "engine_cold_rows_per_s": round(cold.rows_per_s, 2),
        "agreement": table["engine"].get("agreement_vs_classic_fp32"),
        "single_row_latency_ms": single,
        "methods": table,
        "cascade": scorer.cascade is not None,
        "cascade_stage_rows": stats.get("cascade_stage_rows"),
        "cold_start": cold_start_info,
        "roofline": roof,
        # the transformers' GEMMs at this run's measured peaks (roofline.ceiling): how far any engine could go
        "roofline_ceiling": None if top is None else {
            "rows_per_s": round(top, 1),
            **{f"ratio_vs_{k}": round(top / results[k].rows_per_s, 2) for k in ("classic", "expert", "expert_int8") if k in results and results[k].rows_per_s},
            "engine_fraction": round(eng / top, 3),
            "engine_process_fraction": round(len(texts) / process / top, 3),
            # the same bound as a whole process: the ceiling's seconds plus this run's cached start
            # (a 20-row `score` process with its cache filled), against each loop's warm pass, as
            # the process ratios above: a process goal above it needs a shorter start or other
            # precisions, not a faster engine loop
            **_process_ceiling(top, len(texts), cold_start_info, {k: results[k].rows_per_s for k in ("classic", "expert", "expert_int8") if k in results}),
        },
        "cpu_count": os.cpu_count(),
    }
    return summary


def _process_ceiling(top: float, rows: int, cold: dict[str, Any] | None, loops: dict[str, float]) -> dict[str, Any]:
    """``roofline.ceiling`` as a whole process: ``rows`` at the ceiling's rows/s after the start a
    cached 20-row `score` process takes in this run (interpreter, imports, checksums, imported
    compiled models, its 20 rows, exit), so a bound for this engine's start, not for any engine's."""
    start = (cold or {}).get("cold_start_cached_s")
    if not start or not top or rows <= 0:
        return {}
    per_s = rows / (rows / top + start)
    return {"process_start_s": start, "process_rows_per_s": round(per_s, 1),
            **{f"process_ratio_vs_{k}": round(per_s / v, 2) for k, v in loops.items() if v}}


def phase_line(p: dict[str, Any]) -> str:
    """``process_phases`` as one line, models by share of the whole."""
    whole = p["seconds"] or 1.0
    models = ", ".join(f"{m} {v:.2f} s ({v / whole:.0%})" for m, v in p["models_s"].items())
    return (f"{p['seconds']:.2f} s = start {p['start_s']:.2f} s (interpreter, imports) + loading {p['load_s']:.2f} s + {models} "
            f"+ the rest {p['rest_s']:.2f} s (waiting for the first rows, fusing, writing) + exit {p['exit_s']:.2f} s")


def print_table(r: dict[str, Any], log: Callable[[str], None] = print) -> None:
    log(f"\n{r['rows']:,} rows from {', '.join(r['data'])}; engine on {r['backends']}")
    if r.get("cascade"):
        stages = r.get("cascade_stage_rows") or []
        log(f"cascade on: the engine's later models ran on {1 - stages[0] / max(sum(stages), 1):.1%} of rows (the loops run every model on every row: not the same work)" if stages else "cascade on")
    log("| method | rows/s | tokens/s | engine ratio | p50 / p95 / p99 batch ms | agreement vs classic fp32 | max prob err |")
    log("|---|---:|---:|---:|---|---:|---:|")
    eng = r["engine_rows_per_s"]
    for name, m in r["methods"].items():
        lat = m["batch_latency_ms"]
        ratio = eng / m["rows_per_s"] if m["rows_per_s"] else float("nan")
        log(f"| {name} | {m['rows_per_s']:,.1f} | {m['tokens_per_s']:,.0f} | {ratio:.2f}x | {lat['p50']} / {lat['p95']} / {lat['p99']} | {m.get('agreement_vs_classic_fp32', '-')} | {m.get('max_prob_error_vs_classic_fp32', '-')} |")
    log(f"padding {r['padding_fraction']:.1%} of computed tokens; engine overhead {r['overhead_fraction']:.1%} over pure inference; "
        f"single-row latency p50 {r['single_row_latency_ms']['p50']} ms, p99 {r['single_row_latency_ms']['p99']} ms")
    if r.get("engine_process_rows_per_s"):
        vs = ", ".join(f"{r[k]:.2f}x the {n} loop" for k, n in (("process_ratio_vs_expert", f"expert {r['expert_precision']}"), ("process_ratio_vs_expert_int8", "expert dynamic int8"), ("process_ratio_vs_classic", "classic fp32")) if r.get(k))
        log(f"engine as a whole process (start to exit, {r['rows']:,} rows, no cache dir: a first run): {r['engine_process_rows_per_s']:,.1f} rows/s" + (f" = {vs} (warm, in-process)" if vs else ""))
        if r.get("engine_process_repeat_seconds"):
            log(f"  a later run (default cache dir filled, no tune record): {r['rows'] / r['engine_process_repeat_seconds']:,.1f} rows/s"
                + (f" = {r['process_ratio_repeat_vs_expert']:.2f}x the expert loop" if r.get("process_ratio_repeat_vs_expert") else "")
                + (f", {r['process_to_process_ratio_repeat_vs_expert']:.2f}x process to process" if r.get("process_to_process_ratio_repeat_vs_expert") else ""))
        if r.get("engine_process_cached_seconds"):
            log(f"  with the tuned --cache-dir: {r['rows'] / r['engine_process_cached_seconds']:,.1f} rows/s" + (f" = {r['process_ratio_cached_vs_expert']:.2f}x the expert loop" if r.get("process_ratio_cached_vs_expert") else ""))
        phases = r.get("engine_process_phases") or {}
        which = "tuned" if phases.get("tuned") else "later"
        if phases.get(which):
            log(f"  where the {which} process's time went: {phase_line(phases[which])}")
        if r.get("loop_start_seconds") is not None:
            vs = ", ".join(f"{r[k]:.2f}x" + f" the {n} loop's" for k, n in (("process_to_process_ratio_vs_expert", f"expert {r['expert_precision']}"), ("process_to_process_ratio_vs_expert_int8", "expert dynamic int8"), ("process_to_process_ratio_vs_classic", "classic fp32")) if r.get(k))
            log(f"process to process: {vs} (a loop's process counted as its start, {r['loop_start_seconds']} s, plus its warm rows/s: a floor)")
    if r.get("streams"):
        from .tuning import summary

        for name, t in r["streams"].items():
            log(f"streams {summary(name, t)}")
    c = r.get("cold_start")
    if c:
        log(f"cold start, a {c['rows']}-row file: whole process {c['cold_start_s']} s, launch to first committed row {c['time_to_first_row_s']} s; "
            f"with --cache-dir filled {c['cold_start_cached_s']} s / {c['time_to_first_row_cached_s']} s; import alone {c['import_s']} s")
    roof = r.get("roofline")
    if roof:
        log("\n| model | precision | GFLOP/row | achieved GFLOP/s | peak GFLOP/s (same precision, same run) | fraction | held by |")
        log("|---|---|---:|---:|---:|---:|---|")
        for name, m in roof.items():
            frac = "n/a" if m["fraction_of_peak"] is None else f"{m['fraction_of_peak']:.0%}"
            log(f"| {name} | {m['precision']} | {m['gflops_per_row']} | {m['achieved_gflops']} | {m['peak_gflops']} | {frac} | {m['held_by'] or '-'} |")
        top = r.get("roofline_ceiling")
        if top:
            vs = ", ".join(f"{top[f'ratio_vs_{k}']:.1f}x the {k} loop" for k in ("classic", "expert", "expert_int8") if top.get(f"ratio_vs_{k}"))
            log(f"ceiling: the transformers' GEMMs at the peaks above, or as fast as a model ran where faster (all else free): {top['rows_per_s']:,.0f} rows/s"
                + (f" = at most {vs} (warm)" if vs else "")
                + f"; the engine reaches {top['engine_fraction']:.0%} of it warm, {top['engine_process_fraction']:.0%} as a first process")
            if top.get("process_rows_per_s"):
                vs = ", ".join(f"{top[f'process_ratio_vs_{k}']:.1f}x the {k} loop" for k in ("classic", "expert", "expert_int8") if top.get(f"process_ratio_vs_{k}"))
                log(f"  as a whole process, with this run's cached start ({top['process_start_s']} s) on top: {top['process_rows_per_s']:,.0f} rows/s"
                    + (f" = at most {vs} (warm)" if vs else ""))
        profiled = {name: m["ops"] for name, m in roof.items() if m.get("ops")}
        if profiled:
            pct = lambda v: "-" if v is None else f"{v:.0%}"  # noqa: E731
            log("\nwhere each OpenVINO model's time goes (per-node counters, the same batches):")
            log("| model | int8 GEMMs | float GEMMs | other ops | int8 GEMMs % of peak | float GEMMs % of peak | largest other ops |")
            log("|---|---:|---:|---:|---:|---:|---|")
            for name, o in profiled.items():
                top = ", ".join(f"{t} {v:.0%}" for t, v in o["other_top"][:3])
                log(f"| {name} | {pct(o['int8_gemm_share'])} | {pct(o['float_gemm_share'])} | {pct(o['other_share'])} | "
                    f"{pct(o['int8_gemm_fraction_of_peak'])} | {pct(o['float_gemm_fraction_of_peak'])} ({o['float_gemm_precision']}) | {top} |")


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(r["methods"])
    vals = [r["methods"][n]["rows_per_s"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5))
    ax.barh(names, vals, color=["#d62728" if n == "engine" else "#7f7f7f" for n in names])
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:,.0f}", va="center")
    ax.invert_yaxis()
    ax.set_xlabel("rows/s (whole ensemble)")
    ax.set_title(f"{r['rows']:,} rows; engine {r['ratio_vs_classic']}x classic, {r['ratio_vs_expert']}x expert {r['expert_precision']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(r: dict[str, Any], json_path: Path | None, chart: Path | None) -> None:
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(r, indent=2) + "\n")
    if chart:
        chart.parent.mkdir(parents=True, exist_ok=True)
        plot(r, chart)
