"""Readers: formats, ids, fields, and the error records that keep rows out == rows in."""

from __future__ import annotations

import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stackscore.engine.readers import detect_format, open_reader
from stackscore.errors import InputError


def rows_of(path, **kw):
    out = []
    for c in open_reader(path, **kw):
        out.extend(zip(c.ids, c.texts, c.errors))
    return out


def test_detect_format():
    assert detect_format("a/b.jsonl.gz") == ("jsonl", True)
    assert detect_format("x.TSV") == ("tsv", False)
    with pytest.raises(InputError, match="cannot tell the format"):
        detect_format("x.xlsx")


def test_jsonl_bom_crlf_blank_lines_and_no_ids(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"text": "one"}\r\n\r\n{"text": "two"}\r\n   \n{"text": "three"}')
    # No id field: ids stay None (never the row number); the row number is Window.start + i.
    assert rows_of(p) == [(None, "one", None), (None, "two", None), (None, "three", None)]


def test_jsonl_id_field_and_labels(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"key": 7, "body": "x", "y": "pos"}\n{"key": 9, "body": "z", "y": "neg"}\n')
    chunks = list(open_reader(p, text_field="body", id_field="key", label_field="y"))
    assert chunks[0].ids == [7, 9] and chunks[0].labels == ["pos", "neg"]


def test_chunking_keeps_row_numbers(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("".join(f"line {i}\n" for i in range(10)))
    chunks = list(open_reader(p, window_rows=4))
    assert [c.start for c in chunks] == [0, 4, 8] and sum(len(c) for c in chunks) == 10


def test_csv_quoted_newlines_and_missing_values(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text('id,text\n1,"multi\nline"\n2,\n3,plain\n')
    got = rows_of(p)
    assert [g[0] for g in got] == ["1", "2", "3"]
    assert got[0][1] == "multi\nline" and got[2] == ("3", "plain", None)
    assert got[1][1] is None and "row 1" in got[1][2]


def test_csv_missing_text_column_lists_columns(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("id,body\n1,x\n")
    with pytest.raises(InputError, match=r"no column 'text' \(columns: id, body\)"):
        rows_of(p)


def test_parquet_wrong_type_and_nulls(tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["ok", None, "fine"]}), p)
    got = rows_of(p)
    assert [g[0] for g in got] == [None, None, None] and got[1][1] is None and "null" in got[1][2]
    q = tmp_path / "b.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), q)
    with pytest.raises(InputError, match="type int64, not text"):
        rows_of(q)


def test_gzip_text(tmp_path):
    p = tmp_path / "a.txt.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("a\n\nb\n")
    got = rows_of(p)
    assert [g[1] for g in got] == ["a", None, "b"] and "empty" in got[1][2]


@pytest.mark.parametrize("setup,msg", [(lambda d: d / "nope.jsonl", "does not exist"), (lambda d: (d / "dir.jsonl").mkdir() or d / "dir.jsonl", "is a directory")])
def test_missing_or_directory_input(tmp_path, setup, msg):
    with pytest.raises(InputError, match=msg):
        rows_of(setup(tmp_path))


@pytest.mark.parametrize("encoding", ["dictionary", "large_string", "string_view", "large_binary"])
def test_parquet_text_column_in_every_arrow_string_encoding(tmp_path, encoding):
    texts = ["good film", None, "  ", "good film", "bad"]
    arr = pa.array(texts)
    arr = {
        "dictionary": lambda: arr.dictionary_encode(),
        "large_string": lambda: arr.cast(pa.large_string()),
        "string_view": lambda: arr.cast(pa.string_view()),
        "large_binary": lambda: arr.cast(pa.large_binary()),
    }[encoding]()
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3, 4, 5], "text": arr}), p)
    if encoding == "dictionary":  # what pyarrow reads back when the Arrow schema is stored
        assert pa.types.is_dictionary(pq.read_schema(p).field("text").type)
    got = rows_of(p)
    assert [g[0] for g in got] == [1, 2, 3, 4, 5]
    assert [g[1] for g in got] == ["good film", None, None, "good film", "bad"]
    assert [g[2] is None for g in got] == [True, False, False, True, True]


def test_tsv_quoting_is_asked_when_a_field_starts_with_a_quote(tmp_path):
    """A TSV as pandas writes it (quoted fields: a newline inside, doubled quotes) and one as
    GLUE's files are (a quote is text) read alike until a field starts with a quote: then
    `detect` stops in one line naming the row and field, and each reading is what was asked."""
    import pandas as pd

    quoted = tmp_path / "pandas.tsv"
    pd.DataFrame({"id": [1, 2, 3], "text": ["plain", "line one\nline two", 'He said "hi"']}).to_csv(quoted, sep="\t", index=False)
    with pytest.raises(InputError, match=r"pandas.tsv: cannot read as TSV: .*Expected 2 columns.*--tsv-quotes csv\)"):
        rows_of(quoted)  # read unquoted, the quoted newline breaks the column count
    single = tmp_path / "single.tsv"
    pd.DataFrame({"text": ["plain", "line one\nline two"]}).to_csv(single, sep="\t", index=False)
    with pytest.raises(InputError, match=r"single.tsv: row 1: field 'text' starts with a double quote.*--tsv-quotes csv or --tsv-quotes none"):
        rows_of(single)  # one column: read unquoted, it would have split into more rows
    assert [t for _, t, _ in rows_of(single, tsv_quotes="csv")] == ["plain", "line one\nline two"]
    assert [t for _, t, _ in rows_of(quoted, tsv_quotes="csv")] == ["plain", "line one\nline two", 'He said "hi"']
    glue = tmp_path / "glue.tsv"
    glue.write_text('id\ttext\n1\t"Great" acting , dull plot\n2\tno quotes here\n')
    with pytest.raises(InputError, match="glue.tsv: row 0: field 'text' starts with a double quote"):
        rows_of(glue)
    assert [t for _, t, _ in rows_of(glue, tsv_quotes="none")] == ['"Great" acting , dull plot', "no quotes here"]
    plain = tmp_path / "plain.tsv"
    plain.write_text('id\ttext\n1\tsays "hi" inside\n')  # a quote inside a field reads the same either way
    assert [t for _, t, _ in rows_of(plain)] == ['says "hi" inside']


def test_the_default_tsv_quoting_leaves_resume_fingerprints_as_they_were():
    """A run interrupted before --tsv-quotes existed resumes: the default is not in the
    fingerprint (it reads what unquoted reading read, or stops); a chosen quoting is."""
    from stackscore.options import ScoreOptions, fingerprint_options

    assert "tsv_quotes" not in fingerprint_options(ScoreOptions.from_kwargs())
    assert fingerprint_options(ScoreOptions.from_kwargs(tsv_quotes="csv"))["tsv_quotes"] == "csv"


def test_jsonl_numbers_orjson_does_not_take_are_still_json(tmp_path):
    """orjson refuses numbers past float's range (1e400): a row with such an id,
    or such a number in a field nobody reads, was an "invalid JSON" error row. NaN / Infinity are
    not JSON and still are."""
    p = tmp_path / "a.jsonl"
    p.write_text('{"id": 123456789012345678901234567890, "text": "big id"}\n{"id": 2, "text": "huge", "score": 1e400}\n'
                 '{"id": 3, "text": "nan", "x": NaN}\n{"id": 4, "text": "inf", "x": -Infinity}\n')
    rows = rows_of(p)
    assert rows[0][0].text == "123456789012345678901234567890" and rows[0][1:] == ("big id", None)  # kept as written
    assert rows[1] == (2, "huge", None)
    assert all(r[1] is None and "invalid JSON" in r[2] for r in rows[2:]), rows[2:]
