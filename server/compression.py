"""HTTP compression, as OML4Py's REST API lists it (`Accept-Encoding: gzip`, `Content-Encoding: deflate`).

Answers (`GzipAnswers`): a client that accepts gzip gets answers of at least `min_bytes` compressed, at a fast
level; smaller ones go as they are. A streamed answer stays streamed: it is compressed piece by piece, each piece
flushed, so the client reads each Arrow batch as it is made, and memory holds one piece. Large pieces are compressed
in a worker thread, never in the event loop. Answers already encoded, images and event streams are left alone, and
so are the in-process requests of workers' `import oml` (the bridge), which would only pay to decompress them.

Request bodies (`DecompressedBodies`): `Content-Encoding: gzip` (or `x-gzip`) and `deflate` (zlib, or raw deflate as
some clients send it) are decompressed as they arrive, a bounded piece at a time, and the decompressed size is held
to the server's body limit: a small body that inflates past it (a "zip bomb") is refused with 413 before it is
inflated. A body that is not valid data for its encoding is a 400, an encoding pyqd does not know a 415; all in the
OML error shape.
"""

from __future__ import annotations

import zlib
from typing import Any

import anyio.to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.bridge import BRIDGE_CLIENT
from server.errors import INVALID_PARAMETER, TOO_LARGE, error_body

#: Uncompressed bytes of one piece compressed in the event loop; larger ones go to a worker thread.
INLINE_BYTES = 256 * 1024
#: Most decompressed bytes handed to the app at a time (bounds the memory one small compressed piece can take).
PIECE_BYTES = 1024 * 1024
#: Content types never compressed: already compressed, or streams read as events.
SKIPPED_TYPES = ("image/", "video/", "audio/", "text/event-stream", "application/zip", "application/gzip")
#: errorCode of 415 (1000 + status, as server.errors does for statuses without a code of their own).
UNSUPPORTED_ENCODING = 1415


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding value accepts gzip (RFC 9110 §12.5.3: `gzip;q=0` refuses it; `*` stands for
    anything not named)."""
    star: bool | None = None
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        coding = coding.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if coding in ("gzip", "x-gzip"):
            return q > 0
        if coding == "*":
            star = q > 0
    return bool(star)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")
    return ""


class GzipAnswers:
    """Compress answers of at least `min_bytes` for clients that accept gzip (`min_bytes` 0: never)."""

    def __init__(self, app: ASGIApp, min_bytes: int, level: int = 1) -> None:
        self.app, self.min_bytes, self.level = app, min_bytes, level

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or self.min_bytes <= 0
            or scope.get("method") == "HEAD"
            or (scope.get("client") or ("",))[0] == BRIDGE_CLIENT
            or not accepts_gzip(_header(scope, b"accept-encoding"))
        ):
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _Compressor(send, self.min_bytes, self.level).send)


class _Compressor:
    """One answer: the start held back with the first pieces until they reach `min_bytes` (then compressed) or the
    body ends (then sent as it is)."""

    def __init__(self, send: Send, min_bytes: int, level: int) -> None:
        self._send, self.min_bytes, self.level = send, min_bytes, level
        self.start: Message | None = None
        self.held: list[bytes] = []
        self.held_bytes = 0
        self.mode = "deciding"  # then "plain" or "gzip"
        self.gzip: Any = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.start = message
            if not self._compressible(message):
                self.mode = "plain"
                await self._send(message)
            return
        if kind != "http.response.body" or self.mode == "plain":
            await self._flush_plain()
            await self._send(message)
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if self.mode == "gzip":
            await self._send(
                {"type": "http.response.body", "body": await self._compress(body, more), "more_body": more}
            )
            return
        self.held.append(body)
        self.held_bytes += len(body)
        if self.held_bytes < self.min_bytes:
            if not more:
                await self._flush_plain()
            return
        # Large enough: compress from here on.
        assert self.start is not None
        self.mode = "gzip"
        self.gzip = zlib.compressobj(self.level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        held, self.held = b"".join(self.held), []
        data = await self._compress(held, more)
        headers = [(k, v) for k, v in self.start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-encoding", b"gzip"))
        headers.append((b"vary", b"Accept-Encoding"))
        if not more:
            headers.append((b"content-length", str(len(data)).encode()))
        await self._send({**self.start, "headers": headers})
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    def _compressible(self, start: Message) -> bool:
        if start.get("status", 200) < 200 or start.get("status") in (204, 304):
            return False
        for key, value in start.get("headers", []):
            name = key.lower()
            if name == b"content-encoding":
                return False
            if name == b"content-type" and value.decode("latin-1").lower().startswith(SKIPPED_TYPES):
                return False
        return True

    async def _flush_plain(self) -> None:
        """Send what is held as it is (the answer ended small, or something other than body came)."""
        if self.mode == "deciding" and self.start is not None:
            self.mode = "plain"
            await self._send(self.start)
            held, self.held = b"".join(self.held), []
            await self._send({"type": "http.response.body", "body": held, "more_body": False})

    async def _compress(self, data: bytes, more: bool) -> bytes:
        gzip = self.gzip

        def run() -> bytes:
            out = gzip.compress(data)
            return out + gzip.flush(zlib.Z_SYNC_FLUSH if more else zlib.Z_FINISH)

        if len(data) >= INLINE_BYTES:
            return await anyio.to_thread.run_sync(run)
        return run()


class BodyRefused(Exception):
    """A compressed request body that cannot be used: (status, errorCode, message)."""

    def __init__(self, status: int, code: int, message: str) -> None:
        self.status, self.code = status, code
        super().__init__(message)


class DecompressedBodies:
    """Decompress gzip and deflate request bodies as the app reads them, at most `max_bytes` of them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"content-encoding")
        codings = [c.strip().lower() for c in header.split(",") if c.strip() and c.strip().lower() != "identity"]
        if not codings:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if len(codings) > 1 or codings[0] not in ("gzip", "x-gzip", "deflate"):
            await _refuse(
                send,
                path,
                BodyRefused(
                    415,
                    UNSUPPORTED_ENCODING,
                    f"Unsupported Content-Encoding {header!r}; pyqd reads gzip and deflate request bodies",
                ),
            )
            return
        # The app sees the decompressed body: no encoding, and no length (it is not the wire's any more).
        headers = [(k, v) for k, v in scope.get("headers") or () if k not in (b"content-encoding", b"content-length")]
        body = _Inflating(receive, codings[0], self.max_bytes)
        started = replaced = False

        async def guarded_send(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                return
            if body.refused is not None and not started:
                # The app answered a body it could not read (FastAPI turns any such error into its own 400): the
                # answer says why instead.
                replaced = True
                await _refuse(send, path, body.refused)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app({**scope, "headers": headers}, body.receive, guarded_send)
        except Exception:
            if body.refused is None or started or replaced:
                raise
            await _refuse(send, path, body.refused)


class _Inflating:
    """The request body, decompressed a bounded piece at a time."""

    def __init__(self, receive: Receive, coding: str, max_bytes: int) -> None:
        self._receive, self.coding, self.max_bytes = receive, coding, max_bytes
        self.inflater: Any = None
        #: Compressed bytes that wait for more from the wire (too few to tell what they start), and bytes ready to
        #: be inflated (a further gzip member, when a piece filled up before it).
        self.pending = b""
        self.leftover = b""
        self.total = 0
        self.wire_done = False
        #: The last piece of the body was handed on.
        self.ended = False
        self.refused: BodyRefused | None = None

    async def receive(self) -> Message:
        if self.refused is not None:
            raise self.refused
        try:
            return await self._next()
        except BodyRefused as e:
            self.refused = e
            raise

    async def _next(self) -> Message:
        if self.ended:
            # The whole body was handed on: what comes now is the wire's (http.disconnect), waited for there.
            return await self._receive()
        while True:
            if self.inflater is not None and self.inflater.unconsumed_tail:
                return self._message(self._inflate(self.inflater.unconsumed_tail))
            if self.leftover:
                data, self.leftover = self.leftover, b""
                return self._message(self._inflate(data))
            if self.wire_done:
                return self._message(b"")
            message = await self._receive()
            if message["type"] != "http.request":
                return message
            self.wire_done = not message.get("more_body", False)
            data, self.pending = self.pending + message.get("body", b""), b""
            if self.inflater is None:
                if len(data) < 2 and not self.wire_done:
                    self.pending = data  # two bytes tell zlib's wrapping from raw deflate
                    continue
                if not data:
                    continue
                self.inflater = _inflater(self.coding, data)
            piece = self._inflate(data)
            if piece or self.wire_done:
                return self._message(piece)

    def _message(self, piece: bytes) -> Message:
        more = not self.wire_done or bool(self.leftover) or bool(self.inflater and self.inflater.unconsumed_tail)
        if not more and (self.pending or (self.inflater is not None and not self.inflater.eof)):
            raise BodyRefused(400, INVALID_PARAMETER.code, f"The request body's {self.coding} data is cut short")
        self.ended = not more
        return {"type": "http.request", "body": piece, "more_body": more}

    def _inflate(self, data: bytes) -> bytes:
        out: list[bytes] = []
        produced = 0
        while data:
            if produced >= PIECE_BYTES:
                self.leftover = data
                break
            if self.inflater.eof:  # a member ended and more follows
                if self.coding == "deflate":
                    raise BodyRefused(400, INVALID_PARAMETER.code, "The request body has data after its deflate end")
                if len(data) < 2 and not self.wire_done:
                    self.pending = data
                    break
                if not data.startswith(b"\x1f\x8b"):
                    raise BodyRefused(400, INVALID_PARAMETER.code, "The request body has data after its gzip end")
                self.inflater = _inflater(self.coding, data)  # another gzip member (RFC 1952 allows several)
            try:
                piece = self.inflater.decompress(data, PIECE_BYTES - produced)
            except zlib.error as e:
                raise BodyRefused(
                    400, INVALID_PARAMETER.code, f"The request body is not valid {self.coding} data: {e}"
                ) from None
            produced += len(piece)
            self.total += len(piece)
            if self.total > self.max_bytes:
                raise BodyRefused(
                    413,
                    TOO_LARGE.code,
                    f"The request body decompresses to more than the limit of {self.max_bytes} bytes",
                )
            out.append(piece)
            # the rest: after this member's end, or (the piece being full) kept by the inflater, or nothing
            data = self.inflater.unused_data if self.inflater.eof else b""
        return b"".join(out)


def _inflater(coding: str, head: bytes) -> Any:
    if coding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    # HTTP's deflate is zlib-wrapped (RFC 9110 §8.4.1.2); some clients send raw deflate: tell them by the header.
    wrapped = len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0
    return zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)


async def _refuse(send: Send, path: str, refused: BodyRefused) -> None:
    body = error_body(path, refused.status, refused.code, str(refused))
    await send(
        {
            "type": "http.response.start",
            "status": refused.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
