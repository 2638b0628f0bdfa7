"""HTTP compression over real sockets: large answers gzip-compressed for clients that accept it (streamed ones still
streamed), small ones not; gzip and deflate request bodies read as sent, and a decompression bomb refused with 413
before it is inflated."""

from __future__ import annotations

import gzip
import io
import threading
import zlib
from collections.abc import Iterator

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from engines.pool import WorkerPool
from server import accounts
from server.app import create_app
from server.bridge import BRIDGE_CLIENT
from server.compression import GzipAnswers, accepts_gzip
from server.services import open_services
from server.settings import Settings
from tests.conftest import ADMIN_PASSWORD, serving

EXT = "/oml/api/pyqd/v1"
#: The module's server refuses bodies (wire or inflated) over this.
LIMIT = 4 * 1024 * 1024
ROWS = 30_000


@pytest.fixture(scope="module")
def server(tmp_path_factory, worker_pool: WorkerPool) -> Iterator[tuple[str, dict[str, str]]]:
    """A server on a real socket (SQLite), with user ZIP and table BIG of ROWS rows: (url, bearer headers)."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("gzip") / "data",
        admin_password=ADMIN_PASSWORD,
        password_hash_time_cost=1,
        password_hash_memory_kib=1024,
        max_upload_bytes=LIMIT,
    )
    services = open_services(settings)
    services.pool = worker_pool
    accounts.add_user(services, "ZIP", "zip-password-long")
    try:
        with serving(create_app(services=services)) as url:
            token = httpx.post(
                f"{url}/omlusers/api/oauth2/v1/token",
                json={"grant_type": "password", "username": "ZIP", "password": "zip-password-long"},
            ).json()["accessToken"]
            headers = {"Authorization": f"Bearer {token}"}
            table = pa.table({"K": list(range(ROWS)), "S": [f"value number {i % 97}" for i in range(ROWS)]})
            buf = io.BytesIO()
            pq.write_table(table, buf)
            r = httpx.post(
                f"{url}{EXT}/tables/BIG", headers=headers, params={"format": "parquet"}, content=buf.getvalue()
            )
            assert r.status_code == 201, r.text
            yield url, headers
    finally:
        services.close()


def raw_get(
    url: str, path: str, headers: dict[str, str], method: str = "GET", **kwargs
) -> tuple[httpx.Response, bytes]:
    """The answer and its body as sent (not decoded)."""
    with httpx.Client(base_url=url, timeout=60) as client, client.stream(method, path, headers=headers, **kwargs) as r:
        return r, b"".join(r.iter_raw())


def test_a_large_json_answer_is_gzipped_for_a_client_that_accepts_it(server):
    url, auth = server
    r, raw = raw_get(url, f"{EXT}/tables/BIG/rows", {**auth, "Accept-Encoding": "gzip"}, params={"limit": 10_000})
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip" and "accept-encoding" in r.headers["vary"].lower()
    assert raw[:2] == b"\x1f\x8b" and int(r.headers["content-length"]) == len(raw)
    plain = gzip.decompress(raw)
    assert len(raw) < len(plain) / 3
    body = httpx.Response(200, content=plain).json()
    assert body["count"] == 10_000 and body["items"][9_999] == {"K": 9_999, "S": f"value number {9_999 % 97}"}


@pytest.mark.parametrize(
    "accept",
    [None, "identity", "gzip;q=0", "br", "deflate", "gzip;q=0, *"],
)
def test_no_gzip_unless_the_client_accepts_it(server, accept):
    url, auth = server
    headers = {**auth, "Accept-Encoding": accept} if accept is not None else auth
    with httpx.Client(base_url=url, timeout=60) as client:
        if accept is None:
            client.headers.pop("accept-encoding", None)
        r = client.get(f"{EXT}/tables/BIG/rows", headers=headers, params={"limit": 10_000})
    assert r.status_code == 200 and "content-encoding" not in r.headers, r.headers
    assert r.json()["count"] == 10_000


def test_small_answers_and_head_requests_are_not_compressed(server):
    url, auth = server
    headers = {**auth, "Accept-Encoding": "gzip"}
    r, raw = raw_get(url, f"{EXT}/tables", headers)
    assert r.status_code == 200 and "content-encoding" not in r.headers
    assert httpx.Response(200, content=raw).json()["result"][0]["table_name"] == "BIG"
    r, raw = raw_get(url, "/oml/api/py-scripts/v1", headers, method="HEAD")
    assert r.status_code == 200 and "content-encoding" not in r.headers and raw == b""


def test_the_arrow_stream_of_a_query_is_gzipped_as_it_streams(server):
    url, auth = server
    with httpx.Client(base_url=url, timeout=60) as client:
        r = client.post(
            f"{EXT}/query", headers={**auth, "Accept-Encoding": "gzip"}, json={"query": "select * from BIG"}
        )
    assert r.status_code == 200, r.text
    assert r.headers["content-encoding"] == "gzip" and "content-length" not in r.headers
    table = pa.ipc.open_stream(r.content).read_all()  # httpx decoded it
    assert table.num_rows == ROWS and table.column("K").to_pylist()[-1] == ROWS - 1


def test_each_streamed_piece_is_readable_before_the_next_is_made():
    """The compressor flushes every piece: the client decompresses piece 1 while the app waits to make piece 2."""
    first_read = threading.Event()
    piece = b"0123456789abcdef" * 8192  # 128 KiB, over the size limit

    def pieces() -> Iterator[bytes]:
        yield piece
        assert first_read.wait(30), "the client never got the first piece on its own"
        yield piece

    app = FastAPI()

    @app.get("/stream")
    def stream() -> StreamingResponse:
        return StreamingResponse(pieces(), media_type="application/octet-stream")

    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with serving(GzipAnswers(app, min_bytes=64 * 1024, level=1)) as url:
        with httpx.Client(timeout=60) as client:
            with client.stream("GET", f"{url}/stream", headers={"Accept-Encoding": "gzip"}) as r:
                assert r.headers["content-encoding"] == "gzip"
                got = b""
                raw = r.iter_raw()
                while len(got) < len(piece):
                    got += inflater.decompress(next(raw))
                assert got == piece
                first_read.set()
                for chunk in raw:
                    got += inflater.decompress(chunk)
    assert got == piece * 2 and inflater.eof


def test_the_bridge_is_never_sent_compressed_answers():
    """Workers' `import oml` requests (served in-process) would only pay to inflate them again."""
    inner = FastAPI()

    @inner.get("/big")
    def big() -> StreamingResponse:
        return StreamingResponse(iter([b"x" * 200_000]), media_type="text/plain")

    wrapped = GzipAnswers(inner, min_bytes=1024)
    for client_host, encoded in ((BRIDGE_CLIENT, False), ("127.0.0.1", True)):
        with TestClient(wrapped, client=(client_host, 0)) as client:
            r = client.get("/big", headers={"Accept-Encoding": "gzip"})
        assert ("content-encoding" in r.headers) is encoded and r.content == b"x" * 200_000


def test_accept_encoding_parsing():
    assert accepts_gzip("gzip") and accepts_gzip("deflate, gzip;q=0.5") and accepts_gzip("*") and accepts_gzip("x-gzip")
    assert not accepts_gzip("") and not accepts_gzip("gzip;q=0") and not accepts_gzip("identity")
    assert not accepts_gzip("*;q=0") and not accepts_gzip("gzip;q=0, *") and accepts_gzip("GZIP ; Q=1")


# -- compressed request bodies ----------------------------------------------------------------------------------
JSON = {"Content-Type": "application/json"}
CSV = b"A,B\n" + b"".join(b"%d,row %d\n" % (i, i) for i in range(5000))


def post(url, auth, path, body: bytes, encoding: str | None, **kwargs) -> httpx.Response:
    headers = {**auth, **({"Content-Encoding": encoding} if encoding else {}), **kwargs.pop("headers", {})}
    with httpx.Client(base_url=url, timeout=60) as client:
        return client.post(path, headers=headers, content=body, **kwargs)


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(
    ("name", "encoding", "encode"),
    [
        ("GZ", "gzip", gzip.compress),
        ("XGZ", "x-gzip", gzip.compress),
        ("ZLIB", "deflate", zlib.compress),
        ("RAWDEFLATE", "deflate", raw_deflate),
        ("MEMBERS", "gzip", lambda d: gzip.compress(d[:1000]) + gzip.compress(d[1000:])),
        ("IDENTITY", "identity", lambda d: d),
    ],
)
def test_compressed_uploads_are_read_as_sent(server, name, encoding, encode):
    url, auth = server
    r = post(url, auth, f"{EXT}/tables/{name}", encode(CSV), encoding, params={"format": "csv"})
    assert r.status_code == 201, r.text
    assert r.json()["result"]["row_count"] == 5000


def test_compressed_json_bodies_are_read_as_sent(server):
    url, auth = server
    body = b'{"query": "select count(*) as N from BIG"}'
    r = post(url, auth, f"{EXT}/query", gzip.compress(body), "gzip", headers=JSON)
    assert r.status_code == 200, r.text
    assert pa.ipc.open_stream(r.content).read_all().column(0).to_pylist() == [ROWS]
    body = b'{"query": "select K from BIG where K < 10"}'
    r = post(url, auth, f"{EXT}/tables/SMALLK", zlib.compress(body), "deflate", headers=JSON)
    assert r.status_code == 201 and r.json()["result"]["row_count"] == 10, r.text


def bomb(inflated: int) -> bytes:
    """`inflated` zero bytes, gzip-compressed (about a thousandth of that)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    return b"".join(c.compress(zeros) for _ in range(inflated // len(zeros))) + c.flush()


def assert_refused(r: httpx.Response, status: int, code: int, *fragments: str) -> None:
    assert r.status_code == status, r.text
    assert set(r.json()) == {"errorCode", "errorMessage"} and r.json()["errorCode"] == code, r.text
    for fragment in fragments:
        assert fragment in r.json()["errorMessage"], r.text


def test_a_decompression_bomb_is_refused_with_413(server):
    url, auth = server
    member = bomb(64 * 1024 * 1024)  # 64 MiB inflated in one gzip member of ~64 KB
    many = member * 16  # 1 GiB inflated, ~1 MB sent (RFC 1952 allows many members): under the wire limit
    assert len(many) < LIMIT
    for data in (member, many):
        r = post(url, auth, f"{EXT}/tables/BOMB", data, "gzip", params={"format": "csv"})
        assert_refused(r, 413, 1013, "decompresses to more than", str(LIMIT))
        # the same through a route FastAPI parses (it would make any body error its own 400)
        r = post(url, auth, f"{EXT}/query", data, "gzip", headers=JSON)
        assert_refused(r, 413, 1013, "decompresses")
    # just under the limit inflated is fine
    line = b"x" * 1023 + b"\n"
    ok = b"A\n" + line * ((LIMIT - 100) // len(line))
    r = post(url, auth, f"{EXT}/tables/JUSTUNDER", gzip.compress(ok), "gzip", params={"format": "csv"})
    assert r.status_code == 201, r.text
    with httpx.Client(base_url=url, timeout=60) as client:
        assert "BOMB" not in [t["table_name"] for t in client.get(f"{EXT}/tables", headers=auth).json()["result"]]


@pytest.mark.parametrize(
    ("encoding", "body", "status", "code"),
    [
        ("gzip", b"this is not gzip at all", 400, 1000),
        ("gzip", gzip.compress(CSV)[:-30], 400, 1000),
        ("deflate", b"\x78\x9c garbage", 400, 1000),
        ("gzip", gzip.compress(CSV) + b"trailing junk", 400, 1000),
        ("deflate", zlib.compress(CSV) + b"junk", 400, 1000),
        ("br", b"\x0b\x02\x80hello\x03", 415, 1415),
        ("gzip, gzip", gzip.compress(gzip.compress(CSV)), 415, 1415),
        ("compress", b"whatever", 415, 1415),
    ],
)
def test_bad_compressed_bodies_are_clear_errors(server, encoding, body, status, code):
    url, auth = server
    r = post(url, auth, f"{EXT}/tables/BAD", body, encoding, params={"format": "csv"})
    assert_refused(r, status, code)
    with httpx.Client(base_url=url, timeout=60) as client:
        assert "BAD" not in [t["table_name"] for t in client.get(f"{EXT}/tables", headers=auth).json()["result"]]
