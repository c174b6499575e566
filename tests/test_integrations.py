"""Ray Data and Spark adapters: results equal the single-process engine's, row for row."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile

import numpy as np
import orjson
import pandas as pd
import pytest

from stackscore.engine.pipeline import score_file
from stackscore.options import ScoreOptions
from stackscore.errors import StackscoreError


def local_results(artifact, src, tmp_path) -> list[dict]:
    out = tmp_path / "local.jsonl"
    score_file(artifact, src, out, ScoreOptions.from_kwargs(progress=False, overwrite=True))
    return [orjson.loads(l) for l in out.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def corpus_file(corpus_rows, tmp_path_factory):
    src = tmp_path_factory.mktemp("integrations") / "in.jsonl"
    rows = [{"id": r["id"], "text": r["text"]} for r in corpus_rows[:400]]
    rows[5] = {"id": rows[5]["id"], "text": "   "}  # a bad row travels through both engines
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return src


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def test_ray_engine_equals_local_engine(artifact, corpus_file, tmp_path, ray_cluster):
    from stackscore.integrations.ray import RayOptions, score_ray

    local_results(artifact, corpus_file, tmp_path)  # -> local.jsonl
    out = tmp_path / "ray.jsonl"
    # 2 actors x 1 CPU on a 2-CPU cluster: readers need no Ray CPUs (the driver reads), so no starving
    result = score_ray(artifact, corpus_file, out, ScoreOptions.from_kwargs(progress=False), RayOptions(actors=2, cpus_per_actor=1))
    assert result.stats.rows == 400 and out.read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    got = [orjson.loads(l) for l in out.read_bytes().splitlines()]
    assert got[5]["label"] is None and "empty" in got[5]["error"]


def test_ray_score_dataset_on_an_in_memory_dataset(artifact, ray_cluster):
    from stackscore.api import Ensemble
    from stackscore.integrations.ray import score_dataset

    texts = ["a clever film", "boring and dull", "the cast was not good", "Honestly, superb"] * 25
    texts[7] = None  # an error row, as a null text in a Parquet file
    ds = ray_cluster.data.from_pandas(pd.DataFrame({"text": texts, "n": range(100)}))
    out = score_dataset(ds, artifact, num_actors=2, num_cpus_per_actor=0.5, batch_size=16, with_model_outputs=True).to_pandas()
    assert out["n"].tolist() == list(range(100))  # order preserved
    ok = [i for i, t in enumerate(texts) if t is not None]
    np.testing.assert_allclose(out["prob_positive"].to_numpy()[ok], Ensemble.load(artifact).predict_proba([texts[i] for i in ok])[:, 1], atol=1e-5)
    assert out["error"][7] == "field 'text' is null" and pd.isna(out["label"][7]) and out["error"].isna().sum() == 99
    assert "logit_bert_positive" in out.columns  # the engine's columns, options included
    with pytest.raises(StackscoreError, match="input column\\(s\\) label would be overwritten"):  # on the driver, before any actor
        score_dataset(ray_cluster.data.from_pandas(pd.DataFrame({"text": ["fine"], "label": ["positive"]})), artifact)


def test_spark_equals_local_engine_row_for_row_on_bad_rows(artifact, corpus_rows, tmp_path):
    """A Parquet file with a binary text column (null, empty, blank and invalid-UTF-8 rows among
    good ones), scored by the local engine and by Spark: the same rows, columns, values and
    error reasons (Spark's without the file position, which a partition does not have)."""
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("no Java runtime for Spark")
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.sql import SparkSession

    from stackscore.integrations.spark import score_spark

    texts = [r["text"].encode() for r in corpus_rows[:300]]
    texts[5], texts[17], texts[40], texts[41] = None, b"   ", b"caf\xe9 au lait", b""
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [r["id"] for r in corpus_rows[:300]], "text": pa.array(texts, pa.binary())}), src)
    out = tmp_path / "local.jsonl"
    score_file(artifact, src, out, ScoreOptions.from_kwargs(progress=False, with_model_outputs=True))
    expected = {e["id"]: e for e in map(orjson.loads, out.read_bytes().splitlines())}

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    spark = (
        SparkSession.builder.master("local[2]").appName("stackscore-test")
        .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
        .config("spark.local.dir", str(tmp_path / "spark")).getOrCreate()
    )
    try:
        df = spark.read.parquet(str(src)).repartition(3)
        got = score_spark(df, artifact, with_model_outputs=True).toPandas().set_index("id")
        skipped = score_spark(df, artifact, on_error="skip").count()
    finally:
        spark.stop()
    result_columns = [c for c in next(iter(expected.values())) if c not in ("id", "row")]
    assert list(got.columns) == ["text", *result_columns]  # the input's columns, then result_block's
    assert len(got) == len(expected) == 300 and skipped == 296
    for rid, e in expected.items():
        g = got.loc[rid]
        for c in result_columns:
            if c == "error":
                assert (None if pd.isna(g[c]) else g[c]) == (None if e[c] is None else re.sub(r"^row \d+: ", "", e[c])), rid
            elif isinstance(e[c], float):
                assert abs(g[c] - e[c]) < 1e-5, (rid, c)
            else:
                assert (None if pd.isna(g[c]) else g[c]) == e[c], (rid, c)
    assert sum(e["error"] is not None for e in expected.values()) == 4
    assert "invalid UTF-8" in got.loc[corpus_rows[40]["id"], "error"]


def test_spark_executors_load_an_artifact_exported_again_to_the_same_path(copy):
    """Spark keeps one ensemble per executor process across jobs: a job planned after a new
    export to the same path gets the new ensemble, never the cached old one; a job planned
    before it stops in one line instead of mixing two artifacts."""
    from stackscore.engine.scorer import Scorer
    from stackscore.errors import ArtifactError
    from stackscore.integrations.spark import _scorer
    from stackscore.manifest import load_manifest
    from stackscore.options import RunOptions

    run, texts = RunOptions(precision="fp32", threads=1), ["a fine movie", "terrible plot and bad acting"]
    before = load_manifest(copy, verify=False).digest
    old = _scorer(str(copy), run, before)
    assert old is _scorer(str(copy), run, before) and old.fusion.method.name == "stack"
    _export_again_with_mean_fusion(copy)
    new = _scorer(str(copy), run, load_manifest(copy, verify=False).digest)
    assert new is not old and new.fusion.method.name == "mean"
    np.testing.assert_allclose(new.score_texts(texts).proba, Scorer(copy, run).score_texts(texts).proba)
    with pytest.raises(ArtifactError, match="changed after this job was planned"):
        _scorer(str(copy), run, before)


def _export_again_with_mean_fusion(copy) -> None:
    """A valid artifact at the same path with another fusion (what a new export leaves there)."""
    from stackscore.manifest import FusionSpec, load_manifest, write_manifest

    m = load_manifest(copy)
    (copy / m.fusion.graph).unlink()
    m.fusion = FusionSpec(method="mean", params={"space": "probs"})
    write_manifest(copy, m)


def test_the_manifest_digest_is_that_of_the_bytes_parsed_and_never_written(copy):
    import hashlib
    import json

    from stackscore.manifest import load_manifest, write_manifest

    m = load_manifest(copy)
    assert m.digest == hashlib.sha256((copy / "manifest.json").read_bytes()).hexdigest()
    write_manifest(copy, m)
    assert "digest" not in json.loads((copy / "manifest.json").read_bytes())
    assert load_manifest(copy).digest == hashlib.sha256((copy / "manifest.json").read_bytes()).hexdigest()


def test_ray_actors_refuse_an_artifact_other_than_the_drivers_in_one_line(copy, tmp_path):
    """A node holding another copy of the artifact (or an actor restarted after a new export)
    scored with other models and labels than the driver's output columns and the other actors;
    now its ``ready()`` carries one line the driver raises (``Pool._answered``)."""
    from stackscore.integrations.ray import ScorerActor
    from stackscore.integrations.windows import ArtifactFacts
    from stackscore.options import ScoreOptions

    opts = ScoreOptions.from_kwargs(progress=False, precision="fp32")
    facts = ArtifactFacts(copy, opts.run)
    assert ScorerActor(str(copy), str(tmp_path), opts, facts.digest).error is None
    _export_again_with_mean_fusion(copy)
    actor = ScorerActor(str(copy), str(tmp_path), opts, facts.digest)
    assert actor.scorer is None and actor.error[0] == "ArtifactError"
    assert "not the artifact this job was planned with" in actor.error[1] and "\n" not in actor.error[1]


def test_ray_data_refuses_an_artifact_exported_again_before_the_dataset_ran(copy, ray_cluster):
    """Ray Data runs lazily: a dataset built by score_dataset() and executed after a new export
    to the same path was scored by the new ensemble under the old plan, silently."""
    from stackscore.integrations.ray import score_dataset

    ds = score_dataset(ray_cluster.data.from_pandas(pd.DataFrame({"text": ["a fine movie", "dull"]})), copy, num_actors=1, num_cpus_per_actor=0.5)
    _export_again_with_mean_fusion(copy)
    with pytest.raises(Exception, match="not the artifact this job was planned with"):
        ds.to_pandas()


def _arrow_scored(artifact, batches, **kw):
    import pyarrow as pa

    from stackscore.engine.scorer import Scorer
    from stackscore.integrations.windows import result_schema, score_arrow

    opts = ScoreOptions.from_kwargs(progress=False, **kw)
    scorer = Scorer(artifact, opts.run)
    return scorer, pa.Table.from_batches(list(score_arrow(scorer, batches, opts.read, opts.write, result_schema(scorer, opts.write))))


def test_a_dataframe_text_column_of_other_objects_gives_error_rows_as_score_dataframe_does(artifact):
    """A Ray Data batch of a pandas column mixing strings and other objects arrives as Arrow's
    pickled-object extension type, a Spark column may be numbers: each row that holds no text is
    an error row with the reason ``Ensemble.score_dataframe`` gives, the others are scored (the
    whole batch failed, and with it the job)."""
    import pyarrow as pa

    from stackscore.api import Ensemble

    _, ints = _arrow_scored(artifact, [pa.record_batch({"text": [1, 2], "n": [0, 1]})])
    assert ints.column("error").to_pylist() == ["field 'text' is int, not text"] * 2 and ints.column("label").to_pylist() == [None, None]
    assert ints.column("text").to_pylist() == [1, 2]  # the input's own column is kept as it was
    pytest.importorskip("ray")
    from ray.data._internal.pandas_block import PandasBlockAccessor

    df = pd.DataFrame({"text": ["a clever film", 5, "boring and dull", None, "  "], "n": range(5)})
    block = PandasBlockAccessor(df).to_arrow()
    assert not pa.types.is_string(block.schema.field("text").type)  # the case itself: pickled objects
    _, got = _arrow_scored(artifact, [block])
    local = Ensemble.load(artifact).score_dataframe(df)
    assert got.column("error").to_pylist() == [None if pd.isna(e) else e for e in local["error"]]
    assert got.column("label").to_pylist() == [None if pd.isna(v) else v for v in local["label"]]
    np.testing.assert_allclose(np.array(got.column("prob_positive").to_pylist(), dtype=float), local["prob_positive"].to_numpy(dtype=float), atol=1e-6)


def test_a_dataframe_row_that_fails_at_inference_gets_its_reason_without_a_made_up_position(artifact):
    """A non-finite output in a Spark partition or Ray Data batch: the row's error is the reason
    alone (a row number counted from the batch says nothing about the frame), and
    ``on_error='fail'`` names no file the user never had."""
    import pyarrow as pa

    class NaNFirst:
        def __init__(self, fusion):
            self._fusion = fusion

        def __getattr__(self, name):
            return getattr(self._fusion, name)

        def __call__(self, outputs):
            p = np.array(self._fusion(outputs), dtype=float)
            p[0] = np.nan
            return p

    from stackscore.engine.scorer import Scorer
    from stackscore.errors import InputError
    from stackscore.integrations.windows import result_schema, score_arrow

    batches = [pa.record_batch({"text": ["good film", "bad film"]}), pa.record_batch({"text": ["fine", "dull"]})]
    for on_error in ("record", "fail"):
        opts = ScoreOptions.from_kwargs(progress=False, chunk_rows=2, on_error=on_error)
        scorer = Scorer(artifact, opts.run)
        scorer.fusion = NaNFirst(scorer.fusion)
        run = lambda: pa.Table.from_batches(list(score_arrow(scorer, batches, opts.read, opts.write, result_schema(scorer, opts.write))))  # noqa: E731
        if on_error == "record":
            errors = run().column("error").to_pylist()
            assert errors[0] == errors[2] == "non-finite model output (fused probabilities)" and errors[1] is errors[3] is None
        else:
            with pytest.raises(InputError) as info:
                run()
            assert str(info.value) == "non-finite model output (fused probabilities) (--on-error fail)"


def test_dataframe_adapters_refuse_options_they_set_or_cannot_use_in_one_line(artifact):
    """Flat names the adapters set from their own parameters met a TypeError ("multiple values
    for keyword argument"); file-only options were taken and did nothing. Both are refused on the
    driver, before the DataFrame is touched (None here)."""
    pytest.importorskip("ray")
    from stackscore.integrations.ray import score_dataset
    from stackscore.integrations.spark import score_spark
    from stackscore.integrations.windows import check_columns

    cases = [
        (score_spark, {"text_field": "body"}, "score_spark: text_field= is not taken here; pass text_column="),
        (score_spark, {"progress": True}, "score_spark: progress= is not taken here"),
        (score_spark, {"id_field": "id"}, "score_spark: id_field= applies to files"),
        (score_spark, {"overwrite": True}, "score_spark: overwrite= applies to files"),
        (score_dataset, {"threads": 2}, "score_dataset: threads= is not taken here; each actor runs num_cpus_per_actor= threads"),
        (score_dataset, {"text_pair_field": "b"}, "score_dataset: text_pair_field= is not taken here; pass text_pair_column="),
        (score_dataset, {"label_field": "y"}, "score_dataset: label_field= applies to files"),
        (score_dataset, {"on_progress": print}, "score_dataset: on_progress= applies to the file pipeline"),  # was never called
        (score_spark, {"queue_depth": 4}, "score_spark: queue_depth= applies to the file pipeline"),
    ]
    for fn, kw, message in cases:
        with pytest.raises(StackscoreError, match=re.escape(message)):
            fn(None, artifact, **kw)
    from stackscore.options import ReadOptions

    with pytest.raises(StackscoreError, match="text and text pair columns must be different columns, got 'a' for both"):
        check_columns(["a", "b"], ReadOptions(text_field="a", text_pair_field="a"), [])
    # Spark resolves names whatever their case by default: an input "Label" beside the result's
    # "label" is ambiguous there, so it is refused as a clash; exact-case engines keep both
    with pytest.raises(StackscoreError, match="input column\\(s\\) Label would be overwritten"):
        check_columns(["text", "Label"], ReadOptions(), ["label", "score"], fold_case=True)
    check_columns(["text", "Label"], ReadOptions(), ["label", "score"])
    from types import SimpleNamespace

    from stackscore.integrations.spark import _case_sensitive

    session = lambda value: SimpleNamespace(sparkSession=SimpleNamespace(conf=SimpleNamespace(get=lambda key, default: value)))  # noqa: E731
    assert _case_sensitive(session("true")) and not _case_sensitive(session("false")) and not _case_sensitive(object())


def test_merging_window_or_shard_stats_keeps_cascade_stages_resumed_rows_and_the_first_row():
    """Ray's runs merge per-window (one output file) or per-shard (a directory) statistics: the
    cascade's rows per stage were dropped (no `cascade:` line, no `cascade_stage_rows` in
    --stats-json), a shard's own resumed rows were in neither rows nor resumed_from, and the time
    of the first row stayed null."""
    import numpy as np

    from stackscore.engine.stats import ScoreStats
    from stackscore.integrations.windows import merge_stats

    total = ScoreStats(resumed_from=5)
    a, b = ScoreStats(rows=10, scored=10), ScoreStats(rows=6, scored=6, resumed_from=4)
    a.add_stages(np.array([1, 1, 2, 1, 2, 2, 2, 1, 1, 1]))
    b.add_stages(np.array([2, 2, 2, 2, 2, 3]))  # a later window reached a third stage
    a.first_row_at, b.first_row_at = 200.0, 100.0
    merge_stats(total, a)
    merge_stats(total, b)
    assert total.stage_rows == [6, 9, 1] and total.rows == 16 and total.resumed_from == 9 and total.first_row_at == 100.0
    assert total.to_dict()["cascade_stage_rows"] == [6, 9, 1]
