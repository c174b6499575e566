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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ArtifactError

FORMAT_VERSION = "1.0"
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
    format_version: str = FORMAT_VERSION
    created_by: str = ""
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Record checksums of every file in ``directory`` and write ``manifest.json`` last.

    Written last and atomically, so a directory with a manifest is a complete artifact.
    """
    directory = Path(directory)
    files: dict[str, dict[str, Any]] = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != MANIFEST_NAME and not p.name.endswith(".tmp"):
            rel = p.relative_to(directory).as_posix()
            files[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    manifest.files = files
    tmp = directory / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest.to_json(), indent=2, sort_keys=False) + "\n")
    tmp.replace(directory / MANIFEST_NAME)
    return directory / MANIFEST_NAME


def _require(obj: dict, key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise ArtifactError(f"{where}: missing field '{key}'")
    val = obj[key]
    if not isinstance(val, typ):
        names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise ArtifactError(f"{where}: field '{key}' must be {names}, got {type(val).__name__}")
    return val


def resolve_inside(root: Path, rel: str, where: str) -> Path:
    """Resolve ``rel`` under ``root`` and refuse anything that leaves it (abs paths, .., symlinks)."""
    if not isinstance(rel, str) or not rel:
        raise ArtifactError(f"{where}: empty path")
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
    try:
        raw = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{mpath}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ArtifactError(f"{mpath}: top level must be an object")
    where = str(mpath)
    version = _require(raw, "format_version", str, where)
    major = version.split(".")[0]
    if major != FORMAT_VERSION.split(".")[0]:
        raise ArtifactError(
            f"{where}: format_version {version} is not supported by this stackscore "
            f"(reads {FORMAT_VERSION.split('.')[0]}.x)"
        )
    labels = _require(raw, "labels", list, where)
    task = raw.get("task", "binary")
    if task == "regression":
        if len(labels) != 1 or not isinstance(labels[0], str):
            raise ArtifactError(f"{where}: a regression artifact has one output name in 'labels'")
    elif len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise ArtifactError(f"{where}: 'labels' must list at least two label names (strings)")
    models_raw = _require(raw, "models", list, where)
    if not models_raw:
        raise ArtifactError(f"{where}: 'models' is empty")
    models = []
    for i, m in enumerate(models_raw):
        w = f"{where}: models[{i}]"
        if not isinstance(m, dict):
            raise ArtifactError(f"{w}: must be an object")
        _require(m, "name", str, w)
        _require(m, "kind", str, w)
        _require(m, "graphs", dict, w)
        known = {f for f in ModelSpec.__dataclass_fields__}
        models.append(ModelSpec(**{k: v for k, v in m.items() if k in known}))
    fusion_raw = _require(raw, "fusion", dict, where)
    _require(fusion_raw, "method", str, f"{where}: fusion")
    known = {f for f in FusionSpec.__dataclass_fields__}
    fusion = FusionSpec(**{k: v for k, v in fusion_raw.items() if k in known})
    manifest = Manifest(
        labels=labels,
        models=models,
        fusion=fusion,
        task=raw.get("task", "binary"),
        text_pair=bool(raw.get("text_pair", False)),
        format_version=version,
        created_by=raw.get("created_by", ""),
        files=raw.get("files", {}),
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
    return refs


def verify_files(directory: Path, manifest: Manifest) -> None:
    """Every referenced file exists inside the directory and matches its recorded sha256."""
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
        if sha256_file(path) != meta.get("sha256"):
            raise ArtifactError(f"{where}: checksum mismatch for '{rel}' (file changed or corrupted)")
