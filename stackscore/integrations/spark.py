"""Spark: score a DataFrame's text column on the executors with ``mapInPandas``.

    from stackscore.integrations.spark import score_spark
    scored = score_spark(spark.read.parquet("corpus/"), "artifact/", text_column="text")

The artifact directory must be readable at the same path on every executor (a shared file
system, or shipped with ``--files``/``SparkFiles``). Each executor Python process loads the
ensemble once and keeps it for every partition it scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pandas as pd

_CACHE: dict[tuple, object] = {}


def _ensemble(artifact_dir: str, precision: str, threads: int):
    from ..api import Ensemble

    key = (artifact_dir, precision, threads)
    if key not in _CACHE:
        _CACHE[key] = Ensemble.load(artifact_dir, precision=precision, threads=threads)
    return _CACHE[key]


def output_schema(df, labels: list[str]):
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    fields = list(df.schema.fields) + [StructField("label", StringType()), StructField("score", DoubleType())]
    fields += [StructField(f"prob_{l}", DoubleType()) for l in labels] + [StructField("error", StringType())]
    return StructType(fields)


def score_spark(df, artifact_dir: str | Path, text_column: str = "text", precision: str = "fp32", threads: int = 1):
    """``df`` with label/score/prob_<label>/error columns, scored partition by partition."""
    from ..manifest import load_manifest

    artifact = str(Path(artifact_dir).resolve())
    labels = load_manifest(artifact, verify=False).labels
    schema = output_schema(df, labels)

    def score_partitions(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        ens = _ensemble(artifact, precision, threads)
        for pdf in batches:
            yield ens.score_dataframe(pdf, text_column=text_column)

    return df.mapInPandas(score_partitions, schema)
