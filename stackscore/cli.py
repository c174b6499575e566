"""Command line: thin wrappers that parse arguments and call the Python API.

User errors (``StackscoreError``) are printed as one line on stderr with exit code 2, never as a
traceback; anything else (a bug) is one line with exit code 1 unless ``STACKSCORE_TRACEBACK=1``. Progress and summaries go to stderr; the output file holds predictions only.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import StackscoreError
from .export.variants import CALIBRATION_ROWS
from .options import ReadOptions, RunOptions, WriteOptions, cache_dir_for, user_cache_dir
from .tuning import RECORD as TUNING_RECORD, tuned

# Each default is written once, in the options dataclasses; the CLI shows the same values.
_RUN, _READ, _WRITE = RunOptions(), ReadOptions(), WriteOptions()

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="ONNX batch scoring for ensembles of text classifiers.")


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# Every command that reads a corpus (score, export --calibration, bench, tune) takes the same option.
TSV_QUOTES_OPTION = typer.Option(
    _READ.tsv_quotes, help="TSV input: none (a double quote is text, as in GLUE's files), csv (quoted as pandas/Python csv write it), or detect (stop with one line if a field starts with a quote).",
)


@app.command()
def demo(
    workdir: Path = typer.Option(Path("demo-run"), help="Where the corpus, models, artifact and predictions go."),
    rows: int = typer.Option(100_000, help="Rows in the generated file to score."),
    train_rows: int = typer.Option(3000, help="Labelled rows to fine-tune on."),
    folds: int = typer.Option(5, help="K for out-of-fold stacking."),
    epochs: int = typer.Option(3, help="Fine-tuning epochs per model."),
    output_format: str = typer.Option("jsonl", help="Predictions format: jsonl, csv or parquet."),
):
    """Generate a corpus, fit a BERT + RoBERTa stacked ensemble, export it, score 100k rows."""
    from .demo import run_demo
    from .quiet import configure

    configure(False)

    run_demo(workdir, rows=rows, train_rows=train_rows, folds=folds, epochs=epochs, output_format=output_format, log=_err)


@app.command()
def fit(
    config: Path = typer.Argument(..., help="TOML fit config (see examples/fit-demo.toml)."),
    out: Path = typer.Option(..., "--out", "-o", help="Work directory: models/, artifact/, report.json."),
    verbose: bool = typer.Option(False, "--verbose", help="Also show third-party progress bars, load reports and warnings."),
):
    """Fine-tune base models, compute out-of-fold logits, fit and compare fusions, export."""
    from .quiet import configure

    configure(verbose)
    from .train.config import load_config
    from .train.fit import fit as run_fit

    run_fit(load_config(config), out, log=_err)
    _err(f"report: {out / 'report.md'}\nartifact: {out / 'artifact'}")


@app.command()
def export(
    workdir: Path = typer.Argument(..., help="A `stackscore fit --out` directory."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Artifact directory (default WORKDIR/artifact)."),
    overwrite: bool = typer.Option(True, help="Replace an existing artifact directory."),
    verbose: bool = typer.Option(False, "--verbose", help="Also show third-party progress bars and warnings."),
    calibration: Optional[Path] = typer.Option(None, help="Training texts (a corpus file) to calibrate static int8 on instead of the fit's own sample; texts that are gate rows are left out."),
    calibration_rows: int = typer.Option(CALIBRATION_ROWS, help="With --calibration: how many of its texts (shuffled, seed 0): 1,024 calibrate, the rest rank ops for the int8 search."),
    text_field: str = typer.Option(_READ.text_field, help="With --calibration: the field holding the text."),
    tsv_quotes: str = TSV_QUOTES_OPTION,
):
    """(Re-)export a fitted work directory to an artifact: ONNX graphs, parity checks, manifest."""
    from .quiet import configure

    configure(verbose)
    from .export import export_artifact

    texts = None
    if calibration_rows < 1:
        raise StackscoreError(f"--calibration-rows must be a positive whole number, not {calibration_rows}")
    if calibration is not None:
        import random

        from .engine.readers import open_reader
        from .fit_state import FitState

        state = FitState.load(workdir)
        if state.text_pair:
            raise StackscoreError("--calibration takes single texts; this fit scores sentence pairs (its own calibration pairs are used)")
        gate = set(state.parity_texts + (state.confirmation_texts or []))  # the gates measure on rows never used to calibrate
        pool = [t for c in open_reader(str(calibration), text_field=text_field, tsv_quotes=tsv_quotes) for t, e in zip(c.texts, c.errors) if e is None and t not in gate]
        random.Random(0).shuffle(pool)
        texts = pool[:calibration_rows]
        if not texts:
            raise StackscoreError(f"{calibration}: no texts to calibrate on (field '{text_field}', gate and confirmation rows left out)")
        _err(f"calibrating static int8 on {len(texts):,} texts from {calibration}")
    m = export_artifact(workdir, out, log=_err, overwrite=overwrite, calibration_texts=texts)
    _err(f"artifact written: {out or workdir / 'artifact'} ({len(m.files)} files, fusion '{m.fusion.method}')")


@app.command()
def score(
    artifact: Path = typer.Argument(..., help="Artifact directory (with manifest.json)."),
    inputs: list[str] = typer.Argument(..., help="Input: .jsonl .csv .tsv .parquet .txt, optionally .gz. With --engine ray also several files, directories, globs and URIs (s3://...)."),
    output: str = typer.Option(..., "--output", "-o", help="Output: .jsonl .csv .tsv .parquet (optionally .gz for text). With --engine ray also a directory (trailing slash, or existing): one shard per input file."),
    text_field: str = typer.Option(_READ.text_field, help="Column/field holding the text."),
    text_pair_field: Optional[str] = typer.Option(None, help="Column/field holding the second text, for ensembles fitted on sentence pairs."),
    id_field: Optional[str] = typer.Option(None, help="Column/field holding the row id (default: 'id' if present, else row number)."),
    label_field: Optional[str] = typer.Option(None, help="Column with true labels: report accuracy (not written)."),
    token_budget: int = typer.Option(_RUN.token_budget, help="Max padded tokens (rows x length) per batch for a model the size of MiniLM-L6 (2048: measured best on 2 CPU cores, see benchmarks/RESULTS.md); on CPUs a smaller model gets proportionally more, up to 8x."),
    chunk_rows: int = typer.Option(_READ.window_rows, help="Rows per window (the length-sorting window)."),
    long_text: str = typer.Option(_RUN.long_text, help="Texts over max_length tokens: truncate (the first max_length), head-tail (the first quarter and the last three quarters), or windows (logits averaged over --max-windows windows at half a window's stride; text past them is cut)."),
    max_windows: int = typer.Option(_RUN.max_windows, help="--long-text windows: windows per row (8 reads about 4.5 x max_length tokens); rows longer than that are counted as truncated."),
    precision: str = typer.Option("auto", help="auto (fastest precision whose export gate passed on this hardware), fp32, int8, bf16 (OpenVINO) or fp16 (GPU)."),
    backend: str = typer.Option(_RUN.backend, help="auto, onnxruntime or openvino."),
    device: str = typer.Option("cpu", help="cpu, cuda (ONNX Runtime CUDA EP, fp16 graphs, IOBinding) or tensorrt (TensorRT EP, then CUDA)."),
    gpus: Optional[str] = typer.Option(None, help="GPU ids for --device cuda/tensorrt, comma-separated (default 0): one session per model per GPU, batches dealt across them. --engine local only."),
    trt_cache: Optional[Path] = typer.Option(None, help="TensorRT engine cache directory (default: <output>.trt-cache/, reused by later runs)."),
    cache_dir: Optional[Path] = typer.Option(None, envvar="STACKSCORE_CACHE_DIR", help="Keep OpenVINO's compiled models and ONNX Runtime's optimized graphs here (keyed by graph checksum, runtime version, CPU, compile settings), and read `stackscore tune`'s choices from it: later runs start faster. Default: $XDG_CACHE_HOME/stackscore or ~/.cache/stackscore (none where it cannot be created); --engine ray: none unless named."),
    no_cache: bool = typer.Option(False, "--no-cache", envvar="STACKSCORE_NO_CACHE", help="No default cache directory (a --cache-dir or STACKSCORE_CACHE_DIR still counts): every model compiled anew, nothing kept."),
    gpu_mem_limit_gb: float = typer.Option(0, help="CUDA arena limit per GPU in GiB (0 = no limit)."),
    provider: list[str] = typer.Option([], help="ONNX Runtime execution provider(s), in order (overrides --device)."),
    threads: int = typer.Option(_RUN.threads, help="Intra-op threads per session (0 = all cores; with --engine ray: the actor's CPUs)."),
    streams: int = typer.Option(_RUN.streams, help="Requests in flight per model, each on threads/streams cores (0 = what `stackscore tune` measured and recorded in --cache-dir for this CPU, else 2 for OpenVINO models on 2+ threads, 1 otherwise)."),
    allow_cpu_fallback: bool = typer.Option(False, help="If the requested GPU providers are missing, run on the CPU (with a warning) instead of failing."),
    with_model_outputs: bool = typer.Option(False, help="Add each base model's logits as columns."),
    with_contributions: bool = typer.Option(False, help="Add each base model's share of the fused logit (linear stacking)."),
    encoding_errors: str = typer.Option(_READ.encoding_errors, help="Invalid UTF-8 in a row: strict (the row is an error row) or replace (U+FFFD, scored)."),
    tsv_quotes: str = TSV_QUOTES_OPTION,
    on_error: str = typer.Option(_WRITE.on_error, help="Rows that cannot be scored: record (written with an error column), skip (counted, not written) or fail."),
    overwrite: bool = typer.Option(False, help="Replace an existing output file (or an interrupted run's parts)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run from its last committed part (a directory output: score only the missing shards)."),
    allow_growing_input: bool = typer.Option(False, help="If the input changes while it is read, warn and score the bytes it had at the start (default: stop with an error)."),
    stats_json: Optional[Path] = typer.Option(None, help="Also write the run's statistics as JSON here."),
    quiet: bool = typer.Option(False, help="No progress line."),
    cascade: str = typer.Option("on", help="Artifacts fitted with a cascade: on (rows the cheap models decide stop early; a 'stage' column says where) or off (every model on every row)."),
    engine: str = typer.Option("local", help="local (this process) or ray (the same engine on an actor pool of a Ray cluster)."),
    address: Optional[str] = typer.Option(None, help="--engine ray: address of an existing cluster ('auto' inside one; default: start a local one)."),
    actors: Optional[int] = typer.Option(None, help="--engine ray: actors in the pool (default: one per --cpus-per-actor CPUs, or --gpus-per-actor GPUs, free in the cluster)."),
    cpus_per_actor: Optional[float] = typer.Option(None, help="--engine ray: CPUs reserved per actor, also its inference threads (default 1)."),
    gpus_per_actor: Optional[float] = typer.Option(None, help="--engine ray: GPUs per actor (1: one actor per GPU, CUDA providers; default 0)."),
    stall_timeout: Optional[float] = typer.Option(None, help="--engine ray: stop, saying why, after this many seconds without progress (default 300)."),
    output_format: Optional[str] = typer.Option(None, help="--engine ray with a directory output: each shard's format, jsonl (default), jsonl.gz, csv, csv.gz, tsv, tsv.gz or parquet."),
):
    """Score a file with an artifact; predictions in input order, one row per input row."""
    if engine not in ("local", "ray"):
        raise StackscoreError(f"--engine must be local or ray, not '{engine}'")
    ray_only = {"--address": address, "--actors": actors, "--cpus-per-actor": cpus_per_actor, "--gpus-per-actor": gpus_per_actor, "--stall-timeout": stall_timeout, "--output-format": output_format}
    if engine == "local":
        given = [flag for flag, v in ray_only.items() if v is not None]
        if given:
            raise StackscoreError(f"{given[0]} applies to --engine ray")
        if len(inputs) != 1:
            raise StackscoreError(f"--engine local scores one input file ({len(inputs)} given); several files, directories and globs need --engine ray")
    elif gpus is not None:
        raise StackscoreError("--gpus applies to --engine local; with --engine ray each actor gets its GPU from Ray (--gpus-per-actor)")
    from .engine.backends.gpu import providers_for_device
    from .options import GpuOptions, ScoreOptions

    try:
        device_ids = [int(g) for g in (gpus or "0").split(",") if g.strip()]
    except ValueError:
        raise StackscoreError(f"--gpus must be comma-separated GPU ids like 0,1, not '{gpus}'") from None
    if engine == "ray" and (gpus_per_actor or 0) > 0 and not provider and device == "cpu":
        device = "cuda"  # --gpus-per-actor alone: actors on their GPUs with the CUDA provider
    gpu = GpuOptions(
        device_ids=tuple(device_ids or [0]), mem_limit_bytes=int(gpu_mem_limit_gb * (1 << 30)),
        trt_cache_dir=trt_cache or (Path(output).with_name(Path(output).name + ".trt-cache") if engine == "local" else None),
    )
    run = RunOptions(
        providers=tuple(provider) or tuple(providers_for_device(device)), threads=threads, precision=precision,
        backend=backend, allow_cpu_fallback=allow_cpu_fallback, gpu=gpu, token_budget=token_budget, long_text=long_text,
        max_windows=max_windows, cascade=_on_off("--cascade", cascade), streams=streams,
        cache_dir=cache_dir_for(cache_dir, no_cache or (engine == "ray" and cache_dir is None)),  # a driver's home is not its workers'
    )
    opts = ScoreOptions(
        ReadOptions(
            text_field=text_field, text_pair_field=text_pair_field, id_field=id_field, label_field=label_field, window_rows=chunk_rows,
            encoding_errors=encoding_errors, allow_growing_input=allow_growing_input, tsv_quotes=tsv_quotes,
        ),
        WriteOptions(with_model_outputs=with_model_outputs, with_contributions=with_contributions, on_error=on_error, overwrite=overwrite, resume=resume),
        run,
        progress=not quiet,
    )
    extra: dict = {}
    if stats_json:
        from .engine.committer import check_side_file

        check_side_file(stats_json, "--stats-json", [Path(i) for i in inputs], output)
    try:
        if engine == "ray":
            from .integrations.ray import RayOptions, is_directory_output, score_ray

            ray_kw = {k.lstrip("-").replace("-", "_"): v for k, v in ray_only.items() if v is not None}
            if output_format is not None and not is_directory_output(output):
                raise StackscoreError("--output-format applies to a directory output (-o DIR/); a file's name gives its format")
            result = score_ray(artifact, inputs, output, opts, RayOptions(**ray_kw))
            stats = result.stats
            extra = {"engine": "ray", "actors": result.actors}
            if result.shards is not None:
                extra.update(shards=len(result.shards), shards_done_before=result.done_before)
        else:
            from .engine.pipeline import score_file

            _KEPT.clear()  # one command's models at most (tests run many commands in one process)
            stats = score_file(artifact, Path(inputs[0]), Path(output), opts, keep=_KEPT)
    except KeyboardInterrupt:
        where = f"{output}.parts/" if engine == "local" or not output.endswith("/") else f"the finished shards in {output}"
        _err(f"interrupted: the parts committed so far are kept; rerun with --resume to continue ({where})")
        raise typer.Exit(130) from None
    except EOFError as exc:  # click would print only "Aborted!"
        raise StackscoreError(f"{inputs[0]}: the data ends unexpectedly ({exc})") from None
    _err(stats.summary())
    if stats.backends:
        _err(f"backends: {stats.backends}")
        if run.precision == "auto" and not run.on_gpu:
            _ensemble_gate_note(artifact, stats.backends)
    if extra:
        _err("engine ray: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in extra.items() if k != "engine"))
    if (engine == "local" and not quiet and run.streams == 0 and not run.on_gpu and (os.cpu_count() or 1) > 1 and stats.scored >= 1000
            and _KEPT and not tuned(run.cache_dir, _KEPT[0].manifest)):
        # no `tune` record: default streams and attention kernels (benchmarks/RESULTS.md)
        where = f" --cache-dir {run.cache_dir}" if run.cache_dir is not None and run.cache_dir != user_cache_dir() else " --cache-dir DIR" if run.cache_dir is None else ""
        _err(f"hint: `stackscore tune {artifact} --data {inputs[0]}{where}` measures each model's requests in flight and attention kernels on this CPU; "
             f"later runs{' with --cache-dir DIR' if run.cache_dir is None else ''} use them")
    if stats_json:
        from .engine.committer import write_side_file

        write_side_file(stats_json, (json.dumps({**stats.to_dict(), **extra}, indent=2) + "\n").encode())
    if engine == "local":
        global _DONE
        _DONE = True  # every file of the run is written and closed: main() may skip the teardown


def _ensemble_gate_note(artifact: str, backends: str) -> None:
    """Export's ensemble gate measured the fused answers of the mix ``auto`` ran on the export
    machine; another CPU (or ``--backend``) may run another mix, each model within its own gate
    but the mix not measured together: said in one line, not refused."""
    from .engine.runner import without_tuning
    from .manifest import load_manifest

    try:
        gated = (load_manifest(Path(artifact), verify=False).fusion.parity or {}).get("ensemble_auto", {}).get("runs")
    except Exception:  # noqa: BLE001 - a note, never a failure after the run
        return
    if gated and without_tuning(gated) != without_tuning(backends):
        _err(f"note: export's ensemble gate measured {without_tuning(gated)} together; this run's mix differs (each model passed its own gate)")


def _on_off(flag: str, value: str) -> bool:
    if value not in ("on", "off"):
        raise StackscoreError(f"{flag} must be on or off, not '{value}'")
    return value == "on"


@app.command()
def bench(
    workdir: Path = typer.Argument(..., help="A `stackscore fit --out` (or demo) directory: models/ and artifact/."),
    data: list[Path] = typer.Option(..., "--data", help="Corpus file(s); several files are mixed in equal shares."),
    rows: int = typer.Option(5000, help="Rows the engine scores."),
    baseline_rows: int = typer.Option(500, help="Rows each (slow) baseline scores."),
    precision: str = typer.Option("auto", help="Engine precision (auto, fp32, int8, bf16)."),
    backend: str = typer.Option("auto", help="Engine backend (auto, onnxruntime, openvino)."),
    token_budget: int = typer.Option(_RUN.token_budget, help="Engine token budget per batch for a MiniLM-sized model (smaller models get up to 8x on CPUs)."),
    tsv_quotes: str = TSV_QUOTES_OPTION,
    skip: list[str] = typer.Option([], help="Methods to skip: classic, expert, expert_int8, ortmodel, engine_fp32, roofline, tune (streams: one per model)."),
    cascade: str = typer.Option("off", help="Artifacts with a cascade: off (every model on every row, the loops' work) or on (as `score` runs by default: later models skipped on rows the first decide)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON here."),
    chart: Optional[Path] = typer.Option(None, help="Write a PNG bar chart here."),
    verbose: bool = typer.Option(False, "--verbose", help="Also show third-party progress bars and warnings (model loading for the PyTorch loops)."),
):
    """Engine vs PyTorch fp32 / expert PyTorch (bf16 where the CPU has it) / plain ORT loops on one corpus: a table and ratios."""
    from .quiet import configure

    configure(verbose)
    from .bench import print_table, run_bench, write_outputs

    r = run_bench(workdir, [str(d) for d in data], rows=rows, baseline_rows=baseline_rows, precision=precision, backend=backend, token_budget=token_budget, skip=tuple(skip), log=_err, cascade=_on_off("--cascade", cascade), tsv_quotes=tsv_quotes)
    print_table(r, log=print)
    write_outputs(r, json_out, chart)


@app.command()
def tune(
    artifact: Path = typer.Argument(..., help="Artifact directory."),
    data: Path = typer.Option(..., "--data", help="A corpus file like the ones you will score (its text field is read)."),
    cache_dir: Optional[Path] = typer.Option(None, envvar="STACKSCORE_CACHE_DIR", help="Where the choice is recorded (tuning.json); `score` reads it from the same cache dir. Default: score's ($XDG_CACHE_HOME/stackscore or ~/.cache/stackscore)."),
    rows: int = typer.Option(2000, help="Rows to time each model on."),
    text_field: str = typer.Option(_READ.text_field, help="Column/field holding the text."),
    tsv_quotes: str = TSV_QUOTES_OPTION,
    precision: str = typer.Option("auto", help="The precision you will score with."),
    backend: str = typer.Option(_RUN.backend, help="auto, onnxruntime or openvino."),
    threads: int = typer.Option(_RUN.threads, help="Intra-op threads you will score with (0 = all cores)."),
    token_budget: int = typer.Option(_RUN.token_budget, help="The token budget you will score with (it shapes every batch)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the measurements as JSON here."),
):
    """Measure 1, 2, ... requests in flight per model on this CPU (and OpenVINO's fused attention
    kernels against plain nodes) and record the fastest in --cache-dir."""
    from .bench import load_corpus
    from .options import RunOptions
    from .tuning import summary, tune as tune_streams

    named, cache_dir = cache_dir, cache_dir_for(cache_dir)
    if cache_dir is None:
        raise StackscoreError(f"{user_cache_dir() or 'the user cache dir (no absolute home)'}: cannot be created; --cache-dir (or STACKSCORE_CACHE_DIR) must name where the choice is recorded")
    if rows < 1:
        raise StackscoreError(f"--rows must be a positive whole number, not {rows}")
    texts = load_corpus([str(data)], rows, text_field=text_field, tsv_quotes=tsv_quotes)
    run = RunOptions(precision=precision, backend=backend, threads=threads, token_budget=token_budget)
    _err(f"timing each model's batches of {len(texts):,} rows at 1..{min(run.cpu_threads, 4)} streams (first pass, then best of 2)")
    result = tune_streams(artifact, texts, run, cache_dir, log=_err)
    for name, r in result.items():
        print(summary(name, r))
    if not result:
        print("no transformer model to tune (string-input models run one call per window)")
    else:
        if named is not None:
            print(f"recorded in {Path(cache_dir) / TUNING_RECORD}; `stackscore score --cache-dir {named}` uses it")
        else:
            print(f"recorded in {Path(cache_dir) / TUNING_RECORD}; `stackscore score` uses it (its default cache dir; "
                  f"where --no-cache or STACKSCORE_NO_CACHE is set, `--cache-dir {cache_dir}`)")
    if json_out:
        json_out.write_text(json.dumps(result, indent=2) + "\n")


@app.command()
def inspect(artifact: Path = typer.Argument(..., help="Artifact directory.")):
    """Show what an artifact holds, and whether every checksum matches."""
    from .manifest import load_manifest, verify_files

    from .engine.backends import gate_holds_here
    from .export.variants import VARIANTS

    m = load_manifest(artifact, verify=False)
    try:
        verify_files(artifact, m)
        status = "OK"
    except StackscoreError as exc:
        status = f"FAILED: {exc}"
    print(f"artifact {artifact}  format {m.format_version}  created by {m.created_by}")
    print(f"task {m.task}  labels {m.labels}" + ("  sentence pairs (score with --text-pair-field)" if m.text_pair else ""))
    for spec in m.models:
        sizes = {p: m.files.get(g, {}).get("size", 0) for p, g in spec.graphs.items()}
        print(f"  model {spec.name}: {spec.kind}{' ' + spec.architecture if spec.architecture else ''}, max_length {spec.max_length}{' (cut on the left: keeps the end)' if spec.truncation_side == 'left' else ''}{' (typed special-token strings split as words)' if spec.split_special_tokens else ''}, opset {spec.opset}, "
              f"inputs {', '.join(spec.inputs)}, graphs {', '.join(f'{p} ({s / 1e6:.1f} MB)' for p, s in sizes.items())}, parity {spec.parity.get('max_abs_diff')}")
        if spec.label_map and len(spec.label_map) == 1 and len(m.labels) == 2 and m.task != "regression":
            print(f"    one output (sigmoid head): its sigmoid is the probability of '{next(iter(spec.label_map.values()))}'")
        elif spec.label_map:
            print(f"    labels by name (checkpoint -> artifact): {spec.label_map}")
        for prec, gate in spec.parity.get("gates", {}).items():
            verdict = "passed" if gate.get("passed") else "failed"
            detail = gate.get("error") or f"agreement {gate.get('label_agreement', 0):.2%}, max prob error {gate.get('max_prob_error', 0):.4f}" + (
                f", mean {gate['mean_prob_error']:.4f}" if "mean_prob_error" in gate else "")
            if gate.get("reason") and not gate.get("passed"):
                detail += f"; {gate['reason']}"
            if "int8_kernels" in gate:
                detail += f"; measured with {gate['int8_kernels']} int8 kernels"
            if gate.get("cpu_bf16") is False:
                detail += "; ran in fp32: no bf16 on the export CPU"
            if gate.get("fp32_ops"):
                detail += f"; {gate['fp32_ops']} ops in float"
            if gate.get("attention") == "plain":
                detail += f"; OpenVINO attention as plain nodes (fused kernels agreed {gate.get('fused_attention_agreement', 0):.2%}), always run so"
            plain = gate.get("plain_attention")
            if isinstance(plain, dict):
                timed = f" at {plain['speedup']:.2f}x the fused kernel's speed" if "speedup" in plain else f" (not timed: {plain['timing_error']})" if "timing_error" in plain else ""
                if "label_agreement" in plain:
                    detail += f"; plain attention nodes {'passed' if plain.get('passed') else 'failed'} at {plain['label_agreement']:.2%}{timed}"
                else:
                    detail += f"; plain attention nodes: {plain.get('error', 'not measured')}"
                if plain.get("default") and plain.get("passed") and gate.get("passed"):
                    detail += f": the default where `stackscore tune` has not chosen, on this export's kind of CPU with {plain.get('threads')} threads and {plain.get('streams')} streams"
            if isinstance(gate.get("confirmation"), dict) and "label_agreement" in gate["confirmation"]:
                detail += f"; confirmed on {gate['confirmation']['rows']} other rows at {gate['confirmation']['label_agreement']:.2%}"
            why = gate_holds_here(spec, prec) if prec in VARIANTS and gate.get("passed") else None
            print(f"    gate {prec}: {verdict} ({detail})" + (f"\n      not used on this CPU: {why}" if why else ""))
    print(f"  fusion {m.fusion.method}: {json.dumps({k: v for k, v in m.fusion.params.items() if k != 'linear_coef'})}")
    print(f"    why: {m.fusion.reason}")
    if m.cascade:
        stages = m.cascade.get("stages", [])
        steps = [f"{'+'.join(st.get('models', []))} (stops rows at p >= {st['threshold']:.4f})" if isinstance(st.get("threshold"), (int, float)) and st["threshold"] <= 1
                 else f"{'+'.join(st.get('models', []))} ({'never stops' if st.get('threshold') is not None else 'the full ensemble'})" for st in stages]
        print(f"  cascade: {' -> '.join(steps)}")
    print(f"checksums: {status} ({len(m.files)} files)")
    if status != "OK":
        raise typer.Exit(1)


_DONE = False  # set by a command whose work is complete and whose files are all closed
_KEPT: list = []  # a command's loaded models, left for the process's end (``_exit_now``), not freed one by one


def _exit_now(code: int) -> None:
    """End the process without the interpreter's teardown: unloading OpenVINO's and ONNX
    Runtime's plugins and freeing every module takes 60-80 ms after the last row is written,
    which a small job's user waits for (measured on a 20-row `score`: 0.07 s of 0.9 s). Only
    after a command says its output is complete (``_DONE``); Python's buffers are flushed first,
    and a flush that fails (a closed pipe) exits 120, as Python's own shutdown does.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120
    os._exit(code)


def main() -> None:
    global _DONE
    _DONE = False
    try:
        app()
    except SystemExit as exc:
        if _DONE and exc.code in (0, None):
            _exit_now(0)
        raise
    except StackscoreError as exc:
        _err(f"error: {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - a bug, not a user error: still one line unless asked
        if os.environ.get("STACKSCORE_TRACEBACK"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:400]
        _err(f"error: unexpected {type(exc).__name__}: {first} (this is a bug in stackscore; STACKSCORE_TRACEBACK=1 shows where)")
        sys.exit(1)


if __name__ == "__main__":
    main()
