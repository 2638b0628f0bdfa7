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
#: Most bytes a read reserves ahead of what has arrived.
_RECV_WINDOW = 4 * 1024 * 1024
#: Bytes copied per send call when a message is large.
_SEND_CHUNK = 1 << 20
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
    """One end of the channel. Not thread-safe: one sender and one receiver at a time."""

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

    # -- sending ---------------------------------------------------------------------------------------
    def send(self, header: dict[str, Any], blobs: Sequence[Blob] = (), deadline: float | None = None) -> None:
        """Send one message; with `deadline`, ChannelTimeout if the peer has not taken it all by then (a peer
        that stops reading must not hold the sender forever)."""
        packed = msgpack.packb(header, use_bin_type=True)
        parts: list[Blob] = [_PREFIX.pack(len(packed), len(blobs)), packed]
        for blob in blobs:
            parts.append(_BLOB.pack(len(blob)))
            parts.append(blob)
        if deadline is not None:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            if sum(len(p) for p in parts) <= _SEND_CHUNK:
                self.sock.sendall(b"".join(parts))
            else:
                for part in parts:
                    if deadline is not None:
                        self.sock.settimeout(max(0.001, deadline - time.monotonic()))
                    self.sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise ChannelClosed(str(e)) from None
        except TimeoutError:
            raise ChannelTimeout("the peer did not take the message in time") from None
        finally:
            if deadline is not None:
                self.sock.settimeout(None)

    # -- receiving -------------------------------------------------------------------------------------
    def poll(self, timeout: float | None) -> bool:
        """Whether a message (or end of file) can be read within `timeout` seconds."""
        poller = select.poll()  # not select(): a busy server has descriptors past FD_SETSIZE
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999))))

    def recv(self, deadline: float | None = None) -> tuple[dict[str, Any], list[Blob]]:
        """The next message: its header (a dict with a str `t`) and its blobs. With `deadline` (a
        `time.monotonic()` value), ChannelTimeout if the whole message has not arrived by then."""
        header_len, count = _PREFIX.unpack(self._exact(_PREFIX.size, deadline))
        if header_len > self.max_header:
            raise ChannelError(f"header of {header_len} bytes (at most {self.max_header})")
        if count > MAX_BLOBS:
            raise ChannelError(f"{count} blobs (at most {MAX_BLOBS})")
        packed = self._exact(header_len, deadline)
        try:  # the container bounds cap what a small header can cost once decoded (an empty array is 1 byte)
            header = msgpack.unpackb(
                packed,
                raw=False,
                strict_map_key=True,
                use_list=True,
                max_str_len=header_len,
                max_bin_len=header_len,
                max_array_len=self.max_items,
                max_map_len=self.max_items,
                max_ext_len=0,
            )
        except Exception as e:  # noqa: BLE001 - any decoding failure is a protocol error
            raise ChannelError(f"undecodable header: {type(e).__name__}") from None
        if not isinstance(header, dict) or not isinstance(header.get("t"), str):
            raise ChannelError("the header is not a map with a message type")
        blobs: list[Blob] = []
        total = 0
        for _ in range(count):
            (size,) = _BLOB.unpack(self._exact(_BLOB.size, deadline))
            total += size
            if total > self.max_total:
                raise ChannelError(f"blobs over {self.max_total} bytes")
            blobs.append(self._exact(size, deadline))
        return header, blobs

    def _exact(self, n: int, deadline: float | None) -> Blob:
        """Exactly `n` bytes (a bytearray when large, to save a copy). Memory grows as the bytes arrive, a
        window at a time: a peer that announces a huge blob and sends nothing costs nothing."""
        buf = bytearray()
        while len(buf) < n:
            if deadline is not None and not self.poll(deadline - time.monotonic()):
                raise ChannelTimeout(f"{len(buf)} of {n} bytes arrived in time")
            got = len(buf)
            want = min(n - got, _RECV_WINDOW)
            buf.extend(bytes(want))  # room for the next window, filled in place
            try:
                k = self.sock.recv_into(memoryview(buf)[got:], want)
            except ConnectionResetError:
                k = 0
            del buf[got + k :]
            if k == 0:
                raise ChannelClosed("the channel was closed")
        return bytes(buf) if n < 4096 else buf

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
