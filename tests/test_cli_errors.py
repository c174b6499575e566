"""The real CLI on every error a user can cause: exit code 2 and one line naming the file (and
row or field), never a traceback, never "Aborted."."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import subprocess
import sys

import onnx
import orjson
import pytest

from stackscore.manifest import sha256_file

BERT = "models/bert/model.fp32.onnx"
# The scoring install has no onnx package: block it so the runtimes themselves meet bad graphs.
NO_ONNX = "import sys; sys.modules['onnx'] = None\n"


def resign(art, *rels):
    p = art / "manifest.json"
    raw = json.loads(p.read_text())
    for rel in rels:
        raw["files"][rel] = {"sha256": sha256_file(art / rel), "size": (art / rel).stat().st_size}
    p.write_text(json.dumps(raw))


def edit(art, fn):
    p = art / "manifest.json"
    raw = json.loads(p.read_text())
    fn(raw)
    p.write_text(json.dumps(raw))


def variant(artifact, root, name, fn):
    art = root / name
    shutil.copytree(artifact, art)
    fn(art)
    return art


def truncate_graph(art):
    data = (art / BERT).read_bytes()
    (art / BERT).write_bytes(data[: len(data) // 3])
    resign(art, BERT)


def escape_external(art):
    model = onnx.load(str(art / BERT))
    onnx.save_model(model, str(art / BERT), save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    shutil.move(art / "models/bert/w.bin", art.parent / f"{art.name}-outside.bin")
    model = onnx.load(str(art / BERT), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = f"../../../{art.name}-outside.bin"
    onnx.save_model(model, str(art / BERT))
    resign(art, BERT)


def bad_tokenizer(art):
    (art / "models/bert/tokenizer.json").write_text("{ this is not json")
    resign(art, "models/bert/tokenizer.json")


@pytest.fixture(scope="module")
def cases(artifact, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-errors")
    arts = {
        "truncated_graph": variant(artifact, root, "truncated", truncate_graph),
        "external_escape": variant(artifact, root, "escape", escape_external),
        "bad_tokenizer": variant(artifact, root, "badtok", bad_tokenizer),
        "files_list": variant(artifact, root, "fileslist", lambda a: edit(a, lambda r: r.update(files=list(r["files"])))),
        "parity_null": variant(artifact, root, "paritynull", lambda a: edit(a, lambda r: r["models"][0].update(parity=None))),
        "max_length_abc": variant(artifact, root, "maxlen", lambda a: edit(a, lambda r: r["models"][1].update(max_length="abc"))),
        "nul_path": variant(artifact, root, "nul", lambda a: edit(a, lambda r: r["models"][0].update(tokenizer="models/bert/tok\x00enizer.json"))),
        "labels_vs_graph": variant(artifact, root, "labels3", lambda a: edit(a, lambda r: r.update(labels=["a", "b", "c"]))),
        "duplicate_labels": variant(artifact, root, "duplabels", lambda a: edit(a, lambda r: r.update(labels=["a", "a"]))),
    }
    data = root / "data"
    data.mkdir()
    rng = random.Random(0)
    rows = b"".join(orjson.dumps({"id": i, "text": f"review {i} {rng.random()}"}) + b"\n" for i in range(6000))
    packed = gzip.compress(rows)
    (data / "ok.jsonl").write_bytes(rows[:2000])
    (data / "trunc.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    (data / "trunc.txt.gz").write_bytes(gzip.compress(b"".join(f"a line {rng.random()}\n".encode() for _ in range(6000)))[:20000])
    (data / "notgzip.jsonl.gz").write_bytes(rows[:500])
    corrupt = bytearray(packed)
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 64] = b"\x00" * 64
    (data / "corrupt.jsonl.gz").write_bytes(bytes(corrupt))
    (data / "notgzip.csv.gz").write_bytes(b"id,text\n1,hello\n")
    site = root / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_ONNX)
    return {"root": root, "data": data, "site": site, **arts}


def run(args, site=None, cwd=None):
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), *sys.path])
    return subprocess.run([sys.executable, "-m", "stackscore", *map(str, args)], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def assert_one_line(res, *fragments):
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr, res.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


ARTIFACT_CASES = [
    ("truncated_graph", ["--precision", "fp32"], False, ["model.fp32.onnx: ", "cannot open this graph"]),  # checksum matches, no external data: the runtime says it
    ("truncated_graph", ["--backend", "onnxruntime", "--precision", "fp32"], True, ["model.fp32.onnx: ONNX Runtime cannot open this graph", "INVALID_PROTOBUF"]),
    ("truncated_graph", ["--backend", "openvino", "--precision", "fp32"], True, ["model.fp32.onnx: OpenVINO cannot open this graph"]),
    ("external_escape", ["--precision", "fp32"], False, ["manifest.json: models[bert].graphs.fp32 = 'models/bert/model.fp32.onnx' names external data", "points outside the artifact directory"]),
    ("external_escape", ["--precision", "fp32"], True, ["names external data", "points outside the artifact directory"]),
    ("bad_tokenizer", [], False, ["models/bert/tokenizer.json: not a valid tokenizer.json"]),
    ("files_list", [], False, ["manifest.json: field 'files' must be an object"]),
    ("parity_null", [], False, ["manifest.json: field 'models[0].parity' must be an object, got null"]),
    ("max_length_abc", [], False, ["manifest.json: field 'models[1].max_length' must be a positive integer, got 'abc'"]),
    ("nul_path", [], False, ["manifest.json: field 'models[0].tokenizer' must be a path (non-empty, no NUL byte)"]),
    ("labels_vs_graph", ["--precision", "fp32"], False, ["model.fp32.onnx: model 'bert' outputs 2 classes per row, the manifest lists 3 labels"]),
    ("duplicate_labels", [], False, ["manifest.json: field 'labels' lists 'a' more than once"]),
]


@pytest.mark.parametrize("case,extra,no_onnx,fragments", ARTIFACT_CASES, ids=[f"{c[0]}{'-' + c[1][1] if c[1] else ''}{'-no-onnx' if c[2] else ''}" for c in ARTIFACT_CASES])
def test_artifact_errors_are_one_line(cases, tmp_path, case, extra, no_onnx, fragments):
    res = run(["score", cases[case], cases["data"] / "ok.jsonl", "-o", tmp_path / "o.jsonl", "--quiet", *extra], site=cases["site"] if no_onnx else None)
    assert_one_line(res, *fragments)
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.jsonl.lock").exists()


INPUT_CASES = [
    ("trunc.jsonl.gz", ["trunc.jsonl.gz: truncated gzip file: the compressed data ends after line"]),
    ("trunc.txt.gz", ["trunc.txt.gz: truncated gzip file"]),
    ("notgzip.jsonl.gz", ["notgzip.jsonl.gz: not a gzip file after line 0"]),
    ("corrupt.jsonl.gz", ["corrupt.jsonl.gz: corrupt gzip data after line"]),
    ("notgzip.csv.gz", ["notgzip.csv.gz: cannot read as CSV (gzip)"]),
]


@pytest.mark.parametrize("name,fragments", INPUT_CASES, ids=[c[0] for c in INPUT_CASES])
def test_unreadable_compressed_input_is_one_line_and_so_is_resume(artifact, cases, tmp_path, name, fragments):
    out = tmp_path / "o.jsonl"
    res = run(["score", artifact, cases["data"] / name, "-o", out, "--quiet", "--chunk-rows", "256"])
    assert_one_line(res, *fragments)
    assert "Aborted" not in res.stderr and not out.exists()
    if (tmp_path / "o.jsonl.parts").exists():  # rows before the damage were committed: --resume meets it again
        res = run(["score", artifact, cases["data"] / name, "-o", out, "--quiet", "--chunk-rows", "256", "--resume"])
        assert_one_line(res, *fragments)


def test_output_equal_to_input_is_one_line(artifact, cases, tmp_path):
    src = tmp_path / "in.jsonl"
    shutil.copy(cases["data"] / "ok.jsonl", src)
    os.link(src, tmp_path / "hard.jsonl")
    for out in (src, tmp_path / "hard.jsonl"):
        res = run(["score", artifact, src, "-o", out, "--overwrite", "--quiet"])
        assert_one_line(res, f"{out}: this is the input file")
    assert src.read_bytes() == (cases["data"] / "ok.jsonl").read_bytes()


def test_bad_rows_with_on_error_fail_name_file_line_and_field(artifact, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"id": 1, "text": "fine"}\n{"id": 2, "body": "no text"}\n')
    res = run(["score", artifact, src, "-o", tmp_path / "o.jsonl", "--on-error", "fail", "--quiet"])
    assert_one_line(res, "in.jsonl: line 2: missing field 'text' (has: id, body) (--on-error fail)")
