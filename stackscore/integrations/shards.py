"""Where a sharded job's inputs and outputs are: local paths or any pyarrow file system.

No Ray here: listing input shards (files, directories, globs, URIs such as ``s3://``), naming
output shards, and the output directory's few operations, each of which makes a file appear
under its final name by a rename, so a reader never sees half a shard or half a manifest.
Objects in object stores are read by copying them to a local file first (the engine's readers
read local bytes and snapshot them), and written by uploading a finished local file.
"""

from __future__ import annotations

import glob as _glob
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..engine.readers import detect_format
from ..engine.writers import output_format
from ..errors import InputError

MANIFEST = "_manifest.json"
WORK = "_work"  # a directory run's state while it runs: run.json, shard records, shards being written
LOCK = "_run.lock"  # held while a run writes into the directory (engine.committer.OutputLock)


# -- inputs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """One input file as the driver listed it: its path (relative when given relative: each actor
    looks for it in its own working directory first, see ``locate``), or a URI on a pyarrow file
    system (``fs`` then reads it), and its size and mtime at the start of the run."""

    path: str
    abspath: str
    size: int
    mtime_ns: int
    fs: Any = None  # a pyarrow FileSystem for URIs; None for local files
    fs_path: str = ""

    @property
    def remote(self) -> bool:
        return self.fs is not None

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]


def is_uri(s: str) -> bool:
    return "://" in s


def _wanted(name: str) -> bool:
    """Files a directory or a glob contributes: a readable format, not hidden or ``_``-prefixed
    (``_SUCCESS``, ``.crc``, ``_manifest.json``: what Spark, Hadoop and this engine write)."""
    if name.startswith(("_", ".")):
        return False
    try:
        detect_format(name)
    except InputError:
        return False
    return True


def _expand_local(given: str) -> list[Source]:
    if any(c in given for c in "*?["):
        paths = sorted(p for p in _glob.glob(given, recursive=True) if os.path.isfile(p) and _wanted(os.path.basename(p)))
        if not paths:
            raise InputError(f"{given}: no input files match (looked for .jsonl .csv .tsv .parquet .txt, optionally .gz)")
    elif os.path.isdir(given):
        root = Path(given)
        paths = sorted(
            str(p) for p in root.rglob("*")
            if p.is_file() and _wanted(p.name) and not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts[:-1])
        )
        if not paths:
            raise InputError(f"{given}: no input files in this directory (looked for .jsonl .csv .tsv .parquet .txt, optionally .gz)")
    elif os.path.isfile(given):
        detect_format(given)  # a file named on its own must have a known format: one line otherwise
        paths = [given]
    else:
        raise InputError(f"{given}: input file does not exist")
    out = []
    for p in paths:
        st = os.stat(p)
        out.append(Source(p, os.path.abspath(p), st.st_size, st.st_mtime_ns))
    return out


def _filesystem(uri: str):
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad or unreachable URI
        raise InputError(f"{uri}: cannot open this file system: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def _expand_uri(given: str) -> list[Source]:
    """A file, a directory (recursive) or a glob on any file system pyarrow opens (s3://, gs://,
    hdfs://, file://); credentials come from the environment, as pyarrow reads them."""
    import fnmatch

    import pyarrow.fs as pafs

    fs, path = _filesystem(given)
    scheme = given.split("://", 1)[0]
    try:
        if any(c in path for c in "*?["):
            base = re.split(r"[*?\[]", path, maxsplit=1)[0].rsplit("/", 1)[0]
            infos = [i for i in fs.get_file_info(pafs.FileSelector(base, recursive=True)) if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, path)]
        else:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.Directory:
                infos = [i for i in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if i.type == pafs.FileType.File]
                infos = [i for i in infos if not any(part.startswith(("_", ".")) for part in i.path[len(path):].strip("/").split("/")[:-1])]
            elif info.type == pafs.FileType.File:
                detect_format(path)
                infos = [info]
            else:
                raise InputError(f"{given}: input file does not exist")
    except OSError as exc:
        raise InputError(f"{given}: cannot list: {exc}") from None
    infos = sorted((i for i in infos if _wanted(i.base_name)), key=lambda i: i.path)
    if not infos:
        raise InputError(f"{given}: no input files (looked for .jsonl .csv .tsv .parquet .txt, optionally .gz)")
    return [Source(f"{scheme}://{i.path}", f"{scheme}://{i.path}", i.size, i.mtime_ns or 0, fs, i.path) for i in infos]


def expand_inputs(inputs: Sequence[str | Path]) -> list[Source]:
    """Files, directories (recursive, sorted), globs and URIs -> input shards, in the order given."""
    sources: list[Source] = []
    seen: set[str] = set()
    for given in map(str, inputs):
        for s in _expand_uri(given) if is_uri(given) else _expand_local(given):
            if s.abspath in seen:
                raise InputError(f"{s.path}: named more than once in the inputs")
            seen.add(s.abspath)
            sources.append(s)
    if not sources:
        raise InputError("no input files given")
    return sources


def shard_name(index: int, source: Source, fmt: str) -> str:
    """``part-00003-<input stem>.<fmt>``: sorted like the inputs, unique by the index, and
    readable (which input a shard came from is also in ``_manifest.json``)."""
    stem = source.name
    if stem.lower().endswith(".gz"):
        stem = stem[:-3]
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:80] or "input"
    return f"part-{index:05d}-{safe}.{fmt}"


def locate(given: str, driver_cwd: str) -> str:
    """A local path as an actor finds it: a relative path first in the actor's own working
    directory (``ray job submit --working-dir`` ships it to every node), then in the driver's."""
    p = Path(given)
    if p.is_absolute() or p.exists():
        return given
    alt = Path(driver_cwd) / p
    return str(alt) if alt.exists() else given


def stage(source: Source) -> tuple[Path, Callable[[], None]]:
    """A remote input as a local file, for the engine's readers (which read local bytes and take
    a snapshot of them); the copy is removed when the shard is done."""
    tmp = Path(tempfile.mkdtemp(prefix="stackscore-in-"))
    local = tmp / source.name
    try:
        with source.fs.open_input_stream(source.fs_path) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"{source.path}: cannot read: {exc}") from None
    return local, lambda: shutil.rmtree(tmp, ignore_errors=True)


# -- outputs ---------------------------------------------------------------------------------
class OutputDir:
    """The output directory, local or on a pyarrow file system, and the few operations a
    sharded run needs. Every file appears under its final name by a rename (``move``), so a
    reader never sees half a shard or half a manifest."""

    def __init__(self, given: str):
        import pyarrow.fs as pafs

        self.given = given
        if is_uri(given):
            self.fs, base = _filesystem(given)
            self.remote = True
        else:
            self.fs, base = pafs.LocalFileSystem(), os.path.abspath(given)
            self.remote = False
        self.base = base.rstrip("/") or "/"

    def path(self, name: str) -> str:
        return f"{self.base}/{name}"

    def exists(self, name: str) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(self.path(name)).type != pafs.FileType.NotFound

    def names(self) -> list[str]:
        import pyarrow.fs as pafs

        if self.fs.get_file_info(self.base).type == pafs.FileType.NotFound:
            return []
        return sorted(i.base_name for i in self.fs.get_file_info(pafs.FileSelector(self.base)))

    def mkdir(self, name: str = "") -> None:
        self.fs.create_dir(self.path(name) if name else self.base, recursive=True)

    def read_json(self, name: str) -> Any:
        try:
            with self.fs.open_input_stream(self.path(name)) as fh:
                return json.loads(fh.read())
        except (OSError, ValueError):
            return None

    def write_bytes(self, name: str, data: bytes) -> None:
        tmp = f"{name}.{uuid.uuid4().hex}.tmp"
        with self.fs.open_output_stream(self.path(tmp)) as fh:
            fh.write(data)
        self.fs.move(self.path(tmp), self.path(name))

    def write_json(self, name: str, obj: Any) -> None:
        self.write_bytes(name, (json.dumps(obj, indent=1) + "\n").encode())

    def put(self, local: Path, name: str) -> None:
        """Upload a finished local file under ``name`` (through a temporary name, then a move)."""
        tmp = f"{WORK}/{name}.{uuid.uuid4().hex}.tmp"
        with open(local, "rb") as src, self.fs.open_output_stream(self.path(tmp)) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        self.fs.move(self.path(tmp), self.path(name))

    def move(self, src: str, dst: str) -> None:
        self.fs.move(self.path(src), self.path(dst))

    def remove(self, name: str) -> None:
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self.path(name))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(name))
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.path(name))


def is_directory_output(output: str) -> bool:
    """``-o preds/`` (a trailing slash) or an existing directory: one shard per input shard."""
    if output.endswith(("/", os.sep)):
        return True
    if is_uri(output):
        import pyarrow.fs as pafs

        fs, path = _filesystem(output)
        return fs.get_file_info(path).type == pafs.FileType.Directory
    return os.path.isdir(output)


def is_ours(name: str, shards: set) -> bool:
    """Whether a sharded run wrote ``name`` into its directory (what ``--overwrite`` may delete):
    its manifest, work folder and lock, and the shards its recorded fingerprint names
    (``shards``), with their temporary names."""
    if name in (MANIFEST, WORK, LOCK) or name.startswith(MANIFEST + "."):
        return True
    return any(name == s or (name.startswith(s + ".") and name.endswith(".tmp")) for s in shards if s)


def count_output(path: Path) -> tuple[int, int]:
    """(rows, rows with an error) of a finished output file; for a shard finished across two
    attempts, whose statistics cover only the second."""
    fmt, gz = output_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        col = pq.read_table(path, columns=["error"]).column("error")
        return len(col), len(col) - col.null_count
    if fmt == "jsonl":
        import gzip

        import orjson

        rows = errors = 0
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh:
            for line in fh:
                if line.strip():
                    rows += 1
                    errors += orjson.loads(line).get("error") is not None
        return rows, errors
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(
        path, parse_options=pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(include_columns=["error"], column_types={"error": pa.string()}, strings_can_be_null=True),
    )
    col = table.column("error")
    return len(col), len(col) - col.null_count
