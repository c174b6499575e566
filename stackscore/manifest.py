"""The artifact manifest: schema, writing, loading and verification.

An artifact is a directory holding ONNX graphs, tokenizer files and one ``manifest.json`` that
describes them. It is the only thing the training world and the scoring world share, so loading
it checks everything a wrong answer could come from later: the format version, that every file
named is inside the directory and has the recorded sha256, and that labels agree everywhere.
Nothing here unpickles or executes code from the artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_write
from .errors import ArtifactError

FORMAT_VERSION = "2.0"
# 1.x: single-label, single-text artifacts (what every stackscore reads). An artifact that an
# older reader would silently mis-score (sentence pairs, multi-label, regression) is written as
# 2.0, which 1.x readers refuse; one with a model that truncates long texts on the left (keeps
# their end) as 3.0, which 1.x and 2.x readers (always right) refuse; one whose tokenizer splits
# special-token strings typed in a text (``split_special_tokens``) as 4.0, which earlier readers
# (they would read a typed "[SEP]" as the separator) refuse; this reader reads all.
READABLE_MAJORS = ("1", "2", "3", "4")
TASK_VALUES = ("binary", "multiclass", "multi_label", "regression")


def format_version_for(manifest: "Manifest") -> str:
    """2.x: sentence pairs, multi-label, regression (1.x readers would mis-score them); 3.x: a
    model truncating on the left (earlier readers cut every long text on the right). The minor
    version is 1 when the artifact has a cascade: a reader that ignores it scores the full
    ensemble for every row, the same predictions, only slower."""
    major = "2" if manifest.text_pair or manifest.task in ("multi_label", "regression") else "1"
    if any(m.truncation_side == "left" for m in manifest.models):
        major = "3"
    if any(m.split_special_tokens for m in manifest.models):
        major = "4"
    return f"{major}.{1 if manifest.cascade else 0}"
MANIFEST_NAME = "manifest.json"


@dataclass
class ModelSpec:
    """One base model: its graphs per precision and the tokenizer that feeds it."""

    name: str
    kind: str  # "transformer" (tokenizer + graph) | "tfidf" (string-input graph)
    graphs: dict[str, str]  # precision -> relative path of the .onnx file
    tokenizer: str | None  # relative path of tokenizer.json (transformer only)
    max_length: int
    pad_id: int
    inputs: list[str]  # graph input names, in the order the engine feeds them
    output: str = "logits"
    opset: int = 17
    parity: dict[str, Any] = field(default_factory=dict)
    # How the checkpoint's own labels map to the artifact's (checkpoint id2label name -> label);
    # the graph's logits are already in the artifact's label order. Empty for models fitted here.
    label_map: dict[str, str] = field(default_factory=dict)
    architecture: str = ""  # the Hugging Face model_type (bert, deberta-v2, ...)
    # Weight-GEMM FLOPs per token of the graph (roofline.graph_cost), written by export; 0 when
    # unknown (artifacts exported before it). Sizes the batches of models smaller than MiniLM
    # (engine/batcher.py:batch_scale).
    flops_per_token: float = 0.0
    # Which end of a text longer than max_length is cut: the checkpoint tokenizer's own
    # ``truncation_side`` ("left" keeps the end, as the model was trained and validated).
    truncation_side: str = "right"
    # The checkpoint tokenizer's ``split_special_tokens``: a "[SEP]" or "</s>" typed in a text is
    # split like any other word, not read as the special token.
    split_special_tokens: bool = False


@dataclass
class FusionSpec:
    """How base-model logits become one probability vector per row."""

    method: str  # mean | weighted | vote | stack
    params: dict[str, Any] = field(default_factory=dict)
    graph: str | None = None  # relative path of the meta-learner .onnx (stack only)
    reason: str = ""
    parity: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    labels: list[str]
    models: list[ModelSpec]
    fusion: FusionSpec
    task: str = "binary"  # binary | multiclass (single-label) | multi_label | regression (stackscore.tasks)
    text_pair: bool = False  # fitted on (text, text_pair) rows: scoring needs both fields
    format_version: str = "1.0"  # set by write_manifest (format_version_for)
    created_by: str = ""
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    cascade: dict[str, Any] | None = None  # adaptive ensemble (stackscore.fusion.cascade): stages, thresholds, partial fusions
    # The sha256 of the manifest.json bytes this object was parsed from ("" when built in memory):
    # the identity of the artifact as loaded, which distributed runs compare with the driver's.
    # Not part of the manifest itself (``to_json`` leaves it out).
    digest: str = field(default="", compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["digest"]
        return out


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# The key of every external tensor's data-file entry, as protobuf stores it: the raw bytes of
# "location" right after their length, 8, whose varint ends in 0x08 (minimal) or 0x00 (any
# non-minimal encoding: 0x88 0x00, 0x88 0x80 0x00, ...).
_LOCATION_KEY = b"location"


def _names_location(data) -> bool:
    """Whether ``data`` (bytes or a memory map) holds ``location`` right after a 0x08 or 0x00
    (a literal search, then one byte looked at per hit: a regex with a class in front of the
    literal scanned an 87 MB graph four times slower)."""
    i = data.find(_LOCATION_KEY, 1)
    while i >= 0:
        if data[i - 1] in (0x00, 0x08):
            return True
        i = data.find(_LOCATION_KEY, i + 1)
    return False


def _digest_and_scan(path: Path) -> tuple[str, bool]:
    """The file's sha256 and whether the key of an external-data entry may occur in it, in one
    pass over the bytes.

    Every external tensor of an ONNX graph names its data file in an entry whose key is the
    string "location" (length 8, see ``_LOCATION_KEY``): a graph without those bytes, however
    the length is encoded, has no external data and need not be parsed to know it. A graph with
    them is parsed. A TF-IDF vocabulary holding "locations" does not match (its length byte is
    9). Hashing a memory map takes 0.06 s for an 87 MB graph, about half of reading it in
    chunks; where a file cannot be mapped (some filesystems), it is read in chunks."""
    import mmap

    with open(path, "rb") as fh:
        try:
            if os.fstat(fh.fileno()).st_size == 0:
                return hashlib.sha256().hexdigest(), False
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
                return hashlib.sha256(m).hexdigest(), _names_location(m)
        except (OSError, ValueError):
            fh.seek(0)
            h, found, tail = hashlib.sha256(), False, b""
            while block := fh.read(1 << 20):
                h.update(block)
                found = found or _names_location(tail + block)
                tail = block[-9:]  # a key split across blocks, with the byte before it
            return h.hexdigest(), found


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Record checksums of every file in ``directory`` and write ``manifest.json`` last.

    Written last and atomically, so a directory with a manifest is a complete artifact.
    """
    directory = Path(directory)
    manifest.format_version = format_version_for(manifest)
    files: dict[str, dict[str, Any]] = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != MANIFEST_NAME and not p.name.endswith(".tmp"):
            rel = p.relative_to(directory).as_posix()
            files[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    manifest.files = files
    # the temporary name ends in .tmp: never listed above, should a crash leave it
    return atomic_write(directory / MANIFEST_NAME, json.dumps(manifest.to_json(), indent=2, sort_keys=False) + "\n")


def _require(obj: dict, key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise ArtifactError(f"{where}: missing field '{key}'")
    val = obj[key]
    if not isinstance(val, typ) or (isinstance(val, bool) and bool not in (typ if isinstance(typ, tuple) else (typ,))):
        names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise ArtifactError(f"{where}: field '{key}' must be {names}, got {type(val).__name__}")
    return val


# -- the typed schema ---------------------------------------------------------------------------
# Every field the engine reads is checked here, by type, before any tokenizer or session is
# opened: a manifest edited by hand (or by another tool) must fail with one line naming the
# field, not with a traceback from deep inside the engine. Unknown fields are ignored, so a
# newer 1.x minor version stays readable.

_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object"}


def _kind(value: Any) -> str:
    return {type(None): "null", bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


class _Fields:
    """Typed access to one JSON object of the manifest, naming ``where.field`` in every error."""

    def __init__(self, obj: Any, where: str, name: str):
        if not isinstance(obj, dict):
            raise ArtifactError(f"{where}: '{name}' must be an object, got {_kind(obj)}")
        self.obj, self.where, self.name = obj, where, name

    def get(self, key: str, typ: type, default: Any = ..., nullable: bool = False, check=None, what: str | None = None) -> Any:
        if key not in self.obj:
            if default is ...:
                raise ArtifactError(f"{self.where}: missing field '{self._path(key)}'")
            return default
        value = self.obj[key]
        if value is None and nullable:
            return None
        ok = isinstance(value, typ) and not (isinstance(value, bool) and typ is not bool)
        if ok and check is not None:
            ok = check(value)
        if not ok:
            shown = repr(value) if isinstance(value, (str, int, float)) and len(repr(value)) < 60 else _kind(value)
            raise ArtifactError(f"{self.where}: field '{self._path(key)}' must be {what or _TYPE_NAMES[typ]}{' or null' if nullable else ''}, got {shown}")
        return value

    def path(self, key: str, nullable: bool = False, default: Any = ...) -> str | None:
        return self.get(key, str, default, nullable, _is_relpath, "a path (non-empty, no NUL byte)")

    def _path(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key


def _is_relpath(value: str) -> bool:
    """Non-empty and without NUL; ``resolve_inside`` refuses absolute paths and escapes by name."""
    return bool(value) and "\x00" not in value


def _str_list(value: Any) -> bool:
    return all(isinstance(v, str) for v in value)


def _model_from(raw: Any, where: str, i: int) -> ModelSpec:
    f = _Fields(raw, where, f"models[{i}]")
    name = f.get("name", str, check=lambda v: bool(v) and "\x00" not in v, what="a non-empty string")
    kind = f.get("kind", str)
    graphs = f.get("graphs", dict, check=lambda v: bool(v), what="a non-empty object (precision -> path)")
    g = _Fields(graphs, where, f"models[{i}].graphs")
    for prec in graphs:
        g.path(prec)
    tokenizer = f.path("tokenizer", nullable=True, default=None)
    if kind == "transformer" and tokenizer is None:
        raise ArtifactError(f"{where}: field 'models[{i}].tokenizer' must name the tokenizer.json of a transformer model")
    parity = f.get("parity", dict, default={})
    p = _Fields(parity, where, f"models[{i}].parity")
    p.get("vocab_size", int, default=None, nullable=True, check=lambda v: v > 0, what="a positive integer")
    p.get("gates", dict, default={})
    known = set(ModelSpec.__dataclass_fields__)
    values = {k: v for k, v in raw.items() if k in known}
    values.update(
        name=name, kind=kind, graphs=graphs, tokenizer=tokenizer, parity=parity,
        max_length=f.get("max_length", int, check=lambda v: v > 0 or (v == 0 and kind != "transformer"), what="a positive integer"),
        pad_id=f.get("pad_id", int, check=lambda v: v >= 0, what="a non-negative integer"),
        inputs=f.get("inputs", list, check=_str_list, what="a list of input names"),
        output=f.get("output", str, default="logits"),
        opset=f.get("opset", int, default=17),
        label_map=f.get("label_map", dict, default={}, check=lambda v: _str_list(list(v.values())), what="an object (checkpoint label -> label)"),
        architecture=f.get("architecture", str, default=""),
        flops_per_token=float(f.get("flops_per_token", (int, float), default=0.0, check=lambda v: 0 <= v < 1e30, what="a non-negative number")),
        truncation_side=f.get("truncation_side", str, default="right", check=lambda v: v in ("right", "left"), what="'right' or 'left'"),
        split_special_tokens=f.get("split_special_tokens", bool, default=False),
    )
    return ModelSpec(**values)


def _fusion_from(raw: Any, where: str) -> FusionSpec:
    f = _Fields(raw, where, "fusion")
    known = set(FusionSpec.__dataclass_fields__)
    values = {k: v for k, v in raw.items() if k in known}
    values.update(
        method=f.get("method", str),
        params=f.get("params", dict, default={}),
        graph=f.path("graph", nullable=True, default=None) or None,
        reason=f.get("reason", str, default=""),
        parity=f.get("parity", dict, default={}),
    )
    for key in ("n_models", "n_classes"):
        _Fields(values["params"], where, "fusion.params").get(key, int, default=None, nullable=True, check=lambda v: v > 0, what="a positive integer")
    _Fields(values["params"], where, "fusion.params").get(
        "thresholds", list, default=None,
        check=lambda v: all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1 for t in v),
        what="a list of numbers between 0 and 1 (one per label)",
    )
    return FusionSpec(**values)


def _cascade_from(raw: Any, where: str, model_names: list[str], task: str) -> dict[str, Any] | None:
    """The cascade section's shape (its numbers are checked when the engine rebuilds it): every
    stage names models of this artifact, and a partial fusion's graph is a safe relative path."""
    if raw is None:
        return None
    c = _Fields(raw, where, "cascade")
    if task not in ("binary", "multiclass"):
        raise ArtifactError(f"{where}: field 'cascade' is for single-label artifacts, this one is {task}")
    order = c.get("order", list, check=lambda v: sorted(v) == sorted(model_names), what=f"the artifact's models in cost order ({', '.join(model_names)})")
    stages = c.get("stages", list, check=lambda v: len(v) == len(order), what=f"one stage per model ({len(order)})")
    for i, st in enumerate(stages):
        f = _Fields(st, where, f"cascade.stages[{i}]")
        f.get("models", list, check=lambda v, i=i: v == order[: i + 1], what=f"the first {i + 1} models of cascade.order")
        fusion_raw = f.get("fusion", dict, default=None, nullable=True)
        if fusion_raw is not None:
            _Fields(fusion_raw, where, f"cascade.stages[{i}].fusion").path("graph", nullable=True, default=None)
    return raw


def _files_from(raw: Any, where: str) -> dict[str, dict[str, Any]]:
    files = _Fields(raw, where, "").get("files", dict, what="an object (path -> {sha256, size})")
    for rel, meta in files.items():
        if not _is_relpath(rel):
            raise ArtifactError(f"{where}: field 'files' has the path {rel!r}, which is empty or contains a NUL byte")
        m = _Fields(meta, where, f"files[{rel!r}]")
        m.get("sha256", str, check=lambda v: len(v) == 64 and all(c in "0123456789abcdef" for c in v), what="64 lowercase hex digits")
        m.get("size", int, check=lambda v: v >= 0, what="a non-negative integer")
    return files


def resolve_inside(root: Path, rel: str, where: str) -> Path:
    """Resolve ``rel`` under ``root`` and refuse anything that leaves it (abs paths, .., symlinks)."""
    if not isinstance(rel, str) or not rel:
        raise ArtifactError(f"{where}: empty path")
    if "\x00" in rel:
        raise ArtifactError(f"{where}: path {rel!r} contains a NUL byte")
    if Path(rel).is_absolute() or rel.startswith(("/", "\\")):
        raise ArtifactError(f"{where}: absolute path '{rel}' is not allowed in an artifact")
    root_r = root.resolve()
    target = (root / rel).resolve()
    if target != root_r and root_r not in target.parents:
        raise ArtifactError(f"{where}: path '{rel}' points outside the artifact directory")
    return target


def load_manifest(directory: str | Path, verify: bool = True) -> Manifest:
    """Load ``manifest.json`` from an artifact directory and (by default) verify every file."""
    directory = Path(directory)
    mpath = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: not an artifact directory (does not exist or is a file)")
    if not mpath.is_file():
        raise ArtifactError(f"{mpath}: no manifest.json; is this an artifact directory?")
    data = mpath.read_bytes()
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{mpath}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ArtifactError(f"{mpath}: top level must be an object")
    where = str(mpath)
    version = _require(raw, "format_version", str, where)
    major = version.split(".")[0]
    if major not in READABLE_MAJORS:
        raise ArtifactError(
            f"{where}: format_version {version} is not supported by this stackscore "
            f"(reads {', '.join(m + '.x' for m in READABLE_MAJORS)})"
        )
    top = _Fields(raw, where, "")
    task = top.get("task", str, default="binary")
    if task not in TASK_VALUES:
        raise ArtifactError(f"{where}: field 'task' must be one of {', '.join(TASK_VALUES)}, got {task!r}")
    if task == "regression":
        labels = top.get("labels", list, check=lambda v: len(v) == 1 and _str_list(v) and all(v), what="one output name (regression)")
    else:
        labels = top.get("labels", list, check=lambda v: len(v) >= 2 and _str_list(v) and all(v), what="a list of at least two label names (non-empty strings)")
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ArtifactError(f"{where}: field 'labels' lists {', '.join(map(repr, dupes))} more than once (each label is one output column)")
    models_raw = top.get("models", list, check=lambda v: bool(v), what="a non-empty list of models")
    models = [_model_from(m, where, i) for i, m in enumerate(models_raw)]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ArtifactError(f"{where}: field 'models' has two models named {next(n for n in names if names.count(n) > 1)!r}")
    manifest = Manifest(
        labels=labels,
        models=models,
        fusion=_fusion_from(top.get("fusion", dict), where),
        task=task,
        text_pair=top.get("text_pair", bool, default=False),
        format_version=version,
        created_by=top.get("created_by", str, default=""),
        files=_files_from(raw, where),
        cascade=_cascade_from(raw.get("cascade"), where, names, task),
        digest=hashlib.sha256(data).hexdigest(),
    )
    if verify:
        verify_files(directory, manifest)
    return manifest


def referenced_files(manifest: Manifest) -> list[tuple[str, str]]:
    """(relative path, where it is named) for every file the manifest points at."""
    refs = []
    for m in manifest.models:
        for prec, rel in m.graphs.items():
            refs.append((rel, f"models[{m.name}].graphs.{prec}"))
        if m.tokenizer:
            refs.append((m.tokenizer, f"models[{m.name}].tokenizer"))
    if manifest.fusion.graph:
        refs.append((manifest.fusion.graph, "fusion.graph"))
    for i, stage in enumerate((manifest.cascade or {}).get("stages", [])):
        graph = (stage.get("fusion") or {}).get("graph")
        if graph:
            refs.append((graph, f"cascade.stages[{i}].fusion.graph"))
    return refs


def data_files(manifest: Manifest) -> list[str]:
    """Listed files that no field names (sorted): what a graph can name as external data (weights
    kept beside it; ``verify_opened`` checks each graph names only listed files)."""
    named = {rel for rel, _ in referenced_files(manifest)}
    return sorted(set(manifest.files) - named)


def compiled_identity(manifest: Manifest, rel: str) -> str | None:
    """What keys what is compiled or tuned from graph ``rel`` (``--cache-dir``): its sha256, and
    where the artifact holds data files, theirs too. A graph with external data holds only those
    files' names: two fine-tunes of one base exported with external weights can be byte-identical
    graphs, and the second imported the first one's compiled blob (scored with its weights)."""
    sha = manifest.files.get(rel, {}).get("sha256")
    data = data_files(manifest)
    if not sha or not data:
        return sha
    h = hashlib.sha256(sha.encode())
    for d in data:
        h.update(f"\0{d}\0{manifest.files[d].get('sha256', '')}".encode())
    return h.hexdigest()


def verify_files(directory: Path, manifest: Manifest) -> None:
    """Every file the runtime may open is listed in ``files``, inside the directory, and intact.

    Three rules, so that nothing unchecked reaches a session: (1) every referenced file has a
    checksum and every listed file exists with its recorded size, and each file this process will
    open has its recorded sha256; (2) the directory holds nothing that is not listed (an ONNX graph
    may name *external data* files, which the runtimes open next to the graph; an unlisted weights
    file would be loaded unchecked); (3) every external-data location named inside a graph that
    will be opened is a listed file of this artifact.

    This checks every file (``stackscore inspect``, export). The scorer runs the two halves
    itself: ``check_listing``, then ``verify_opened`` on each model's files just before its
    sessions open them.
    """
    check_listing(directory, manifest)
    verify_opened(directory, manifest, list(manifest.files))


def check_listing(directory: Path, manifest: Manifest) -> None:
    """Rules (1) without the checksums, and (2): cheap (names and sizes), for every file."""
    directory = Path(directory)
    where = str(directory / MANIFEST_NAME)
    for rel, named in referenced_files(manifest):
        if rel not in manifest.files:
            raise ArtifactError(f"{where}: {named} = '{rel}' has no checksum in 'files'")
    for rel, meta in manifest.files.items():
        path = resolve_inside(directory, rel, f"{where}: files")
        if not path.is_file():
            raise ArtifactError(f"{where}: file '{rel}' is missing from the artifact")
        if path.stat().st_size != meta.get("size"):
            raise ArtifactError(f"{where}: file '{rel}' has size {path.stat().st_size}, manifest says {meta.get('size')}")
    extra = unlisted_files(directory, manifest)
    if extra:
        raise ArtifactError(
            f"{where}: '{extra[0]}' is in the artifact directory but not listed in 'files' (every file the "
            "runtime may open must be listed and checksummed: remove it, or re-export the artifact)"
        )


def verify_opened(directory: Path, manifest: Manifest, rels) -> None:
    """Rules (1)'s checksums and (3) for the files ``rels`` and the external data their graphs name.

    The scorer verifies only what it opens: each model's chosen graph and tokenizer, the fusion
    graphs. Hashing and parsing every variant a CPU run never opens (fp16, dynamic int8, ...) was a
    third of a second of cold start. An opened graph's external-data files are opened with it, so
    they are hashed too."""
    directory = Path(directory)
    where = str(directory / MANIFEST_NAME)
    listed = {resolve_inside(directory, rel, f"{where}: files"): rel for rel in manifest.files}
    names = dict(referenced_files(manifest))
    root = directory.resolve()
    todo, done = [r for r in rels if r], set()
    while todo:
        rel = todo.pop()
        if rel in done:
            continue
        done.add(rel)
        if rel not in manifest.files:
            raise ArtifactError(f"{where}: '{rel}' is opened but has no checksum in 'files'")
        path = resolve_inside(directory, rel, f"{where}: files")
        digest, may_name_data = _digest_and_scan(path)
        if digest != manifest.files[rel].get("sha256"):
            raise ArtifactError(f"{where}: checksum mismatch for '{rel}' (file changed or corrupted)")
        if not (rel.endswith(".onnx") and may_name_data):
            continue
        named = names.get(rel, "files")
        for loc in external_data_locations(path):
            w = f"{where}: {named} = '{rel}' names external data {loc!r}"
            if not loc or "\x00" in loc or Path(loc).is_absolute():
                raise ArtifactError(f"{w}, which is not a relative path")
            target = (path.parent / loc).resolve()
            if root not in target.parents:
                raise ArtifactError(f"{w}, which points outside the artifact directory")
            if target not in listed:
                raise ArtifactError(f"{w}, which is not listed in 'files'")
            todo.append(listed[target])  # the runtime opens it with the graph


def unlisted_files(directory: Path, manifest: Manifest) -> list[str]:
    """Relative paths of files (and links) in ``directory`` that ``files`` does not list."""
    listed = {Path(rel).as_posix() for rel in manifest.files}
    found = []
    for dirpath, dirnames, filenames in os.walk(directory):  # does not follow symlinked dirs
        base = Path(dirpath)
        for name in sorted(filenames) + sorted(d for d in dirnames if (base / d).is_symlink()):
            rel = (base / name).relative_to(directory).as_posix()
            if rel != MANIFEST_NAME and rel not in listed:
                found.append(rel)
    return found


_LOCATION_ENTRY = b"\n\x08location\x12"  # StringStringEntryProto{key: "location", value: ...}


def external_data_locations(graph: Path) -> list[str]:
    """The external-data file names an ONNX graph refers to (empty for self-contained graphs).

    With the ``onnx`` package (training installs) the graph is parsed without loading its
    external data. The scoring install has no ``onnx``: there the serialized protobuf is
    scanned for the entry ``key: "location"`` that every external tensor carries, encoded as
    protobuf serializers write it (field 1 = "location", then field 2 = the path). A crafted
    graph could encode it otherwise, but a crafted graph is already covered by the manifest's
    own checksum; the scan is there for tampering with, or forgetting, the data files.
    """
    try:
        import onnx
        from onnx.external_data_helper import _get_all_tensors, uses_external_data
    except ImportError:
        onnx = None
    if onnx is not None:
        try:
            model = onnx.load(str(graph), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - any parse error is a broken graph
            raise ArtifactError(f"{graph}: not a readable ONNX graph ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        locs = []
        for t in _get_all_tensors(model):
            if uses_external_data(t):
                entries = {e.key: e.value for e in t.external_data}
                locs.append(entries.get("location", ""))
        return sorted(set(locs))
    data = graph.read_bytes()
    locs, i = set(), data.find(_LOCATION_ENTRY)
    while i >= 0:
        j = i + len(_LOCATION_ENTRY)
        size = shift = 0
        while j < len(data):  # varint length of the value
            byte = data[j]
            size |= (byte & 0x7F) << shift
            shift += 7
            j += 1
            if not byte & 0x80:
                break
        locs.add(data[j : j + size].decode("utf-8", "replace"))
        i = data.find(_LOCATION_ENTRY, j)
    return sorted(locs)
