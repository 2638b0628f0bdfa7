"""The relay (pyqd internal): a script running on a Dask worker reaches the API through here. The Dask worker
sends its pyqd worker's `import oml` request as msgpack, with the call's script token; the request is then
checked and served by this server's bridge (`server.bridge`) exactly as a local call's would be: the same grammar,
the same narrow token, the same read-only rule. Only a script token may use it. Hidden from OpenAPI."""

from __future__ import annotations

import functools

import anyio
import msgpack
from fastapi import APIRouter, FastAPI, Request, Response

from engines.dask import RELAY_MEDIA_TYPE, RELAY_PATH
from engines.errors import PoolBusy
from server.auth.errors import Forbidden
from server.bridge import BRIDGE_CLIENT
from server.deps import CurrentUser, ServicesDep
from server.errors import BadRequest

router = APIRouter()

#: Relayed requests this server serves at once, and at once for one user. Each holds a thread while the bridge
#: serves it, from a pool of their own: the server's threads (anyio's default limiter) stay for everything else.
RELAY_THREADS = 16
RELAY_THREADS_PER_USER = 8


@router.post(RELAY_PATH, include_in_schema=False)
async def relay(request: Request, caller: CurrentUser, services: ServicesDep) -> Response:
    if not caller.claims.is_script:
        raise Forbidden("Only a script's token may use the relay")
    if request.client is not None and request.client.host == BRIDGE_CLIENT:
        # A script's own request (the bridge refuses this path too): a relay inside the relay would hold a thread
        # of the bridge per level.
        raise Forbidden("A script may not use the relay")
    if request.headers.get("content-type") != RELAY_MEDIA_TYPE:
        raise BadRequest(f"The relay takes {RELAY_MEDIA_TYPE}")
    bridge = services.bridge
    if bridge is None:
        raise PoolBusy()
    raw = await request.body()
    try:
        method, path, headers, body, read_only = msgpack.unpackb(
            raw, raw=False, max_ext_len=0, max_array_len=1024, max_map_len=0
        )
        message = ("http", method, path, [tuple(h) if isinstance(h, list) else h for h in headers], body)
        read_only = bool(read_only) or caller.claims.read_only  # the token says so too: a Dask worker cannot unsay it
    except Exception:  # noqa: BLE001 - whatever fails to decode is a bad request
        raise BadRequest("The relayed request is not [method, path, headers, body, read_only] in msgpack") from None
    token = request.headers["authorization"].split(" ", 1)[1].strip()
    serve = functools.partial(bridge.handle, message, lambda: token, read_only)
    total, mine = _limiters(request.app, caller.name)
    async with mine:  # the rest wait here, holding no thread
        _, status, out_headers, out_body = await anyio.to_thread.run_sync(serve, limiter=total)
    packed = msgpack.packb([status, [list(h) for h in out_headers], out_body], use_bin_type=True)
    return Response(packed, media_type=RELAY_MEDIA_TYPE)


def _limiters(app: FastAPI, user: str) -> tuple[anyio.CapacityLimiter, anyio.CapacityLimiter]:
    """The server's limiter of relay threads, and the user's share of it (made on first use, in the app's loop)."""
    limiters: tuple[anyio.CapacityLimiter, dict[str, anyio.CapacityLimiter]] | None
    limiters = getattr(app.state, "relay_limiters", None)
    if limiters is None:
        limiters = (anyio.CapacityLimiter(RELAY_THREADS), {})
        app.state.relay_limiters = limiters
    total, per_user = limiters
    if user not in per_user:
        per_user[user] = anyio.CapacityLimiter(RELAY_THREADS_PER_USER)
    return total, per_user[user]


def install(app: FastAPI) -> None:
    app.include_router(router)
