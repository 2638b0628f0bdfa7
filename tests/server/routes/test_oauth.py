"""The standard OAuth2 token endpoint (RFC 6749) for APEX Web Credentials and Postman, and API clients."""

from __future__ import annotations

import base64

import pytest

from tests.server.jwts import bearer, payload_of
from tests.server.support import SQLITE_ONLY

OAUTH = "/oauth/token"
OML_TOKEN_URLS = ["/omlusers/api/oauth2/v1/token", "/omlusers/tenants/pyqd/databases/pyqd/api/oauth2/v1/token"]
SCRIPTS = "/oml/api/py-scripts/v1/scripts"
CLIENTS = "/oml/api/pyqd/v1/admin/clients"


@pytest.fixture
def client_creds(api) -> tuple[str, str]:
    """An API client acting as ALICE: (client_id, client_secret)."""
    api.user("alice")
    r = api.client.post(CLIENTS, headers=api.admin, json={"name": "apex", "user": "alice"})
    assert r.status_code == 201, r.text
    return r.json()["result"]["client_id"], r.json()["result"]["client_secret"]


def assert_standard_token(r, user: str) -> str:
    """An RFC 6749 §5.1 answer; returns the access token."""
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert type(body["expires_in"]) is int and body["expires_in"] == 3600
    assert body["token_type"].lower() == "bearer"
    assert payload_of(body["access_token"])["sub"] == user
    return body["access_token"]


def assert_rfc_error(r, status: int, error: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"] == error
    assert set(r.json()) <= {"error", "error_description", "error_uri"}
    assert r.headers["cache-control"] == "no-store"


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def test_client_credentials_with_basic_auth(api, client_creds):
    cid, secret = client_creds
    r = api.client.post(OAUTH, data={"grant_type": "client_credentials"}, headers=basic(cid, secret))
    token = assert_standard_token(r, "ALICE")
    assert payload_of(token)["cid"] == cid
    assert api.client.get(SCRIPTS, headers=bearer(token)).status_code == 200


def test_client_credentials_as_form_fields(api, client_creds):
    cid, secret = client_creds
    r = api.client.post(OAUTH, data={"grant_type": "client_credentials", "client_id": cid, "client_secret": secret})
    assert_standard_token(r, "ALICE")


@SQLITE_ONLY
def test_unknown_fields_are_ignored_and_json_is_accepted_too(api, client_creds):
    cid, secret = client_creds
    form = {"grant_type": "client_credentials", "scope": "oml read", "audience": "x", "resource": "y"}
    assert_standard_token(api.client.post(OAUTH, data=form, headers=basic(cid, secret)), "ALICE")
    r = api.client.post(OAUTH, json={"grant_type": "client_credentials", "client_id": cid, "client_secret": secret})
    assert_standard_token(r, "ALICE")


@SQLITE_ONLY
def test_the_oml_token_url_answers_form_bodies_the_standard_way(api, client_creds):
    cid, secret = client_creds
    for url in OML_TOKEN_URLS:
        r = api.client.post(url, data={"grant_type": "client_credentials", "scope": "x"}, headers=basic(cid, secret))
        assert_standard_token(r, "ALICE")
        r = api.client.post(url, data={"grant_type": "password", "username": "alice", "password": "password-of-alice"})
        assert_standard_token(r, "ALICE")
        assert_rfc_error(api.client.post(url, data={"grant_type": "client_credentials"}), 401, "invalid_client")
        r = api.client.post(url, data={"grant_type": "password", "username": "alice", "password": "bad-password"})
        assert_rfc_error(r, 400, "invalid_grant")


def test_wrong_or_missing_client_credentials_are_invalid_client(api, client_creds):
    cid, secret = client_creds
    attempts = {
        "wrong secret (Basic)": dict(headers=basic(cid, secret + "x")),
        "wrong secret (form)": dict(data_extra={"client_id": cid, "client_secret": "nope"}),
        "unknown client": dict(headers=basic("no-such-client", secret)),
        "secret of another client as id": dict(headers=basic(secret, cid)),
        "no credentials": dict(),
        "id without secret": dict(data_extra={"client_id": cid}),
        "Basic not base64": dict(headers={"Authorization": "Basic %%%not-base64"}),
        "Basic without colon": dict(headers={"Authorization": "Basic " + base64.b64encode(cid.encode()).decode()}),
    }
    for what, a in attempts.items():
        data = {"grant_type": "client_credentials", **a.get("data_extra", {})}
        r = api.client.post(OAUTH, data=data, headers=a.get("headers", {}))
        assert r.status_code == 401, (what, r.text)
        assert_rfc_error(r, 401, "invalid_client")
        assert r.headers["www-authenticate"].lower().startswith("basic"), what


def test_password_grant_form_encoded(api, client_creds):
    r = api.client.post(OAUTH, data={"grant_type": "password", "username": "Alice", "password": "password-of-alice"})
    token = assert_standard_token(r, "ALICE")
    assert "cid" not in payload_of(token)
    assert api.client.get(SCRIPTS, headers=bearer(token)).status_code == 200


def test_bad_password_in_password_grant_is_invalid_grant(api, client_creds):
    for username, password in [("alice", "wrong"), ("nobody", "password-of-alice")]:
        r = api.client.post(OAUTH, data={"grant_type": "password", "username": username, "password": password})
        assert_rfc_error(r, 400, "invalid_grant")


@SQLITE_ONLY
def test_incomplete_or_unsupported_grants_are_400(api, client_creds):
    for grant in ["authorization_code", "implicit", "urn:ietf:params:oauth:grant-type:jwt-bearer", "PASSWORD"]:
        assert_rfc_error(api.client.post(OAUTH, data={"grant_type": grant}), 400, "unsupported_grant_type")
    r = api.client.post(OAUTH, data={"grant_type": "password", "username": "alice"})
    assert_rfc_error(r, 400, "invalid_request")
    # RFC 6749 §5.2: a missing parameter is invalid_request, not an unsupported grant.
    for form in [{"username": "alice", "password": "password-of-alice"}, {"grant_type": ""}]:
        assert_rfc_error(api.client.post(OAUTH, data=form), 400, "invalid_request")
    for raw in [b"{broken", b"[1]"]:
        r = api.client.post(OAUTH, content=raw, headers={"Content-Type": "application/json"})
        assert_rfc_error(r, 400, "invalid_request")


def test_refresh_grant_form_encoded(api, client_creds):
    first = api.token("alice", "password-of-alice")
    r = api.client.post(OAUTH, data={"grant_type": "refresh_token", "refresh_token": first})
    refreshed = assert_standard_token(r, "ALICE")
    assert payload_of(refreshed)["sid"] == payload_of(first)["sid"]
    assert api.client.post("/omlusers/api/oauth2/v1/token/revoke", headers=bearer(first)).status_code == 200
    r = api.client.post(OAUTH, data={"grant_type": "refresh_token", "refresh_token": refreshed})
    assert_rfc_error(r, 400, "invalid_grant")
    assert_rfc_error(api.client.post(OAUTH, data={"grant_type": "refresh_token"}), 400, "invalid_request")


def test_client_token_acts_as_the_clients_user(api, client_creds):
    cid, secret = client_creds
    r = api.client.post(OAUTH, data={"grant_type": "client_credentials"}, headers=basic(cid, secret))
    client_token = assert_standard_token(r, "ALICE")
    script = {"name": "made_by_client", "script": "def made_by_client():\n    return 1\n"}
    r = api.client.post("/oml/api/pyqd/v1/scripts", headers=bearer(client_token), json=script)
    assert r.status_code == 201, r.text
    assert r.json()["result"]["owner"] == "ALICE"
    # ALICE herself sees it as hers; another user does not see it at all.
    mine = api.client.get(
        "/oml/api/py-scripts/v2/scripts/user", headers=api.headers("alice", "password-of-alice")
    ).json()
    assert [(s["owner"], s["name"]) for s in mine["result"]] == [("ALICE", "made_by_client")]
    bob = api.user("bob")
    assert api.client.get(SCRIPTS, headers=bob).json()["result"] == []
    # The client's user is not an administrator, so neither is the client.
    assert api.client.get("/oml/api/pyqd/v1/admin/users", headers=bearer(client_token)).status_code == 403


def test_removing_the_client_ends_its_tokens(api, client_creds):
    cid, secret = client_creds
    token = api.client.post(OAUTH, data={"grant_type": "client_credentials"}, headers=basic(cid, secret)).json()
    token = token["access_token"]
    refreshed = api.client.post(
        "/omlusers/api/oauth2/v1/token", json={"grant_type": "refresh_token", "refresh_token": token}
    ).json()["accessToken"]
    alice = api.headers("alice", "password-of-alice")
    for t in (token, refreshed):
        assert api.client.get(SCRIPTS, headers=bearer(t)).status_code == 200

    r = api.client.delete(f"{CLIENTS}/{cid}", headers=api.admin)
    assert r.status_code == 200, r.text

    for t in (token, refreshed):
        r = api.client.get(SCRIPTS, headers=bearer(t))
        assert r.status_code == 401 and r.headers["www-authenticate"].lower().startswith("bearer")
        r = api.client.post("/omlusers/api/oauth2/v1/token", json={"grant_type": "refresh_token", "token": t})
        assert r.status_code == 401
    r = api.client.post(OAUTH, data={"grant_type": "client_credentials"}, headers=basic(cid, secret))
    assert_rfc_error(r, 401, "invalid_client")
    assert cid not in [c["client_id"] for c in api.client.get(CLIENTS, headers=api.admin).json()["result"]]
    assert api.client.get(SCRIPTS, headers=alice).status_code == 200  # the user's own tokens are unaffected


def test_removing_the_user_removes_their_clients(api, client_creds):
    cid, secret = client_creds
    token = api.client.post(OAUTH, data={"grant_type": "client_credentials"}, headers=basic(cid, secret)).json()
    assert api.client.delete("/oml/api/pyqd/v1/admin/users/alice", headers=api.admin).status_code == 200
    assert api.client.get(SCRIPTS, headers=bearer(token["access_token"])).status_code == 401
    r = api.client.post(OAUTH, data={"grant_type": "client_credentials"}, headers=basic(cid, secret))
    assert_rfc_error(r, 401, "invalid_client")
    assert api.client.get(CLIENTS, headers=api.admin).json()["result"] == []


def test_each_client_gets_its_own_id_and_secret(api, client_creds):
    cid, secret = client_creds
    r = api.client.post(CLIENTS, headers=api.admin, json={"name": "postman", "user": "ALICE"})
    other = r.json()["result"]
    assert other["client_id"] != cid and other["client_secret"] != secret
    # One client's secret does not open the other.
    r = api.client.post(OAUTH, data={"grant_type": "client_credentials"}, headers=basic(other["client_id"], secret))
    assert_rfc_error(r, 401, "invalid_client")
    r = api.client.post(
        OAUTH, data={"grant_type": "client_credentials"}, headers=basic(other["client_id"], other["client_secret"])
    )
    assert payload_of(assert_standard_token(r, "ALICE"))["cid"] == other["client_id"]
