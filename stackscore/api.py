"""The Python API: ``Ensemble.load(artifact).predict_proba(texts)`` and friends.

An :class:`Ensemble` pickles *by reference*: only the artifact path and options travel, and the
sessions are rebuilt (and the checksums re-verified) where it is unpickled, so shipping it to
Ray or Spark workers never sends weights through the scheduler.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .engine.pipeline import score_file
from .engine.scorer import Scorer
from .engine.stats import ScoreStats
from .options import ReadOptions, RunOptions, ScoreOptions, WriteOptions


class Ensemble:
    def __init__(self, artifact_dir: str | Path, options: RunOptions | None = None, **run: Any):
        """An artifact's ensemble, run as ``options`` say (or ``RunOptions(**run)``: ``precision``,
        ``backend``, ``providers``, ``threads``, ``token_budget`` ...). The default precision is exact
        fp32; ``precision="auto"`` takes the fastest one whose export gate passed."""
        self.artifact_dir = Path(artifact_dir).resolve()  # a pickled copy loads this artifact wherever it runs
        if options is not None and run:
            raise TypeError("give either options=RunOptions(...) or keyword options, not both")
        self.options = options or RunOptions(**{k: (tuple(v) if k == "providers" and v else v) for k, v in run.items() if v is not None})
        self.scorer = Scorer(self.artifact_dir, self.options)

    @classmethod
    def load(cls, artifact_dir: str | Path, **kwargs: Any) -> "Ensemble":
        return cls(artifact_dir, **kwargs)

    def __reduce__(self):
        from .manifest import MANIFEST_NAME, sha256_file

        return (_rebuild, (str(self.artifact_dir), self.options, sha256_file(self.artifact_dir / MANIFEST_NAME)))

    @property
    def labels(self) -> list[str]:
        return list(self.scorer.labels)

    @property
    def model_names(self) -> list[str]:
        return self.scorer.model_names

    def predict_proba(self, texts: Iterable[str], return_model_outputs: bool = False, text_pairs: Iterable[str] | None = None):
        """(n, k) fused probabilities (regression: values); with ``return_model_outputs`` also {model: logits}.

        ``text_pairs``: the second texts, for an ensemble fitted on sentence pairs (required there).
        A row whose text (or pair) is empty or blank, or whose model output is not finite
        (NaN/inf), comes back as a row of NaN, never as numbers that look like a prediction
        (``score_iter`` and ``score_dataframe`` say why in ``error``).
        """
        from .engine.pipeline import check_pair_option

        texts, pairs = _items(texts, "texts"), (_items(text_pairs, "text_pairs") if text_pairs is not None else None)
        check_pair_option(self.scorer, "text_pairs" if pairs is not None else None, "text_pairs=")
        for what, items in (("texts", texts), ("text_pairs", pairs or [])):
            bad = [i for i, t in enumerate(items) if not isinstance(t, str)]
            if bad:
                raise TypeError(f"{what} must be strings; item {bad[0]} is {type(items[bad[0]]).__name__}")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"text_pairs has {len(pairs)} items for {len(texts)} texts")
        if not texts:
            empty = np.zeros((0, len(self.labels)))
            return (empty, {m: empty for m in self.model_names}) if return_model_outputs else empty
        scored = self.scorer.score_texts(texts, pairs)
        n = len(texts)

        def full(values: np.ndarray) -> np.ndarray:
            if len(scored.valid) == n:
                return values
            out = np.full((n, values.shape[1]), np.nan)
            out[scored.valid] = values
            return out

        proba = full(scored.proba)
        return (proba, {m: full(v) for m, v in scored.logits.items()}) if return_model_outputs else proba

    @property
    def task(self) -> str:
        """single_label, multi_label or regression (``stackscore.tasks``)."""
        return self.scorer.fusion.task

    def predict(self, texts: Iterable[str], text_pairs: Iterable[str] | None = None) -> list:
        """Top labels (single-label), lists of the labels on (multi-label) or values (regression);
        None for a row without a finite model output."""
        proba = self.predict_proba(texts, text_pairs=text_pairs)
        ok = np.isfinite(proba).all(axis=1)
        if self.task == "regression":
            return [float(v) if good else None for v, good in zip(proba[:, 0], ok)]
        if self.task == "multi_label":
            from .tasks import decide

            names = np.asarray(self.labels, dtype=object)
            return [names[row].tolist() if good else None for row, good in zip(decide(np.nan_to_num(proba, nan=-1.0), self.scorer.fusion.thresholds), ok)]
        return [self.labels[i] if good else None for i, good in zip(np.nan_to_num(proba, nan=-1.0).argmax(axis=1), ok)]

    def score_iter(self, items: Iterable[str] | Iterable[tuple[str, str]], chunk_rows: int = 2048) -> Iterator[dict[str, Any]]:
        """Stream texts (an ensemble fitted on sentence pairs: ``(text, text_pair)`` tuples);
        yields one result dict per input, in order, batching internally (the output file's
        columns: label/score/prob_*, labels/prob_* or value, and ``error``: an empty or blank
        text gets no prediction and says so there)."""
        from .engine.pipeline import result_block
        from .engine.readers import checked_window

        from .errors import StackscoreError

        if not isinstance(chunk_rows, int) or isinstance(chunk_rows, bool) or chunk_rows < 1:
            raise StackscoreError(f"score_iter: chunk_rows must be a positive whole number, not {chunk_rows!r}")
        pairs = self.scorer.text_pair
        it = iter(_items(items, "items", lazy=True))
        start = 0
        while chunk := list(islice(it, chunk_rows)):
            bad = [i for i, t in enumerate(chunk) if not (isinstance(t, tuple) and len(t) == 2 and all(isinstance(x, str) for x in t) if pairs else isinstance(t, str))]
            if bad:
                want = "(text, text_pair) tuples of strings (this ensemble was fitted on sentence pairs)" if pairs else "strings"
                raise TypeError(f"items must be {want}; item {bad[0]} is {type(chunk[bad[0]]).__name__}")
            window = checked_window([t for t, _ in chunk], [p for _, p in chunk], "text", "text_pair") if pairs else checked_window(chunk)
            window.start, start = start, start + len(chunk)  # an error's row counts from the first item, not the chunk
            scored = self.scorer.infer(self.scorer.encode(window))
            block = result_block(scored, self.labels, self.model_names, WriteOptions(), self.task, self.scorer.fusion.thresholds)
            names = list(block.columns)
            for i in range(len(chunk)):
                yield {c: (None if block.columns[c][i] != block.columns[c][i] else float(block.columns[c][i])) if isinstance(block.columns[c], np.ndarray) else block.columns[c][i] for c in names}

    def score_dataframe(self, df, text_column: str = "text", prefix: str = "", text_pair_column: str | None = None):
        """A copy of ``df`` (pandas, index kept; or a pyarrow Table) with label/score/prob_<label>/error added
        (each name after ``prefix``; a result column that would replace one of ``df``'s is refused).

        A row whose text is missing, not a string or empty gets no prediction and says why in
        ``error`` (the same reasons as the file readers give).
        """
        from .engine.pipeline import check_pair_option, result_block
        from .engine.readers import checked_window
        from .errors import InputError
        from .integrations.windows import check_columns, empty_block

        arrow = type(df).__module__.startswith("pyarrow")
        names = df.column_names if arrow else df.columns
        check_pair_option(self.scorer, text_pair_column, "text_pair_column=")
        for col in (text_column, text_pair_column):
            if col is not None and col not in names:
                raise InputError(f"no column '{col}' (columns: {', '.join(map(str, names))})")
        # A result column must not replace one of the user's (a true `label` overwritten by the
        # prediction would make any accuracy computed afterwards compare predictions with themselves).
        read = ReadOptions(text_field=text_column, text_pair_field=text_pair_column)
        check_columns(names, read, empty_block(self.scorer, WriteOptions()).columns, prefix)
        if arrow:
            return self._score_table(df, read, prefix)

        def column(name: str) -> list:
            return [None if (not isinstance(t, str) and pd_isna(t)) else t for t in df[name].tolist()]

        # The file pipeline's own window -> columns step, so both paths give the same columns.
        pairs = column(text_pair_column) if text_pair_column is not None else None
        scored = self.scorer.infer(self.scorer.encode(checked_window(column(text_column), pairs, text_column, text_pair_column or "")))
        block = result_block(scored, self.labels, self.model_names, WriteOptions(), self.task, self.scorer.fusion.thresholds)
        out = df.copy()
        for name, values in block.columns.items():
            out[f"{prefix}{name}"] = values
        return out

    def _score_table(self, table, read: ReadOptions, prefix: str):
        """A pyarrow Table through the adapters' columnar step (``windows.score_arrow``): the
        user's columns are taken row by row as they are (a round trip through pandas turned an
        int64 column with nulls into floats, 9007199254740993 into ...992.0, and dropped an
        index kept as a column), the result columns have the fixed ``result_schema`` types, and
        binary text is decoded as a Parquet file's is. Its columns are checked by the caller."""
        import pyarrow as pa

        from .integrations.windows import result_schema, score_arrow

        schema = result_schema(self.scorer, WriteOptions())
        batches = list(score_arrow(self.scorer, table.to_batches(), read, WriteOptions(), schema, prefix))
        if not batches:  # no rows: the user's columns and the result columns, typed
            out = pa.schema([*table.schema, *(f.with_name(prefix + f.name) for f in schema)])
            return out.empty_table()
        return pa.Table.from_batches(batches)

    def score_file(self, input_path: str | Path, output_path: str | Path, **options: Any) -> ScoreStats:
        """Score a file as ``stackscore score`` does; ``options`` are its flat names
        (``text_field``, ``chunk_rows``, ``on_error``, ``resume`` ...), run as this ensemble runs.
        How the models run (``long_text``, ``precision``, ``token_budget`` ...) is the ensemble's
        own: given here with another value, it is refused in one line naming ``Ensemble.load``."""
        from dataclasses import fields

        from .errors import StackscoreError

        run_keys = sorted(k for k in set(options) & {f.name for f in fields(RunOptions)} if options[k] != getattr(self.scorer.options, k))
        if run_keys:
            given = ", ".join(f"{k}=" for k in run_keys)
            raise StackscoreError(f"{given} set{'s' if len(run_keys) == 1 else ''} how this ensemble's models run, fixed when it was loaded: pass it to Ensemble.load(artifact, {given}...), not to score_file")
        return score_file(self.scorer, input_path, output_path, ScoreOptions.from_kwargs(run=self.scorer.options, **options))


def pd_isna(value: Any) -> bool:
    """NaN/None/NA as missing text, without importing pandas for it (``pd.NA != pd.NA`` is NA,
    whose truth raises: the type is tested first)."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return False


def _items(values: Any, what: str, lazy: bool = False):
    """Texts given to the API as a list (or any iterable) of them; a bare string is refused:
    ``list("a great film")`` scored 12 one-character rows without a word."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{what} must be a list of texts, not one {type(values).__name__} (wrap it: [text])")
    return values if lazy else list(values)


def _rebuild(artifact_dir: str, options: RunOptions, digest: str | None = None) -> Ensemble:
    """An unpickled ``Ensemble``: the same artifact, or a one-line error (a copy unpickled on
    another machine or after the artifact was replaced would score with other models)."""
    from .errors import ArtifactError
    from .manifest import MANIFEST_NAME, sha256_file

    path = Path(artifact_dir) / MANIFEST_NAME
    here = sha256_file(path) if path.is_file() else None
    if digest is not None and here != digest:
        raise ArtifactError(f"{artifact_dir}: not the artifact this Ensemble was pickled with (manifest sha256 {(here or 'missing')[:16]}, pickled {digest[:16]}); load it again where it runs")
    return Ensemble(artifact_dir, options)
