"""Cache invalidation across servers on one PostgreSQL: LISTEN/NOTIFY on one channel.

A change forgets what it invalidates in this server's lookup caches (`Services.forget_*`) right after its commit,
then publishes the same forget as a NOTIFY on `CHANNEL` with a small JSON payload (`encode`). Every server runs a
`Listener`: a daemon thread with a connection of its own doing LISTEN, which applies each forget it hears to its
own caches (`Services.apply_forget`). On SQLite (one host) nothing is published and nothing listens.

Why after the commit and not inside the change's transaction (where PostgreSQL would deliver the notice only if
the change commits): the forget methods run after the commit at some twenty call sites and take no session, and
the notice is only ever a reason to forget. A server that dies between its commit and its NOTIFY leaves the others
stale for at most PYQD_LOOKUP_CACHE_S, as before this module; a NOTIFY that could not be sent is logged, never
turned into a failed request for a change that is already stored. A notice never carries a value, so one that
comes from anyone else connected to the database can only make caches forget (cost, not correctness).

A listener that loses its connection reconnects with backoff, and once it listens again it forgets everything:
notices sent while it was away are lost. A payload it cannot read is logged and ignored; a well-formed one of a
kind it does not know (a newer server during an upgrade) forgets everything, so nothing it should act on is missed.
"""

from __future__ import annotations

import enum
import logging
import os
import random
import selectors
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("pyqd.notify")

#: The channel every pyqd server of one database publishes on and listens to.
CHANNEL = "pyqd_invalidate"
#: PostgreSQL refuses payloads of 8000 bytes or more; a longer forget is sent as "forget everything".
MAX_PAYLOAD_BYTES = 7900
#: Seconds without a notice after which the listener checks its connection (a silent network loss shows no event).
PING_S = 30.0
#: Seconds between reconnection attempts: doubled after each failure, up to the second value, with jitter.
BACKOFF_S = (0.1, 5.0)
#: Seconds a server's start waits for its listener's first LISTEN (it starts anyway, and listens once it can).
START_WAIT_S = 5.0
#: libpq settings of the listener's connection: notice a dead peer in tens of seconds, not the kernel's minutes.
LISTEN_CONNECTION = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
    "application_name": "pyqd-listener",
}


class Kind(enum.StrEnum):
    #: Checked token sessions of a user, one session or an API client (`user`, `sid`, `client_id`).
    SESSIONS = "sessions"
    #: Every lookup of the scripts called `name`.
    SCRIPT = "script"
    #: Every script lookup and the datastore generation.
    SCRIPTS = "scripts"
    #: The datastore generation.
    DATASTORE_GENERATION = "datastore-generation"
    #: Every deployment lookup.
    DEPLOYMENTS = "deployments"
    #: Everything in every lookup cache.
    EVERYTHING = "everything"


@dataclass(frozen=True)
class Forget:
    """What a change invalidates: a kind and, for some kinds, whose entries."""

    kind: Kind
    user: str | None = None
    sid: str | None = None
    client_id: str | None = None
    name: str | None = None


EVERYTHING = Forget(Kind.EVERYTHING)
_FIELDS = ("user", "sid", "client_id", "name")


class BadPayload(ValueError):
    """A notice on the channel that is not a forget this module wrote."""


def encode(forget: Forget, origin: str) -> str:
    """The notice's payload: `{"from": origin, "kind": ..., <fields that are set>}`."""
    doc: dict[str, Any] = {"from": origin, "kind": forget.kind.value}
    doc.update({f: getattr(forget, f) for f in _FIELDS if getattr(forget, f) is not None})
    payload = orjson.dumps(doc).decode()
    if len(payload.encode()) > MAX_PAYLOAD_BYTES:
        return encode(EVERYTHING, origin)
    return payload


def decode(payload: str) -> tuple[str | None, Forget]:
    """The sender and the forget of a payload; a kind this server does not know forgets everything. Raises
    BadPayload when the payload is not a JSON object of strings with a kind."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise BadPayload(f"not JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str):
        raise BadPayload("not an object with a kind")
    if any(v is not None and not isinstance(v, str) for v in doc.values()):
        raise BadPayload("a field that is not a string")
    origin = doc.get("from")
    try:
        kind = Kind(doc["kind"])
    except ValueError:
        log.warning("forgetting everything for a notice of an unknown kind %r", doc["kind"][:64])
        return origin, EVERYTHING
    forget = Forget(kind, **{f: doc.get(f) for f in _FIELDS})
    if kind == Kind.SCRIPT and forget.name is None:
        raise BadPayload("a script notice without a name")
    return origin, forget


def publish(engine: Engine, forget: Forget, origin: str) -> None:
    """Tell the other servers of this database to forget (PostgreSQL only; logged, never raised, on failure)."""
    if engine.dialect.name != "postgresql":
        return
    try:
        with engine.connect() as conn:
            payload = encode(forget, origin)
            conn.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload})
            conn.commit()
    except SQLAlchemyError:
        log.warning(
            "could not tell the other servers to forget %s; they see the change within PYQD_LOOKUP_CACHE_S",
            forget,
            exc_info=True,
        )


def connector(engine: Engine) -> Callable[[], psycopg.Connection[Any]]:
    """Opens a connection of its own to the engine's database, for LISTEN (autocommit, with keepalives)."""
    _, params = engine.dialect.create_connect_args(engine.url)
    params.pop("context", None)  # SQLAlchemy's adapters, not a connection setting
    settings = {**LISTEN_CONNECTION, **params}
    return lambda: psycopg.connect(autocommit=True, **settings)


class Listener:
    """A daemon thread that LISTENs on `CHANNEL` and applies every other server's forget through `apply`."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        apply: Callable[[Forget], None],
        origin: str,
        *,
        ping_s: float = PING_S,
        backoff_s: tuple[float, float] = BACKOFF_S,
    ) -> None:
        self._connect, self._apply, self.origin = connect, apply, origin
        self.ping_s, self.backoff_s = ping_s, backoff_s
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        #: Times a LISTEN was established (the first connection and each reconnection).
        self.connections = 0

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    def start(self, wait_s: float = START_WAIT_S) -> bool:
        """Start listening; waits up to `wait_s` for the first LISTEN and says whether it is in place."""
        self._thread = threading.Thread(target=self._run, name="pyqd-notify", daemon=True)
        self._thread.start()
        return self._listening.wait(wait_s)

    def stop(self) -> None:
        """Stop and close the connection (at once: the thread's wait is woken). Once only: a second call does
        nothing (the pipe's descriptors, closed, may belong to another file by then)."""
        if self._stop.is_set():
            return
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():  # stuck in a connect or a check: it ends by itself; keep its pipe open
                log.warning("the cache invalidation listener did not stop within 10 s")
                return
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        delay = self.backoff_s[0]
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except psycopg.Error as e:
                log.warning("cache invalidation listener cannot connect (%s); retrying in %.1f s", e, delay)
            else:
                try:
                    conn.execute(f"LISTEN {CHANNEL}")
                    # Whatever was cached before this LISTEN may have missed a notice: forget it once.
                    self._deliver(EVERYTHING)
                    self.connections += 1
                    self._listening.set()
                    delay = self.backoff_s[0]
                    self._serve(conn)
                except psycopg.Error as e:
                    if not self._stop.is_set():
                        log.warning("cache invalidation listener lost its connection (%s); reconnecting", e)
                finally:
                    self._listening.clear()
                    conn.close()
            if self._stop.wait(delay * random.uniform(0.5, 1.0)):
                return
            delay = min(delay * 2, self.backoff_s[1])

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(conn.fileno(), selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not sel.select(timeout=self.ping_s):
                    conn.execute("SELECT 1")  # raises if the connection died silently; notices wait in a backlog
                if self._stop.is_set():
                    return
                for notice in conn.notifies(timeout=0):
                    self._receive(notice.payload)

    def _receive(self, payload: str) -> None:
        try:
            origin, forget = decode(payload)
        except BadPayload as e:
            log.warning("ignored a malformed cache invalidation notice (%s): %.200r", e, payload)
            return
        if origin != self.origin:  # this server forgot before it published
            self._deliver(forget)

    def _deliver(self, forget: Forget) -> None:
        try:
            self._apply(forget)
        except Exception:  # noqa: BLE001 - a bug in one forget must not stop the listening
            log.exception("applying %s failed", forget)
