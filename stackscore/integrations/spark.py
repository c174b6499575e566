"""Spark: score a DataFrame's text column on the executors with ``mapInArrow``.

    from stackscore.integrations.spark import score_spark
    scored = score_spark(spark.read.parquet("corpus/"), "artifact/", text_column="text")

The same row-level semantics as the local engine: each partition's Arrow batches go through the
columnar readers' own row checks (a null, empty, non-text or invalid-UTF-8 text is an error row
with the reason a Parquet or CSV file gives) and the engine's per-window step (encode -> infer ->
``result_block``), so the result columns are exactly the output file's (``label``/``score``/
``prob_<label>``, ``labels``, ``value``, ``error``, and on request model outputs and
contributions). Error texts carry the reason only: a partition's rows have no file position;
each row keeps its own columns (an id) to find it by.

The artifact directory must be readable at the same path on every executor (a shared file
system, or shipped with ``--files``/``SparkFiles``). Each executor Python process loads the
ensemble once and keeps it for every partition it scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

_CACHE: dict[tuple, object] = {}


def _scorer(artifact_dir: str, run, digest: str):
    """One ``Scorer`` per executor Python process (Spark reuses workers across partitions), for
    the artifact as the driver saw it (``digest``: its manifest's sha256). An artifact exported
    again to the same path (a notebook's fit, export, score loop) is loaded again, never served
    from the old ensemble; one changed after the job was planned stops the partition in one line
    (its schema and its values would come from two different artifacts)."""
    from .windows import planned_scorer

    key = (artifact_dir, run, digest)
    if key not in _CACHE:
        for old in [k for k in _CACHE if k[:2] == key[:2]]:
            del _CACHE[old]  # the same path's previous export: its sessions are freed
        _CACHE[key] = planned_scorer(artifact_dir, run, digest)
    return _CACHE[key]


def _case_sensitive(df) -> bool:
    """Whether the DataFrame's session tells column names apart by case (Spark's default: no)."""
    try:
        return str(df.sparkSession.conf.get("spark.sql.caseSensitive", "false")).lower() == "true"
    except Exception:  # noqa: BLE001 - no session to ask: assume Spark's default
        return False


def output_schema(df, result_arrow_schema, prefix: str = ""):
    """The input's columns plus the engine's result columns (``pipeline.result_block``'s, as
    ``windows.result_schema`` gives them in Arrow types)."""
    from pyspark.sql.pandas.types import from_arrow_schema
    from pyspark.sql.types import StructField, StructType

    results = from_arrow_schema(result_arrow_schema)
    return StructType(list(df.schema.fields) + [StructField(prefix + f.name, f.dataType, True) for f in results.fields])


def score_spark(df, artifact_dir: str | Path, text_column: str = "text", precision: str = "fp32", threads: int = 1, text_pair_column: str | None = None, prefix: str = "", **options: Any):
    """``df`` with the engine's result columns appended, scored partition by partition.

    ``options``: ``stackscore score``'s flat names (``with_model_outputs``, ``with_contributions``,
    ``on_error`` = record | skip | fail, ``encoding_errors`` for binary text columns,
    ``long_text``, ``token_budget``, ``chunk_rows`` ...). ``text_pair_column`` for sentence-pair
    ensembles. Checked here, in one line, before any executor starts. ``on_error="fail"``
    raises in the executor when an action runs: Spark wraps it (``PythonException``), the
    one-line reason in its message.
    """
    from ..engine.pipeline import check_pair_option
    from .windows import ArtifactFacts, check_columns, frame_options, result_schema, score_arrow

    artifact = str(Path(artifact_dir).resolve())
    set_by = {"text_field": "pass text_column=", "text_pair_field": "pass text_pair_column=", "progress": "executors print no progress line (Spark's UI shows the job's)"}
    opts = frame_options("score_spark", set_by, options, text_field=text_column, text_pair_field=text_pair_column, precision=precision, threads=threads, progress=False)
    facts = ArtifactFacts(artifact, opts.run)
    check_pair_option(facts, text_pair_column, "text_pair_column=")
    schema = result_schema(facts, opts.write)
    check_columns(df.columns, opts.read, schema.names, prefix, fold_case=not _case_sensitive(df))
    read, write, run, digest = opts.read, opts.write, opts.run, facts.digest

    def score_partitions(batches: Iterator[Any]) -> Iterator[Any]:
        yield from score_arrow(_scorer(artifact, run, digest), batches, read, write, schema, prefix)

    return df.mapInArrow(score_partitions, output_schema(df, schema, prefix))
