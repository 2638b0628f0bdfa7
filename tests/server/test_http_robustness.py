"""HTTP walls, attacked over real sockets: an answer given before the body was read never leaves a keep-alive
connection in doubt; error messages are clipped; the OpenAPI document declares the errors, name patterns and
`Allow` headers the server uses."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from server.errors import MAX_ERROR_MESSAGE_BYTES, clip_message
from tests.conftest import serving
from tests.server.support import SQLITE_ONLY

BOUNDARY = "pyqdattack"


def multipart(size: int) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    return head + b"a\n" + b"1\n" * (size // 2) + f"\r\n--{BOUNDARY}--\r\n".encode()


def request_head(path: str, length: int, *extra: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: pyqd",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
        f"Content-Length: {length}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    s.settimeout(30)  # a hang fails the test instead of blocking the run
    return s


def read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole HTTP/1.1 response (Content-Length framed) from the socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"connection closed before a whole response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    while len(body) < int(headers["content-length"]):
        chunk = s.recv(65536)
        assert chunk, "connection closed in the middle of the body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def assert_closed(s: socket.socket) -> None:
    """The server closed the connection (EOF, or a reset once the answer was read)."""
    try:
        assert s.recv(65536) == b""
    except ConnectionResetError:
        pass


def assert_reusable(s: socket.socket) -> None:
    s.sendall(b"GET /health HTTP/1.1\r\nHost: pyqd\r\n\r\n")
    status, _, body = read_response(s)
    assert status == 200 and b"ok" in body


@SQLITE_ONLY
def test_unknown_route_with_a_whole_multipart_body_keeps_the_connection_usable(live_server):
    body = multipart(3_000_000)
    with connect(live_server) as s:
        s.sendall(request_head("/no/such/route", len(body)) + body)
        status, headers, answer = read_response(s)
        assert status == 404 and b'"errorCode":1004' in answer
        assert headers.get("connection") != "close"
        assert_reusable(s)


@SQLITE_ONLY
def test_unknown_route_with_a_half_sent_body_answers_and_closes(live_server):
    """The attack: send part of an upload to a route that does not exist and wait. Before, the server answered
    404 and kept waiting for the rest as part of the same request, and the client could not know: the next request
    on the connection was read as body, and neither side closed it."""
    body = multipart(3_000_000)
    with connect(live_server) as s:
        s.sendall(request_head("/no/such/route", len(body)) + body[:100_000])
        status, headers, _ = read_response(s)
        assert status == 404
        assert headers["connection"] == "close"
        assert_closed(s)
    assert httpx.get(f"{live_server}/health").status_code == 200


@SQLITE_ONLY
def test_unauthenticated_upload_and_expect_continue_do_not_hang(live_server):
    body = multipart(2_000_000)
    with connect(live_server) as s:  # 401 before the body was read: the rest is drained, the connection stays
        s.sendall(request_head("/oml/api/pyqd/v1/tables/T", len(body)) + body)
        status, _, _ = read_response(s)
        assert status == 401
        assert_reusable(s)
    with connect(live_server) as s:  # Expect: 100-continue and a 404: the body is never asked for, so close
        s.sendall(request_head("/no/such/route", len(body), "Expect: 100-continue"))
        status, headers, _ = read_response(s)
        assert status == 404 and headers["connection"] == "close"
        assert_closed(s)
    assert httpx.get(f"{live_server}/health").status_code == 200


@SQLITE_ONLY
def test_declared_body_over_the_limit_gets_413_and_a_closed_connection(live_server, services):
    limit = services.settings.max_upload_bytes
    with connect(live_server) as s:
        s.sendall(request_head("/oml/api/pyqd/v1/tables/T", limit + 1) + b"x" * 65536)
        status, headers, answer = read_response(s)
        assert status == 413 and b'"errorCode":1013' in answer
        assert headers["connection"] == "close"
        assert_closed(s)
    assert httpx.get(f"{live_server}/health").status_code == 200


@SQLITE_ONLY
def test_chunked_body_over_the_limit_gets_413(services):
    from server import accounts

    services.settings = services.settings.model_copy(update={"max_upload_bytes": 1_000_000})
    accounts.add_user(services, "ALICE", "alice-password")

    def chunks():
        for _ in range(40):
            yield b"a\n" + b"1\n" * 32_000

    with serve(services) as url, httpx.Client(base_url=url, timeout=60) as client:
        token = client.post(
            "/omlusers/api/oauth2/v1/token",
            json={"grant_type": "password", "username": "ALICE", "password": "alice-password"},
        ).json()["accessToken"]
        headers = {"Authorization": f"Bearer {token}"}
        r = client.post("/oml/api/pyqd/v1/tables/T?format=csv", headers=headers, content=chunks())
        assert r.status_code == 413, r.text
        assert r.json()["errorCode"] == 1013
        assert client.get("/health").status_code == 200
        assert client.get("/oml/api/pyqd/v1/tables", headers=headers).json()["result"] == []


@contextmanager
def serve(services) -> Iterator[str]:
    """The app over these services on a real socket (uvicorn in a thread)."""
    from server.app import create_app

    with serving(create_app(services=services)) as url:
        yield url


# --- error messages ----------------------------------------------------------------------------------------------


def test_clip_message_keeps_short_messages_and_clips_long_ones():
    assert clip_message("short") == "short"
    clipped = clip_message("é" * 10_000_000)
    assert len(clipped.encode()) <= MAX_ERROR_MESSAGE_BYTES
    assert "clipped" in clipped and "20000000 bytes" in clipped


@SQLITE_ONLY
def test_a_script_raising_a_50_mb_message_gets_a_clipped_error(api):
    alice = api.user("alice")
    api.script(alice, "shout", "def shout():\n    raise ValueError('x' * 50_000_000)\n")
    started = time.monotonic()
    r = api.run(alice, "do-eval", "shout")
    assert r.status_code == 400, r.text[:500]
    assert len(r.content) < MAX_ERROR_MESSAGE_BYTES + 1024
    body = r.json()
    assert body["errorCode"] == 1030 and "clipped" in body["errorMessage"]
    assert time.monotonic() - started < 120
    assert api.client.get("/health").status_code == 200


# --- the OpenAPI document and Allow ------------------------------------------------------------------------------


@SQLITE_ONLY
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_wrong_method_on_a_job_names_every_method_of_the_path(api, version):
    alice = api.user("alice")
    path = f"/oml/api/py-scripts/{version}/jobs/0123456789abcdef"
    for method in ("OPTIONS", "PUT", "POST", "PATCH"):
        r = api.client.request(method, path, headers=alice)
        assert r.status_code == 405, (method, r.text)
        assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "HEAD", "DELETE"}
        assert r.json()["errorCode"] == 1005
    documented = api.client.get("/openapi.json").json()["paths"][f"/oml/api/py-scripts/{version}/jobs/{{jobId}}"]
    assert set(documented) == {"get", "delete"}
