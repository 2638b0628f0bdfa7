"""`import oml` inside a worker talks to the server through the worker's own pipe (no network needed):
an httpx transport that hands each request to the parent and waits for its answer."""

from __future__ import annotations

import threading
from multiprocessing.connection import Connection

import httpx

#: The base URL the worker's `oml` connection uses; the host part means nothing on the pipe.
BRIDGE_URL = "http://pyqd.bridge"


class PipeTransport(httpx.BaseTransport):
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        message = (
            "http",
            request.method,
            request.url.raw_path.decode("ascii"),
            list(request.headers.raw),
            request.read(),
        )
        with self._lock:
            self._conn.send(message)
            reply = self._conn.recv()
        if not (isinstance(reply, tuple) and reply[0] == "http-response"):
            raise httpx.TransportError("the server did not answer the worker's request")
        _, status, headers, body = reply
        return httpx.Response(status, headers=headers, content=body, request=request)
