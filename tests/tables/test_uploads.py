"""Uploads read in chunks: rows cut at the right places, types settled over the whole file, JSON streamed, and a
bad row in a late chunk leaves no half-written table (on both backends). Reserved table names are refused."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tables import uploads
from tables.errors import InvalidTableData
from tables.uploads import open_upload
from tests.tables.test_tables_api import EXT, assert_error, describe, listing, rows, upload


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 64 bytes, so a small upload spans many of them."""
    monkeypatch.setattr(uploads, "CHUNK_BYTES", 64)


def read_all(data: bytes, fmt: str) -> pa.Table:
    upload_ = open_upload(io.BytesIO(data), fmt)  # type: ignore[arg-type]
    chunks = list(upload_.chunks())
    assert all(c.schema == upload_.schema for c in chunks)
    return pa.concat_tables(chunks)


def test_csv_pieces_keep_quoted_line_breaks_and_widen_types(small_chunks):
    data = b"N,TEXT,D\n" + b'1,"two\nlines, and ""quotes""",2020-01-01\n' * 30 + b"2.5,x,\nabc,y,2020-01-02\n"
    table = read_all(data, "csv")
    assert table.num_rows == 32
    assert table.schema.field("N").type == pa.string()  # int, then a float, then text: text, as read_csv says
    assert table.column("N").to_pylist()[-3:] == ["1", "2.5", "abc"]
    assert table.column("TEXT").to_pylist()[0] == 'two\nlines, and "quotes"'
    assert table.schema.field("D").type == pa.date32()
    assert len(list(open_upload(io.BytesIO(data), "csv").chunks())) > 10


def test_csv_ints_then_floats_become_floats(small_chunks):
    data = b"A\n" + b"1\n" * 100 + b"2.5\n"
    table = read_all(data, "csv")
    assert table.schema.field("A").type == pa.float64()
    assert table.column("A").to_pylist()[-2:] == [1.0, 2.5]


def test_json_array_and_ords_page_are_streamed(small_chunks):
    records = [{"A": i, "B": f"s{i}", "C": None if i < 50 else 1.5} for i in range(100)]
    import orjson

    for data in (orjson.dumps(records), orjson.dumps({"hasMore": False, "items": records, "count": 100})):
        table = read_all(data, "json")
        assert table.num_rows == 100
        assert table.column("A").to_pylist() == list(range(100))
        assert table.schema.field("C").type == pa.float64()  # null in the first chunks, float later
    pretty = orjson.dumps(records, option=orjson.OPT_INDENT_2)
    assert read_all(pretty, "json").num_rows == 100


def test_json_keys_missing_from_a_chunks_first_record_are_kept(small_chunks):
    records = [{"A": i, "B": i * 10} if i % 7 else {"A": i} for i in range(1, 101)]
    import orjson

    table = read_all(orjson.dumps(records), "json")
    assert table.column_names == ["A", "B"]
    assert table.column("B").to_pylist() == [None if i % 7 == 0 else i * 10 for i in range(1, 101)]


@pytest.mark.parametrize(
    "data",
    [b'[{"a": 1}, {"a": 2}', b'[{"a": 1}] trailing', b'{"a": 1}', b'{"items": 3}', b"[1, 2]", b"[]", b""],
)
def test_malformed_json_is_invalid_data(data, small_chunks):
    with pytest.raises(InvalidTableData):
        read_all(data, "json")


def test_an_unclosed_quote_or_a_giant_record_is_refused_not_held(api, monkeypatch):
    """The attack: a CSV whose first field opens a quote that never closes (every line break after it is inside
    the field), or a JSON array whose one record never ends; read whole, either would sit in memory."""
    monkeypatch.setattr(uploads, "MAX_ROW_BYTES", 1024 * 1024)
    alice = api.user("alice")
    csv = b'A,B\n"open,1\n' + b"2,3\n" * 2_000_000
    assert_error(upload(api.client, alice, "T", csv, fmt="csv"), 400, "CSV row is longer")
    json_ = b'[{"A": "' + b"x" * 3_000_000 + b'"}]'
    assert_error(upload(api.client, alice, "T", json_, fmt="json"), 400, "JSON record is longer")
    assert listing(api.client, alice) == []
    assert api.client.get("/health").status_code == 200


def test_parquet_is_read_row_group_by_row_group():
    table = pa.table({"A": list(range(1000)), "B": [str(i) for i in range(1000)]})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=100)
    chunks = list(open_upload(io.BytesIO(buf.getvalue()), "parquet").chunks())
    assert [c.num_rows for c in chunks] == [100] * 10


# --- all or nothing, through the API, on both backends -----------------------------------------------------------


def test_a_bad_row_in_a_late_chunk_leaves_no_table(api, small_chunks):
    alice = api.user("alice")
    good = b"A,B\n" + b"1,x\n" * 200
    bad = good + b"1,x,extra\n"  # the last piece has a row with a column too many
    assert_error(upload(api.client, alice, "T", bad, fmt="csv"), 400, "csv")
    assert listing(api.client, alice) == []
    # Replace and append over an existing table leave it as it was.
    assert upload(api.client, alice, "T", good, fmt="csv").status_code == 201
    for mode in ("replace", "append"):
        assert_error(upload(api.client, alice, "T", bad, fmt="csv", mode=mode), 400)
        assert describe(api.client, alice, "T").json()["result"]["row_count"] == 200
    # JSON: a record that does not fit the column's type, far into the array.
    records = b"[" + b",".join(b'{"A": 1, "B": "x"}' for _ in range(200)) + b', {"A": {"nested": 1}, "B": "x"}]'
    r = upload(api.client, alice, "J", records, fmt="json")
    assert r.status_code in (201, 400), r.text  # a nested value is kept as text, or refused: never half a table
    if r.status_code == 400:
        assert "J" not in [t["table_name"] for t in listing(api.client, alice)]
    assert api.client.get("/health").status_code == 200


def test_upload_of_many_chunks_keeps_every_row_in_order(api, small_chunks):
    alice = api.user("alice")
    data = b"ID,NAME\n" + b"".join(f'{i},"n\n{i}"\n'.encode() for i in range(500))
    r = upload(api.client, alice, "T", data, fmt="csv")
    assert r.status_code == 201, r.text
    assert r.json()["result"]["row_count"] == 500
    page = rows(api.client, alice, "T", offset=495, limit=10)
    assert [item["ID"] for item in page["items"]] == list(range(495, 500))
    assert page["items"][-1]["NAME"] == "n\n499"


def test_multipart_upload_is_parsed_from_its_spooled_file(api):
    alice = api.user("alice")
    data = b"A,B\n" + b"1,x\n" * 300_000  # past Starlette's 1 MiB in-memory spool
    r = api.client.post(f"{EXT}/tables/MP", headers=alice, files={"file": ("t.csv", data, "text/csv")})
    assert r.status_code == 201, r.text
    assert r.json()["result"]["row_count"] == 300_000


# --- reserved names ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sqlite_master", "SQLITE_SEQUENCE", "pg_class", "PG_ROLES", "pyqd_users", "SELECT"])
def test_reserved_table_names_are_refused_on_every_route(api, name):
    alice = api.user("alice")
    r = upload(api.client, alice, name, b"a\n1\n", fmt="csv")
    assert_error(r, 400, name)
    for method in ("GET", "DELETE"):
        assert_error(api.client.request(method, f"{EXT}/tables/{name}", headers=alice), 400)
    assert_error(api.client.get(f"{EXT}/tables/{name}/rows", headers=alice), 400)
    assert listing(api.client, alice) == []
    assert api.client.get("/health").status_code == 200
    assert upload(api.client, alice, "FINE", b"a\n1\n", fmt="csv").status_code == 201


def test_a_parquet_dictionary_bomb_is_decoded_a_bounded_slice_at_a_time(tmp_path):
    """A small file whose one row group holds 200,000 references to one 2,000-character value: 400 MB once
    decoded. It is read dictionary-encoded and handed on in slices of about the budget."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tables.uploads import open_upload

    values = pa.DictionaryArray.from_arrays(pa.array([0] * 200_000, pa.int32()), pa.array(["x" * 2000]))
    path = tmp_path / "bomb.parquet"
    pq.write_table(pa.table({"N": pa.array(range(200_000)), "S": values}), path, row_group_size=200_000)
    assert path.stat().st_size < 2_000_000  # 400 MB of text in under 2 MB
    with path.open("rb") as f:
        upload = open_upload(f, "parquet")
        rows = 0
        for chunk in upload.chunks():
            assert pa.types.is_dictionary(chunk.column("S").type)  # still encoded as stored
            assert chunk.num_rows * 2000 <= 16 * 1024 * 1024 + 2000  # decoded, about the budget at most
            rows += chunk.num_rows
    assert rows == 200_000


@pytest.mark.parametrize(
    ("fmt", "body"),
    [
        ("csv", (",".join(f"C{i}" for i in range(2500)) + "\n" + ",".join("1" for _ in range(2500)) + "\n").encode()),
        ("json", ("[{" + ",".join(f'"K{i}": 1' for i in range(50_000)) + "}]").encode()),
        ("json", ('[{"A": ' + "[" * 100_000 + "]" * 100_000 + "}]").encode()),
    ],
    ids=["2500-columns", "50000-keys", "deep-nesting"],
)
def test_uploads_of_odd_shapes_get_a_clean_400(api, fmt, body):
    alice = api.user("ALICE")
    r = api.client.post(f"/oml/api/pyqd/v1/tables/ODD?format={fmt}", headers=alice, content=body)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"errorCode", "errorMessage"}
    assert api.client.get("/oml/api/pyqd/v1/tables", headers=alice).status_code == 200


def test_nested_or_large_text_parquet_columns_cannot_smuggle_a_bomb(tmp_path):
    """The reviewer's variants: one 100 KB value referenced 2000 times as `large_string` (decoded a bounded slice
    at a time, like `string`) and inside a `list<string>` column (refused: a table column is flat)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tables.uploads import open_upload

    big = "x" * 100_000
    large = tmp_path / "large.parquet"
    values = pa.DictionaryArray.from_arrays(pa.array([0] * 2000, pa.int32()), pa.array([big], pa.large_string()))
    pq.write_table(pa.table({"S": values}), large)
    with large.open("rb") as f:
        chunks = list(open_upload(f, "parquet").chunks())
    assert sum(c.num_rows for c in chunks) == 2000
    assert all(c.num_rows * 100_000 <= 16 * 1024 * 1024 + 100_000 for c in chunks)
    nested = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"L": pa.array([[big]] * 10, pa.list_(pa.string()))}), nested)
    with nested.open("rb") as f, pytest.raises(InvalidTableData, match="Nested"):
        open_upload(f, "parquet")
