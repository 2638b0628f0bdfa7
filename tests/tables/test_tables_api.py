"""User tables over REST: uploads (CSV, Parquet, JSON; create/replace/append), describe, rows, Arrow data,
drop, grants, listings, bad inputs and upload limits."""

from __future__ import annotations

import io
from datetime import datetime

import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from server import accounts

EXT = "/oml/api/pyqd/v1"
ARROW_STREAM = "application/vnd.apache.arrow.stream"


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def upload(client, headers, name, data: bytes, fmt: str | None = None, mode: str | None = None, content_type=None):
    params = {k: v for k, v in {"format": fmt, "mode": mode}.items() if v is not None}
    h = {**headers, **({"Content-Type": content_type} if content_type else {})}
    return client.post(f"{EXT}/tables/{name}", headers=h, params=params, content=data)


def describe(client, headers, name, owner=None):
    return client.get(f"{EXT}/tables/{name}", headers=headers, params={"owner": owner} if owner else {})


def arrow_data(client, headers, name, owner=None) -> pa.Table:
    r = client.get(f"{EXT}/tables/{name}/data", headers=headers, params={"owner": owner} if owner else {})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == ARROW_STREAM
    return pa.ipc.open_stream(r.content).read_all()


def rows(client, headers, name, **params):
    r = client.get(f"{EXT}/tables/{name}/rows", headers=headers, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def listing(client, headers, scope="user"):
    r = client.get(f"{EXT}/tables", headers=headers, params={"type": scope})
    assert r.status_code == 200, r.text
    return r.json()["result"]


def assert_error(r, status: int, *fragments: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"errorCode", "errorMessage"}
    for f in fragments:
        assert f in body["errorMessage"], body["errorMessage"]


#: Every type a table stores, with a null in each column.
TYPED = pa.table(
    {
        "I": pa.array([1, None, -3, 2**40], pa.int64()),
        "F": pa.array([1.5, None, -2.25, 1e-9], pa.float64()),
        "S": pa.array(["a", None, "ç", ""], pa.string()),
        "B": pa.array([True, None, False, True], pa.bool_()),
        "T": pa.array(
            [datetime(2024, 1, 1, 12), None, datetime(2024, 3, 1, 0, 0, 0, 123456), datetime(1999, 12, 31)],
            pa.timestamp("us"),
        ),
    }
)


# --- uploads ------------------------------------------------------------------------------------------


def test_parquet_upload_round_trips_types_and_nulls(api):
    alice = api.user("alice")
    r = upload(api.client, alice, "TYPED", parquet_bytes(TYPED), fmt="parquet")
    assert r.status_code == 201, r.text
    result = r.json()["result"]
    assert result["owner"] == "ALICE" and result["table_name"] == "TYPED" and result["row_count"] == 4
    assert [(c["name"], c["type"]) for c in result["columns"]] == [
        ("I", "integer"),
        ("F", "float"),
        ("S", "text"),
        ("B", "boolean"),
        ("T", "timestamp"),
    ]
    assert all(c["sql_type"] for c in result["columns"])
    assert describe(api.client, alice, "TYPED").json()["result"] == result

    back = arrow_data(api.client, alice, "TYPED")
    assert back.schema.equals(TYPED.schema), back.schema
    assert back.equals(TYPED), back.to_pylist()


def test_parquet_with_narrow_types_is_stored_widened(api):
    alice = api.user("alice")
    narrow = pa.table(
        {
            "small": pa.array([1, 2], pa.int8()),
            "f32": pa.array([0.5, 1.5], pa.float32()),
            "cat": pa.array(["x", "y"]).dictionary_encode(),
            "ts_ms": pa.array([datetime(2024, 1, 1), datetime(2024, 1, 2)], pa.timestamp("ms")),
        }
    )
    assert upload(api.client, alice, "NARROW", parquet_bytes(narrow), fmt="parquet").status_code == 201
    back = arrow_data(api.client, alice, "NARROW")
    assert back.schema.types == [pa.int64(), pa.float64(), pa.string(), pa.timestamp("us")]
    assert back.to_pylist() == [
        {"small": 1, "f32": 0.5, "cat": "x", "ts_ms": datetime(2024, 1, 1)},
        {"small": 2, "f32": 1.5, "cat": "y", "ts_ms": datetime(2024, 1, 2)},
    ]


def test_csv_upload_infers_types(api):
    alice = api.user("alice")
    csv = b"I,F,S,B,T\n1,1.5,a,true,2024-01-01 12:00:00\n,,x,,\n3,-2.25,c,false,2024-03-01 00:00:00\n"
    r = upload(api.client, alice, "FROM_CSV", csv, fmt="csv")
    assert r.status_code == 201, r.text
    assert [c["type"] for c in r.json()["result"]["columns"]] == ["integer", "float", "text", "boolean", "timestamp"]
    assert arrow_data(api.client, alice, "FROM_CSV").to_pylist() == [
        {"I": 1, "F": 1.5, "S": "a", "B": True, "T": datetime(2024, 1, 1, 12)},
        {"I": None, "F": None, "S": "x", "B": None, "T": None},
        {"I": 3, "F": -2.25, "S": "c", "B": False, "T": datetime(2024, 3, 1)},
    ]


@pytest.mark.parametrize("content_type", ["text/csv", "application/csv", "text/csv; charset=utf-8"])
def test_format_from_content_type_csv(api, content_type):
    alice = api.user("alice")
    r = upload(api.client, alice, "CT", b"a,b\n1,x\n", content_type=content_type)
    assert r.status_code == 201, r.text
    assert arrow_data(api.client, alice, "CT").to_pylist() == [{"a": 1, "b": "x"}]


def test_format_from_content_type_parquet_and_json(api):
    alice = api.user("alice")
    data = pa.table({"a": [1, 2]})
    r = upload(api.client, alice, "PQ", parquet_bytes(data), content_type="application/vnd.apache.parquet")
    assert r.status_code == 201, r.text
    r = upload(api.client, alice, "PQ2", parquet_bytes(data), content_type="application/x-parquet")
    assert r.status_code == 201, r.text
    r = api.client.post(f"{EXT}/tables/JS", headers=alice, json=[{"a": 1}, {"a": 2}])
    assert r.status_code == 201, r.text
    for t in ("PQ", "PQ2", "JS"):
        assert arrow_data(api.client, alice, t).to_pylist() == [{"a": 1}, {"a": 2}], t


def test_json_records_upload(api):
    alice = api.user("alice")
    records = [
        {"id": 1, "score": 0.5, "name": "ann", "ok": True},
        {"id": 2, "score": None, "name": None, "ok": False},
        {"id": 3, "score": 2.0, "name": "cy"},  # a missing key is a null
    ]
    r = upload(api.client, alice, "J", orjson.dumps(records), fmt="json")
    assert r.status_code == 201, r.text
    assert [(c["name"], c["type"]) for c in r.json()["result"]["columns"]] == [
        ("id", "integer"),
        ("score", "float"),
        ("name", "text"),
        ("ok", "boolean"),
    ]
    assert arrow_data(api.client, alice, "J").to_pylist() == [
        {"id": 1, "score": 0.5, "name": "ann", "ok": True},
        {"id": 2, "score": None, "name": None, "ok": False},
        {"id": 3, "score": 2.0, "name": "cy", "ok": None},
    ]
    # ORDS-style {"items": [...]} is accepted too.
    r = upload(api.client, alice, "J2", orjson.dumps({"items": records[:1]}), fmt="json")
    assert r.status_code == 201, r.text
    assert describe(api.client, alice, "J2").json()["result"]["row_count"] == 1


def test_multipart_file_upload(api):
    alice = api.user("alice")
    r = api.client.post(
        f"{EXT}/tables/MP", headers=alice, files={"file": ("data.csv", b"a,b\n1,2\n3,4\n", "application/octet-stream")}
    )
    assert r.status_code == 201, r.text
    assert r.json()["result"]["row_count"] == 2
    r = api.client.post(
        f"{EXT}/tables/MP2",
        headers=alice,
        params={"format": "parquet"},
        files={"file": ("blob", parquet_bytes(pa.table({"x": [1.0]})), "application/octet-stream")},
    )
    assert r.status_code == 201, r.text
    assert arrow_data(api.client, alice, "MP2").to_pylist() == [{"x": 1.0}]
    r = api.client.post(f"{EXT}/tables/MP3", headers=alice, files={"other": ("data.csv", b"a\n1\n", "text/csv")})
    assert_error(r, 400, "file")
    r = api.client.post(f"{EXT}/tables/MP3", headers=alice, files={"file": ("noext", b"a\n1\n", "text/plain")})
    assert_error(r, 400, "format")
    assert_error(describe(api.client, alice, "MP3"), 404)


def test_table_names_keep_their_case(api):
    alice = api.user("alice")
    assert upload(api.client, alice, "Iris", b"a\n1\n", fmt="csv").status_code == 201
    assert_error(describe(api.client, alice, "iris"), 404)
    assert [i["table_name"] for i in listing(api.client, alice)] == ["Iris"]
    r = upload(api.client, alice, "IRIS", b"a\n2\n3\n", fmt="csv")
    if api.services.user_data.kind == "sqlite":
        # SQLite ignores case in table names: a clear 400, and "Iris" is untouched.
        for mode in ("create", "replace", "append"):
            r = upload(api.client, alice, "IRIS", b"a\n2\n3\n", fmt="csv", mode=mode)
            assert_error(r, 400, "Iris")
        assert_error(describe(api.client, alice, "IRIS"), 404)
    else:
        assert r.status_code == 201, r.text
        assert describe(api.client, alice, "IRIS").json()["result"]["row_count"] == 2
    assert describe(api.client, alice, "Iris").json()["result"]["row_count"] == 1


def test_longest_table_and_column_names(api):
    alice = api.user("alice")
    table, column = "T" * 63, "c" * 63
    r = upload(api.client, alice, table, f"{column},ü{'x' * 61}\n1,2\n".encode(), fmt="csv")
    assert r.status_code == 201, r.text
    assert [c["name"] for c in describe(api.client, alice, table).json()["result"]["columns"]] == [
        column,
        "ü" + "x" * 61,
    ]
    assert arrow_data(api.client, alice, table).column_names == [column, "ü" + "x" * 61]
    # One more byte is refused, rather than silently cut short by PostgreSQL.
    assert_error(upload(api.client, alice, "T" * 64, b"a\n1\n", fmt="csv"), 400)
    assert_error(upload(api.client, alice, "T2", f"{'c' * 64}\n1\n".encode(), fmt="csv"), 400, "column")
    assert_error(upload(api.client, alice, "T2", f"ü{'x' * 62}\n1\n".encode(), fmt="csv"), 400, "column")
    assert [i["table_name"] for i in listing(api.client, alice)] == [table]


# --- modes --------------------------------------------------------------------------------------------


def test_create_over_an_existing_table_is_400_and_keeps_it(api):
    alice = api.user("alice")
    assert upload(api.client, alice, "T", b"a\n1\n", fmt="csv").status_code == 201
    assert_error(upload(api.client, alice, "T", b"b\n2\n", fmt="csv"), 400, "already exists")
    assert_error(upload(api.client, alice, "T", b"b\n2\n", fmt="csv", mode="create"), 400, "already exists")
    assert arrow_data(api.client, alice, "T").to_pylist() == [{"a": 1}]


def test_replace_swaps_columns_and_rows(api):
    alice = api.user("alice")
    assert upload(api.client, alice, "T", b"a,b\n1,2\n3,4\n", fmt="csv").status_code == 201
    r = upload(api.client, alice, "T", b"z\nhello\n", fmt="csv", mode="replace")
    assert r.status_code == 201, r.text
    assert [c["name"] for c in r.json()["result"]["columns"]] == ["z"]
    assert arrow_data(api.client, alice, "T").to_pylist() == [{"z": "hello"}]
    # Replace of a missing table creates it.
    assert upload(api.client, alice, "NEW", b"q\n1\n", fmt="csv", mode="replace").status_code == 201


def test_append_adds_rows_matching_columns_by_name(api):
    alice = api.user("alice")
    assert upload(api.client, alice, "T", b"a,b\n1,x\n", fmt="csv").status_code == 201
    r = upload(api.client, alice, "T", b"b,a\ny,2\nz,3\n", fmt="csv", mode="append")
    assert r.status_code == 201, r.text
    assert r.json()["result"]["row_count"] == 3
    r = upload(api.client, alice, "T", orjson.dumps([{"a": 4, "b": None}]), fmt="json", mode="append")
    assert r.status_code == 201, r.text
    assert arrow_data(api.client, alice, "T").to_pylist() == [
        {"a": 1, "b": "x"},
        {"a": 2, "b": "y"},
        {"a": 3, "b": "z"},
        {"a": 4, "b": None},
    ]
    # Append to a missing table creates it.
    assert upload(api.client, alice, "NEW", b"q\n1\n", fmt="csv", mode="append").status_code == 201


def test_failed_appends_leave_the_table_unchanged(api):
    alice = api.user("alice")
    assert upload(api.client, alice, "T", b"a,b\n1,2\n", fmt="csv").status_code == 201
    before = arrow_data(api.client, alice, "T")
    for bad in [b"a\n3\n", b"a,b,c\n3,4,5\n", b"a,c\n3,4\n", b"a,b\nnot-a-number,4\n"]:
        assert_error(upload(api.client, alice, "T", bad, fmt="csv", mode="append"), 400)
        assert arrow_data(api.client, alice, "T").equals(before), bad
    assert describe(api.client, alice, "T").json()["result"]["row_count"] == 1


def test_unknown_mode_is_400(api):
    alice = api.user("alice")
    assert_error(upload(api.client, alice, "T", b"a\n1\n", fmt="csv", mode="upsert"), 400)
    assert_error(describe(api.client, alice, "T"), 404)


def test_a_write_that_fails_midway_leaves_the_old_table(api, monkeypatch):
    """Fault injection after the old table is dropped (replace) or while rows go in (append): the store's
    transaction must leave the table exactly as it was."""
    import tables.pg_store
    import tables.sqlite_store
    from tables.frames import normalize

    alice = api.user("alice")
    assert upload(api.client, alice, "T", b"a,b\n1,2\n3,4\n", fmt="csv").status_code == 201
    before = arrow_data(api.client, alice, "T")

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(tables.sqlite_store, "column_values", boom)
    monkeypatch.setattr(tables.pg_store.pa_csv, "write_csv", boom)
    store = api.services.user_data
    for data, mode in [(pa.table({"z": [9]}), "replace"), (pa.table({"a": [5], "b": [6]}), "append")]:
        stored, columns = normalize(data)
        with pytest.raises(RuntimeError, match="disk on fire"):
            store.write("ALICE", "T", stored, columns, mode)
    monkeypatch.undo()

    assert arrow_data(api.client, alice, "T").equals(before)
    assert [c["name"] for c in describe(api.client, alice, "T").json()["result"]["columns"]] == ["a", "b"]


# --- reading ------------------------------------------------------------------------------------------


def test_rows_are_paged_in_insertion_order(api):
    alice = api.user("alice")
    data = pa.table({"n": list(range(250)), "sq": [i * i for i in range(250)]})
    assert upload(api.client, alice, "P", parquet_bytes(data), fmt="parquet").status_code == 201

    first = rows(api.client, alice, "P", offset=0, limit=100)
    assert set(first) == {"hasMore", "limit", "offset", "count", "items"}
    assert (first["hasMore"], first["limit"], first["offset"], first["count"]) == (True, 100, 0, 100)
    assert first["items"][0] == {"n": 0, "sq": 0} and first["items"][-1] == {"n": 99, "sq": 9801}

    last = rows(api.client, alice, "P", offset=200, limit=100)
    assert (last["hasMore"], last["count"]) == (False, 50)
    assert [i["n"] for i in last["items"]] == list(range(200, 250))

    exact = rows(api.client, alice, "P", offset=150, limit=100)
    assert (exact["hasMore"], exact["count"]) == (False, 100)
    beyond = rows(api.client, alice, "P", offset=1000)
    assert (beyond["hasMore"], beyond["count"], beyond["items"]) == (False, 0, [])
    default = rows(api.client, alice, "P")
    assert (default["limit"], default["offset"], default["count"]) == (100, 0, 100)

    assert_error(api.client.get(f"{EXT}/tables/P/rows", headers=alice, params={"limit": 0}), 400)
    assert_error(api.client.get(f"{EXT}/tables/P/rows", headers=alice, params={"offset": -1}), 400)
    assert_error(api.client.get(f"{EXT}/tables/P/rows", headers=alice, params={"limit": "x"}), 400)


def test_rows_render_types_as_json(api):
    alice = api.user("alice")
    assert upload(api.client, alice, "TYPED", parquet_bytes(TYPED), fmt="parquet").status_code == 201
    items = rows(api.client, alice, "TYPED")["items"]
    assert items[1] == {"I": None, "F": None, "S": None, "B": None, "T": None}
    assert items[0]["I"] == 1 and items[0]["F"] == 1.5 and items[0]["S"] == "a" and items[0]["B"] is True
    assert items[0]["T"].startswith("2024-01-01T12:00:00")
    assert items[3]["I"] == 2**40 and items[3]["S"] == ""


def test_arrow_data_of_an_empty_table_has_the_schema(api):
    alice = api.user("alice")
    assert upload(api.client, alice, "T", parquet_bytes(TYPED), fmt="parquet").status_code == 201
    r = api.client.delete(f"{EXT}/tables/T", headers=alice)
    assert r.status_code == 200
    empty = TYPED.slice(0, 0)
    assert upload(api.client, alice, "E", parquet_bytes(empty), fmt="parquet").status_code == 201
    back = arrow_data(api.client, alice, "E")
    assert back.num_rows == 0 and back.schema.equals(TYPED.schema)
    assert rows(api.client, alice, "E")["items"] == []
    assert describe(api.client, alice, "E").json()["result"]["row_count"] == 0


def test_arrow_data_streams_a_larger_table_whole(api):
    alice = api.user("alice")
    n = 70_000  # more than one stream batch
    data = pa.table({"n": pa.array(range(n), pa.int64()), "s": pa.array([str(i % 97) for i in range(n)])})
    assert upload(api.client, alice, "BIG", parquet_bytes(data), fmt="parquet").status_code == 201
    assert arrow_data(api.client, alice, "BIG").equals(data)


def test_drop(api):
    alice = api.user("alice")
    assert upload(api.client, alice, "T", b"a\n1\n", fmt="csv").status_code == 201
    r = api.client.delete(f"{EXT}/tables/T", headers=alice)
    assert r.status_code == 200, r.text
    assert_error(describe(api.client, alice, "T"), 404)
    assert_error(api.client.get(f"{EXT}/tables/T/data", headers=alice), 404)
    assert_error(api.client.delete(f"{EXT}/tables/T", headers=alice), 404)
    assert listing(api.client, alice) == []
    assert upload(api.client, alice, "T", b"b\n2\n", fmt="csv").status_code == 201


# --- privacy and grants -------------------------------------------------------------------------------


def test_other_users_tables_are_404_unless_granted(api):
    alice, bob, carol = api.user("alice"), api.user("bob"), api.user("carol")
    assert upload(api.client, alice, "SECRET", parquet_bytes(TYPED), fmt="parquet").status_code == 201

    def bob_sees() -> list[int]:
        return [
            describe(api.client, bob, "SECRET", owner="ALICE").status_code,
            api.client.get(f"{EXT}/tables/SECRET/rows", headers=bob, params={"owner": "ALICE"}).status_code,
            api.client.get(f"{EXT}/tables/SECRET/data", headers=bob, params={"owner": "alice"}).status_code,
        ]

    assert bob_sees() == [404, 404, 404]
    hidden = describe(api.client, bob, "SECRET", owner="ALICE").json()["errorMessage"]
    missing = describe(api.client, bob, "NOSUCH", owner="ALICE").json()["errorMessage"]
    assert hidden == missing.replace("NOSUCH", "SECRET")
    # Bob's own schema has no such table, and he cannot drop or grant alice's.
    assert_error(describe(api.client, bob, "SECRET"), 404)
    assert_error(api.client.delete(f"{EXT}/tables/SECRET", headers=bob), 404)
    assert_error(api.client.post(f"{EXT}/tables/SECRET/grants", headers=bob, json={"user": "BOB"}), 404)

    r = api.client.post(f"{EXT}/tables/SECRET/grants", headers=alice, json={"user": "bob"})
    assert r.status_code == 200, r.text
    assert bob_sees() == [200, 200, 200]
    assert arrow_data(api.client, bob, "SECRET", owner="ALICE").equals(TYPED)
    assert describe(api.client, bob, "SECRET", owner="ALICE").json()["result"]["owner"] == "ALICE"
    assert describe(api.client, carol, "SECRET", owner="ALICE").status_code == 404
    # Read only: bob's upload of that name lands in his own schema.
    assert upload(api.client, bob, "SECRET", b"x\n1\n", fmt="csv", mode="replace").status_code == 201
    assert arrow_data(api.client, alice, "SECRET").equals(TYPED)

    r = api.client.delete(f"{EXT}/tables/SECRET/grants/BOB", headers=alice)
    assert r.status_code == 200, r.text
    assert bob_sees() == [404, 404, 404]


def test_public_grant_and_revoke(api):
    alice, bob, carol = api.user("alice"), api.user("bob"), api.user("carol")
    assert upload(api.client, alice, "PUB", b"a\n1\n", fmt="csv").status_code == 201
    for kwargs in ({"json": {}}, {"json": {"user": None}}, {}):
        assert api.client.post(f"{EXT}/tables/PUB/grants", headers=alice, **kwargs).status_code == 200
        for who in (bob, carol):
            assert describe(api.client, who, "PUB", owner="ALICE").status_code == 200, kwargs
        assert api.client.delete(f"{EXT}/tables/PUB/grants/PUBLIC", headers=alice).status_code == 200
        for who in (bob, carol):
            assert_error(describe(api.client, who, "PUB", owner="ALICE"), 404)


def test_grant_errors(api):
    alice = api.user("alice")
    assert_error(api.client.post(f"{EXT}/tables/NOSUCH/grants", headers=alice, json={}), 404)
    assert_error(api.client.delete(f"{EXT}/tables/NOSUCH/grants/PUBLIC", headers=alice), 404)
    assert upload(api.client, alice, "T", b"a\n1\n", fmt="csv").status_code == 201
    assert_error(api.client.post(f"{EXT}/tables/T/grants", headers=alice, json={"user": "NOBODY"}), 404)
    assert listing(api.client, alice, "grant") == []


def test_dropping_a_table_drops_its_grants(api):
    alice, bob = api.user("alice"), api.user("bob")
    assert upload(api.client, alice, "T", b"a\n1\n", fmt="csv").status_code == 201
    assert api.client.post(f"{EXT}/tables/T/grants", headers=alice, json={"user": "BOB"}).status_code == 200
    assert api.client.delete(f"{EXT}/tables/T", headers=alice).status_code == 200
    assert upload(api.client, alice, "T", b"a\n2\n", fmt="csv").status_code == 201
    assert_error(describe(api.client, bob, "T", owner="ALICE"), 404)
    assert listing(api.client, bob, "granted") == []


def test_listing_types(api):
    alice, bob = api.user("alice"), api.user("bob")
    for name in ("A2", "A1"):
        assert upload(api.client, alice, name, b"a\n1\n", fmt="csv").status_code == 201
    for name in ("B1", "B2"):
        assert upload(api.client, bob, name, b"a\n1\n", fmt="csv").status_code == 201
    assert api.client.post(f"{EXT}/tables/B1/grants", headers=bob, json={"user": "ALICE"}).status_code == 200
    assert api.client.post(f"{EXT}/tables/A1/grants", headers=alice, json={"user": "BOB"}).status_code == 200
    assert api.client.post(f"{EXT}/tables/A1/grants", headers=alice, json={}).status_code == 200

    def pairs(scope):
        return [(i["owner"], i["table_name"]) for i in listing(api.client, alice, scope)]

    assert pairs("user") == [("ALICE", "A1"), ("ALICE", "A2")]
    assert pairs("granted") == [("BOB", "B1")]
    assert pairs("all") == [("ALICE", "A1"), ("ALICE", "A2"), ("BOB", "B1")]
    grants = listing(api.client, alice, "grant")
    assert sorted((i["table_name"], i["grantee"]) for i in grants) == [("A1", "BOB"), ("A1", "PUBLIC")]
    assert listing(api.client, alice) == listing(api.client, alice, "user")
    assert_error(api.client.get(f"{EXT}/tables", headers=alice, params={"type": "everything"}), 400)
    # A public grant shows once for bob even though he also has a grant by name.
    assert [(i["owner"], i["table_name"]) for i in listing(api.client, bob, "granted")] == [("ALICE", "A1")]


def test_tables_need_a_token(api):
    assert api.client.get(f"{EXT}/tables").status_code == 401
    assert api.client.post(f"{EXT}/tables/T", params={"format": "csv"}, content=b"a\n1\n").status_code == 401


# --- bad inputs ---------------------------------------------------------------------------------------


def test_malformed_data_is_400(api):
    alice = api.user("alice")
    cases = [
        (b"a,b\n1,2,3\n", "csv"),
        (b'a,b\n"unterminated,2\n', "csv"),
        (b'[{"a": 1}', "json"),
        (b'{"a": 1}', "json"),
        (b"[1, 2, 3]", "json"),
        (b"[]", "json"),
        (b"not json at all", "json"),
        (b"PAR1 this is not parquet", "parquet"),
        (b"a,b\n1,2\n", "parquet"),
    ]
    for data, fmt in cases:
        r = upload(api.client, alice, "BAD", data, fmt=fmt)
        assert r.status_code == 400, (data, fmt, r.text)
        assert set(r.json()) == {"errorCode", "errorMessage"}
    assert listing(api.client, alice) == []


def test_empty_body_unknown_format_and_missing_format_are_400(api):
    alice = api.user("alice")
    assert_error(upload(api.client, alice, "T", b"", fmt="csv"), 400, "empty")
    assert_error(upload(api.client, alice, "T", b"a\n1\n", fmt="xlsx"), 400, "format")
    assert_error(upload(api.client, alice, "T", b"a\n1\n"), 400, "format")
    assert_error(upload(api.client, alice, "T", b"a\n1\n", content_type="application/octet-stream"), 400, "format")
    assert_error(upload(api.client, alice, "T", b"a\n1\n", content_type="text/plain"), 400, "format")
    assert listing(api.client, alice) == []


def test_invalid_table_names_are_400_or_404_never_500(api):
    alice = api.user("alice")
    assert upload(api.client, alice, "VICTIM", b"a\n1\n", fmt="csv").status_code == 201
    for name in ["..%2Fx", "a%2Fb", "a%20b", "1abc", "_x", "a-b", "x" * 64, "x" * 129, "a%00b", "a%22b", "%2E%2E"]:
        for method, path, kwargs in [
            ("POST", f"{EXT}/tables/{name}", {"params": {"format": "csv"}, "content": b"a\n1\n"}),
            ("GET", f"{EXT}/tables/{name}", {}),
            ("GET", f"{EXT}/tables/{name}/rows", {}),
            ("GET", f"{EXT}/tables/{name}/data", {}),
            ("DELETE", f"{EXT}/tables/{name}", {}),
            ("POST", f"{EXT}/tables/{name}/grants", {"json": {}}),
        ]:
            r = api.client.request(method, path, headers=alice, **kwargs)
            assert r.status_code in (400, 404), (method, path, r.status_code, r.text)
    assert [i["table_name"] for i in listing(api.client, alice)] == ["VICTIM"]


def test_bad_column_names_are_400(api):
    alice = api.user("alice")
    cases = [
        (b"a,A\n1,2\n", "csv"),
        (b"a,a\n1,2\n", "csv"),
        (b"Name,NAME,x\n1,2,3\n", "csv"),
        (orjson.dumps([{"col": 1, "COL": 2}]), "json"),
        (b",b\n1,2\n", "csv"),
        (orjson.dumps([{'a"b': 1}]), "json"),
        (orjson.dumps([{"x" * 64: 1}]), "json"),
    ]
    for data, fmt in cases:
        assert_error(upload(api.client, alice, "T", data, fmt=fmt), 400, "column")
    dup = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["v", "V"])
    assert_error(upload(api.client, alice, "T", parquet_bytes(dup), fmt="parquet"), 400, "column")
    assert listing(api.client, alice) == []


def test_odd_but_valid_column_names_round_trip(api):
    alice = api.user("alice")
    names = ["with space", "Ünïcode", "semi;colon", "it's", "x" * 63, "select", "$x", "0"]
    data = pa.table({n: [i] for i, n in enumerate(names)})
    r = upload(api.client, alice, "ODD", parquet_bytes(data), fmt="parquet")
    assert r.status_code == 201, r.text
    assert arrow_data(api.client, alice, "ODD").equals(data)


def test_text_with_nul_characters_is_400_on_every_backend(api):
    alice = api.user("alice")
    assert upload(api.client, alice, "T", b"a\nkeep\n", fmt="csv").status_code == 201
    r = upload(api.client, alice, "T", orjson.dumps([{"a": "ok"}, {"a": "bad\x00byte"}]), fmt="json", mode="replace")
    assert_error(r, 400, "NUL")
    assert_error(upload(api.client, alice, "T", b"a\nbad\x00\n", fmt="csv", mode="append"), 400, "NUL")
    assert arrow_data(api.client, alice, "T").to_pylist() == [{"a": "keep"}]


# --- upload size limit --------------------------------------------------------------------------------


class TestUploadLimit:
    LIMIT = 4096

    @pytest.fixture
    def services(self, services):
        """The usual services with a small max_upload_bytes."""
        services.settings = services.settings.model_copy(update={"max_upload_bytes": self.LIMIT})
        return services

    @staticmethod
    def big_csv(rows: int = 2000) -> bytes:
        return b"n\n" + b"".join(b"%d\n" % i for i in range(rows))

    def test_declared_length_over_the_limit_is_413_and_nothing_is_written(self, api):
        alice = api.user("alice")
        data = self.big_csv()
        assert len(data) > self.LIMIT
        assert_error(upload(api.client, alice, "BIG", data, fmt="csv"), 413, str(self.LIMIT))
        r = api.client.post(f"{EXT}/tables/BIG", headers=alice, files={"file": ("big.csv", data, "text/csv")})
        assert_error(r, 413)
        assert listing(api.client, alice) == []
        # Under the limit is fine.
        assert upload(api.client, alice, "SMALL", self.big_csv(100), fmt="csv").status_code == 201

    def test_chunked_body_over_the_limit_is_413_and_the_old_table_stays(self, api):
        alice = api.user("alice")
        assert upload(api.client, alice, "T", b"n\n1\n", fmt="csv").status_code == 201
        data = self.big_csv()

        def chunks():
            for i in range(0, len(data), 512):
                yield data[i : i + 512]

        r = api.client.post(
            f"{EXT}/tables/T", headers=alice, params={"format": "csv", "mode": "replace"}, content=chunks()
        )
        assert_error(r, 413)
        assert arrow_data(api.client, alice, "T").to_pylist() == [{"n": 1}]

    def test_chunked_body_over_a_real_socket(self, live_server, services):
        accounts.add_user(services, "UPLOADER", "up-pw-long-password")
        token = httpx.post(
            f"{live_server}/omlusers/api/oauth2/v1/token",
            json={"grant_type": "password", "username": "UPLOADER", "password": "up-pw-long-password"},
        ).json()["accessToken"]
        headers = {"Authorization": f"Bearer {token}"}
        data = self.big_csv()

        def chunks():
            for i in range(0, len(data), 1024):
                yield data[i : i + 1024]

        with httpx.Client(base_url=live_server, timeout=30) as c:
            r = c.post(f"{EXT}/tables/BIG", headers=headers, params={"format": "csv"}, content=chunks())
            assert r.status_code == 413, r.text
            assert "transfer-encoding" not in r.request.headers or r.request.headers["transfer-encoding"] == "chunked"
            assert "content-length" not in r.request.headers
        with httpx.Client(base_url=live_server, timeout=30) as c:
            assert c.get(f"{EXT}/tables", headers=headers).json()["result"] == []
            small = c.post(f"{EXT}/tables/SMALL", headers=headers, params={"format": "csv"}, content=b"n\n1\n")
            assert small.status_code == 201, small.text


def test_concurrent_creates_of_one_table_let_exactly_one_win(live_server, services):
    from concurrent.futures import ThreadPoolExecutor

    accounts.add_user(services, "RACER", "racer-pw-long-password")
    token = httpx.post(
        f"{live_server}/omlusers/api/oauth2/v1/token",
        json={"grant_type": "password", "username": "RACER", "password": "racer-pw-long-password"},
    ).json()["accessToken"]
    headers = {"Authorization": f"Bearer {token}"}
    racers = 6

    def create_version(i: int) -> int:
        data = parquet_bytes(pa.table({"version": [i] * 100}))
        with httpx.Client(base_url=live_server, timeout=60) as c:
            return upload(c, headers, "RACED", data, fmt="parquet", mode="create").status_code

    with ThreadPoolExecutor(racers) as pool:
        statuses = list(pool.map(create_version, range(racers)))
    assert sorted(statuses) == [201] + [400] * (racers - 1)
    with httpx.Client(base_url=live_server) as c:
        versions = set(arrow_data(c, headers, "RACED").column("version").to_pylist())
    assert len(versions) == 1
    (winner,) = [i for i, s in enumerate(statuses) if s == 201]
    assert versions == {winner}


class TestPageLimit:
    @pytest.fixture
    def services(self, services):
        """The usual services with pages of at most 10 rows."""
        services.settings = services.settings.model_copy(update={"max_page_rows": 10})
        return services

    def test_page_size_is_capped_by_the_setting(self, api):
        alice = api.user("alice")
        assert (
            upload(api.client, alice, "T", parquet_bytes(pa.table({"n": list(range(25))})), fmt="parquet").status_code
            == 201
        )
        page = rows(api.client, alice, "T", limit=1000, offset=5)
        assert (page["limit"], page["count"], page["hasMore"]) == (10, 10, True)
        assert [i["n"] for i in page["items"]] == list(range(5, 15))
        last = rows(api.client, alice, "T", limit=1000, offset=20)
        assert (last["count"], last["hasMore"]) == (5, False)
