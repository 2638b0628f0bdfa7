"""Requests from a worker's `import oml` (sent over its pipe) served by this app in-process: the same routes,
auth and rules as any HTTP client, with no network between them. The worker holds no credential: whatever
Authorization or Cookie it sends is dropped and the call's own script token (narrow, see
`server.deps.SCRIPT_ROUTES`) is put in its place here, in the server."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import unquote

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from engines.dask import RELAY_PATH
from server import errors
from server.errors import ErrorCode, oml_body

log = logging.getLogger("pyqd.bridge")
#: Seconds one bridged request may take.
REQUEST_TIMEOUT_S = 600.0
#: Methods `oml` uses; anything else is refused before it reaches the app.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE"})
#: Bridged paths must start with this: the OML and pyqd APIs (not the token service, admin stays closed by
#: the token's scope).
PATH_PREFIX = "/oml/"
#: The client address the app sees for a bridged request (`server.routes.relay` refuses it).
BRIDGE_CLIENT = "pyqd-bridge"
#: Longest path (with query string), number of headers, and size of one header accepted from a worker.
MAX_PATH = 8192
MAX_HEADERS = 64
MAX_HEADER_BYTES = 8192
#: Request headers passed on from a worker; every other one (Authorization, Cookie, Host, X-Forwarded-*,
#: ...) is dropped.
PASSED_HEADERS = frozenset({b"accept", b"content-type", b"user-agent"})

#: Response headers not passed back (the body is already decoded; no cookie goes to user code).
DROPPED_RESPONSE_HEADERS = frozenset({b"set-cookie", b"content-encoding", b"transfer-encoding"})

#: Gives the call's script token (minted on first use), or None when the call has no session to speak for.
TokenSource = Callable[[], str | None]
Message = tuple[Any, ...]


def error_response(error: ErrorCode, message: str) -> Message:
    """An OML error as the worker's transport expects it."""
    return ("http-response", error.status, [(b"content-type", b"application/json")], oml_body(error.code, message))


class BadBridgeRequest(ValueError):
    """A worker's request that does not follow the bridge's grammar."""


def is_read(method: str, path: str) -> bool:
    """A request that changes nothing: GET/HEAD, or the read-only query route (a POST for its body)."""
    if method in ("GET", "HEAD"):
        return True
    return method == "POST" and unquote(path.split("?", 1)[0]).rstrip("/").endswith("/api/pyqd/v1/query")


def parse_request(message: object, max_body: int) -> tuple[str, str, list[tuple[bytes, bytes]], bytes]:
    """(method, path, kept headers, body) of a worker's ("http", method, path, headers, body), every part
    checked; BadBridgeRequest otherwise."""
    if not isinstance(message, tuple) or len(message) != 5 or message[0] != "http":
        raise BadBridgeRequest("expected ('http', method, path, headers, body)")
    _, method, path, headers, body = message
    if not isinstance(method, str) or method not in METHODS:
        raise BadBridgeRequest(f"method must be one of {', '.join(sorted(METHODS))}")
    if not isinstance(path, str) or not path.startswith("/") or path.startswith("//") or len(path) > MAX_PATH:
        raise BadBridgeRequest("path must be an absolute path")
    if not path.isascii() or any(c.isspace() or ord(c) < 0x20 or c == "\x7f" or c == "\\" for c in path):
        raise BadBridgeRequest("path must be printable ASCII without spaces")
    route = unquote(path.split("?", 1)[0])
    if not route.startswith(PATH_PREFIX) or "/../" in route + "/" or "/./" in route + "/" or "\\" in route:
        raise BadBridgeRequest(f"a script may only reach {PATH_PREFIX}...")
    if route.rstrip("/") == RELAY_PATH:
        # The relay is for Dask workers; reached from here, each request would wait on a thread of the bridge's own
        # for the next, and a nested request a few dozen deep would hold every one of them.
        raise BadBridgeRequest("a script may not use the relay")
    if not isinstance(headers, list) or len(headers) > MAX_HEADERS:
        raise BadBridgeRequest(f"headers must be a list of at most {MAX_HEADERS} pairs")
    kept: list[tuple[bytes, bytes]] = []
    for pair in headers:
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(x, bytes) for x in pair)):
            raise BadBridgeRequest("each header must be a (bytes, bytes) pair")
        name, value = pair
        if len(name) + len(value) > MAX_HEADER_BYTES or b"\r" in value or b"\n" in value or b"\0" in value:
            raise BadBridgeRequest("header too long or with control characters")
        if name.lower() in PASSED_HEADERS:
            kept.append((name.lower(), value))
    if not isinstance(body, bytes) or len(body) > max_body:
        raise BadBridgeRequest(f"body must be bytes, at most {max_body}")
    return method, path, kept, body


class AnswerTooLarge(Exception):
    """A bridged answer grew past the bridge's limit (it is held whole before it goes to the worker)."""


class _LimitedAnswers:
    """The app, with answers cut off (AnswerTooLarge) once their body passes `limit` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        seen = 0

        async def counted(message: AsgiMessage) -> None:
            nonlocal seen
            if message["type"] == "http.response.body":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise AnswerTooLarge()
            await send(message)

        await self.app(scope, receive, counted)


class CallRequests:
    """One call's `import oml` requests: served here (`__call__`), or, when the call runs on another machine (the
    Dask engine), relayed back to `server.routes.relay` with the call's script token (`relay`)."""

    def __init__(self, bridge: AppBridge, token: TokenSource, read_only: bool) -> None:
        self.bridge, self.token, self.read_only = bridge, token, read_only

    def __call__(self, message: Message) -> Message:
        return self.bridge.handle(message, self.token, self.read_only)

    def relay(self) -> tuple[str, bool] | None:
        """(the call's script token, read-only) for a machine that relays the requests; None without a session."""
        token = self.token()
        return (token, self.read_only) if token is not None else None


class AppBridge:
    """Owns an event loop thread that forwards worker requests to the ASGI app."""

    def __init__(self, app: FastAPI, max_body: int = 512 * 1024 * 1024, max_answer: int = 256 * 1024 * 1024) -> None:
        self._app = app
        self.max_body, self.max_answer = max_body, max_answer
        self._cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        self._cm = start_blocking_portal()
        self._portal = self._cm.__enter__()
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=_LimitedAnswers(self._app, self.max_answer), client=(BRIDGE_CLIENT, 0)),
            base_url="http://pyqd.bridge",
            timeout=REQUEST_TIMEOUT_S,
        )

    def close(self) -> None:
        if self._portal is not None and self._client is not None:
            self._portal.call(self._client.aclose)
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
        self._cm = self._portal = self._client = None

    def handler_for(self, token: TokenSource, read_only: bool = False) -> CallRequests:
        """The request handler of one call: its requests carry `token()` and nothing the worker claimed; with
        `read_only` (another owner's script the caller did not trust) only reads pass."""
        return CallRequests(self, token, read_only)

    def handle(self, message: Message, token: TokenSource, read_only: bool = False) -> Message:
        """("http", method, path, headers, body) → ("http-response", status, headers, body); never raises."""
        try:
            method, path, headers, body = parse_request(message, self.max_body)
        except BadBridgeRequest as e:
            return error_response(errors.INVALID_PARAMETER, f"Bad request from the script's oml connection: {e}")
        if read_only and not is_read(method, path):
            return error_response(
                errors.FORBIDDEN,
                "A script of another owner may only read through oml (the caller can trust it with trustPickle)",
            )
        portal = self._portal
        if portal is None:
            return error_response(errors.BUSY, "server stopping")
        try:
            bearer = token()
        except Exception:  # noqa: BLE001 - a failed mint must not crash the call's worker loop
            log.exception("could not issue a script token")
            return error_response(errors.INTERNAL, "could not issue the script's token")
        if bearer is None:
            return error_response(errors.UNAUTHORIZED, "This call has no session to act for; oml is not available")
        headers.append((b"authorization", b"Bearer " + bearer.encode("ascii")))
        try:
            return portal.call(self._forward, method, path, headers, body)
        except AnswerTooLarge:
            return error_response(
                errors.TOO_LARGE,
                f"The answer to the script's oml request is over {self.max_answer} bytes; ask for less",
            )
        except Exception:  # noqa: BLE001 - the app answers errors itself; this is the bridge failing
            log.exception("bridged request %s %s failed", method, path)
            return error_response(errors.BAD_GATEWAY, "the server could not serve the script's request")

    async def _forward(self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Message:
        assert self._client is not None
        r = await self._client.request(method, path, headers=headers, content=body)
        kept = [(k, v) for k, v in r.headers.raw if k.lower() not in DROPPED_RESPONSE_HEADERS]
        return ("http-response", r.status_code, kept, r.content)
