"""Temporary tables (`oml.push`): `temporary=true` on an upload or a materialize; shown in listings and describe;
dropped by DELETE, by the server once their time is up (only those, and only once), kept by `POST .../keep`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from server.db import write_session
from tables import temporary
from tables.models import TemporaryTable
from tests.conftest import change_settings, wait_for
from tests.tables.test_materialize import User, materialize, user
from tests.tables.test_materialize_attacks import push
from tests.tables.test_tables_api import TYPED, arrow_data, listing, parquet_bytes, upload

EXT = "/oml/api/pyqd/v1"
#: The server of this module sweeps often, so a test can watch it do so.
MODULE_SETTINGS = {"temp_table_sweep_s": 0.2}


@pytest.fixture
def api(module_api):
    return module_api


@pytest.fixture
def alice(api) -> User:
    u = user(api, "ALICE")
    assert upload(api.client, u, "BASE", parquet_bytes(TYPED), fmt="parquet").status_code == 201
    return u


def flags(api, who) -> dict[str, bool]:
    return {t["table_name"]: t["temporary"] for t in listing(api.client, who)}


def is_temporary(api, who, name) -> bool:
    r = api.client.get(f"{EXT}/tables/{name}", headers=who)
    assert r.status_code == 200, r.text
    return r.json()["result"]["temporary"]


def expire(api, owner: str, name: str) -> None:
    """Make a temporary table's time be up (as if its TTL had passed)."""
    with write_session(api.services.sessions) as session:
        session.execute(
            update(TemporaryTable)
            .where(TemporaryTable.owner == owner, TemporaryTable.table_name == name)
            .values(expires_at=temporary.utcnow() - timedelta(seconds=1))
        )


def sweep(api) -> int:
    """One sweep now (the server's own thread sweeps too)."""
    return api.client.app.state.housekeeping.run_once()


def test_push_makes_a_temporary_table_shown_as_such(api, alice):
    r = push(api, alice, "PUSHED", parquet_bytes(TYPED), format="parquet")
    assert r.status_code == 201, r.text
    assert r.json()["result"]["temporary"] is True and r.json()["result"]["row_count"] == 4
    r = materialize(api, alice, "MAT", "select I from BASE", temporary=True)
    assert r.status_code == 201 and r.json()["result"]["temporary"] is True
    body = {"query": "select I from BASE"}
    r = api.client.post(f"{EXT}/tables/MAT2", headers=alice, params={"temporary": "true"}, json=body)
    assert r.status_code == 201 and r.json()["result"]["temporary"] is True
    assert flags(api, alice) == {"BASE": False, "MAT": True, "MAT2": True, "PUSHED": True}
    assert is_temporary(api, alice, "PUSHED") and not is_temporary(api, alice, "BASE")
    # a temporary table is an ordinary table to read
    assert arrow_data(api.client, alice, "PUSHED").num_rows == 4


def test_keep_makes_it_permanent_and_the_sweep_then_leaves_it(api, alice):
    assert push(api, alice, "KEPT").status_code == 201
    assert push(api, alice, "GONE").status_code == 201
    r = api.client.post(f"{EXT}/tables/KEPT/keep", headers=alice)
    assert r.status_code == 200 and r.json()["result"]["temporary"] is False, r.text
    assert api.client.post(f"{EXT}/tables/KEPT/keep", headers=alice).status_code == 200  # again: no change
    assert api.client.post(f"{EXT}/tables/BASE/keep", headers=alice).status_code == 200  # a permanent one
    assert api.client.post(f"{EXT}/tables/NOSUCH/keep", headers=alice).status_code == 404
    expire(api, alice.name, "GONE")
    wait_for(lambda: "GONE" not in flags(api, alice))
    assert flags(api, alice) == {"BASE": False, "KEPT": False}


def test_the_sweep_drops_only_expired_temporary_tables(api, alice):
    bob = user(api, "BOB")
    for who, name in ((alice, "OLD"), (alice, "FRESH"), (bob, "OLD"), (bob, "FRESH")):
        assert push(api, who, name).status_code == 201
    assert upload(api.client, bob, "PERMANENT", b"A\n1\n", fmt="csv").status_code == 201
    api.client.post(f"{EXT}/tables/OLD/grants", headers=alice, json={"user": bob.name})
    expire(api, alice.name, "OLD")
    expire(api, bob.name, "OLD")
    wait_for(lambda: "OLD" not in flags(api, alice) and "OLD" not in flags(api, bob))
    assert flags(api, alice) == {"BASE": False, "FRESH": True}
    assert flags(api, bob) == {"FRESH": True, "PERMANENT": False}
    # the dropped table's grants went with it: a new table of that name is not readable by the old grantee
    assert upload(api.client, alice, "OLD", b"A\n1\n", fmt="csv").status_code == 201
    assert api.client.get(f"{EXT}/tables/OLD", headers=bob, params={"owner": alice.name}).status_code == 404
    assert sweep(api) == 0  # nothing left to do, and the new OLD is permanent
    assert flags(api, alice)["OLD"] is False


def test_the_ttl_setting_decides_when_a_table_expires(api, alice):
    ttl = api.services.settings.temp_table_ttl_s
    change_settings(api.services, temp_table_ttl_s=0.0)
    try:
        assert push(api, alice, "BRIEF").status_code == 201
    finally:
        change_settings(api.services, temp_table_ttl_s=ttl)
    assert push(api, alice, "LASTING").status_code == 201
    wait_for(lambda: "BRIEF" not in flags(api, alice))
    assert flags(api, alice) == {"BASE": False, "LASTING": True}
    with api.services.sessions() as session:
        row = session.get(TemporaryTable, (alice.name, "LASTING"))
        assert row is not None
        left = row.expires_at - temporary.utcnow()
    assert timedelta(seconds=ttl - 60) < left <= timedelta(seconds=ttl)


def test_writes_over_a_temporary_table(api, alice):
    assert push(api, alice, "T").status_code == 201
    # an append leaves it temporary, whether or not the append says so
    r = upload(api.client, alice, "T", b"A\n2\n", fmt="csv", mode="append")
    assert r.status_code == 201 and r.json()["result"]["temporary"] is True
    r = materialize(api, alice, "T", "select A from T", append=True)
    assert r.status_code == 201 and r.json()["result"]["temporary"] is True
    # replacing it without temporary makes a permanent table; with temporary, a temporary one
    r = upload(api.client, alice, "T", b"A\n3\n", fmt="csv", mode="replace")
    assert r.status_code == 201 and r.json()["result"]["temporary"] is False
    r = push(api, alice, "T", mode="replace")
    assert r.status_code == 201 and r.json()["result"]["temporary"] is True
    # an append with temporary=true does not make a permanent table temporary
    r = push(api, alice, "BASE", b"I,F,S,B,T\n1,1.0,x,true,2024-01-01 00:00:00\n", mode="append")
    assert r.status_code == 201 and r.json()["result"]["temporary"] is False
    # DELETE drops it (and its bookkeeping)
    assert api.client.delete(f"{EXT}/tables/T", headers=alice).status_code == 200
    with api.services.sessions() as session:
        assert session.get(TemporaryTable, (alice.name, "T")) is None
    assert "T" not in flags(api, alice)


def test_removing_a_user_forgets_their_temporary_tables(api, alice):
    assert push(api, alice, "T").status_code == 201
    r = api.client.delete(f"{EXT}/admin/users/{alice.name}", headers=api.admin)
    assert r.status_code in (200, 204), r.text
    with api.services.sessions() as session:
        assert session.get(TemporaryTable, (alice.name, "T")) is None
