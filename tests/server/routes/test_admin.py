"""User and API-client administration over REST (pyqd extension)."""

from __future__ import annotations

import re

from tests.server.support import SQLITE_ONLY

ADMIN_API = "/oml/api/pyqd/v1/admin"
USERS = f"{ADMIN_API}/users"
CLIENTS = f"{ADMIN_API}/clients"
ISO_MILLIS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def user_names(api) -> list[str]:
    r = api.client.get(USERS, headers=api.admin)
    assert r.status_code == 200, r.text
    return [u["name"] for u in r.json()["result"]]


def test_create_and_list_users(api):
    r = api.client.post(USERS, headers=api.admin, json={"name": "alice", "password": "password-of-a"})
    assert r.status_code == 201, r.text
    created = r.json()["result"]
    assert created["name"] == "ALICE" and created["admin"] is False
    assert ISO_MILLIS.fullmatch(created["created"])

    r = api.client.post(USERS, headers=api.admin, json={"name": "Zed_2", "password": "password-of-z", "admin": True})
    assert r.json()["result"]["admin"] is True

    listing = api.client.get(USERS, headers=api.admin).json()["result"]
    assert [(u["name"], u["admin"]) for u in listing] == [("ADMIN", True), ("ALICE", False), ("ZED_2", True)]
    assert all(set(u) == {"name", "admin", "created"} for u in listing)  # no password hashes
    # The new users can log in under any spelling of their name.
    assert api.token("Alice", "password-of-a") and api.token("zed_2", "password-of-z")


def test_new_administrator_can_administer(api):
    root = api.user("root", admin=True)
    assert (
        api.client.post(USERS, headers=root, json={"name": "carol", "password": "pw-long-password"}).status_code == 201
    )
    assert "CAROL" in user_names(api)


#: Names that break the rules: not an identifier, too long, or reserved.
INVALID_NAMES = [
    "1abc",
    "a b",
    "../x",
    "x/y",
    "a-b",
    "_abc",
    "",
    "é",
    "a" * 31,
    "PUBLIC",
    "public",
    "PYQSYS",
    "pyqsys",
    "SYS",
    "pg_catalog",
    "sqlite_master",
    "main",
]


@SQLITE_ONLY
def test_invalid_user_names_are_400_and_create_nothing(api):
    before = user_names(api)
    for name in INVALID_NAMES:
        r = api.client.post(USERS, headers=api.admin, json={"name": name, "password": "pw-long-password"})
        assert r.status_code == 400, (name, r.text)
        assert set(r.json()) == {"errorCode", "errorMessage"}
        assert r.json()["errorCode"] == 1000
    assert user_names(api) == before


@SQLITE_ONLY
def test_longest_valid_name_is_thirty_characters(api):
    name = "a" + "b" * 29
    r = api.client.post(USERS, headers=api.admin, json={"name": name, "password": "pw-long-password"})
    assert r.status_code == 201
    assert r.json()["result"]["name"] == name.upper()


def test_duplicate_user_is_400_whatever_the_case(api):
    assert (
        api.client.post(USERS, headers=api.admin, json={"name": "alice", "password": "one-long-password"}).status_code
        == 201
    )
    for spelling in ("alice", "ALICE", "aLiCe"):
        r = api.client.post(USERS, headers=api.admin, json={"name": spelling, "password": "two-long-password"})
        assert r.status_code == 400, spelling
        assert r.json()["errorCode"] == 1009
        assert "ALICE" in r.json()["errorMessage"]
    assert api.token("alice", "one-long-password")  # the first account's password was not touched
    assert user_names(api).count("ALICE") == 1
    r = api.client.post(USERS, headers=api.admin, json={"name": "admin", "password": "x-long-password"})
    assert r.status_code == 400


@SQLITE_ONLY
def test_malformed_user_bodies_are_400(api):
    for body in [
        {"name": "alice"},
        {"name": "alice", "password": ""},
        {"name": "alice", "password": "pw-long-password", "role": "dba"},
        {"name": 5, "password": "pw-long-password"},
        {"password": "pw-long-password"},
    ]:
        r = api.client.post(USERS, headers=api.admin, json=body)
        assert r.status_code == 400, (body, r.text)
        assert set(r.json()) == {"errorCode", "errorMessage"}
    assert user_names(api) == ["ADMIN"]


def test_set_password(api):
    api.user("alice")
    r = api.client.put(f"{USERS}/ALICE/password", headers=api.admin, json={"password": "second-long-password"})
    assert r.status_code == 200, r.text
    assert (
        api.client.post(
            "/omlusers/api/oauth2/v1/token",
            json={"grant_type": "password", "username": "alice", "password": "password-of-alice"},
        ).status_code
        == 401
    )
    assert api.token("alice", "second-long-password")
    r = api.client.put(f"{USERS}/nobody/password", headers=api.admin, json={"password": "x-long-password"})
    assert r.status_code == 404 and r.json()["errorCode"] == 1004
    r = api.client.put(f"{USERS}/alice/password", headers=api.admin, json={"password": ""})
    assert r.status_code == 400
    assert api.token("alice", "second-long-password")


def test_remove_user(api):
    api.user("alice")
    api.user("bob")
    r = api.client.delete(f"{USERS}/Alice", headers=api.admin)
    assert r.status_code == 200, r.text
    assert user_names(api) == ["ADMIN", "BOB"]
    r = api.client.post(
        "/omlusers/api/oauth2/v1/token",
        json={"grant_type": "password", "username": "alice", "password": "password-of-alice"},
    )
    assert r.status_code == 401
    r = api.client.delete(f"{USERS}/alice", headers=api.admin)
    assert r.status_code == 404 and r.json()["errorCode"] == 1004
    # The name is free again.
    assert (
        api.client.post(USERS, headers=api.admin, json={"name": "alice", "password": "pw-long-password"}).status_code
        == 201
    )


def test_remove_user_drops_what_they_own(api):
    alice = api.user("alice")
    script = {"name": "mine", "script": "def mine():\n    return 1\n"}
    assert api.client.post("/oml/api/pyqd/v1/scripts", headers=alice, json=script).status_code == 201
    r = api.client.post(
        "/oml/api/pyqd/v1/tables/T1", headers={**alice, "Content-Type": "text/csv"}, content=b"a,b\n1,2\n"
    )
    assert r.status_code == 201, r.text
    assert api.client.delete(f"{USERS}/alice", headers=api.admin).status_code == 200
    new_alice = api.user("alice", "pw2-long-password")
    assert api.client.get("/oml/api/py-scripts/v2/scripts/user", headers=new_alice).json()["result"] == []
    assert api.client.get("/oml/api/pyqd/v1/tables", headers=new_alice).json()["result"] == []


def test_clients_create_list_remove(api):
    api.user("alice")
    r = api.client.post(CLIENTS, headers=api.admin, json={"name": "apex", "user": "alice"})
    assert r.status_code == 201, r.text
    created = r.json()["result"]
    assert set(created) == {"client_id", "name", "user", "created", "client_secret"}
    assert created["user"] == "ALICE" and created["name"] == "apex"
    assert len(created["client_secret"]) >= 32
    assert ISO_MILLIS.fullmatch(created["created"])

    listing = api.client.get(CLIENTS, headers=api.admin).json()["result"]
    assert listing == [{k: v for k, v in created.items() if k != "client_secret"}]  # the secret is shown once

    r = api.client.delete(f"{CLIENTS}/{created['client_id']}", headers=api.admin)
    assert r.status_code == 200, r.text
    assert api.client.get(CLIENTS, headers=api.admin).json()["result"] == []
    r = api.client.delete(f"{CLIENTS}/{created['client_id']}", headers=api.admin)
    assert r.status_code == 404 and r.json()["errorCode"] == 1004


def test_client_for_an_unknown_user_is_404(api):
    r = api.client.post(CLIENTS, headers=api.admin, json={"name": "apex", "user": "nobody"})
    assert r.status_code == 404, r.text
    assert api.client.get(CLIENTS, headers=api.admin).json()["result"] == []
    r = api.client.post(CLIENTS, headers=api.admin, json={"name": "", "user": "admin"})
    assert r.status_code == 400


def test_non_administrators_get_403_on_every_admin_route(api):
    alice = api.user("alice")
    api.user("bob")
    cid = api.client.post(CLIENTS, headers=api.admin, json={"name": "c", "user": "bob"}).json()["result"]["client_id"]
    calls = [
        ("GET", USERS, None),
        ("POST", USERS, {"name": "mallory", "password": "pw-long-password", "admin": True}),
        ("PUT", f"{USERS}/bob/password", {"password": "taken-over-long-password"}),
        ("PUT", f"{USERS}/alice/password", {"password": "even-my-own-long-password"}),
        ("DELETE", f"{USERS}/bob", None),
        ("GET", CLIENTS, None),
        ("POST", CLIENTS, {"name": "c2", "user": "alice"}),
        ("DELETE", f"{CLIENTS}/{cid}", None),
        ("GET", "/oml/tenants/PYQD/databases/PYQD/api/pyqd/v1/admin/users", None),
    ]
    for method, path, body in calls:
        r = api.client.request(method, path, headers=alice, json=body)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["errorCode"] == 1003
        r = api.client.request(method, path, json=body)
        assert r.status_code == 401, (method, path)
    # Nothing happened.
    assert user_names(api) == ["ADMIN", "ALICE", "BOB"]
    assert api.token("bob", "password-of-bob") and api.token("alice", "password-of-alice")
    assert [c["client_id"] for c in api.client.get(CLIENTS, headers=api.admin).json()["result"]] == [cid]


@SQLITE_ONLY
def test_admin_routes_answer_in_the_tenant_form(api):
    base = "/oml/tenants/pyqd/databases/pyqd/api/pyqd/v1/admin"
    assert (
        api.client.post(
            f"{base}/users", headers=api.admin, json={"name": "t1", "password": "pw-long-password"}
        ).status_code
        == 201
    )
    assert "T1" in [u["name"] for u in api.client.get(f"{base}/users", headers=api.admin).json()["result"]]
    assert api.client.get("/oml/tenants/x/databases/pyqd/api/pyqd/v1/admin/users", headers=api.admin).status_code == 404


def test_the_last_administrator_cannot_be_removed(api):
    r = api.client.delete("/oml/api/pyqd/v1/admin/users/ADMIN", headers=api.admin)
    assert r.status_code == 400 and "last administrator" in r.json()["errorMessage"]
    api.user("ROOT2", "password-of-root2", admin=True)
    second = api.headers("ROOT2", "password-of-root2")
    assert api.client.delete("/oml/api/pyqd/v1/admin/users/ADMIN", headers=second).status_code == 200
