"""Cache invalidation across servers (server.notify): payloads, and two sets of services on one real PostgreSQL
database, where a forget on one reaches the other's caches through LISTEN/NOTIFY, a listener that loses its
connection comes back and forgets everything, and a malformed notice is ignored."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import create_engine

from server import notify
from server.auth.tokens import SessionKey
from server.notify import EVERYTHING, BadPayload, Forget, Kind, decode, encode
from server.services import DATASTORE_GENERATION, Services, open_services
from server.settings import Settings
from tests.conftest import PG_ADMIN_DSN, wait_for

POSTGRESQL_ONLY = pytest.mark.parametrize("settings", ["postgresql"], indirect=True)

# -- payloads ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "forget",
    [
        Forget(Kind.SESSIONS, user="ALICE"),
        Forget(Kind.SESSIONS, sid="s-1"),
        Forget(Kind.SESSIONS, client_id="c-1"),
        Forget(Kind.SCRIPT, name="f"),
        Forget(Kind.SCRIPTS),
        Forget(Kind.DATASTORE_GENERATION),
        Forget(Kind.DEPLOYMENTS),
        EVERYTHING,
    ],
)
def test_a_forget_survives_its_payload(forget):
    assert decode(encode(forget, "me")) == ("me", forget)


@pytest.mark.parametrize(
    "payload",
    ["", "garbage", "[1, 2]", '{"from": "x"}', '{"kind": 3}', '{"kind": "script", "name": 7}', '{"kind": "script"}'],
)
def test_a_malformed_payload_is_refused(payload):
    with pytest.raises(BadPayload):
        decode(payload)


def test_a_kind_this_server_does_not_know_forgets_everything():
    assert decode('{"from": "newer", "kind": "models-v9", "name": "x"}') == ("newer", EVERYTHING)


def test_a_forget_too_long_for_a_notice_is_sent_as_forget_everything():
    payload = encode(Forget(Kind.SCRIPT, name="x" * 10_000), "me")
    assert len(payload) < notify.MAX_PAYLOAD_BYTES and decode(payload) == ("me", EVERYTHING)


# -- two servers on one database ---------------------------------------------------------------------------------


@pytest.fixture
def pair(settings: Settings) -> Iterator[tuple[Services, Services]]:
    """Two servers' services on one database, both listening."""
    settings.lookup_cache_s = 300  # far longer than any test: only a forget drops an entry
    a, b = open_services(settings), open_services(settings, migrate=False)
    for svc in (a, b):
        svc.start_listening()
    yield a, b
    for svc in (a, b):
        svc.close()


def cached(svc: Services) -> dict[str, object]:
    return {
        "alice": svc.auth_cache.get(SessionKey("s-1", "ALICE", 1, None, False)),
        "bob": svc.auth_cache.get(SessionKey("s-2", "BOB", 1, "c-2", False)),
        "f": svc.script_cache.get(("ALICE", "f", None)),
        "g": svc.script_cache.get(("ALICE", "g", None)),
        "gen": svc.script_cache.get(DATASTORE_GENERATION),
        "uri": svc.deployment_cache.get("uri"),
    }


def fill(svc: Services) -> None:
    for key, cache in [
        (SessionKey("s-1", "ALICE", 1, None, False), svc.auth_cache),
        (SessionKey("s-2", "BOB", 1, "c-2", False), svc.auth_cache),
        (("ALICE", "f", None), svc.script_cache),
        (("ALICE", "g", None), svc.script_cache),
        (DATASTORE_GENERATION, svc.script_cache),
        ("uri", svc.deployment_cache),
    ]:
        cache.put(key, "cached", cache.epoch)  # type: ignore[arg-type]


def gone(svc: Services, *names: str) -> bool:
    now = cached(svc)
    return all(now[n] is None for n in names)


@POSTGRESQL_ONLY
@pytest.mark.parametrize(
    ("forget", "dropped"),
    [
        (lambda s: s.forget_sessions(user="ALICE"), {"alice"}),
        (lambda s: s.forget_sessions(sid="s-2"), {"bob"}),
        (lambda s: s.forget_sessions(client_id="c-2"), {"bob"}),
        (lambda s: s.forget_script("f"), {"f"}),
        (lambda s: s.forget_scripts(), {"f", "g", "gen"}),
        (lambda s: s.forget_datastore_generation(), {"gen"}),
        (lambda s: s.forget_deployments(), {"uri"}),
    ],
)
def test_a_forget_on_one_server_reaches_the_other_and_drops_only_what_it_names(pair, forget, dropped):
    a, b = pair
    fill(a), fill(b)
    started = time.monotonic()
    forget(a)
    assert gone(a, *dropped)  # at once, here
    wait_for(lambda: gone(b, *dropped), timeout=10, interval=0.005)
    assert time.monotonic() - started < 5  # milliseconds in practice; far under the 300 s the entries live
    kept = set(cached(b)) - dropped
    assert {n for n, v in cached(b).items() if v is not None} == kept
    assert {n for n, v in cached(a).items() if v is not None} == kept


def pg_notify(database_url: str, payload: str) -> None:
    """A NOTIFY from outside pyqd (any role connected to the database may send one)."""
    conninfo = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    conninfo["dbname"] = database_url.rsplit("/", 1)[1]
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (notify.CHANNEL, payload))


@POSTGRESQL_ONLY
def test_a_malformed_notice_is_logged_and_ignored_and_the_listener_goes_on(pair, settings, caplog):
    a, b = pair
    fill(b)
    with caplog.at_level(logging.WARNING, logger="pyqd.notify"):
        for payload in ("garbage", '{"kind": "script"}', '{"kind": ["everything"]}'):
            pg_notify(settings.database_url, payload)
        wait_for(
            lambda: len([r for r in caplog.records if "malformed" in r.message]) == 6, timeout=10
        )  # both listeners
    assert all(v is not None for v in cached(b).values())  # nothing was forgotten for them
    a.forget_script("f")
    wait_for(lambda: gone(b, "f"), timeout=10, interval=0.005)


@POSTGRESQL_ONLY
def test_a_notice_of_an_unknown_kind_forgets_everything(pair, settings):
    _, b = pair
    fill(b)
    pg_notify(settings.database_url, '{"from": "a-newer-server", "kind": "something-new"}')
    wait_for(lambda: gone(b, *cached(b)), timeout=10, interval=0.005)


def listener_backends(database_url: str) -> list[int]:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'pyqd-listener'",
            (database_url.rsplit("/", 1)[1],),
        )
        return [r[0] for r in rows]


@POSTGRESQL_ONLY
def test_a_listener_that_lost_its_connection_comes_back_and_forgets_everything(pair, settings):
    a, b = pair
    assert b.listener is not None and b.listener.connections == 1
    assert len(listener_backends(settings.database_url)) == 2
    fill(b)
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        for pid in listener_backends(settings.database_url):
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    wait_for(lambda: b.listener is not None and b.listener.connections == 2 and b.listener.listening, timeout=20)
    assert gone(b, *cached(b))  # notices sent while it was away are lost: everything it held is forgotten
    fill(b)
    a.forget_deployments()  # and it listens again
    wait_for(lambda: gone(b, "uri"), timeout=10, interval=0.005)
    assert cached(b)["f"] is not None


@POSTGRESQL_ONLY
def test_stopping_closes_the_listening_connection_at_once(pair, settings):
    a, b = pair
    listener = a.listener
    assert listener is not None
    started = time.monotonic()
    a.stop_listening()
    b.stop_listening()
    assert time.monotonic() - started < 2
    listener.stop()  # a second stop does nothing
    wait_for(lambda: listener_backends(settings.database_url) == [], timeout=10)


def test_on_sqlite_nothing_listens_and_forgets_stay_local(sqlite_settings):
    svc = open_services(sqlite_settings)
    try:
        svc.start_listening()
        assert svc.listener is None
        fill(svc)
        svc.forget_script("f")
        assert cached(svc)["f"] is None
    finally:
        svc.close()


def test_a_notice_that_cannot_be_sent_is_logged_not_raised(caplog):
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    with caplog.at_level(logging.WARNING, logger="pyqd.notify"):
        notify.publish(engine, Forget(Kind.SCRIPT, name="f"), "me")
    assert "could not tell the other servers" in caplog.text
    engine.dispose()
