"""Requests from a worker's `import oml` (sent over its pipe) served by this app in-process, as their
bearer token says: the same routes, auth and rules as any HTTP client, with no network between them."""

from __future__ import annotations

from contextlib import AbstractContextManager

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI

#: Seconds one bridged request may take.
REQUEST_TIMEOUT_S = 600.0


class AppBridge:
    """Owns an event loop thread that forwards worker requests to the ASGI app."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        self._cm = start_blocking_portal()
        self._portal = self._cm.__enter__()
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self._app), base_url="http://pyqd.bridge", timeout=REQUEST_TIMEOUT_S
        )

    def close(self) -> None:
        if self._portal is not None and self._client is not None:
            self._portal.call(self._client.aclose)
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
        self._cm = self._portal = self._client = None

    def handle(self, message: tuple) -> tuple:
        """("http", method, path, headers, body) → ("http-response", status, headers, body)."""
        _, method, path, headers, body = message
        if self._portal is None:
            return ("http-response", 503, [], b'{"errorCode":1503,"errorMessage":"server stopping"}')
        return self._portal.call(self._forward, method, path, headers, body)

    async def _forward(self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple:
        assert self._client is not None
        keep = [(k, v) for k, v in headers if k.lower() not in (b"host", b"content-length", b"transfer-encoding")]
        r = await self._client.request(method, path, headers=keep, content=body)
        return ("http-response", r.status_code, list(r.headers.raw), r.content)
