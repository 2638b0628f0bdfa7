"""ASGI middleware for request bodies: refuse those over the configured size with 413 (even when chunked), and
never leave a keep-alive connection in doubt when the answer goes out before the body was read.

An answer given before the whole body arrived (a 404 on an unknown route, a 401, a 413, a refused name) leaves
the rest of the body on the wire: the client may still be sending it, and the next request on the connection
would be read as body. So before such an answer starts, the rest is read and dropped when it is small and
arrives promptly (the connection stays usable); otherwise the answer says `Connection: close` and the server
closes the connection after it (RFC 9112 §9.6).
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import TOO_LARGE, PayloadTooLarge, error_body

#: Most bytes of an unread body read and dropped to keep the connection usable.
DRAIN_BYTES = 8 * 1024 * 1024
#: Longest wait for the rest of an unread body, seconds, before the connection is closed instead.
DRAIN_S = 1.0


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: bytes | None = None
        encoding = expect = b""
        for name, value in scope.get("headers") or ():  # the last of each wins, as dict() had it
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                encoding = value
            elif name == b"expect":
                expect = value
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _reject(send, self.max_bytes, scope.get("path", ""))
            return
        chunked = b"chunked" in encoding.lower()
        body = _Body(receive, self.max_bytes, done=not chunked and (declared is None or int(declared or 0) == 0))
        waits_for_continue = expect.lower() == b"100-continue"
        started = False

        async def finishing_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                # With `Expect: 100-continue` and no read yet, the client may not send the body at all: asking
                # for it only to drop it would be wrong, and what follows on the wire is unknown. Close instead.
                usable = body.done or (not (waits_for_continue and not body.read_any) and await body.drain())
                if not usable:
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, body.receive, finishing_send)
        except PayloadTooLarge:
            if not started:
                await _reject(send, self.max_bytes, scope.get("path", ""))


class _Body:
    """The request body as the app reads it: counted against the limit, and whether it was read to the end."""

    def __init__(self, receive: Receive, max_bytes: int, *, done: bool) -> None:
        self._receive = receive
        self.max_bytes = max_bytes
        self.seen = 0
        self.done = done
        self.read_any = False

    async def receive(self) -> Message:
        message = await self._receive()
        self.read_any = True
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.done = True
            if self.seen > self.max_bytes:
                raise PayloadTooLarge(f"The request body exceeds the limit of {self.max_bytes} bytes")
        elif message["type"] == "http.disconnect":
            self.done = True
        return message

    async def drain(self) -> bool:
        """Read and drop the rest of the body; False when it is too large or too slow to wait for."""
        deadline = time.monotonic() + DRAIN_S
        dropped = 0
        while not self.done:
            left = deadline - time.monotonic()
            if left <= 0 or dropped > DRAIN_BYTES:
                return False
            try:
                message = await asyncio.wait_for(self._receive(), left)
            except TimeoutError:
                return False
            if message["type"] != "http.request":
                return False  # the client went away
            dropped += len(message.get("body", b""))
            self.done = not message.get("more_body", False)
        return True


async def _reject(send: Send, limit: int, path: str) -> None:
    body = error_body(path, 413, TOO_LARGE.code, f"The request body exceeds the limit of {limit} bytes")
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
