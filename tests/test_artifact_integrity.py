"""Nothing unchecked is let in: external data, non-finite outputs, token ids past the
embedding, duplicated labels, and a typed manifest schema, each on real ONNX sessions."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import onnx
import orjson
import pytest
from onnx import numpy_helper

from stackscore.engine.pipeline import score_file
from stackscore.options import ScoreOptions
from stackscore.engine.scorer import Scorer
from stackscore.options import RunOptions
from stackscore.errors import ArtifactError
from stackscore.manifest import external_data_locations, load_manifest, sha256_file

BERT = "models/bert/model.fp32.onnx"


from conftest import edit_manifest as edit  # noqa: E402


def resign(copy, *rels):
    """Record the current size and sha256 of ``rels`` (adding them to 'files' if new)."""
    def f(raw):
        for rel in rels:
            raw["files"][rel] = {"sha256": sha256_file(copy / rel), "size": (copy / rel).stat().st_size}

    edit(copy, f)


def scorer(copy, backend="onnxruntime"):
    if backend == "openvino":
        pytest.importorskip("openvino")
    return Scorer(copy, RunOptions(precision="fp32", backend=backend))


def to_external(copy, location="model.fp32.onnx.data"):
    model = onnx.load(str(copy / BERT))
    onnx.save_model(model, str(copy / BERT), save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=0)


# -- external data -----------------------------------------------------------------------------
def test_unlisted_external_data_is_refused_listed_is_checked_and_scores(copy, corpus_rows):
    texts = [r["text"] for r in corpus_rows[:40]]
    reference = scorer(copy).score_texts(texts).proba
    to_external(copy)
    resign(copy, BERT)  # the graph is re-signed, its weights file is not listed
    with pytest.raises(ArtifactError, match=r"'models/bert/model.fp32.onnx.data' is in the artifact directory but not listed in 'files'"):
        load_manifest(copy)
    resign(copy, BERT, BERT + ".data")
    assert external_data_locations(copy / BERT) == ["model.fp32.onnx.data"]
    for backend in ("onnxruntime", "openvino"):
        np.testing.assert_allclose(scorer(copy, backend).score_texts(texts).proba, reference, atol=1e-5)
    with open(copy / (BERT + ".data"), "r+b") as fh:  # corrupted weights, same size
        fh.seek(100)
        fh.write(b"\xff\xff\xff\x7f")
    with pytest.raises(ArtifactError, match="checksum mismatch for 'models/bert/model.fp32.onnx.data'"):
        load_manifest(copy)


def test_external_data_outside_the_artifact_is_refused(copy, tmp_path):
    to_external(copy)
    shutil.move(copy / (BERT + ".data"), tmp_path / "outside.bin")  # copy/../outside.bin
    model = onnx.load(str(copy / BERT), load_external_data=False)
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = "../../../outside.bin"
    onnx.save_model(model, str(copy / BERT))
    resign(copy, BERT)
    with pytest.raises(ArtifactError, match=r"graphs.fp32 = 'models/bert/model.fp32.onnx' names external data '../../../outside.bin', which points outside the artifact"):
        load_manifest(copy)


def test_external_data_scan_without_onnx_finds_the_same_locations(copy, monkeypatch):
    (copy / "models/bert/weights").mkdir()
    to_external(copy, location="weights/bert.bin")
    monkeypatch.setitem(sys.modules, "onnx", None)  # the scoring install has no onnx package
    assert external_data_locations(copy / BERT) == ["weights/bert.bin"]
    assert external_data_locations(copy / "models/roberta/model.fp32.onnx") == []


# -- non-finite outputs ------------------------------------------------------------------------
def poison(copy, word: str, corpus_rows: list[dict]) -> list[str]:
    """BERT's embedding rows of ``word``'s tokens set to NaN (re-signed); returns texts without them."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(copy / "models/bert/tokenizer.json"))
    poisoned = set(tok.encode(word).ids[1:-1])
    model = onnx.load(str(copy / BERT))
    for t in model.graph.initializer:
        if t.name.endswith("word_embeddings.weight"):
            w = numpy_helper.to_array(t).copy()
            w[sorted(poisoned)] = np.nan
            t.CopyFrom(numpy_helper.from_array(w, t.name))
    onnx.save_model(model, str(copy / BERT))
    resign(copy, BERT)
    return [r["text"] for r in corpus_rows if not poisoned & set(tok.encode(r["text"]).ids)]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_non_finite_outputs_are_error_rows_never_labels(copy, corpus_rows, tmp_path, backend):
    clean = poison(copy, "boring", corpus_rows)[:5]
    rows = [{"id": f"c{i}", "text": t} for i, t in enumerate(clean)]
    rows.insert(2, {"id": "nan", "text": "boring"})
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    out = tmp_path / "o.jsonl"
    opts = ScoreOptions.from_kwargs(progress=False, with_model_outputs=True, precision="fp32", backend=backend)
    stats = score_file(copy, src, out, opts)
    got = [orjson.loads(l) for l in out.read_bytes().splitlines()]
    assert [g["id"] for g in got] == [r["id"] for r in rows] and stats.errored == 1 and stats.scored == 5
    bad = got[2]
    assert bad["error"] == "row 2: non-finite model output (logits of model 'bert')"
    assert bad["label"] is None and bad["score"] is None and bad["prob_positive"] is None and bad["logit_bert_positive"] is None
    assert all(g["error"] is None and g["label"] in ("negative", "positive") for i, g in enumerate(got) if i != 2)
    assert stats.errors["non-finite model output (logits of model 'bert')"] == 1
    # The Python API: NaN probabilities and no label, never a made-up one.
    from stackscore.api import Ensemble

    ens = Ensemble(copy, backend=backend)
    assert ens.predict(["boring", clean[0]])[0] is None and np.isnan(ens.predict_proba(["boring"])).all()


# -- tokenizer vs embedding, labels, schema ----------------------------------------------------
def test_token_ids_past_the_embedding_are_refused_even_with_the_same_count(copy):
    path = copy / "models/bert/tokenizer.json"
    tj = json.loads(path.read_text())
    vocab = tj["model"]["vocab"]
    token = max(vocab, key=vocab.get)
    count = len(vocab)
    vocab[token] = 600 + 20  # same number of tokens, one id past the 600-row embedding
    path.write_text(json.dumps(tj))
    resign(copy, "models/bert/tokenizer.json")
    from tokenizers import Tokenizer

    assert Tokenizer.from_file(str(path)).get_vocab_size() == count
    with pytest.raises(ArtifactError, match=r"model 'bert': tokenizer has \d+ tokens with ids up to 620 .*embedding has 600 rows"):
        scorer(copy)


def test_malformed_tokenizer_json_is_one_error(copy):
    (copy / "models/bert/tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nope"}}')
    resign(copy, "models/bert/tokenizer.json")
    with pytest.raises(ArtifactError, match=r"tokenizer.json: not a valid tokenizer.json \("):
        scorer(copy)


def test_duplicated_labels_are_refused(copy):
    edit(copy, lambda raw: raw.update(labels=["positive", "positive"]))
    with pytest.raises(ArtifactError, match="field 'labels' lists 'positive' more than once"):
        load_manifest(copy)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda r: r.update(files=list(r["files"])), r"field 'files' must be an object .*got a list"),
        (lambda r: r["models"][0].update(parity=None), r"field 'models\[0\].parity' must be an object, got null"),
        (lambda r: r["models"][0].update(max_length="abc"), r"field 'models\[0\].max_length' must be a positive integer, got 'abc'"),
        (lambda r: r["models"][1].update(pad_id=-1), r"field 'models\[1\].pad_id' must be a non-negative integer, got -1"),
        (lambda r: r["models"][0]["graphs"].update(fp32="models/bert/model\x00.onnx"), r"field 'models\[0\].graphs.fp32' must be a path \(non-empty, no NUL byte\)"),
        (lambda r: r["files"].update({"x\x00y": {"sha256": "0" * 64, "size": 1}}), r"field 'files' has the path 'x\\x00y'"),
        (lambda r: r["files"][BERT].update(size="158747"), r"field 'files\['models/bert/model.fp32.onnx'\].size' must be a non-negative integer"),
        (lambda r: r["models"][0].pop("inputs"), r"missing field 'models\[0\].inputs'"),
        (lambda r: r["models"][0].update(inputs="input_ids"), r"field 'models\[0\].inputs' must be a list of input names"),
        (lambda r: r.update(models={}), r"field 'models' must be a non-empty list of models, got an object"),
        (lambda r: r["models"].append(r["models"][0]), r"two models named 'bert'"),
        (lambda r: r.update(fusion=[]), r"'fusion' must be an object, got a list"),
        (lambda r: r["fusion"].update(params=None), r"field 'fusion.params' must be an object, got null"),
        (lambda r: r["fusion"]["params"].update(n_classes="2"), r"field 'fusion.params.n_classes' must be a positive integer"),
        (lambda r: r["models"][0]["parity"].update(vocab_size=True), r"field 'models\[0\].parity.vocab_size' must be a positive integer"),
        (lambda r: r["models"][0].update(flops_per_token=-1), r"field 'models\[0\].flops_per_token' must be a non-negative number, got -1"),
        (lambda r: r["models"][0].update(flops_per_token="2e7"), r"field 'models\[0\].flops_per_token' must be a non-negative number, got '2e7'"),
        (lambda r: r.update(task=3), r"field 'task' must be a string, got 3"),
        (lambda r: r.update(labels=["a", 1]), r"field 'labels' must be a list of at least two label names"),
    ],
)
def test_typed_schema_names_the_field(copy, change, message):
    edit(copy, change)
    with pytest.raises(ArtifactError, match=message):
        load_manifest(copy)


# -- graphs the runtimes cannot open -----------------------------------------------------------
def test_truncated_graph_is_one_error_on_every_runtime(copy, monkeypatch):
    from stackscore.engine.backends.ort import OrtBackend
    from stackscore.engine.backends.ov import OpenVinoBackend

    data = (copy / BERT).read_bytes()
    (copy / BERT).write_bytes(data[: len(data) // 3])
    resign(copy, BERT)
    # Its checksum matches (re-signed), and it names no external data: the manifest check passes
    # it without parsing it (a cold start saving); the runtime that opens it says what is wrong.
    spec = load_manifest(copy).models[0]
    with pytest.raises(ArtifactError, match=r"model.fp32.onnx: ONNX Runtime cannot open this graph: .*INVALID_PROTOBUF"):
        OrtBackend(copy / BERT, spec, RunOptions())
    pytest.importorskip("openvino")
    with pytest.raises(ArtifactError, match=r"model.fp32.onnx: OpenVINO cannot open this graph: .*(parsed|read)"):
        OpenVinoBackend(copy / BERT, spec, RunOptions())


# -- the scorer checks what it opens -------------------------------------------------------------
def test_scorer_checks_every_file_it_opens_and_only_those(copy, corpus_rows):
    """The scorer hashes the graphs its backends chose, their external data, tokenizers and fusion
    graphs (a cold-start saving: not every variant); names and sizes of every file still count."""
    texts = [r["text"] for r in corpus_rows[:10]]
    to_external(copy)
    resign(copy, BERT, BERT + ".data")
    scorer(copy).score_texts(texts)  # intact
    data = copy / (BERT + ".data")
    original = data.read_bytes()
    with open(data, "r+b") as fh:  # the opened graph's weights, corrupted, same size
        fh.seek(100)
        fh.write(b"\xff\xff\xff\x7f")
    with pytest.raises(ArtifactError, match="checksum mismatch for 'models/bert/model.fp32.onnx.data'"):
        scorer(copy)
    data.write_bytes(original)
    tok = copy / "models/bert/tokenizer.json"
    tok.write_bytes(tok.read_bytes().replace(b'"[UNK]"', b'"[UNX]"'))  # same size, other bytes
    with pytest.raises(ArtifactError, match="checksum mismatch for 'models/bert/tokenizer.json'"):
        scorer(copy)
    edit(copy, lambda r: None)  # (re-written unchanged)
    resign(copy, "models/bert/tokenizer.json")
    manifest = load_manifest(copy, verify=False)
    unopened = [rel for m in manifest.models for p, rel in m.graphs.items() if p != "fp32"]
    assert unopened, "the fixture artifact has other variants than fp32"
    for rel in unopened:  # a variant this run never opens: its bytes are not read
        raw = bytearray((copy / rel).read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        (copy / rel).write_bytes(bytes(raw))
    scorer(copy).score_texts(texts)
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_manifest(copy)  # `stackscore verify` and export still check every file
    (copy / unopened[0]).write_bytes((copy / unopened[0]).read_bytes() + b"x")
    with pytest.raises(ArtifactError, match="has size"):
        scorer(copy)  # sizes are checked for every file


def test_the_external_data_precheck_sees_any_encoding_of_the_location_key(tmp_path):
    """The scorer parses a graph only when the bytes "location" occur in it; they do however the
    entry's length is encoded (a non-minimal varint too), so no graph naming external data is
    let through unparsed."""
    from stackscore.manifest import _digest_and_scan

    p = tmp_path / "g.onnx"
    for body in (b"\n\x08location\x12\x04w.bin", b"\n\x88\x00location\x12\x04w.bin", b"\n\x88\x80\x00location\x12\x04w.bin",
                 b"x" * ((1 << 20) - 5) + b"\n\x08location"):
        p.write_bytes(body)
        assert _digest_and_scan(p)[1] is True, body[-20:]
    for body in (b"no such key here" * 1000, b"J\tlocations J\x05local"):  # a vocabulary's "locations"
        p.write_bytes(body)
        assert _digest_and_scan(p)[1] is False


def test_model_and_label_names_that_would_share_a_result_column_are_refused(copy):
    """A model 'x' and labels 'y' / 'x_y': with --with-model-outputs, model x's probability of y
    (prob_x_y) would silently replace the fused probability of x_y. Refused when fit reads its
    data (``check_column_names``, every option), and by scoring with the option that clashes;
    scoring without it still works (such an artifact scored before)."""
    from stackscore.engine.pipeline import check_column_names
    from stackscore.engine.scorer import Scorer
    from stackscore.errors import ArtifactError

    check_column_names(["negative", "positive"], ["bert", "roberta"])
    with pytest.raises(ArtifactError, match="two result columns would be named 'prob_x_y'"):
        check_column_names(["y", "x_y"], ["x", "z"])

    def rename(raw):
        raw["labels"] = ["y", "x_y"]
        raw["models"][0]["name"] = "x"

    edit(copy, rename)
    scorer = Scorer(copy)
    texts = ["a fine film", "dull"]
    from stackscore.engine.pipeline import result_block
    from stackscore.options import WriteOptions

    assert "prob_x_y" in result_block(scorer.score_texts(texts), scorer.labels, scorer.model_names, WriteOptions()).columns
    with pytest.raises(ArtifactError, match="two result columns would be named 'prob_x_y'"):
        result_block(scorer.score_texts(texts), scorer.labels, scorer.model_names, WriteOptions(with_model_outputs=True))
    src = copy.parent / "in.jsonl"
    src.write_text('{"text": "a fine film"}\n')
    with pytest.raises(ArtifactError, match="two result columns would be named 'prob_x_y'"):  # before any row is read
        score_file(scorer, src, copy.parent / "o.jsonl", ScoreOptions.from_kwargs(progress=False, with_model_outputs=True))
    assert not (copy.parent / "o.jsonl.parts").exists()


def test_graphs_with_other_external_weights_never_share_a_cache(copy, tmp_path, corpus_rows):
    """A graph with external data holds only its weights' file names, so two exports with other
    weights can be byte-identical graphs: keyed by the graph's checksum alone, the second artifact
    imported the first one's compiled blob (OpenVINO) and scored with its weights. ONNX Runtime
    keeps no optimized graph for them (it wrote their data relative to the cache: the second
    cached run could not load it)."""
    import shutil

    texts = [r["text"] for r in corpus_rows[:20]]
    to_external(copy)
    resign(copy, BERT, BERT + ".data")
    other = tmp_path / "other"
    shutil.copytree(copy, other)
    graph = onnx.load(str(copy / BERT), load_external_data=False)
    bias = next(t for t in graph.graph.initializer if len(t.dims) == 1 and t.dims[0] == 2)  # the classifier's bias
    where = {e.key: e.value for e in bias.external_data}
    with open(other / (BERT + ".data"), "r+b") as fh:  # other weights for it, in place
        fh.seek(int(where.get("offset", 0)))
        fh.write(np.array([30.0, -30.0], dtype="<f4").tobytes())
    resign(other, BERT + ".data")
    assert sha256_file(copy / BERT) == sha256_file(other / BERT)  # the case: the same graph bytes, other weights
    for backend in ("openvino", "onnxruntime"):
        if backend == "openvino":
            pytest.importorskip("openvino")
        own = Scorer(other, RunOptions(precision="fp32", backend=backend)).score_texts(texts).logits["bert"]
        cached = RunOptions(precision="fp32", backend=backend, cache_dir=tmp_path / f"cache-{backend}")
        for _ in range(2):  # fills the cache, then reads it
            first = Scorer(copy, cached).score_texts(texts).logits["bert"]
            np.testing.assert_allclose(Scorer(other, cached).score_texts(texts).logits["bert"], own, atol=1e-4)
        assert np.abs(first - own).max() > 1.0


def test_a_non_finite_row_of_a_later_input_names_its_own_files_row(copy, corpus_rows, tmp_path):
    """Several inputs into one Ray output: a window's rows are numbered in the concatenation (the
    output's ``row``), and an error made at inference named that number under the file's name
    ("b.parquet row 23" in a file of 20 rows); the reader's errors name the file's own row."""
    from stackscore.engine.readers import Window
    from stackscore.engine.scorer import Scorer
    from stackscore.errors import InputError
    from stackscore.integrations.windows import score_window
    from stackscore.options import RunOptions, WriteOptions

    clean = poison(copy, "boring", corpus_rows)[:3]
    texts = [clean[0], "boring", clean[1], None, clean[2]]
    window = Window(100, [f"r{i}" for i in range(5)], texts, [None, None, None, "row 3: field 'text' is null", None])
    scorer = Scorer(copy, RunOptions(precision="fp32"))
    block, stats = score_window(scorer, window, WriteOptions(), source="b.jsonl", source_path="b.jsonl", before=100)
    assert block.columns["error"][1] == "b.jsonl row 1: non-finite model output (logits of model 'bert')"
    assert block.columns["error"][3] == "b.jsonl row 3: field 'text' is null" and stats.errored == 2
    assert list(block.row_numbers()) == [100, 101, 102, 103, 104]  # the output's row: the concatenation's
    with pytest.raises(InputError, match=r"b\.jsonl: row 1: non-finite model output .*--on-error fail"):
        score_window(scorer, Window(100, ["x"] * 2, [clean[0], "boring"], [None, None]), WriteOptions(on_error="fail"), "b.jsonl", "b.jsonl", before=100)
