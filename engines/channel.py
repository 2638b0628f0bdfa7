"""The framed channel between the server and a worker: msgpack headers plus raw byte blobs, never pickle.

Grammar (both directions, over one AF_UNIX stream socket pair; integers big-endian):

    message := prefix header blob*
    prefix  := u32 header_length  u32 blob_count
    header  := msgpack map (str keys; values nil/bool/int/float/str/bin/array/map), header_length bytes
    blob    := u64 blob_length  blob_length bytes

The header's `"t"` names the message; its other fields are listed in `engines.wire`. Blobs carry what is
large or opaque: Arrow IPC streams (input data), rendered JSON, PNG images, a pickled value for the Python
client (the server forwards it, never opens it), a bridged request's body. Reading is bounded: a reader
refuses a header over `max_header` bytes, more than `MAX_BLOBS` blobs, or blobs over `max_total` bytes in all,
and a msgpack document that does not decode to a map. Decoding msgpack runs no code. Whatever breaks these
rules raises `ChannelError`; the server then treats the worker as crashed and kills it.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any

import msgpack

#: Most blobs in one message.
MAX_BLOBS = 100_000
#: Default largest header, bytes.
MAX_HEADER = 64 * 1024 * 1024
#: Default most items of one msgpack array or map in a header.
MAX_ITEMS = 1_000_000
#: Default largest total of a message's blobs, bytes.
MAX_TOTAL = 4 * 1024**3
#: Most bytes a read reserves ahead of what has arrived (for a large blob, read straight into its buffer).
_RECV_WINDOW = 4 * 1024 * 1024
#: Bytes asked of the socket per read for small messages (kept in the channel's buffer, so one read usually
#: brings a whole message: prefix, header and blobs).
_READ_SIZE = 256 * 1024
#: Messages up to this size are joined and sent in one piece; larger ones go as a gather list (no copy).
_JOIN_BYTES = 64 * 1024
#: Most buffers handed to one sendmsg (the kernel's IOV_MAX is 1024).
_MAX_IOV = 512
_PREFIX = struct.Struct("!II")
_BLOB = struct.Struct("!Q")


class ChannelError(Exception):
    """The peer sent something that is not a well-formed message (or broke a size bound)."""


class ChannelClosed(EOFError):
    """The peer closed the channel (or the process at the other end died)."""


class ChannelTimeout(TimeoutError):
    """The deadline passed before a whole message arrived (a peer that sends part of a frame and stops)."""


Blob = bytes | bytearray | memoryview


class Channel:
    """One end of the channel. Not thread-safe: one sender and one receiver at a time.

    The socket stays in blocking mode: without a deadline, a read or write is one blocking system call; with
    one, the call does not wait (MSG_DONTWAIT) and poll() waits for the socket up to the deadline. Reads go
    through a buffer, so a small message costs one read however many parts it has."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        max_header: int = MAX_HEADER,
        max_total: int = MAX_TOTAL,
        max_items: int = MAX_ITEMS,
    ) -> None:
        self.sock = sock
        self.max_header, self.max_total, self.max_items = max_header, max_total, max_items
        #: Bytes read but not yet taken: `_buf[_start:]`.
        self._buf = bytearray()
        self._start = 0
        self._chunk: memoryview | None = None
        self._in = select.poll()  # not select(): a busy server has descriptors past FD_SETSIZE
        self._in.register(sock, select.POLLIN)
        self._out = select.poll()
        self._out.register(sock, select.POLLOUT)

    # -- sending ---------------------------------------------------------------------------------------
    def send(self, header: dict[str, Any], blobs: Sequence[Blob] = (), deadline: float | None = None) -> None:
        """Send one message; with `deadline`, ChannelTimeout if the peer has not taken it all by then (a peer
        that stops reading must not hold the sender forever)."""
        packed = msgpack.packb(header, use_bin_type=True)
        parts: list[Blob] = [_PREFIX.pack(len(packed), len(blobs)), packed]
        size = len(parts[0]) + len(packed)
        for blob in blobs:
            n = memoryview(blob).nbytes
            parts.append(_BLOB.pack(n))
            parts.append(blob)
            size += _BLOB.size + n
        try:
            if size <= _JOIN_BYTES:
                self._send_all([b"".join(parts)], deadline)
            else:
                self._send_all([memoryview(p).cast("B") for p in parts if len(p)], deadline)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise ChannelClosed(str(e)) from None

    def _send_all(self, parts: list[Any], deadline: float | None) -> None:
        flags = socket.MSG_NOSIGNAL | (0 if deadline is None else socket.MSG_DONTWAIT)
        i = 0
        while i < len(parts):
            try:
                sent = self.sock.sendmsg(parts[i : i + _MAX_IOV], (), flags)
            except BlockingIOError:
                assert deadline is not None
                if not self._out.poll(_ms(deadline - time.monotonic())):
                    raise ChannelTimeout("the peer did not take the message in time") from None
                continue
            while sent:  # step over what went out (the last buffer may have gone in part)
                n = len(parts[i])
                if sent >= n:
                    sent -= n
                    i += 1
                else:
                    parts[i] = memoryview(parts[i])[sent:]
                    sent = 0

    # -- receiving -------------------------------------------------------------------------------------
    def poll(self, timeout: float | None) -> bool:
        """Whether a message (or end of file) can be read within `timeout` seconds."""
        if len(self._buf) > self._start:
            return True
        return bool(self._in.poll(None if timeout is None else _ms(timeout)))

    def recv(self, deadline: float | None = None) -> tuple[dict[str, Any], list[Blob]]:
        """The next message: its header (a dict with a str `t`) and its blobs. With `deadline` (a
        `time.monotonic()` value), ChannelTimeout if the whole message has not arrived by then."""
        header_len, count = _PREFIX.unpack(self._take(_PREFIX.size, deadline))
        if header_len > self.max_header:
            raise ChannelError(f"header of {header_len} bytes (at most {self.max_header})")
        if count > MAX_BLOBS:
            raise ChannelError(f"{count} blobs (at most {MAX_BLOBS})")
        packed = self._take(header_len, deadline)
        header = decode_header(packed, self.max_items)
        blobs: list[Blob] = []
        total = 0
        for _ in range(count):
            (size,) = _BLOB.unpack(self._take(_BLOB.size, deadline))
            total += size
            if total > self.max_total:
                raise ChannelError(f"blobs over {self.max_total} bytes")
            blobs.append(self._take(size, deadline))
        return header, blobs

    def _take(self, n: int, deadline: float | None) -> Blob:
        """The next `n` bytes (a bytearray when large, to save a copy)."""
        buffered = len(self._buf) - self._start
        if n > buffered and n >= _READ_SIZE:
            return self._exact(n, deadline)
        while buffered < n:
            self._fill(deadline)
            buffered = len(self._buf) - self._start
        out = bytes(memoryview(self._buf)[self._start : self._start + n])
        self._start += n
        if self._start == len(self._buf):
            self._buf.clear()
            self._start = 0
        return out

    def _fill(self, deadline: float | None) -> None:
        """Read what has arrived (at least one byte) into the buffer."""
        if self._chunk is None:
            self._chunk = memoryview(bytearray(_READ_SIZE))
        k = self._read_into(self._chunk, deadline)
        if self._start:
            del self._buf[: self._start]
            self._start = 0
        self._buf += self._chunk[:k]

    def _exact(self, n: int, deadline: float | None) -> bytearray:
        """Exactly `n` bytes: what is buffered, then straight from the socket. Memory grows as the bytes arrive, a
        window at a time: a peer that announces a huge blob and sends nothing costs nothing."""
        buf = bytearray(memoryview(self._buf)[self._start :])
        self._buf.clear()
        self._start = 0
        while len(buf) < n:
            got = len(buf)
            want = min(n - got, _RECV_WINDOW)
            buf.extend(bytes(want))  # room for the next window, filled in place
            view = memoryview(buf)[got:]
            try:
                k = self._read_into(view, deadline, f"{got} of {n} bytes arrived in time")
            finally:
                view.release()  # (a traceback would keep it alive, and a bytearray in view cannot shrink)
            del buf[got + k :]
        return buf

    def _read_into(
        self, view: memoryview, deadline: float | None, late: str = "a message did not arrive in time"
    ) -> int:
        """One read of at most len(view) bytes (at least one); ChannelClosed at end of file."""
        while True:
            if deadline is not None and not self._in.poll(_ms(deadline - time.monotonic())):
                raise ChannelTimeout(late)
            try:
                k = self.sock.recv_into(view, len(view), 0 if deadline is None else socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue  # woken for nothing: wait again
            except ConnectionResetError:
                k = 0
            if k == 0:
                raise ChannelClosed("the channel was closed")
            return k

    def close(self) -> None:
        self.sock.close()

    def shutdown(self) -> None:
        """End both directions now (a thread blocked reading sees end of file); the socket stays open."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def fileno(self) -> int:
        return self.sock.fileno()


def decode_header(packed: Blob, max_items: int = MAX_ITEMS) -> dict[str, Any]:
    """A message header: a msgpack map with a str `t`, decoded with bounds (an empty array is 1 byte, so the
    container bounds cap what a small header can cost); ChannelError otherwise. Decoding msgpack runs no code."""
    size = len(packed)
    try:
        header = msgpack.unpackb(
            packed,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=max_items,
            max_map_len=max_items,
            max_ext_len=0,
        )
    except Exception as e:  # noqa: BLE001 - any decoding failure is a protocol error
        raise ChannelError(f"undecodable header: {type(e).__name__}") from None
    if not isinstance(header, dict) or not isinstance(header.get("t"), str):
        raise ChannelError("the header is not a map with a message type")
    return header


def _ms(seconds: float) -> int:
    """A poll() timeout: milliseconds, rounded up, never negative."""
    return max(0, int(seconds * 1000 + 0.999))
