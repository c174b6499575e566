"""Bad input: every row accounted for, in order, or a clear one-line error naming file/line/field."""

from __future__ import annotations

import gzip
import os

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stackscore.engine.pipeline import score_file
from stackscore.options import ScoreOptions
from stackscore.engine.readers import open_reader
from stackscore.errors import InputError, StackscoreError


def score(artifact, src, out, **kw):
    kw.setdefault("progress", False)
    stats = score_file(artifact, src, out, ScoreOptions.from_kwargs(**kw))
    return stats, [orjson.loads(l) for l in out.read_bytes().splitlines()]


def test_invalid_utf8_is_an_error_row_or_replaced(artifact, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"id": 1, "text": "fine film"}\n{"id": 2, "text": "caf\xe9 bad bytes"}\n{"id": 3, "text": "ok"}\n')
    stats, rows = score(artifact, src, tmp_path / "a.jsonl")
    # The bad bytes are in the text, not the id: the id stays readable (it used to become the
    # row number, 1, beside real ids).
    assert [r["id"] for r in rows] == [1, 2, 3] and [r["row"] for r in rows] == [0, 1, 2]
    assert "invalid UTF-8" in rows[1]["error"] and "line 2" in rows[1]["error"] and stats.errored == 1
    stats, rows = score(artifact, src, tmp_path / "b.jsonl", encoding_errors="replace")
    assert stats.errored == 0 and rows[1]["id"] == 2 and rows[1]["label"] is not None
    for name, payload in (("t.txt", b"good line\nbad \xff line\n"), ("t.csv", b"id,text\n1,good\n2,bad \xff\n")):
        p = tmp_path / name
        p.write_bytes(payload)
        stats, rows = score(artifact, p, tmp_path / f"{name}.jsonl")
        assert len(rows) == 2 and rows[0]["error"] is None and "invalid UTF-8" in rows[1]["error"]
        stats, rows = score(artifact, p, tmp_path / f"{name}.r.jsonl", encoding_errors="replace")
        assert stats.errored == 0


def test_truncated_last_line_crlf_bom_and_blank_lines(artifact, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "great"}\r\n\r\n{"id": "b", "text": "awful"}\r\n{"id": "c", "tex')
    stats, rows = score(artifact, src, tmp_path / "o.jsonl")
    assert [r["error"] is None for r in rows] == [True, True, False]
    assert "line 4: invalid JSON" in rows[2]["error"] and stats.rows == 3


def test_enormous_line_is_truncated_not_a_memory_blowup(artifact, tmp_path):
    src = tmp_path / "in.jsonl"
    big = ("a very long and rather dull review " * 300_000)[:10_000_000]
    src.write_bytes(orjson.dumps({"id": "big", "text": big}) + b"\n" + orjson.dumps({"id": "small", "text": "fine"}) + b"\n")
    stats, rows = score(artifact, src, tmp_path / "o.jsonl")
    assert [r["id"] for r in rows] == ["big", "small"] and all(r["error"] is None for r in rows)
    assert stats.truncated >= 1


def test_csv_quoted_newlines_ragged_rows_and_missing_columns(artifact, tmp_path):
    ok = tmp_path / "ok.csv"
    ok.write_text('id,text\n1,"line one\nline two, with comma"\n2,"say ""hi"""\n')
    stats, rows = score(artifact, ok, tmp_path / "o.jsonl")
    assert [r["id"] for r in rows] == ["1", "2"] and stats.errored == 0
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("id,text\n1,fine\n2,too,many,fields\n")
    with pytest.raises(InputError, match=r"ragged.csv: (cannot read as|malformed) CSV: .*Expected 2 columns, got 4: 2,too,many,fields"):
        score(artifact, ragged, tmp_path / "r.jsonl")
    assert not (tmp_path / "r.jsonl").exists()


def test_parquet_wrong_type_names_column(artifact, tmp_path):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": [1.5, 2.5]}), src)
    with pytest.raises(InputError, match="column 'text' has type double, not text"):
        score(artifact, src, tmp_path / "o.jsonl")


def test_empty_input_gives_empty_output_in_every_format(artifact, tmp_path):
    for fmt in ("jsonl", "csv", "parquet", "txt"):
        src = tmp_path / f"empty.{fmt}"
        src.write_bytes(b"")
        out = tmp_path / f"o-{fmt}.parquet"
        stats = score_file(artifact, src, out, ScoreOptions.from_kwargs(progress=False))
        assert stats.rows == 0 and pq.read_table(out).num_rows == 0
        assert "prob_positive" in pq.read_table(out).column_names


def test_output_path_problems(artifact, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    with pytest.raises(StackscoreError, match="does not exist"):
        score_file(artifact, src, tmp_path / "no" / "dir" / "o.jsonl", ScoreOptions.from_kwargs(progress=False))
    (tmp_path / "adir.jsonl").mkdir()
    with pytest.raises(StackscoreError, match="is a directory"):
        score_file(artifact, src, tmp_path / "adir.jsonl", ScoreOptions.from_kwargs(progress=False))
    with pytest.raises(InputError, match="cannot write format 'txt'"):
        score_file(artifact, src, tmp_path / "o.txt", ScoreOptions.from_kwargs(progress=False))


def test_jsonl_text_field_missing_lists_fields(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "body": "x"}\n{"id": 2, "text": "fine"}\n')
    (chunk,) = list(open_reader(src))
    assert chunk.errors == ["line 1: missing field 'text' (has: id, body)", None]


def test_a_jsonl_text_field_that_no_row_has_stops_before_scoring(artifact, tmp_path):
    """A typo in --text-field: CSV and Parquet stop at their header; JSONL stops once its first
    window holds no object with the field, instead of writing a whole file of error rows."""
    src = tmp_path / "in.jsonl"
    src.write_text("not json\n" + "".join(f'{{"id": {i}, "body": "text {i}"}}\n' for i in range(50)))
    with pytest.raises(InputError, match=r"in.jsonl: none of the first 50 JSON objects has field 'txt' \(the first has: id, body\); name the field with --text-field"):
        score(artifact, src, tmp_path / "o.jsonl", text_field="txt", chunk_rows=8)
    assert not (tmp_path / "o.jsonl").exists()
    ids = tmp_path / "ids.jsonl"  # a mistyped --id-field: every row an error row, exit 0 (CSV stopped at its header)
    ids.write_text("".join(f'{{"id": {i}, "text": "text {i}"}}\n' for i in range(20)))
    with pytest.raises(InputError, match=r"none of the first 20 JSON objects has field 'ID' \(the first has: id, text\); name the field with --id-field"):
        score(artifact, ids, tmp_path / "i.jsonl", id_field="ID")
    for name in ("keys", "objects"):  # field names that are also the check's own counters
        with pytest.raises(InputError, match=f"has field '{name}'"):
            score(artifact, src, tmp_path / f"{name}.jsonl", text_field=name)
    # --on-error skip: rows without the field are meant to be left out (a serializer that drops
    # null fields); it reads on. And a file of lines that are not objects waits for at most
    # FIELD_CHECK_LINES of them before its first window goes.
    stats, rows = score(artifact, src, tmp_path / "s.jsonl", text_field="body", chunk_rows=8)
    assert stats.scored == 50
    stats, _ = score(artifact, src, tmp_path / "skip.jsonl", text_field="txt", on_error="skip")
    assert stats.rows == 51 and stats.scored == 0
    from stackscore.engine import readers

    junk = tmp_path / "junk.jsonl"
    junk.write_text("not json\n" * (readers.FIELD_CHECK_LINES * 5) + '{"text": "fine"}\n')
    windows = readers.open_reader(junk, window_rows=100)
    # the check waits for at most FIELD_CHECK_LINES lines (not all 5,001 of the file), and a file
    # with no JSON object in them is no JSON Lines file: one line before any window is scored
    with pytest.raises(InputError, match=f"junk.jsonl: none of the first {readers.FIELD_CHECK_LINES} lines is a JSON object"):
        next(windows)
    stats, _ = score(artifact, junk, tmp_path / "junk-skip.jsonl", on_error="skip")  # --on-error skip reads on
    assert stats.scored == 1 and stats.rows == readers.FIELD_CHECK_LINES * 5 + 1


def test_inputs_that_are_not_what_their_name_says_stop_in_one_line(artifact, tmp_path):
    """Read as JSON Lines or plain text, these gave rows nobody wrote, with exit 0: a JSON array
    (27 lines, every one an error row), gzip data named .jsonl (error rows), a pipe (0 rows), a
    text file with CR line ends (three texts scored as one)."""
    records = [{"id": i, "text": f"great film {i}"} for i in range(5)]
    array = tmp_path / "array.jsonl"
    array.write_text(__import__("json").dumps(records, indent=2))
    with pytest.raises(InputError, match=r"array.jsonl: none of the first \d+ lines is a JSON object \(a JSON array\? write one object per line\)"):
        score(artifact, array, tmp_path / "a.jsonl")
    packed = tmp_path / "packed.jsonl"
    packed.write_bytes(gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in records * 100)))
    with pytest.raises(InputError, match=r"packed.jsonl: none of the first \d+ lines is a JSON object \(it is gzip-compressed: name it .jsonl.gz\)"):
        score(artifact, packed, tmp_path / "p.jsonl")
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="pipe.jsonl: not a regular file"):
        score(artifact, fifo, tmp_path / "f.jsonl")
    mac = tmp_path / "mac.txt"
    mac.write_bytes(b"good film\rbad film\rawful\r")
    with pytest.raises(InputError, match="mac.txt: line 1 holds a carriage return inside it"):
        score(artifact, mac, tmp_path / "m.jsonl")
    later = tmp_path / "later.txt"
    later.write_bytes(b"good film\r\nbad\rfilm\nawful\n")
    stats, rows = score(artifact, later, tmp_path / "l.jsonl")
    assert len(rows) == 3 and rows[0]["error"] is None and "carriage return inside the line" in rows[1]["error"] and rows[2]["error"] is None
    for out in ("a.jsonl", "p.jsonl", "f.jsonl", "m.jsonl"):
        assert not (tmp_path / out).exists()


def test_csv_ids_labels_and_header_that_are_not_utf8(artifact, tmp_path):
    """CSV columns other than the text were read as strings: one latin-1 id failed the whole
    4 MB block (exit 1 "a bug", or a "malformed CSV" naming no row). Now that row is reported
    (null id, its field named) and the rest scored; a header that is not UTF-8 is one line."""
    src = tmp_path / "ids.csv"
    src.write_bytes(b"id,text,label\ncaf\xe9,great film,positive\n2,fine,caf\xe9\n3,awful,negative\n")
    stats, rows = score(artifact, src, tmp_path / "o.jsonl", label_field="label")
    assert [r["id"] for r in rows] == [None, "2", "3"] and stats.rows == 3 and stats.errored == 2
    assert rows[0]["error"] == "row 0: field 'id': invalid UTF-8 at byte 3 (an id is kept as written, never replaced)"  # replace would not help
    assert "field 'label': invalid UTF-8" in rows[1]["error"] and rows[2]["error"] is None and rows[2]["label"] is not None
    # --encoding-errors replace repairs texts, never ids: "Jos\xe9" and "Jos\xe8" both became
    # "Jos\ufffd", two rows under one id (CSV and JSONL alike)
    stats, rows = score(artifact, src, tmp_path / "r.jsonl", label_field="label", encoding_errors="replace")
    assert rows[0]["id"] is None and rows[0]["error"] == "row 0: field 'id': invalid UTF-8 at byte 3 (an id is kept as written, never replaced)"
    assert stats.errored == 1 and rows[1]["error"] is None
    js = tmp_path / "ids.jsonl"
    js.write_bytes(b'{"id": "Jos\xe9", "text": "caf\xe9 great"}\n{"id": "Jos\xe8", "text": "dull"}\n{"id": "ok", "text": "caf\xe9 fine"}\n')
    stats, rows = score(artifact, js, tmp_path / "j.jsonl", encoding_errors="replace")
    assert [r["id"] for r in rows] == [None, None, "ok"] and rows[2]["error"] is None and rows[2]["label"] is not None
    assert rows[0]["error"] == "line 1: id field 'id' is not valid UTF-8 (an id is kept as written, never replaced)"
    header = tmp_path / "header.csv"
    header.write_bytes(b"id,t\xe9xt,text\n1,a,good\n")
    with pytest.raises(InputError, match="header.csv: its CSV header is not UTF-8 text"):
        score(artifact, header, tmp_path / "h.jsonl")


def test_summary_counts_errors_by_reason(artifact, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "good"}\n{"text": null}\n{"text": null}\n{"x": 1}\n')
    stats = score_file(artifact, src, tmp_path / "o.jsonl", ScoreOptions.from_kwargs(progress=False))
    assert stats.errors["field 'text' is null"] == 2 and stats.scored == 1 and stats.rows == 4
    summary = stats.summary()
    assert "errored 3" in summary and "error x2: field 'text' is null" in summary


# -- property-based: random rows, random bad rows, random chunk boundaries -------------------
ROW = st.one_of(
    st.builds(lambda t: {"text": t}, st.text(min_size=1, max_size=60).filter(lambda t: t.strip())),
    st.just({"text": None}),
    st.just({"text": "   "}),
    st.just({"text": 7}),
    st.just({"nope": "x"}),
    st.just("<<not json>>"),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, min_size=0, max_size=60), chunk_rows=st.integers(1, 17), budget=st.integers(16, 400), on_error=st.sampled_from(["record", "skip"]), gz=st.booleans())
def test_property_each_id_once_in_order(artifact, tmp_path_factory, rows, chunk_rows, budget, on_error, gz):
    d = tmp_path_factory.mktemp("prop")
    src = d / ("in.jsonl.gz" if gz else "in.jsonl")
    lines = []
    for i, r in enumerate(rows):
        lines.append(r.encode() if isinstance(r, str) else orjson.dumps({"id": f"r{i}", **r}))
    payload = b"".join(l + b"\n" for l in lines)
    src.write_bytes(gzip.compress(payload) if gz else payload)
    opts = ScoreOptions.from_kwargs(progress=False, chunk_rows=chunk_rows, on_error=on_error, token_budget=budget, scale_batches=False)
    out = d / "o.jsonl"
    objects = [r for r in rows if isinstance(r, dict)]
    if rows and not objects and on_error != "skip":  # no line is a JSON object: not a JSON Lines file
        with pytest.raises(InputError, match=f"none of the first {len(rows)} lines is a JSON object"):
            score_file(artifact, src, out, opts)
        assert not out.exists()
        return
    if objects and not any("text" in r for r in objects) and on_error != "skip":  # no object has the field: a wrong --text-field
        with pytest.raises(InputError, match=f"none of the first {len(objects)} JSON objects has field 'text'"):
            score_file(artifact, src, out, opts)
        assert not out.exists()
        return
    stats = score_file(artifact, src, out, opts)
    got = [orjson.loads(l) for l in out.read_bytes().splitlines()]
    good = [i for i, r in enumerate(rows) if isinstance(r, dict) and isinstance(r.get("text"), str) and r["text"].strip()]
    assert stats.rows == len(rows) and stats.scored == len(good) and stats.errored == len(rows) - len(good)
    if on_error == "record":
        assert len(got) == len(rows)
        # An unparseable row has no readable id: null, never its row number; `row` says where it was.
        assert [g["id"] for g in got] == [f"r{i}" if isinstance(r, dict) else None for i, r in enumerate(rows)]
        assert [g["row"] for g in got] == list(range(len(rows)))
        assert [g["error"] is None for g in got] == [i in good for i in range(len(rows))]
    else:
        assert [g["id"] for g in got] == [f"r{i}" for i in good] and [g["row"] for g in got] == good


def test_ids_a_csv_cell_cannot_hold_are_one_line_for_csv_output(artifact, tmp_path):
    """Parquet ids that are bytes or lists: JSONL and Parquet output keep them; CSV/TSV output
    wrote UTF-8 bytes as text but stopped on other bytes or lists with exit 1 ("a bug"): now
    one line naming what can hold them, and no output file."""
    texts = ["great film", "dull"]
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"id": pa.array([b"a1", b"b2"], pa.binary()), "text": texts}), good)
    stats, _ = score(artifact, good, tmp_path / "g.jsonl")
    out = tmp_path / "g.csv"
    score_file(artifact, good, out, ScoreOptions.from_kwargs(progress=False))
    assert out.read_text().splitlines()[1].startswith('"a1",0,')
    for name, ids, message in (
        ("bytes", pa.array([b"caf\xe9", b"b2"], pa.binary()), "an id is bytes that are not UTF-8 text"),
        ("lists", pa.array([[1], [2, 3]]), "the id column holds list<.*int64> values"),
    ):
        src = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({"id": ids, "text": texts}), src)
        with pytest.raises(InputError, match=message.replace("[", r"\[")):
            score_file(artifact, src, tmp_path / f"{name}.csv", ScoreOptions.from_kwargs(progress=False))
        assert not (tmp_path / f"{name}.csv").exists()
        if name == "lists":
            assert len(score(artifact, src, tmp_path / f"{name}.jsonl")[1]) == 2
        else:  # JSONL wrote them with U+FFFD: "caf\xe9" and "caf\xe8" both "caf\ufffd"
            with pytest.raises(InputError, match="an id is bytes that are not UTF-8 text .*which JSON cannot hold as read: write .parquet"):
                score(artifact, src, tmp_path / f"{name}.jsonl")
        score_file(artifact, src, tmp_path / f"{name}-out.parquet", ScoreOptions.from_kwargs(progress=False))
        assert pq.read_table(tmp_path / f"{name}-out.parquet").column("id").to_pylist() == ids.to_pylist()  # Parquet keeps them as read
    # Parquet's UUID type: CSV/TSV write its text form (was exit 1, "a bug"), JSONL too
    import uuid

    values = [uuid.UUID(int=7), uuid.UUID(int=2**100)]
    src = tmp_path / "uuid.parquet"
    pq.write_table(pa.table({"id": pa.ExtensionArray.from_storage(pa.uuid(), pa.array([u.bytes for u in values], pa.binary(16))), "text": texts}), src)
    for out in (tmp_path / "u.csv", tmp_path / "u.tsv"):
        score_file(artifact, src, out, ScoreOptions.from_kwargs(progress=False))
        assert [line.split(out.suffix == ".csv" and "," or "\t")[0].strip('"') for line in out.read_text().splitlines()[1:]] == [str(u) for u in values]
    assert [r["id"] for r in score(artifact, src, tmp_path / "u.jsonl")[1]] == [str(u) for u in values]


def test_duplicate_header_utf16_and_an_unterminated_header_only_csv(artifact, tmp_path):
    """A header naming the text column twice was read from the first silently; a UTF-16 file
    gave a parse error with a NUL in it (CSV) or a whole file of error rows (JSONL); a CSV that
    is one header line without its newline was refused while the same with it gave no rows."""
    dup = tmp_path / "dup.csv"
    dup.write_text("id,text,text\n1,a,b\n")
    with pytest.raises(InputError, match="dup.csv: the header names column 'text' more than once"):
        score(artifact, dup, tmp_path / "d.jsonl")
    for name, body in (("u.csv", "id,text\n1,good\n"), ("u.jsonl", '{"text": "good"}\n')):
        src = tmp_path / name
        src.write_bytes(body.encode("utf-16"))
        with pytest.raises(InputError, match=f"{name}: the file is UTF-16 text"):
            score(artifact, src, tmp_path / f"{name}.out.jsonl")
    bare = tmp_path / "bare.csv"
    bare.write_text("id,text")
    stats, rows = score(artifact, bare, tmp_path / "b.jsonl")
    assert stats.rows == 0 and rows == []
    bare.write_text("id,body")
    with pytest.raises(InputError, match="no column 'text' \\(columns: id, body\\)"):
        score(artifact, bare, tmp_path / "b2.jsonl")
