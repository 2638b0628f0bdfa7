"""The lookup caches (token sessions, scripts, the datastore generation) with a long PYQD_LOOKUP_CACHE_S: a cache
hit really skips the database, and every change made through the server is seen by the very next request, which
only invalidation at the change can make true within 300 seconds."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from repository import service as repo
from server.auth import service as auth_service
from server.db import write_session
from server.settings import Settings
from tests.server.test_execution_oml import LOAD, save_datastore
from tests.server.test_script_identity import script_token_for

PYQD = "/oml/api/pyqd/v1"
SCRIPTS = "/oml/api/py-scripts/v1/scripts"
TOKEN = "/omlusers/api/oauth2/v1/token"
#: Far longer than any test: an entry still cached would answer every request below.
LONG_S = 300


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.lookup_cache_s = LONG_S
    return settings


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def echo(value: str) -> str:
    return f"def f():\n    return {value!r}\n"


# A hit skips the database: a change made behind the server's back (straight in the store) is not seen.


def test_a_checked_session_is_not_checked_again(api):
    alice = api.user("ALICE")
    assert api.client.get(SCRIPTS, headers=alice).status_code == 200
    claims = api.services.signer.decode(alice["Authorization"].split()[1])
    with write_session(api.services.sessions) as session:
        auth_service.revoke_session(session, claims, api.services.signer.max_age_s)
    assert api.client.get(SCRIPTS, headers=alice).status_code == 200  # the cached session
    api.services.forget_sessions(sid=claims.sid)
    assert api.client.get(SCRIPTS, headers=alice).status_code == 401


def test_a_resolved_script_is_not_looked_up_again(api):
    alice = api.user("ALICE")
    api.script(alice, "f", echo("one"))
    assert api.run(alice, "do-eval", "f").json() == {"result": "one"}
    with write_session(api.services.sessions) as session:
        repo.drop_script(session, "ALICE", "f")
    assert api.run(alice, "do-eval", "f").json() == {"result": "one"}  # the cached script
    api.services.forget_script("f")
    assert api.run(alice, "do-eval", "f").status_code == 404


def test_a_repeated_call_asks_the_metadata_database_nothing(api):
    alice = api.user("ALICE")
    api.script(alice, "f", echo("one"))
    assert api.run(alice, "do-eval", "f").json() == {"result": "one"}
    statements: list[str] = []

    def record(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        statements.append(statement)

    event.listen(api.services.engine, "before_cursor_execute", record)
    try:
        assert api.run(alice, "do-eval", "f").json() == {"result": "one"}
    finally:
        event.remove(api.services.engine, "before_cursor_execute", record)
    assert statements == []


# Each change made through the server is seen by the next request.


def test_a_revoked_token_and_its_script_tokens_are_refused_at_once(api):
    alice = api.user("ALICE")
    script = bearer(script_token_for(api, alice))
    assert api.client.get(SCRIPTS, headers=alice).status_code == 200
    assert api.client.get(f"{PYQD}/datastores", headers=script).status_code == 200
    assert api.client.post(f"{TOKEN}/revoke", headers=alice).status_code == 200
    assert api.client.get(SCRIPTS, headers=alice).status_code == 401
    assert api.client.get(f"{PYQD}/datastores", headers=script).status_code == 401


def test_a_password_change_refuses_the_old_tokens_at_once(api):
    alice = api.user("ALICE")
    script = bearer(script_token_for(api, alice))
    assert api.client.get(SCRIPTS, headers=alice).status_code == 200
    assert api.client.get(f"{PYQD}/datastores", headers=script).status_code == 200
    r = api.client.put(f"{PYQD}/admin/users/alice/password", headers=api.admin, json={"password": "a-new-password"})
    assert r.status_code == 200, r.text
    assert api.client.get(SCRIPTS, headers=alice).status_code == 401
    assert api.client.get(f"{PYQD}/datastores", headers=script).status_code == 401
    assert api.client.get(SCRIPTS, headers=api.headers("ALICE", "a-new-password")).status_code == 200


def test_a_removed_user_is_refused_at_once(api):
    bob = api.user("BOB")
    assert api.client.get(SCRIPTS, headers=bob).status_code == 200
    assert api.client.delete(f"{PYQD}/admin/users/BOB", headers=api.admin).status_code == 200
    assert api.client.get(SCRIPTS, headers=bob).status_code == 401


def test_a_removed_api_client_is_refused_at_once(api):
    api.user("ALICE")
    client = api.client.post(f"{PYQD}/admin/clients", headers=api.admin, json={"name": "apex", "user": "ALICE"})
    assert client.status_code == 201, client.text
    creds = client.json()["result"]
    r = api.client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": creds["client_id"],
            "client_secret": creds["client_secret"],
        },
    )
    headers = bearer(r.json()["access_token"])
    assert api.client.get(SCRIPTS, headers=headers).status_code == 200
    assert api.client.delete(f"{PYQD}/admin/clients/{creds['client_id']}", headers=api.admin).status_code == 200
    assert api.client.get(SCRIPTS, headers=headers).status_code == 401


def test_a_changed_or_dropped_script_is_seen_at_once(api):
    alice = api.user("ALICE")
    api.script(alice, "f", echo("one"))
    assert api.run(alice, "do-eval", "f").json() == {"result": "one"}
    api.script(alice, "f", echo("two"))
    assert api.run(alice, "do-eval", "f").json() == {"result": "two"}
    assert api.client.delete(f"{PYQD}/scripts/f", headers=alice).status_code == 200
    assert api.run(alice, "do-eval", "f").status_code == 404


def test_an_own_script_shadows_a_global_one_at_once(api):
    alice = api.user("ALICE")
    api.script(api.admin, "f", echo("global"), isGlobal=True)
    assert api.run(alice, "do-eval", "f").json() == {"result": "global"}
    api.script(alice, "f", echo("own"))
    assert api.run(alice, "do-eval", "f").json() == {"result": "own"}


def test_a_revoked_script_grant_is_seen_at_once(api):
    alice, bob = api.user("ALICE"), api.user("BOB")
    api.script(alice, "f", echo("alice's"))
    assert api.client.post(f"{PYQD}/scripts/f/grants", headers=alice, json={"user": "BOB"}).status_code == 200
    assert api.run(bob, "do-eval", "f", owner="ALICE").json() == {"result": "alice's"}
    assert api.client.delete(f"{PYQD}/scripts/f/grants/BOB", headers=alice).status_code == 200
    assert api.run(bob, "do-eval", "f", owner="ALICE").status_code == 404


def test_the_scripts_of_a_removed_user_are_gone_at_once(api):
    alice, bob = api.user("ALICE"), api.user("BOB")
    api.script(alice, "f", echo("alice's"))
    api.client.post(f"{PYQD}/scripts/f/grants", headers=alice, json={"user": "BOB"})
    assert api.run(bob, "do-eval", "f", owner="ALICE").json() == {"result": "alice's"}
    assert api.client.delete(f"{PYQD}/admin/users/ALICE", headers=api.admin).status_code == 200
    assert api.run(bob, "do-eval", "f", owner="ALICE").status_code == 404


def test_saved_and_deleted_datastores_are_seen_by_the_next_call(api):
    """Workers keep datastore metadata while the generation stays the same: a stale generation would hand the
    next call the old object."""
    alice = api.user("ALICE")
    api.script(alice, "load", LOAD)
    for value in ("first", "second", "third"):
        save_datastore(api, alice, "ds", {"x": value})
        assert api.run(alice, "do-eval", "load").json() == {"result": value}
    put = "def put(v):\n    import oml\n    oml.ds.save(objs={'x': v}, name='ds', overwrite=True)\n"
    api.script(alice, "put", put)
    assert api.run(alice, "do-eval", "put", {"parameters": '{"v": "from a script"}'}).status_code == 200
    assert api.run(alice, "do-eval", "load").json() == {"result": "from a script"}
    assert api.client.delete(f"{PYQD}/datastores/ds", headers=alice).status_code == 200
    r = api.run(alice, "do-eval", "load")
    assert r.status_code == 400 and "does not exist or is not accessible" in r.json()["errorMessage"]


def test_a_revoked_datastore_grant_is_seen_by_the_next_call(api):
    alice, bob = api.user("ALICE"), api.user("BOB")
    save_datastore(api, alice, "ds", {"x": "alice's"}, grantable=True)
    api.script(bob, "load", LOAD)
    assert api.client.post(f"{PYQD}/datastores/ds/grants", headers=alice, json={"user": "BOB"}).status_code == 200
    for _ in range(2):
        assert api.run(bob, "do-eval", "load", {"parameters": '{"owner": "ALICE"}'}).json() == {"result": "alice's"}
    assert api.client.delete(f"{PYQD}/datastores/ds/grants/BOB", headers=alice).status_code == 200
    r = api.run(bob, "do-eval", "load", {"parameters": '{"owner": "ALICE"}'})
    assert r.status_code == 400 and "does not exist or is not accessible" in r.json()["errorMessage"]
