"""`import oml` inside a worker talks to the server through the worker's own channel (no network, no token):
an httpx transport that hands each request to the server and waits for its answer."""

from __future__ import annotations

import threading

import httpx

from engines import wire
from engines.channel import Channel

#: The base URL the worker's `oml` connection uses; the host part means nothing on the channel.
BRIDGE_URL = "http://pyqd.bridge"
#: Request headers that are not sent: the server decides who the request is from.
_DROPPED = (b"authorization", b"cookie", b"host")


class ChannelTransport(httpx.BaseTransport):
    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in _DROPPED]
        with self._lock:
            try:
                status, out_headers, body = wire.send_request(
                    self._channel, request.method, request.url.raw_path.decode("ascii"), headers, request.read()
                )
            except (EOFError, OSError, wire.ChannelError) as e:
                raise httpx.TransportError(f"the server did not answer the worker's request: {e}") from None
        return httpx.Response(status, headers=out_headers, content=body, request=request)
