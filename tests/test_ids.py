"""One id type per output: ids as read (null when a row has none), plus the 0-based ``row``."""

from __future__ import annotations

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
import pytest

from stackscore.engine.pipeline import score_file
from stackscore.options import ScoreOptions

BIG = 10**30


def run(artifact, src, out, **kw):
    kw.setdefault("progress", False)
    return score_file(artifact, src, out, ScoreOptions.from_kwargs(**kw))


def test_string_ids_stay_strings_next_to_bad_rows_and_arrow_reads_the_output(artifact, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        b'{"id": "a", "text": "a great film"}\n'
        b"{not json}\n"
        b'{"id": null, "text": "null id, fine text"}\n'
        b'{"id": "d", "text": "bad \xff byte in the text"}\n'
        b'{"id": "e\xff", "text": "bad byte in the id"}\n'
        b'{"text": "no id at all"}\n'
        b'{"id": "g", "text": "awful and boring"}\n'
    )
    out = tmp_path / "o.jsonl"
    run(artifact, src, out, chunk_rows=3)
    rows = [orjson.loads(l) for l in out.read_bytes().splitlines()]
    assert [r["id"] for r in rows] == ["a", None, None, "d", None, None, "g"]
    assert [r["row"] for r in rows] == list(range(7))
    assert [r["error"] is None for r in rows] == [True, False, True, False, False, True, True]
    # Arrow (as Polars and Spark do) infers one type per column; it refused mixed string/number ids.
    table = pajson.read_json(out)
    assert table.schema.field("id").type == pa.string() and table.schema.field("row").type == pa.int64()


@pytest.mark.parametrize("out_name", ["o.jsonl", "o.jsonl.gz", "o.csv", "o.parquet"])
def test_big_integer_and_string_ids_round_trip_exactly(artifact, tmp_path, out_name):
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        f'{{"id": {BIG}, "text": "a fine film"}}\n'
        f'{{"id": -{BIG}7, "text": "not good"}}\n'
        '{"id": 18446744073709551615, "text": "ok"}\n'
        '{"id": 1.10, "text": "ok"}\n'
        '{"id": 7, "text": "ok"}\n'.encode()
    )
    out = tmp_path / out_name
    run(artifact, src, out)
    expected = [str(BIG), f"-{BIG}7", "18446744073709551615", "1.10", "7"]
    if out_name.startswith("o.jsonl"):
        import gzip

        data = gzip.decompress(out.read_bytes()) if out_name.endswith(".gz") else out.read_bytes()
        raw_ids = [line.split(b',"row"')[0].removeprefix(b'{"id":').decode() for line in data.splitlines()]
        assert raw_ids == expected  # the digits as read, not 1e+30
    elif out_name.endswith(".csv"):
        t = pacsv.read_csv(out, convert_options=pacsv.ConvertOptions(column_types={"id": pa.string()}))
        assert t.column("id").to_pylist() == expected and t.column("row").to_pylist() == list(range(5))
    else:
        t = pq.read_table(out)
        assert t.schema.field("id").type == pa.string() and t.column("id").to_pylist() == expected


def test_columnar_ids_keep_their_type(artifact, tmp_path):
    src = tmp_path / "in.parquet"
    table = pa.table({"id": pa.array([10, None, 12], type=pa.int64()), "text": ["good", "bad", "fine"]})
    pq.write_table(table, src)
    run(artifact, src, tmp_path / "o.parquet")
    got = pq.read_table(tmp_path / "o.parquet")
    assert got.schema.field("id").type == pa.int64() and got.column("id").to_pylist() == [10, None, 12]
    run(artifact, src, tmp_path / "o.jsonl")
    assert [orjson.loads(l)["id"] for l in (tmp_path / "o.jsonl").read_bytes().splitlines()] == [10, None, 12]
    dict_src = tmp_path / "dict.parquet"  # a dictionary-encoded id column is decoded
    pq.write_table(pa.table({"id": pa.array(["x", "y", "x"]).dictionary_encode(), "text": ["a", "b", "c"]}), dict_src)
    run(artifact, dict_src, tmp_path / "d.parquet")
    got = pq.read_table(tmp_path / "d.parquet")
    assert got.schema.field("id").type == pa.string() and got.column("id").to_pylist() == ["x", "y", "x"]


def test_text_input_has_null_ids_and_row_numbers(artifact, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("good\n\nbad\n")
    run(artifact, src, tmp_path / "o.parquet", on_error="skip")
    got = pq.read_table(tmp_path / "o.parquet")
    assert got.column("id").to_pylist() == [None, None] and got.column("row").to_pylist() == [0, 2]
