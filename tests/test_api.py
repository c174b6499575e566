"""The Python API: in-memory texts, pandas, streaming, pickling by reference."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd

from stackscore.api import Ensemble


def test_predict_proba_matches_file_scoring(artifact, corpus_rows):
    e = Ensemble.load(artifact)
    texts = [r["text"] for r in corpus_rows[:50]]
    p = e.predict_proba(texts)
    assert p.shape == (50, 2)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    assert e.predict(texts) == [e.labels[i] for i in p.argmax(1)]
    streamed = list(e.score_iter(iter(texts), chunk_rows=7))
    np.testing.assert_allclose([s["prob_positive"] for s in streamed], p[:, 1], atol=1e-6)
    proba, outputs = e.predict_proba(texts, return_model_outputs=True)
    assert set(outputs) == {"bert", "roberta"} and outputs["bert"].shape == (50, 2)


def test_score_dataframe_keeps_index_and_marks_bad_rows(artifact):
    e = Ensemble.load(artifact)
    df = pd.DataFrame({"text": ["a great film", None, "dull and boring"]}, index=[10, 20, 30])
    out = e.score_dataframe(df)
    assert list(out.index) == [10, 20, 30]
    assert pd.isna(out.loc[20, "label"]) and np.isnan(out.loc[20, "score"])
    assert out.loc[10, "label"] in e.labels
    np.testing.assert_allclose(out.loc[[10, 30], ["prob_negative", "prob_positive"]].sum(1), 1.0, atol=1e-6)


def test_score_dataframe_never_replaces_a_users_column(artifact):
    """A true `label` column replaced by the prediction would make an accuracy computed
    afterwards compare predictions with themselves: refused in one line; a prefix keeps both.
    Ray Data's predictor refuses it the same way (a dataset whose schema the driver cannot see)."""
    import pyarrow as pa
    import pytest

    from stackscore.errors import StackscoreError
    from stackscore.integrations.ray import EnsemblePredictor
    from stackscore.options import ScoreOptions

    e = Ensemble.load(artifact)
    df = pd.DataFrame({"text": ["a great film", "dull and boring"], "label": ["positive", "negative"], "score": [1, 2]})
    with pytest.raises(StackscoreError, match="input column\\(s\\) label, score would be overwritten by result columns"):
        e.score_dataframe(df)
    out = e.score_dataframe(df, prefix="pred_")
    assert out["label"].tolist() == ["positive", "negative"] and out["score"].tolist() == [1, 2]
    assert out["pred_label"].tolist() == e.predict(df["text"])
    from stackscore.manifest import load_manifest

    predictor = EnsemblePredictor(str(artifact), ScoreOptions.from_kwargs(progress=False), digest=load_manifest(artifact, verify=False).digest)
    with pytest.raises(StackscoreError, match="input column\\(s\\) label, score would be overwritten"):
        predictor(pa.Table.from_pandas(df))


def test_pickles_by_reference(artifact):
    e = Ensemble.load(artifact)
    blob = pickle.dumps(e)
    assert len(blob) < 2000  # path and options only, no weights
    again = pickle.loads(blob)
    np.testing.assert_allclose(again.predict_proba(["fine"]), e.predict_proba(["fine"]))


def test_score_arrow_table(artifact):
    import pyarrow as pa

    e = Ensemble.load(artifact)
    table = pa.table({"text": ["a great film", "dull"], "n": [1, 2]})
    out = e.score_dataframe(table)
    assert isinstance(out, pa.Table) and out.column("n").to_pylist() == [1, 2]
    np.testing.assert_allclose(out.column("prob_positive").to_numpy(), e.predict_proba(["a great film", "dull"])[:, 1], atol=1e-6)


def test_empty_and_blank_texts_get_no_prediction_in_the_api_as_in_a_file(artifact):
    """predict_proba/predict/score_iter check each text as a file's row is checked: an empty or
    blank text is a NaN row / None / an `error`, never a label; the other rows are unchanged."""
    e = Ensemble.load(artifact)
    texts = ["a great film", "", "   ", "dull and boring"]
    proba = e.predict_proba(texts)
    assert np.isnan(proba[1:3]).all() and np.isfinite(proba[[0, 3]]).all()
    np.testing.assert_allclose(proba[[0, 3]], e.predict_proba([texts[0], texts[3]]), atol=1e-6)
    assert e.predict(texts)[1:3] == [None, None] and None not in e.predict([texts[0], texts[3]])
    rows = list(e.score_iter(texts))
    assert [r["error"] for r in rows] == [None, "field 'text' is empty", "field 'text' is empty", None]
    assert rows[1]["label"] is None and rows[0]["label"] in e.labels


def test_a_flag_given_as_a_string_is_refused_not_taken_as_true(artifact, tmp_path):
    """``overwrite="false"`` (a value read from a config file) is truthy in Python: it would have
    replaced the user's file. The API refuses it in one line and the file keeps its bytes."""
    import pytest

    from stackscore.errors import StackscoreError

    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"text": "a great film"}\n')
    out.write_text("the user's own file\n")
    with pytest.raises(StackscoreError, match="overwrite must be True or False, not 'false'"):
        Ensemble.load(artifact).score_file(src, out, overwrite="false", progress=False)
    assert out.read_text() == "the user's own file\n"
    with pytest.raises(StackscoreError, match="cascade must be True or False, not 'off'"):
        Ensemble(artifact, cascade="off")


def test_a_pyarrow_table_keeps_its_columns_exactly_and_gets_fixed_result_types(artifact):
    """Scored through pandas and back, an int64 column with nulls became float
    (9007199254740993 -> ...992.0), a stored index column was dropped, binary text was "not
    text", and the result columns' types followed the data (error: null or large_string)."""
    import pyarrow as pa

    e = Ensemble.load(artifact)
    uid = pa.array([9007199254740993, None, 7], type=pa.int64())
    table = pa.table({"text": ["a great film", "dull", ""], "uid": uid, "doc_id": ["a", "b", "c"]})
    out = e.score_dataframe(table)
    assert out.column("uid").type == pa.int64() and out.column("uid").to_pylist() == [9007199254740993, None, 7]
    assert out.column("doc_id").to_pylist() == ["a", "b", "c"] and out.column("error").to_pylist()[:2] == [None, None]
    clean = e.score_dataframe(table.slice(0, 2))
    assert clean.schema.field("error").type == out.schema.field("error").type == pa.string()  # not null-typed without errors
    binary = e.score_dataframe(pa.table({"text": pa.array([b"a great film", b"dull"], type=pa.binary())}))
    assert binary.column("error").to_pylist() == [None, None]  # decoded as a Parquet file's bytes are
    np.testing.assert_allclose(binary.column("prob_positive").to_numpy(), out.column("prob_positive").to_numpy()[:2], atol=1e-6)
    empty = e.score_dataframe(table.slice(0, 0), prefix="p_")
    assert empty.num_rows == 0 and empty.schema.field("p_label").type == pa.string() and "uid" in empty.column_names


def test_one_string_is_refused_not_scored_letter_by_letter(artifact):
    import pytest

    from stackscore.errors import StackscoreError

    e = Ensemble.load(artifact)
    for call in (lambda: e.predict("a great film"), lambda: e.predict_proba("a great film"), lambda: list(e.score_iter("ok"))):
        with pytest.raises(TypeError, match="must be a list of texts, not one str"):
            call()
    for bad in (0, -1, 2.5):
        with pytest.raises(StackscoreError, match="chunk_rows must be a positive whole number"):
            list(e.score_iter(["ok"], chunk_rows=bad))
    df = pd.DataFrame({"text": ["fine", pd.NA]})
    assert e.score_dataframe(df)["error"].tolist()[1] == "field 'text' is null"


def test_an_unpickled_ensemble_loads_the_same_artifact_or_says_it_is_another(artifact, tmp_path, monkeypatch):
    import shutil

    import pytest

    from stackscore.errors import ArtifactError

    copy = tmp_path / "art"
    shutil.copytree(artifact, copy)
    monkeypatch.chdir(tmp_path)
    blob = pickle.dumps(Ensemble.load("art"))  # a relative path, resolved when loaded
    monkeypatch.chdir(artifact.parent)
    assert pickle.loads(blob).artifact_dir == copy.resolve()
    manifest = copy / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"format_version"', '"format_version"', 1) + " ")  # other bytes, same meaning
    with pytest.raises(ArtifactError, match="not the artifact this Ensemble was pickled with"):
        pickle.loads(blob)
