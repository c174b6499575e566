"""Ray Data and Spark adapters: results equal the single-process engine's, row for row."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import numpy as np
import orjson
import pandas as pd
import pytest

from stackscore.engine.pipeline import score_file
from stackscore.options import ScoreOptions


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
    os.environ["RAY_AUTH_MODE"] = "disabled"
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def test_ray_engine_equals_local_engine(artifact, corpus_file, tmp_path, ray_cluster):
    from stackscore.integrations.ray import score_file_ray

    expected = local_results(artifact, corpus_file, tmp_path)
    out = tmp_path / "ray.jsonl"
    # 2 actors x 0.5 CPU on a 2-CPU cluster leaves room for the read tasks (x 1 CPU would deadlock).
    n = score_file_ray(artifact, corpus_file, out, num_actors=2, num_cpus_per_actor=0.5, batch_size=64)
    got = [orjson.loads(l) for l in out.read_bytes().splitlines()]
    assert n == len(got) == len(expected) == 400
    assert [g["id"] for g in got] == [e["id"] for e in expected]
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    assert got[5]["label"] is None and "empty" in got[5]["error"]
    ok = [i for i, e in enumerate(expected) if e["error"] is None]
    np.testing.assert_allclose([got[i]["prob_positive"] for i in ok], [expected[i]["prob_positive"] for i in ok], atol=1e-5)


def test_ray_score_dataset_on_an_in_memory_dataset(artifact, ray_cluster):
    from stackscore.api import Ensemble
    from stackscore.integrations.ray import score_dataset

    texts = ["a clever film", "boring and dull", "the cast was not good", "Honestly, superb"] * 25
    ds = ray_cluster.data.from_pandas(pd.DataFrame({"text": texts, "n": range(100)}))
    out = score_dataset(ds, artifact, num_actors=2, num_cpus_per_actor=0.5, batch_size=16).to_pandas()
    assert out["n"].tolist() == list(range(100))  # order preserved
    np.testing.assert_allclose(out["prob_positive"].to_numpy(), Ensemble.load(artifact).predict_proba(texts)[:, 1], atol=1e-5)


def test_spark_mapinpandas_equals_local_engine(artifact, corpus_file, tmp_path):
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("no Java runtime for Spark")
    from pyspark.sql import SparkSession

    from stackscore.integrations.spark import score_spark

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    spark = (
        SparkSession.builder.master("local[2]").appName("stackscore-test")
        .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
        .config("spark.local.dir", str(tmp_path / "spark")).getOrCreate()
    )
    try:
        rows = [orjson.loads(l) for l in corpus_file.read_bytes().splitlines()]
        df = spark.createDataFrame(pd.DataFrame(rows)).repartition(3)
        got = score_spark(df, artifact).toPandas().set_index("id")
    finally:
        spark.stop()
    expected = {e["id"]: e for e in local_results(artifact, corpus_file, tmp_path)}
    assert len(got) == len(expected) == 400
    for rid, e in expected.items():
        g = got.loc[rid]
        if e["error"] is None:
            assert g["label"] == e["label"] and abs(g["prob_positive"] - e["prob_positive"]) < 1e-5
        else:
            assert pd.isna(g["label"]) and "empty" in g["error"]
