"""Writers: JSON Lines (orjson), CSV and Parquet (pyarrow), each optionally gzip for text formats.

Rows arrive as :class:`ResultBlock` objects, already in input order. Each output row carries
``id`` (the input's id as read, null where there is none), ``row`` (0-based input row), ``label``
(predicted label name), ``score`` (its probability), ``prob_<label>`` for every label (multi-label:
``labels``, the list of labels on, and ``prob_<label>``; regression: ``value``), ``error`` (why a
row has no prediction; null otherwise) and, on request, each base
model's logits (``logit_<model>_<label>``) and linear-stacking contributions (``contrib_<model>``).
A writer writes one file; ``committer.py`` decides which files (committed parts) and when.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..errors import InputError
from .readers import RawNumber, detect_format


@dataclass
class ResultBlock:
    ids: list[Any]
    columns: dict[str, np.ndarray | list]  # name -> values, in output column order (ids excluded)
    rows: np.ndarray | list | None = None  # 0-based input row numbers (None: 0..n-1)
    id_type: Any = None  # Arrow type of the input's id column; None: JSON values (or no ids)

    def __len__(self) -> int:
        return len(self.ids)

    def row_numbers(self) -> list[int]:
        return list(range(len(self.ids))) if self.rows is None else [int(r) for r in self.rows]


def json_default(value: Any) -> Any:
    """orjson's fallback for id values it does not serialize itself."""
    if isinstance(value, RawNumber):
        return orjson.Fragment(value.text)  # the digits as read, e.g. 10**30
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    if isinstance(value, (bytes, bytearray)):
        try:  # as read, or not at all: U+FFFD made distinct ids equal
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"an id is bytes that are not UTF-8 text ({bytes(value[:16]).hex()}...), which JSON cannot hold as read: write .parquet, or choose another --id-field") from None
    return str(value)


def id_text(value: Any) -> str | None:
    """One id as text, for a string id column: strings as they are, numbers as their JSON text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, RawNumber):
        return value.text
    return orjson.dumps(value, default=json_default).decode()


def _id_array(block: ResultBlock):
    """The id column: the input column's own type for columnar inputs, else string.

    JSON ids can be numbers in one row and text in the next; a CSV or Parquet column has one
    type for the whole file, so JSON ids are written as their text (``7`` -> ``"7"``, exactly
    as read, big integers included), which never changes type mid-file.
    """
    import pyarrow as pa

    if block.id_type is not None:
        return pa.array(block.ids, type=block.id_type)
    return pa.array([id_text(i) for i in block.ids], type=pa.string())


def _delimited_ids(ids):
    """The id column as CSV/TSV can hold it: binary ids as their UTF-8 text; one line (exit 2)
    for ids a text cell cannot hold as read (nested values, bytes that are not UTF-8), naming
    the formats that can."""
    import pyarrow as pa

    t = ids.type
    if isinstance(t, pa.BaseExtensionType):  # e.g. arrow.uuid: its values' own text (a UUID's 8-4-4-4-12 form)
        return pa.array([None if v is None else str(v) for v in ids.to_pylist()], type=pa.string())
    if pa.types.is_nested(t):
        raise InputError(f"the id column holds {t} values, which a CSV/TSV cell cannot hold as read: write .jsonl or .parquet, or choose another --id-field")
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        try:
            return ids.cast(pa.string())
        except pa.ArrowInvalid:
            raise InputError("an id is bytes that are not UTF-8 text, which a CSV/TSV cell cannot hold as read: write .parquet, or choose another --id-field") from None
    return ids


LIST_COLUMNS = ("labels",)  # multi-label: the labels on, a list per row
INT_COLUMNS = ("stage",)  # cascade: the stage that answered the row (null for an error row)


def block_to_table(block: ResultBlock, join_lists: bool = False):
    """Arrow columns; a list column is ``list<string>`` (Parquet) or ``|``-joined text (CSV/TSV)."""
    import pyarrow as pa

    ids = _id_array(block)
    if join_lists:
        ids = _delimited_ids(ids)
    arrays = [ids, pa.array(block.row_numbers(), type=pa.int64())]
    names = ["id", "row"]
    for name, values in block.columns.items():
        names.append(name)
        if isinstance(values, np.ndarray) and values.dtype.kind == "f":
            arrays.append(pa.array(values, mask=np.isnan(values)))
        elif name in LIST_COLUMNS and join_lists:
            arrays.append(pa.array([None if v is None else "|".join(v) for v in values], type=pa.string()))
        elif name in LIST_COLUMNS:
            arrays.append(pa.array(values, type=pa.list_(pa.string())))
        elif name in INT_COLUMNS:
            arrays.append(pa.array(values, type=pa.int64()))
        else:
            arrays.append(pa.array(values, type=pa.string()))
    return pa.Table.from_arrays(arrays, names=names)


class Writer:
    def __init__(self, path: Path):
        self.path = Path(path)

    def write(self, block: ResultBlock) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class JsonlWriter(Writer):
    def __init__(self, path: Path, gz: bool):
        super().__init__(path)
        # mtime=0: the same rows give the same bytes, so a resumed run equals a clean one.
        self.fh = gzip.GzipFile(self.path, "wb", mtime=0) if gz else open(self.path, "wb")

    def write(self, block: ResultBlock) -> None:
        names = list(block.columns)
        cols = []
        for name in names:
            v = block.columns[name]
            if isinstance(v, np.ndarray) and v.dtype.kind == "f":
                v = np.where(np.isnan(v), None, v.astype(object)).tolist()
            cols.append(v)
        dumps = orjson.dumps
        try:
            lines = [dumps({"id": rid, "row": row, **dict(zip(names, vals))}, default=json_default) for rid, row, *vals in zip(block.ids, block.row_numbers(), *cols)]
        except orjson.JSONEncodeError as exc:  # json_default's one line, raised through orjson
            if isinstance(exc.__cause__, InputError):
                raise exc.__cause__ from None
            raise
        if lines:
            self.fh.write(b"\n".join(lines) + b"\n")

    def close(self) -> None:
        self.fh.close()


class ArrowWriter(Writer):
    """CSV or Parquet through pyarrow; the schema is fixed by the first block."""

    def __init__(self, path: Path, fmt: str, gz: bool, header: bool = True):
        super().__init__(path)
        self.fmt = fmt
        self.gz = gz
        self.header = header
        self.writer = None
        self.sink = None

    def write(self, block: ResultBlock) -> None:
        import pyarrow as pa

        table = block_to_table(block, join_lists=self.fmt != "parquet")
        if self.writer is None:
            if self.fmt == "parquet":
                import pyarrow.parquet as pq

                self.writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
            else:
                import pyarrow.csv as pacsv

                self.sink = pa.CompressedOutputStream(str(self.path), "gzip") if self.gz else pa.OSFile(str(self.path), "wb")
                opts = pacsv.WriteOptions(delimiter="\t" if self.fmt == "tsv" else ",", include_header=self.header)
                self.writer = pacsv.CSVWriter(self.sink, table.schema, write_options=opts)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.sink is not None:
            self.sink.close()


def output_format(path: str | Path) -> tuple[str, bool]:
    """(format, gzipped) of an output path, refusing what cannot be written."""
    fmt, gz = detect_format(path)
    if fmt not in ("jsonl", "csv", "tsv", "parquet"):
        raise InputError(f"{path}: cannot write format '{fmt}' (use .jsonl, .csv, .tsv or .parquet)")
    if fmt == "parquet" and gz:
        raise InputError(f"{path}: Parquet compresses internally; drop the .gz suffix")
    return fmt, gz


def open_writer(path: str | Path, fmt: str, gz: bool, header: bool = True) -> Writer:
    """A writer for one file; ``header=False`` lets a later CSV part continue the first one."""
    path = Path(path)
    if fmt == "jsonl":
        return JsonlWriter(path, gz)
    return ArrowWriter(path, fmt, gz, header=header)
