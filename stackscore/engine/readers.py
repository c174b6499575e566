"""Streaming readers: JSON Lines, CSV/TSV, Parquet and plain text, each optionally gzip.

Every reader yields :class:`Window` objects of at most ``window_rows`` rows, so memory does not
grow with the file. A row that cannot be scored (bad JSON, missing or non-string text) is not
dropped: it travels as an error record with its row number, and the writer emits it in place.
Parsing is delegated to orjson (JSONL) and pyarrow (CSV, Parquet).

Ids are the id field's values as read, never made up: a row without one (or whose id cannot be
read) has ``None``, and the row number travels separately (``Window.start + i``), so an output
column never mixes the input's ids with row numbers.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Any, Iterator

import orjson

from ..errors import InputError
from ..options import ReadOptions

FORMATS = ("jsonl", "csv", "tsv", "parquet", "txt")
_SUFFIX = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "txt",
    ".text": "txt",
}


def detect_format(path: str | Path) -> tuple[str, bool]:
    """(format, gzipped) from the file name: ``x.jsonl.gz`` -> ("jsonl", True)."""
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes = suffixes[:-1]
    fmt = _SUFFIX.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise InputError(
            f"{path}: cannot tell the format from the file name; use one of "
            ".jsonl .csv .tsv .parquet .txt (optionally + .gz)"
        )
    return fmt, gz


class RawNumber:
    """A JSON number id kept as its source text.

    orjson reads integers beyond 64 bits as floats (``10**30`` -> ``1e+30``); an id must
    round-trip exactly, so such ids keep their digits and are written back verbatim.
    """

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawNumber) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"RawNumber({self.text})"


@dataclass
class Window:
    """A window: up to ``window_rows`` consecutive input rows, the unit every stage works on (the
    scorer sorts it by length for batching and scatters it back). ``texts[i]`` is None when
    ``errors[i]`` says why."""

    start: int  # 0-based row number of the first row in the input
    ids: list[Any]  # the id field's values as read; None where a row has none or it is unreadable
    texts: list[str | None]
    errors: list[str | None]
    labels: list[Any] | None = None  # passthrough of --label-field, for accuracy
    id_type: Any = None  # Arrow type of a columnar input's id column; None: JSON values (or no ids)
    pairs: list[str | None] | None = None  # the second text of sentence pairs (--text-pair-field)

    def __len__(self) -> int:
        return len(self.ids)


def _check_input(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: input file does not exist")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an input file")
    if not path.is_file():
        # a pipe, /dev/stdin or a device: no size to snapshot, read as empty (0 rows, exit 0)
        raise InputError(f"{path}: not a regular file (a pipe or device); write the rows to a file first")


def _text_error(value: Any, field_name: str) -> str | None:
    if value is None:
        return f"field '{field_name}' is null"
    if not isinstance(value, str):
        return f"field '{field_name}' is {type(value).__name__}, not text"
    if not value.strip():
        return f"field '{field_name}' is empty"
    return None


def checked_window(texts: list, pairs: list | None = None, text_field: str = "text", pair_field: str = "text_pair") -> Window:
    """In-memory texts (the Python API, a DataFrame's column) as one window, each row checked as
    a file's row is: a missing, non-text, empty or blank text (or pair) is an error row with
    its reason, and gets no prediction."""
    errors = [_text_error(t, text_field) for t in texts]
    if pairs is not None:
        errors = [e or _text_error(p, pair_field) for e, p in zip(errors, pairs)]
    keep = [e is None for e in errors]
    return Window(
        0, list(range(len(texts))), [t if k else None for t, k in zip(texts, keep)], errors,
        pairs=[p if k else None for p, k in zip(pairs, keep)] if pairs is not None else None,
    )


class _WindowBuilder:
    """Accumulates rows and emits full chunks; one place for the id/label/error rules."""

    def __init__(self, window_rows: int, with_labels: bool, with_pairs: bool = False):
        self.window_rows = window_rows
        self.with_labels = with_labels
        self.with_pairs = with_pairs
        self.row = 0
        self._reset()

    def _reset(self) -> None:
        self.start = self.row
        self.ids: list[Any] = []
        self.texts: list[str | None] = []
        self.errors: list[str | None] = []
        self.labels: list[Any] = []
        self.pairs: list[str | None] = []

    def add(self, rid: Any, text: str | None, error: str | None, label: Any = None, pair: str | None = None) -> Window | None:
        self.ids.append(rid)
        self.texts.append(None if error else text)
        self.errors.append(error)
        if self.with_labels:
            self.labels.append(label)
        if self.with_pairs:
            self.pairs.append(None if error else pair)
        self.row += 1
        if len(self.ids) >= self.window_rows:
            return self.flush()
        return None

    def flush(self) -> Window | None:
        if not self.ids:
            return None
        c = Window(self.start, self.ids, self.texts, self.errors, self.labels if self.with_labels else None, pairs=self.pairs if self.with_pairs else None)
        self._reset()
        return c


class Snapshot:
    """The input as it was when the run started: its size and mtime, and reads of that many bytes.

    A file still being written (a log, an export in progress) would otherwise be scored in part
    and end with a torn line. Readers read exactly the bytes the file had at the start (so the
    last line is complete if it was complete then) and, at the end, compare size and mtime:
    a changed file stops the run in one line, or, with ``allow_growing``, the snapshot is
    scored with a warning (a last line that was still being written is left out).
    """

    def __init__(self, path: str | Path, allow_growing: bool = False):
        self.path = Path(path)
        st = self.path.stat()
        self.size, self.mtime_ns = st.st_size, st.st_mtime_ns
        self.allow_growing = allow_growing
        self.warned = False

    def change(self) -> str | None:
        """How the file differs from the snapshot, or None."""
        try:
            st = self.path.stat()
        except OSError:
            return "it was removed"
        if st.st_size != self.size:
            return f"{self.size:,} bytes at the start, {st.st_size:,} now"
        if st.st_mtime_ns != self.mtime_ns:
            return "modified in place"
        return None

    def changed(self, detail: str = "") -> None:
        """The file changed during the run: refuse, or (allowed) warn once and go on."""
        what = self.change() or "modified"
        if not self.allow_growing:
            raise InputError(
                f"{self.path}: the file changed while it was read ({what}{'; ' + detail if detail else ''}); "
                f"score it once it is complete, or pass --allow-growing-input to score the {self.size:,} bytes it had at the start"
            )
        if not self.warned:
            self.warned = True
            print(f"warning: {self.path}: the file changed while it was read ({what}); scored the {self.size:,} bytes it had at the start"
                  f"{'; ' + detail if detail else ''}", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.change() is not None:
            self.changed()

    def open(self) -> io.BufferedReader:
        """A binary file object that ends after ``size`` bytes, whatever is appended later."""
        self._reader = _Limited(open(self.path, "rb", buffering=0), self.size)
        return io.BufferedReader(self._reader, buffer_size=1 << 20)

    @property
    def bytes_read(self) -> int | None:
        """Bytes of the file read so far by the latest reader (the progress display's percent);
        None when the format is not read through the snapshot (Parquet reads by its footer)."""
        reader = getattr(self, "_reader", None)
        return None if reader is None else self.size - reader.left


class _Limited(io.RawIOBase):
    def __init__(self, raw, limit: int):
        self.raw, self.left = raw, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.left)
        if n <= 0:
            return 0
        got = self.raw.readinto(memoryview(buf)[:n]) or 0
        self.left -= got
        return got

    def close(self) -> None:
        self.raw.close()
        super().close()


@contextmanager
def _open_binary(snap: Snapshot, gz: bool):
    with snap.open() as fh:
        if gz:
            with gzip.GzipFile(fileobj=fh, mode="rb") as unzipped:
                yield unzipped
        else:
            yield fh


def _arrow_stream(snap: Snapshot, gz: bool):
    """The snapshot as an Arrow input stream (gunzipped by Arrow when ``gz``)."""
    import pyarrow as pa

    stream = pa.PythonFile(snap.open(), mode="r")
    return pa.CompressedInputStream(stream, "gzip") if gz else stream


def _lines(fh, snap: Snapshot, gz: bool) -> Iterator[bytes]:
    """The snapshot's lines; unreadable compressed data and a changed file are one-line errors."""
    n = 0
    try:
        for raw in fh:
            if not raw.endswith(b"\n") and snap.change() is not None:
                snap.changed(f"its last line was still being written at the start and is left out (line {n + 1})")
                break
            n += 1
            yield raw
    except EOFError:
        if snap.change() is not None:
            snap.changed("the compressed stream was still being written")
            return
        raise InputError(f"{snap.path}: truncated gzip file: the compressed data ends after line {n}, before its end marker") from None
    except (OSError, zlib.error) as exc:
        what = "not a gzip file" if gz and n == 0 and isinstance(exc, gzip.BadGzipFile) else ("corrupt gzip data" if gz else "read error")
        raise InputError(f"{snap.path}: {what} after line {n}: {exc}") from None
    snap.finish()


FIELD_CHECK_OBJECTS = 100  # JSONL: the first objects, one of which must have the text field
FIELD_CHECK_LINES = 1000  # ... looked for among at most this many lines (bounds what waits)


@dataclass
class _FirstObjects:
    """What ``read_jsonl``'s field check counts over the first lines (``counting`` until done)."""

    lines: int = 0
    objects: int = 0
    keys: list | None = None
    having: dict = dataclass_field(default_factory=dict)  # field -> objects that have it
    counting: bool = True


def read_jsonl(path: Path, gz: bool, text_field: str, id_field: str | None, label_field: str | None, window_rows: int, encoding_errors: str = "strict", snapshot: Snapshot | None = None, pair_field: str | None = None, field_check: bool = True) -> Iterator[Window]:
    """JSON Lines. A field that none of the first ``FIELD_CHECK_OBJECTS`` objects has (looked for
    in at most ``FIELD_CHECK_LINES`` lines, or the whole of a shorter file) is a wrong
    ``--text-field`` (a typo), as CSV and Parquet tell from their header: the run stops before
    any window is scored, rather than writing a whole file of error rows. The first windows wait
    for that check. ``field_check=False`` (``--on-error skip``: rows without the field are meant
    to be left out, e.g. a serializer that drops null fields) reads on."""
    fields = list(dict.fromkeys(f for f in (text_field, pair_field, id_field) if f))
    first = _FirstObjects(having={f: 0 for f in fields}, counting=field_check)
    it = _jsonl_windows(path, gz, text_field, id_field, label_field, window_rows, encoding_errors, snapshot, pair_field, first)
    waiting = []
    if field_check:
        for window in it:
            waiting.append(window)
            if first.objects >= FIELD_CHECK_OBJECTS or first.lines >= FIELD_CHECK_LINES:
                break
        if first.lines and not first.objects:  # not JSON Lines at all: every row would be an error row
            raise InputError(f"{path}: none of the first {first.lines} lines is a JSON object ({_not_json_lines(path, gz)})")
        for field in fields:
            if first.objects and not first.having[field]:
                flag = "--text-field" if field == text_field else "--text-pair-field" if field == pair_field else "--id-field"
                raise InputError(
                    f"{path}: none of the first {first.objects} JSON objects has field '{field}' "
                    f"(the first has: {', '.join(map(str, first.keys)) or 'no fields'}); name the field with "
                    f"{flag} (--on-error skip reads on, leaving such rows out)"
                )
        first.counting = False
    yield from waiting
    yield from it


def _not_json_lines(path: Path, gz: bool) -> str:
    """What a file that holds no JSON object per line may be instead, from its first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head[:2] == b"\x1f\x8b" and not gz:
        return "it is gzip-compressed: name it .jsonl.gz"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        return "a JSON array? write one object per line"
    return "JSON Lines has one object per line"


def _jsonl_windows(path: Path, gz: bool, text_field: str, id_field: str | None, label_field: str | None, window_rows: int, encoding_errors: str, snapshot: Snapshot | None, pair_field: str | None, first: _FirstObjects) -> Iterator[Window]:
    b = _WindowBuilder(window_rows, label_field is not None, pair_field is not None)
    id_key = id_field or "id"
    snap = snapshot or Snapshot(path)
    with _open_binary(snap, gz) as fh:
        for line_no, raw in enumerate(_lines(fh, snap, gz), start=1):
            line = raw.strip()
            if line.startswith(b"\xef\xbb\xbf"):  # UTF-8 BOM on the first line
                line = line[3:]
            if not line:
                continue  # blank lines are not rows
            first.lines += first.counting
            rid, text, err, label, pair = None, None, None, None, None
            replaced = False
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                obj, err = _retry_undecodable(line, line_no, exc, encoding_errors)
                replaced = obj is not None  # read with U+FFFD for bad bytes (--encoding-errors replace)
                if obj is None:  # invalid UTF-8 (strict): the id may still be readable
                    rid = _id_despite_bad_bytes(line, id_key)
            if err is None:
                if not isinstance(obj, dict):
                    err = f"line {line_no}: expected a JSON object, got {type(obj).__name__}"
                else:
                    if first.counting:  # read_jsonl's check of the first objects' fields
                        first.objects += 1
                        first.keys = first.keys if first.keys is not None else list(obj)
                        for field in first.having:
                            first.having[field] += field in obj
                    rid = obj.get(id_key)
                    if isinstance(rid, float):
                        rid = _exact_number(line, id_key, rid)
                    if replaced and isinstance(rid, str) and "\ufffd" in rid and rid.encode() not in line:
                        rid = None  # its own bytes were replaced: texts may be, an id is kept as written
                        err = f"line {line_no}: id field '{id_key}' is not valid UTF-8 (an id is kept as written, never replaced)"
                    elif id_field and id_key not in obj:
                        err = f"line {line_no}: missing id field '{id_key}'"
                    elif text_field not in obj:
                        err = f"line {line_no}: missing field '{text_field}' (has: {', '.join(map(str, obj))})"
                    else:
                        text = obj[text_field]
                        e = _text_error(text, text_field)
                        if e is None and pair_field is not None:
                            pair = obj.get(pair_field)
                            e = _text_error(pair, pair_field) if pair_field in obj else f"missing field '{pair_field}'"
                        err = f"line {line_no}: {e}" if e else None
                    if label_field is not None:
                        label = obj.get(label_field)
            if (c := b.add(rid, text, err, label, pair)) is not None:
                yield c
    if (c := b.flush()) is not None:
        yield c


def _retry_undecodable(line: bytes, line_no: int, exc: Exception, encoding_errors: str) -> tuple[Any, str | None]:
    """orjson refused a line: say whether it is bad UTF-8 (or repair it) or bad JSON."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as ue:
        if encoding_errors != "replace":
            return None, f"line {line_no}: invalid UTF-8 at byte {ue.start} (use --encoding-errors replace)"
        try:
            return orjson.loads(line.decode("utf-8", "replace")), None
        except orjson.JSONDecodeError as exc2:
            return None, f"line {line_no}: invalid JSON ({exc2.msg})"
    try:  # valid JSON orjson does not take: a number past float's range (1e400, an id or a field nobody reads)
        return json.loads(line, parse_constant=_not_json), None
    except (ValueError, RecursionError):
        pass
    return None, f"line {line_no}: invalid JSON ({getattr(exc, 'msg', exc)})"


def _not_json(name: str) -> Any:
    """``NaN`` / ``Infinity``: Python's json reads them, JSON has no such literal."""
    raise ValueError(f"{name} is not JSON")


def _exact_number(line: bytes, id_key: str, parsed: float) -> Any:
    """A numeric id as its source text (see :class:`RawNumber`); rare, so a second parse is fine."""
    try:
        obj = json.loads(line.decode("utf-8", "replace"), parse_int=RawNumber, parse_float=RawNumber)
    except ValueError:
        return parsed
    rid = obj.get(id_key) if isinstance(obj, dict) else None
    return rid if isinstance(rid, RawNumber) else parsed


def _id_despite_bad_bytes(line: bytes, id_key: str) -> Any:
    """The id of a row whose *other* fields hold invalid UTF-8; None if the id itself does."""
    try:
        obj = orjson.loads(line.decode("utf-8", "replace"))
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    rid = obj.get(id_key)
    if isinstance(rid, str) and "\ufffd" in rid and rid.encode() not in line:
        return None  # the replacement character stands for bytes of the id itself
    if isinstance(rid, float):
        rid = _exact_number(line, id_key, rid)
    return rid


def read_text(path: Path, gz: bool, window_rows: int, encoding_errors: str = "strict", snapshot: Snapshot | None = None) -> Iterator[Window]:
    """One text per line (LF or CRLF); no ids (the output's ``row`` is the 0-based line number)."""
    b = _WindowBuilder(window_rows, False)
    snap = snapshot or Snapshot(path)
    with _open_binary(snap, gz) as fh:
        for line_no, raw in enumerate(_lines(fh, snap, gz), start=1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            raw = raw.rstrip(b"\r\n")
            err = None
            if b"\r" in raw:  # old Mac line ends: several texts would be scored as one
                if line_no == 1:
                    raise InputError(f"{path}: line 1 holds a carriage return inside it (a file with CR line ends?); convert its line ends to LF")
                err = f"line {line_no}: a carriage return inside the line (one text per line: LF or CRLF line ends)"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as ue:
                if encoding_errors == "replace":
                    text = raw.decode("utf-8", "replace")
                else:
                    text, err = None, f"line {line_no}: invalid UTF-8 at byte {ue.start} (use --encoding-errors replace)"
            if err is None and not text.strip():
                err = f"line {line_no}: empty text"
            if (c := b.add(None, text, err)) is not None:
                yield c
    if (c := b.flush()) is not None:
        yield c


def _id_column(names: list[str], id_field: str | None) -> str | None:
    return id_field or ("id" if "id" in names else None)


def _columns_or_fail(path: Path, names: list[str], text_field: str, id_field: str | None, label_field: str | None, pair_field: str | None = None) -> list[str]:
    if text_field not in names:
        raise InputError(f"{path}: no column '{text_field}' (columns: {', '.join(names)}); set --text-field")
    if pair_field and pair_field not in names:
        raise InputError(f"{path}: no column '{pair_field}' (columns: {', '.join(names)}); set --text-pair-field")
    named = [f for f in (text_field, pair_field, id_field, label_field) if f]
    if len(set(named)) != len(named):
        raise InputError(f"{path}: --text-field, --text-pair-field, --id-field and --label-field must name different columns, got {named}")
    if id_field and id_field not in names:
        raise InputError(f"{path}: no id column '{id_field}' (columns: {', '.join(names)}); set --id-field")
    if label_field and label_field not in names:
        raise InputError(f"{path}: no label column '{label_field}' (columns: {', '.join(names)})")
    cols = [text_field]
    idc = _id_column(names, id_field)
    if idc and idc not in cols:
        cols.append(idc)
    if label_field and label_field not in cols:
        cols.append(label_field)
    if pair_field:
        cols.append(pair_field)
    repeated = sorted({c for c in cols if names.count(c) > 1})
    if repeated:  # which of the two is meant is unknown: Arrow would silently take the first
        raise InputError(f"{path}: the header names column '{repeated[0]}' more than once (columns: {', '.join(names)}); rename one")
    return cols


def _decode_column(col, row: int, encoding_errors: str, field: str | None = None, replaceable: bool = True) -> tuple[Any, dict[int, str]]:
    """A binary column as text: one C-level cast when it is all valid UTF-8, else row by row
    (one bad byte sequence marks its row, not the whole block). ``field``: named in the error
    (an id or label column; the text's errors name the row only, as they always have).
    ``replaceable=False`` (ids): strict whatever ``--encoding-errors`` says, since replacing bad
    bytes with U+FFFD made distinct ids equal (``Jos\xe9`` and ``Jos\xe8`` both ``Jos\ufffd``)."""
    import pyarrow as pa

    try:
        return col.cast(pa.string()), {}
    except pa.ArrowInvalid:
        pass
    values, bad = [], {}
    for i, v in enumerate(col.to_pylist()):
        if v is None:
            values.append(None)
            continue
        try:
            values.append(v.decode("utf-8"))
        except UnicodeDecodeError as ue:
            if replaceable and encoding_errors == "replace":
                values.append(v.decode("utf-8", "replace"))
            else:
                values.append(None)
                hint = "use --encoding-errors replace" if replaceable else "an id is kept as written, never replaced"
                bad[i] = f"row {row + i}: {f'field {field!r}: ' if field else ''}invalid UTF-8 at byte {ue.start} ({hint})"
    return pa.array(values, type=pa.string()), bad


def _plain(col):
    """A column without Arrow's alternative encodings: dictionary-encoded columns (what a
    Parquet file written from a dictionary column reads back as) are decoded, and
    ``string_view`` / ``binary_view`` become ``string`` / ``binary``, with Arrow kernels."""
    import pyarrow as pa

    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if pa.types.is_string_view(col.type):
        col = col.cast(pa.string())
    elif pa.types.is_binary_view(col.type):
        col = col.cast(pa.binary())
    return col


def _arrow_text(col, field: str, row: int, path: Path, encoding_errors: str) -> tuple[list[str | None], list[int], dict[int, str]]:
    """(Python values of a text column, indices of rows with no usable text, UTF-8 errors).

    Bad rows are found with Arrow kernels; Python only touches the (rare) bad ones."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = _plain(col)
    bad_utf8: dict[int, str] = {}
    if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type) or pa.types.is_fixed_size_binary(col.type):
        col, bad_utf8 = _decode_column(col, row, encoding_errors)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_null(col.type)):
        raise InputError(f"{path}: column '{field}' has type {col.type}, not text")
    if pa.types.is_null(col.type):
        return col.to_pylist(), list(range(len(col))), bad_utf8
    empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0)
    bad = pc.indices_nonzero(pc.or_kleene(pc.is_null(col), pc.fill_null(empty, True))).to_pylist()
    return col.to_pylist(), bad, bad_utf8


def _from_arrow_batches(batches: Iterator[Any], path: Path, text_field: str, id_col: str | None, label_field: str | None, window_rows: int, encoding_errors: str = "strict", pair_field: str | None = None, text_columns: bool = False) -> Iterator[Window]:
    """``text_columns``: the id and label columns were read as bytes (CSV/TSV) and are text."""
    import pyarrow as pa

    row = 0
    for batch in batches:
        n = batch.num_rows
        texts, bad, bad_utf8 = _arrow_text(batch.column(text_field), text_field, row, path, encoding_errors)
        id_arr = _plain(batch.column(id_col)) if id_col else None
        unreadable: dict[int, str] = {}
        if id_arr is not None and text_columns:
            decoded, unreadable = _decode_column(id_arr, row, encoding_errors, id_col, replaceable=False)
            ids = decoded.to_pylist()
            id_type = pa.string()
        else:
            ids = id_arr.to_pylist() if id_arr is not None else [None] * n
            id_type = id_arr.type if id_arr is not None else None
        labels = None
        if label_field:
            if text_columns:
                decoded, bad_labels = _decode_column(batch.column(label_field), row, encoding_errors, label_field)
                labels = decoded.to_pylist()
                unreadable = {**bad_labels, **unreadable}
            else:
                labels = batch.column(label_field).to_pylist()
        errors: list[str | None] = [None] * n
        for i in bad:
            errors[i] = bad_utf8.get(i) or f"row {row + i}: {_text_error(texts[i], text_field)}"
            texts[i] = None
        for i, why in unreadable.items():
            if errors[i] is None:
                errors[i] = why
                texts[i] = None
        pairs = None
        if pair_field:
            pairs, bad_pair, pair_utf8 = _arrow_text(batch.column(pair_field), pair_field, row, path, encoding_errors)
            for i in bad_pair:
                if errors[i] is None:
                    errors[i] = pair_utf8.get(i) or f"row {row + i}: {_text_error(pairs[i], pair_field)}"
                    texts[i] = None
        for s in range(0, n, window_rows):
            e = min(n, s + window_rows)
            yield Window(
                row + s, ids[s:e], texts[s:e], errors[s:e], labels[s:e] if labels is not None else None, id_type,
                pairs=pairs[s:e] if pairs is not None else None,
            )
        row += n


def _first_bytes(path: Path, gz: bool, n: int) -> bytes:
    """The first ``n`` bytes of the file's content (decompressed when gzipped)."""
    with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh:
        return fh.read(n)


def _header_only(path: Path, gz: bool, delimiter: str) -> list[str] | None:
    """The column names of a CSV/TSV that is one header line without a newline (Arrow reads
    such a file as empty and refuses it), else None."""
    import csv

    data = _first_bytes(path, gz, 1 << 20)
    if not data.strip() or b"\n" in data or b"\r" in data:
        return None
    try:
        return next(csv.reader([data.decode("utf-8-sig")], delimiter=delimiter))
    except (UnicodeDecodeError, csv.Error, StopIteration):
        return None


def _quoted_field(batch, cols: list[str]) -> tuple[int, str] | None:
    """(row in the batch, field) of the first value among ``cols`` that starts with a double quote."""
    import pyarrow as pa
    import pyarrow.compute as pc

    hits = []
    for c in cols:
        col = batch.column(c)
        if pa.types.is_string(col.type) or pa.types.is_binary(col.type):
            hit = pc.starts_with(col.cast(pa.binary()), '"')
            if pc.any(hit).as_py():
                hits.append((int(pc.index(hit, True).as_py()), c))
    return min(hits, default=None)


def read_csv(path: Path, gz: bool, delimiter: str, text_field: str, id_field: str | None, label_field: str | None, window_rows: int, encoding_errors: str = "strict", snapshot: Snapshot | None = None, pair_field: str | None = None, tsv_quotes: str = ReadOptions.tsv_quotes) -> Iterator[Window]:
    """CSV (RFC 4180 quoting) or TSV. A TSV file may be quoted as pandas and Python's csv write
    it (a field holding a tab, a newline or a quote is enclosed in quotes, inner quotes doubled)
    or not at all (GLUE's files: a quote is just text). The two read alike unless a field starts
    with a double quote; ``tsv_quotes``: ``none``, ``csv``, or ``detect``: read unquoted, and stop
    at the first field read that starts with one (in the columns used), asking which, since
    guessing wrong splits or merges rows or changes texts."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    snap = snapshot or Snapshot(path)
    quoted = delimiter == "," or tsv_quotes == "csv"
    parse = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True, quote_char='"' if quoted else False)
    opts = pacsv.ReadOptions(block_size=1 << 22)
    what = "CSV" if delimiter == "," else "TSV"
    # A quoted TSV read unquoted mostly fails on its column counts: say what would read it.
    hint = "" if quoted else " (if its fields are quoted, as pandas and Python's csv write them: --tsv-quotes csv)"
    try:
        head = pacsv.open_csv(_arrow_stream(snap, gz), read_options=opts, parse_options=parse)
        names = head.schema.names
    except pa.ArrowInvalid as exc:
        if "Empty CSV file or block" not in str(exc) or (names := _header_only(path, gz, delimiter)) is None:
            raise InputError(f"{path}: cannot read as {what}{' (gzip)' if gz else ''}: {exc}{hint}") from None
        _columns_or_fail(path, names, text_field, id_field, label_field, pair_field)
        snap.finish()
        return  # a header and no rows (its line unterminated): no rows, as with its newline
    except UnicodeDecodeError:
        raise InputError(f"{path}: its {what} header is not UTF-8 text (column names are matched as text; save the file as UTF-8)") from None
    except (pa.ArrowInvalid, OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: cannot read as {what}{' (gzip)' if gz else ''}: {exc}{hint}") from None
    cols = _columns_or_fail(path, names, text_field, id_field, label_field, pair_field)
    id_col = _id_column(names, id_field)
    # Every column is read as bytes so that one bad byte sequence marks one row, not the file
    # (a string column fails its whole 4 MB block, naming no row).
    convert = pacsv.ConvertOptions(include_columns=cols, column_types={c: pa.binary() for c in cols}, strings_can_be_null=False)
    try:
        reader = pacsv.open_csv(_arrow_stream(snap, gz), read_options=opts, parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: malformed {what}{' or corrupt gzip data' if gz else ''}: {exc}{hint}") from None

    row = [0]

    def batches():
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                snap.finish()
                return
            except (pa.ArrowInvalid, OSError, EOFError, zlib.error) as exc:
                if snap.change() is not None:
                    snap.changed()
                    return
                raise InputError(f"{path}: malformed {what}{' or corrupt gzip data' if gz else ''}: {exc}{hint}") from None
            if not quoted and tsv_quotes == "detect" and (hit := _quoted_field(batch, cols)) is not None:
                raise InputError(
                    f"{path}: row {row[0] + hit[0]}: field '{hit[1]}' starts with a double quote, so this TSV reads differently quoted "
                    "(as pandas and Python's csv write it) or not (as GLUE's files are): pass --tsv-quotes csv or --tsv-quotes none (fit: tsv_quotes in [data])"
                )
            row[0] += batch.num_rows
            yield batch

    yield from _from_arrow_batches(batches(), path, text_field, id_col, label_field, window_rows, encoding_errors, pair_field, text_columns=True)


def read_parquet(path: Path, gz: bool, text_field: str, id_field: str | None, label_field: str | None, window_rows: int, encoding_errors: str = "strict", snapshot: Snapshot | None = None, pair_field: str | None = None) -> Iterator[Window]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    snap = snapshot or Snapshot(path)
    errors = (pa.ArrowInvalid, OSError, EOFError, zlib.error)
    src = gzip.open(path, "rb") if gz else path
    try:
        pf = pq.ParquetFile(src)
    except errors as exc:
        raise InputError(f"{path}: not a readable Parquet file: {exc}") from None
    cols = _columns_or_fail(path, pf.schema_arrow.names, text_field, id_field, label_field, pair_field)
    id_col = _id_column(pf.schema_arrow.names, id_field)

    def batches():
        it = pf.iter_batches(batch_size=window_rows, columns=cols)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                snap.finish()  # a Parquet file is read by its footer: a change is only detected
                return
            except errors as exc:
                raise InputError(f"{path}: corrupt Parquet data: {exc}") from None
            yield batch

    yield from _from_arrow_batches(batches(), path, text_field, id_col, label_field, window_rows, encoding_errors, pair_field)


def _refuse_utf16(path: Path, gz: bool) -> None:
    """A text file saved as UTF-16 or UTF-32 (Windows tools do) reads as NUL-ridden bytes: every
    line an invalid-UTF-8 error row, or a CSV parse error with a NUL in it. Its byte-order mark
    says what it is: one line, what to do."""
    try:
        head = _first_bytes(path, gz, 4)
    except (OSError, EOFError, zlib.error):
        return  # the reader says what is wrong with it
    for bom, name in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):
        if head.startswith(bom):
            raise InputError(f"{path}: the file is {name} text (it starts with a {name} byte-order mark); save it as UTF-8")


def open_reader(
    path: str | Path,
    text_field: str = "text",
    id_field: str | None = None,
    label_field: str | None = None,
    window_rows: int = ReadOptions.window_rows,
    fmt: str | None = None,
    encoding_errors: str = "strict",
    snapshot: Snapshot | None = None,
    allow_growing_input: bool = False,
    pair_field: str | None = None,
    tsv_quotes: str = ReadOptions.tsv_quotes,
    field_check: bool = True,
) -> Iterator[Window]:
    """Chunks of rows from ``path``; the format comes from the extension unless ``fmt`` is given.

    ``encoding_errors``: ``strict`` marks a row with invalid UTF-8 as an error row; ``replace``
    substitutes U+FFFD and scores it. The file is read as it was when this is called (see
    :class:`Snapshot`; pass one to share it with the caller). ``pair_field``: the second text of
    sentence pairs (``Window.pairs``); a row whose pair is missing or empty is an error row.
    """
    path = Path(path)
    _check_input(path)
    if encoding_errors not in ("strict", "replace"):
        raise InputError(f"--encoding-errors must be strict or replace, not '{encoding_errors}'")
    dfmt, gz = detect_format(path) if fmt is None else (fmt, path.suffix.lower() == ".gz")
    snap = snapshot or Snapshot(path, allow_growing_input)
    if snap.size == 0:
        return iter(())  # an empty file has no rows: the output is empty too
    if dfmt != "parquet":
        _refuse_utf16(path, gz)
    if dfmt == "jsonl":
        return read_jsonl(path, gz, text_field, id_field, label_field, window_rows, encoding_errors, snapshot=snap, pair_field=pair_field, field_check=field_check)
    if dfmt in ("csv", "tsv"):
        return read_csv(path, gz, "," if dfmt == "csv" else "\t", text_field, id_field, label_field, window_rows, encoding_errors, snapshot=snap, pair_field=pair_field, tsv_quotes=tsv_quotes)
    if dfmt == "parquet":
        return read_parquet(path, gz, text_field, id_field, label_field, window_rows, encoding_errors, snapshot=snap, pair_field=pair_field)
    if dfmt == "txt":
        if id_field or label_field or pair_field:
            raise InputError(f"{path}: plain-text input has no fields; --id-field/--label-field/--text-pair-field do not apply")
        return read_text(path, gz, window_rows, encoding_errors, snapshot=snap)
    raise InputError(f"{path}: unknown format '{dfmt}' (choose from {', '.join(FORMATS)})")
