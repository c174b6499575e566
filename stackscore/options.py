"""Options: small frozen dataclasses grouped by concern, validated once, at the edge.

- ``RunOptions``: how to run the models (precision, backend, device, threads, batching).
- ``ReadOptions``: what to read from the input (fields, window size, encoding).
- ``WriteOptions``: what to write and how (extra columns, error rows, overwrite, resume).
- ``ScoreOptions``: the three above plus the run's progress reporting.

Each default is written once, here; the CLI, the Python API, Ray and the benchmarks build these
same objects (``ScoreOptions.from_kwargs`` takes the flat names the CLI and ``Ensemble.score_file``
use). Every value is checked in ``__post_init__`` with a one-line ``StackscoreError``, so a bad
``--long-text`` or ``--precision`` is refused before any file is opened or checksummed. The resume
fingerprint is derived from ``fingerprint_options`` (``asdict``), not from a hand-kept list.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from .errors import StackscoreError

PRECISIONS = ("auto", "fp32", "int8", "bf16", "fp16")
BACKENDS = ("auto", "onnxruntime", "openvino")
LONG_TEXT_MODES = ("truncate", "head-tail", "windows")
ON_ERROR = ("record", "skip", "fail")
ENCODING_ERRORS = ("strict", "replace")
TSV_QUOTES = ("detect", "none", "csv")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = (CUDA, TENSORRT)


def _one_of(what: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise StackscoreError(f"{what} must be one of {', '.join(map(str, allowed))}, not '{value}'")


def _positive(what: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise StackscoreError(f"{what} must be a positive whole number, not {value!r}")


def _flags(options: Any) -> None:
    """Every ``bool`` field holds True or False (``None`` too where the field allows it). Python
    takes any value as a condition, so ``cascade="off"`` or ``overwrite="false"`` from a config
    file would silently do the opposite of what it says: refused in one line instead."""
    for f in fields(options):
        kind = (f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))).replace(" ", "")
        if kind not in ("bool", "bool|None"):
            continue
        value = getattr(options, f.name)
        if not (isinstance(value, bool) or (value is None and kind == "bool|None")):
            raise StackscoreError(f"{f.name} must be True or False{' (or None)' if kind != 'bool' else ''}, not {value!r}")


def provider_names(providers) -> list[str]:
    """Names of ``providers``, which ONNX Runtime accepts as names or (name, options) pairs."""
    return [p[0] if isinstance(p, tuple) else p for p in providers]


@dataclass(frozen=True)
class GpuOptions:
    device_ids: tuple[int, ...] = (0,)
    mem_limit_bytes: int = 0  # 0 = no limit (ORT default: the whole device)
    trt_cache_dir: Path | None = None  # None: a temporary directory per run (no reuse)
    trt_fp16: bool = True
    trt_workspace_bytes: int = 4 << 30

    def __post_init__(self) -> None:
        _flags(self)
        object.__setattr__(self, "device_ids", tuple(int(d) for d in self.device_ids))
        if not self.device_ids or any(d < 0 for d in self.device_ids):
            raise StackscoreError(f"GPU ids must be non-negative whole numbers, got {list(self.device_ids)}")
        if not isinstance(self.mem_limit_bytes, int) or isinstance(self.mem_limit_bytes, bool) or self.mem_limit_bytes < 0:
            raise StackscoreError("the GPU memory limit must not be negative")


@dataclass(frozen=True)
class RunOptions:
    """How the models run: one object for the scorer, the gates, bench and every executor."""

    precision: str = "fp32"  # the exact default; the CLI asks for "auto" (fastest gated precision)
    backend: str = "auto"  # auto | onnxruntime | openvino
    providers: tuple[str, ...] = (CPU,)  # ONNX Runtime execution providers, in order
    threads: int = 0  # intra-op threads per session; 0 = one per core
    allow_cpu_fallback: bool = False  # GPU providers missing: fall back to CPU only if allowed
    gpu: GpuOptions = field(default_factory=GpuOptions)  # devices, TensorRT cache, memory limit
    io_binding: bool | None = None  # None: on for GPU providers (outputs stay on the device)
    token_budget: int = 2048  # padded tokens per batch of a MiniLM-sized model (smaller models: batcher.batch_scale); measured: 1024-16384 within 7 % on CPU, 2048 keeps latency low
    max_batch_rows: int = 256
    scale_batches: bool = True  # on CPUs a model smaller than MiniLM gets up to 8x the budget and rows (batcher.batch_scale); False: exactly as given
    long_text: str = "truncate"  # truncate | head-tail | windows (see engine/tokenize.py)
    max_windows: int = 8  # windows mode: windows per row at half a window's stride; text past them is cut (counted as truncated)
    bucket_lengths: bool | None = None  # pad to a few fixed lengths; None: on for GPU providers
    cascade: bool = True  # an artifact fitted with a cascade stops confident rows early; False: every model on every row
    cache_dir: Path | None = None  # compiled models (OpenVINO), optimized graphs (ONNX Runtime) and `tune` records, keyed by graph sha256 + runtime version + CPU; None: none (the CLI's default is ``cache_dir_for``: the user cache dir)
    streams: int = 0  # in-flight requests per model, each on threads/streams cores; 0 = what `stackscore tune` recorded for this CPU in cache_dir, else runner.default_streams (2 for OpenVINO on 2+ threads, 1 otherwise)
    fused_attention: bool | None = None  # OpenVINO's fused attention kernels (its "snippets"); None = what `stackscore tune` recorded for this CPU in cache_dir, else what export timed faster on the gate rows (``gates[variant].plain_attention.default``), else on

    def __post_init__(self) -> None:
        _flags(self)
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("backend", self.backend, BACKENDS)
        _one_of("--long-text", self.long_text, LONG_TEXT_MODES)
        _positive("token budget", self.token_budget)
        _positive("max batch rows", self.max_batch_rows)
        _positive("--max-windows", self.max_windows)
        if not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 0:
            raise StackscoreError(f"threads must be 0 (all cores) or a positive whole number, not {self.threads!r}")
        if not isinstance(self.streams, int) or isinstance(self.streams, bool) or self.streams < 0:
            raise StackscoreError(f"--streams must be 0 (the measured choice) or a positive whole number, not {self.streams!r}")
        object.__setattr__(self, "providers", tuple(self.providers) or (CPU,))

    @property
    def on_gpu(self) -> bool:
        return any(name in GPU_PROVIDERS for name in provider_names(self.providers))

    @property
    def devices(self) -> list[int | None]:
        """One backend per model per entry: GPU ids on GPU, a single CPU slot otherwise."""
        return list(self.gpu.device_ids) if self.on_gpu else [None]

    @property
    def cpu_threads(self) -> int:
        return self.threads or (os.cpu_count() or 1)

    @property
    def bucketed(self) -> bool:
        return self.bucket_lengths if self.bucket_lengths is not None else self.on_gpu


@dataclass(frozen=True)
class ReadOptions:
    """What to read: which fields hold the texts, ids and labels, and how rows are windowed."""

    text_field: str = "text"
    text_pair_field: str | None = None  # sentence-pair artifacts: the second text's field
    id_field: str | None = None  # default: "id" if present, else the row number
    label_field: str | None = None  # true labels: accuracy in the stats, not written
    window_rows: int = 4096  # rows per window (the length-sorting window; --chunk-rows)
    encoding_errors: str = "strict"  # strict (row is an error) | replace (U+FFFD, scored)
    allow_growing_input: bool = False  # input changed during the run: warn and score the snapshot
    # TSV quoting (readers.read_csv): none = a double quote is text (GLUE's files), csv = fields
    # quoted as pandas and Python's csv write them, detect = none until a field read starts with
    # a double quote, where the two differ: then one line asks which.
    tsv_quotes: str = "detect"

    def __post_init__(self) -> None:
        _flags(self)
        _one_of("--encoding-errors", self.encoding_errors, ENCODING_ERRORS)
        _one_of("--tsv-quotes", self.tsv_quotes, TSV_QUOTES)
        _positive("--chunk-rows", self.window_rows)
        if not self.text_field:
            raise StackscoreError("--text-field must name a field")


@dataclass(frozen=True)
class WriteOptions:
    """What to write: extra columns, what happens to rows that cannot be scored, and the file's fate."""

    with_model_outputs: bool = False
    with_contributions: bool = False
    on_error: str = "record"  # record (row written with its error) | skip (counted, not written) | fail
    overwrite: bool = False
    resume: bool = False

    def __post_init__(self) -> None:
        _flags(self)
        _one_of("--on-error", self.on_error, ON_ERROR)


@dataclass(frozen=True)
class ScoreOptions:
    read: ReadOptions = field(default_factory=ReadOptions)
    write: WriteOptions = field(default_factory=WriteOptions)
    run: RunOptions = field(default_factory=RunOptions)
    queue_depth: int = 2  # windows in flight between stages (memory: queue_depth x window_rows rows)
    progress: bool = True
    on_progress: Callable[[Any], None] | None = None  # called after every written window

    def __post_init__(self) -> None:
        _flags(self)
        _positive("queue depth", self.queue_depth)

    @property
    def field_check(self) -> bool:
        """Whether a JSONL reader stops on a text field none of the first objects has (a typo):
        not under ``--on-error skip``, where rows without it are meant to be left out."""
        return self.write.on_error != "skip"

    @classmethod
    def from_kwargs(cls, run: RunOptions | None = None, **kw: Any) -> "ScoreOptions":
        """The flat names the CLI and ``Ensemble.score_file`` use (``chunk_rows`` = ``window_rows``),
        routed to their group; an unknown name is refused in one line."""
        if "chunk_rows" in kw:
            kw["window_rows"] = kw.pop("chunk_rows")
        groups: dict[str, dict[str, Any]] = {"read": {}, "write": {}, "run": {}, "self": {}}
        owner = {f.name: g for g, c in (("read", ReadOptions), ("write", WriteOptions), ("run", RunOptions)) for f in fields(c)}
        own = {f.name for f in fields(cls)} - {"read", "write", "run"}
        for name, value in kw.items():
            if name in own:
                groups["self"][name] = value
            elif name in owner:
                groups[owner[name]][name] = value
            else:
                raise StackscoreError(f"unknown scoring option '{name}'")
        if run is not None and groups["run"]:
            from dataclasses import replace

            run = replace(run, **groups["run"])
        return cls(ReadOptions(**groups["read"]), WriteOptions(**groups["write"]), run or RunOptions(**groups["run"]), **groups["self"])


def user_cache_dir() -> Path | None:
    """The default cache directory of `stackscore score` and `tune`: ``$XDG_CACHE_HOME/stackscore``,
    else ``~/.cache/stackscore`` (``STACKSCORE_CACHE_DIR`` / ``--cache-dir`` name another,
    ``--no-cache`` / ``STACKSCORE_NO_CACHE=1`` none). A relative ``XDG_CACHE_HOME`` is ignored
    (the XDG spec says so), and a home that is not an absolute path (no ``HOME``, a uid without a
    passwd entry) gives None: never a cache under whatever directory the run started in."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "stackscore"
    home = os.path.expanduser("~")
    return Path(home) / ".cache" / "stackscore" if os.path.isabs(home) else None


def cache_dir_for(named: Path | None, no_cache: bool = False) -> Path | None:
    """The cache directory a CLI command runs with: ``named`` (``--cache-dir``, or
    ``STACKSCORE_CACHE_DIR``), created here so that one it cannot create stops the run in one line;
    else, unless ``no_cache`` (``--no-cache``), ``user_cache_dir()``, or no cache at all where that cannot be
    created (a read-only home, a container): a cache speeds a run up, it never fails one.

    What is kept there is keyed by the graph's sha256, runtime version, CPU and every compile
    property (``engine.backends.compile_cache_dir``, ``tuning.record_key``), written beside and
    renamed, and never read for another key: new files in a cache directory, no file the user named."""
    if named is not None:  # named wins over STACKSCORE_NO_CACHE (set once in an environment)
        try:
            Path(named).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StackscoreError(f"--cache-dir {named}: cannot create it ({exc.strerror or exc})") from None
        return Path(named)
    if no_cache:
        return None
    path = user_cache_dir()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK | os.X_OK) else None


def fingerprint_options(opts: ScoreOptions) -> dict[str, Any]:
    """What of the options must not change between an interrupted run and its resumption:
    everything that shapes the output's rows and columns (reading, writing, long-text handling).
    The backend each model really ran on is added by the caller (``auto`` may resolve otherwise)."""
    read = asdict(opts.read)
    read.pop("allow_growing_input")
    if read["tsv_quotes"] == "detect":  # the default reads what unquoted reading reads, or stops: runs from before it resume
        read.pop("tsv_quotes")
    read.pop("label_field")  # labels only feed the stats, never the output
    write = {k: v for k, v in asdict(opts.write).items() if k not in ("overwrite", "resume")}
    # batch geometry moves the last bits of a probability (other padding, other sums): a resume
    # under another keeps neither run's bytes. Recorded where not the default: runs from before it resume.
    geometry = {k: getattr(opts.run, k) for k in ("token_budget", "max_batch_rows", "scale_batches", "bucket_lengths") if getattr(opts.run, k) != getattr(_RUN_DEFAULTS, k)}
    if opts.run.long_text == "windows" and opts.run.max_windows != _RUN_DEFAULTS.max_windows:  # how far into a row its windows read
        geometry["max_windows"] = opts.run.max_windows
    return {**read, **write, "long_text": opts.run.long_text, "cascade": opts.run.cascade, **geometry}


_RUN_DEFAULTS = RunOptions()
