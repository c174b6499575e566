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


def output_schema(df, labels: list[str], task: str = "single_label"):
    """The input's columns plus the engine's result columns for the task (``pipeline.result_block``)."""
    from pyspark.sql.types import ArrayType, DoubleType, StringType, StructField, StructType

    fields = list(df.schema.fields)
    if task == "regression":
        fields += [StructField("value", DoubleType())]
    elif task == "multi_label":
        fields += [StructField("labels", ArrayType(StringType()))] + [StructField(f"prob_{l}", DoubleType()) for l in labels]
    else:
        fields += [StructField("label", StringType()), StructField("score", DoubleType())]
        fields += [StructField(f"prob_{l}", DoubleType()) for l in labels]
    return StructType(fields + [StructField("error", StringType())])


def score_spark(df, artifact_dir: str | Path, text_column: str = "text", precision: str = "fp32", threads: int = 1, text_pair_column: str | None = None):
    """``df`` with the engine's result columns (label/score/prob_<label>, labels, or value) and
    error, scored partition by partition; ``text_pair_column`` for sentence-pair ensembles."""
    from ..errors import StackscoreError
    from ..manifest import load_manifest
    from ..tasks import task_of

    artifact = str(Path(artifact_dir).resolve())
    manifest = load_manifest(artifact, verify=False)
    if manifest.text_pair != bool(text_pair_column):  # one line here, not a failure in every executor
        raise StackscoreError(f"{artifact}: fitted on sentence pairs: pass text_pair_column" if manifest.text_pair else f"{artifact}: scores single texts; text_pair_column does not apply")
    schema = output_schema(df, manifest.labels, task_of(manifest.task))

    def score_partitions(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        ens = _ensemble(artifact, precision, threads)
        for pdf in batches:
            yield ens.score_dataframe(pdf, text_column=text_column, text_pair_column=text_pair_column)

    return df.mapInPandas(score_partitions, schema)
