"""Ray Data: score a Dataset with an actor pool, each actor holding the ensemble's sessions.

    import ray
    from stackscore.integrations.ray import score_dataset
    scored = score_dataset(ray.data.read_parquet("s3://corpus/"), "artifact/", num_actors=8)
    scored.write_parquet("s3://predictions/")

Order: Ray Data does not keep row order by default. ``score_dataset(..., preserve_order=True)``
(the default) sets ``DataContext.execution_options.preserve_order`` so output blocks come back
in input order; with ``preserve_order=False`` the rows keep their ``id`` column (or the
``row_number_column`` you add) so order can be restored by a sort, at lower latency.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd


class EnsemblePredictor:
    """Callable class for ``Dataset.map_batches``: one Ensemble per actor, loaded once."""

    def __init__(self, artifact_dir: str, text_column: str = "text", precision: str = "fp32", providers: list[str] | None = None, threads: int = 1, text_pair_column: str | None = None):
        from ..api import Ensemble

        self.text_column = text_column
        self.text_pair_column = text_pair_column
        self.ensemble = Ensemble.load(artifact_dir, precision=precision, providers=providers, threads=threads)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return self.ensemble.score_dataframe(batch, text_column=self.text_column, text_pair_column=self.text_pair_column)


def score_dataset(
    ds,
    artifact_dir: str | Path,
    text_column: str = "text",
    num_actors: int = 2,
    num_cpus_per_actor: float = 1,
    num_gpus_per_actor: float = 0,
    batch_size: int = 2048,
    precision: str = "fp32",
    providers: list[str] | None = None,
    preserve_order: bool = True,
    text_pair_column: str | None = None,
):
    """``ds`` with label/score/prob_<label>/error columns added, scored by an actor pool."""
    import ray.data

    from ..manifest import load_manifest

    # Refused here, in one line, not inside every actor: a pair artifact needs its second column.
    manifest = load_manifest(artifact_dir, verify=False)
    pair = manifest.text_pair
    if manifest.task in ("multi_label", "regression"):
        from ..errors import StackscoreError

        raise StackscoreError(f"{artifact_dir}: a {manifest.task} ensemble is not supported by the Ray adapter yet; use --engine local or the Python API")
    if pair != bool(text_pair_column):
        from ..errors import StackscoreError

        raise StackscoreError(
            f"{artifact_dir}: fitted on sentence pairs: pass text_pair_column" if pair
            else f"{artifact_dir}: scores single texts; text_pair_column does not apply"
        )
    if preserve_order:
        # A Dataset snapshots the DataContext when it is created: set it on the dataset itself.
        ctx = getattr(ds, "context", None) or ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
    threads = max(1, int(num_cpus_per_actor))
    if num_gpus_per_actor and providers is None:
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ds.map_batches(
        EnsemblePredictor,
        fn_constructor_kwargs={
            "artifact_dir": str(Path(artifact_dir).resolve()), "text_column": text_column, "precision": precision,
            "providers": providers, "threads": threads, "text_pair_column": text_pair_column,
        },
        batch_format="pandas",
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_cpus=num_cpus_per_actor,
        num_gpus=num_gpus_per_actor or None,
    )


def read_dataset(path: str | Path, text_column: str = "text"):
    """A Ray Dataset from the same formats the local engine reads (by extension)."""
    import ray.data

    from ..engine.readers import detect_format

    fmt, gz = detect_format(path)
    p = str(path)
    if fmt == "jsonl":
        return ray.data.read_json(p, lines=True) if _has_lines_kw() else ray.data.read_json(p)
    if fmt in ("csv", "tsv"):
        import pyarrow.csv as pacsv

        return ray.data.read_csv(p, parse_options=pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True))
    if fmt == "parquet":
        return ray.data.read_parquet(p)
    return ray.data.read_text(p).rename_columns({"text": text_column}) if text_column != "text" else ray.data.read_text(p)


def _has_lines_kw() -> bool:
    import inspect

    import ray.data

    return "lines" in inspect.signature(ray.data.read_json).parameters


def score_file_ray(artifact_dir: str | Path, input_path: str | Path, output_path: str | Path, text_column: str = "text", id_column: str | None = None, address: str | None = None, num_actors: int = 2, num_cpus_per_actor: float = 1, batch_size: int = 2048, overwrite: bool = False) -> int:
    """``stackscore score --engine ray``: read with Ray, score on an actor pool, write in order.

    Results stream back to the driver in input order and go through the local engine's writers,
    so the output file has the same columns and rows as the single-process engine's.
    """
    import ray

    from ..engine.committer import OutputLock, check_output_path
    from ..engine.writers import output_format
    from ..errors import StackscoreError

    output_path = Path(output_path)
    check_output_path(output_path, Path(input_path))
    if output_path.exists() and not overwrite:
        raise StackscoreError(f"{output_path}: output exists; pass --overwrite to replace it")
    fmt, gz = output_format(output_path)
    with OutputLock(output_path):
        return _score_file_ray(ray, artifact_dir, input_path, output_path, fmt, gz, text_column, id_column, address, num_actors, num_cpus_per_actor, batch_size)


def _score_file_ray(ray, artifact_dir, input_path, output_path: Path, fmt: str, gz: bool, text_column: str, id_column: str | None, address: str | None, num_actors: int, num_cpus_per_actor: float, batch_size: int) -> int:
    from ..engine.writers import ResultBlock, open_writer

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        ds = score_dataset(read_dataset(input_path, text_column), artifact_dir, text_column, num_actors, num_cpus_per_actor, batch_size=batch_size)
        partial = output_path.with_name(output_path.name + ".partial")
        writer = open_writer(partial, fmt, gz)
        rows = 0
        id_col = id_column or None
        for batch in ds.iter_batches(batch_format="pandas", batch_size=batch_size):
            if id_col is None and "id" in batch.columns:
                id_col = "id"
            ids = batch[id_col].tolist() if id_col else [None] * len(batch)  # as the local engine: no made-up ids
            cols: dict[str, Any] = {}
            for c in batch.columns:
                if c in ("label", "score", "error") or c.startswith("prob_"):
                    v = batch[c]
                    cols[c] = v.to_numpy(dtype=float) if c == "score" or c.startswith("prob_") else [None if pd.isna(x) else x for x in v]
            writer.write(ResultBlock(ids, {k: cols[k] for k in ["label", "score", *[c for c in cols if c.startswith("prob_")], "error"]}, list(range(rows, rows + len(batch)))))
            rows += len(batch)
        writer.close()
        partial.replace(output_path)
        return rows
    finally:
        if started_here:
            ray.shutdown()
