"""OML's token service over HTTP: password and refresh grants, revoke, both URL spellings."""

from __future__ import annotations

import time

import pytest

from server.auth.tokens import TokenSigner
from tests.server.jwts import app_key, bearer, payload_of
from tests.server.support import SQLITE_ONLY, backdate_user

TOKEN_URL = "/omlusers/api/oauth2/v1/token"
TENANT_TOKEN_URL = "/omlusers/tenants/{t}/databases/{d}/api/oauth2/v1/token"
#: The plain form and the tenant form (tenant/database match case-insensitively).
TOKEN_URLS = [
    TOKEN_URL,
    TENANT_TOKEN_URL.format(t="PYQD", d="PYQD"),
    TENANT_TOKEN_URL.format(t="pyqd", d="Pyqd"),
]
SCRIPTS = "/oml/api/py-scripts/v1/scripts"
TABLES = "/oml/api/pyqd/v1/tables"
HOUR = 3600


def password_grant(api, user: str, password: str, url: str = TOKEN_URL):
    return api.client.post(url, json={"grant_type": "password", "username": user, "password": password})


def refresh(api, token: str, *, key: str | None = "refresh_token", header: bool = True, url: str = TOKEN_URL):
    body = {"grant_type": "refresh_token"}
    if key:
        body[key] = token
    return api.client.post(url, json=body, headers=bearer(token) if header else {})


def works(api, token: str) -> bool:
    return api.client.get(SCRIPTS, headers=bearer(token)).status_code == 200


def assert_unauthorized(r) -> None:
    assert r.status_code == 401, r.text
    assert set(r.json()) == {"errorCode", "errorMessage"}
    assert r.json()["errorCode"] == 1001


@pytest.fixture
def alice(api) -> str:
    """A user ALICE with password pw-alice, created long enough ago for back-dated tokens to be hers."""
    api.user("alice")
    backdate_user(api.services, "ALICE")
    return "ALICE"


def test_password_grant_answers_exactly_as_oml(api, alice):
    for url in TOKEN_URLS:
        r = api.client.post(
            url,
            json={"grant_type": "password", "username": "alice", "password": "password-of-alice"},
            headers={"Accept": "application/json"},
        )
        assert r.status_code == 200, (url, r.text)
        assert r.headers["content-type"].startswith("application/json")
        assert r.headers["cache-control"] == "no-store"
        body = r.json()
        assert set(body) == {"accessToken", "expiresIn", "tokenType"}
        assert body["expiresIn"] == 3600 and type(body["expiresIn"]) is int
        assert body["tokenType"] == "Bearer"
        assert body["accessToken"].startswith("eyJ")
        assert payload_of(body["accessToken"])["sub"] == "ALICE"
        assert works(api, body["accessToken"])


@SQLITE_ONLY
def test_tenant_form_with_another_tenant_or_database_is_not_found(api, alice):
    token = password_grant(api, "alice", "password-of-alice").json()["accessToken"]
    for tenant, database in [("OTHER", "PYQD"), ("PYQD", "OTHER"), ("x", "y")]:
        url = TENANT_TOKEN_URL.format(t=tenant, d=database)
        r = password_grant(api, "alice", "password-of-alice", url)
        assert r.status_code == 404, url
        assert set(r.json()) == {"errorCode", "errorMessage"}
        assert api.client.post(url + "/revoke", headers=bearer(token)).status_code == 404
        assert refresh(api, token, url=url).status_code == 404
    assert works(api, token)  # the 404s revoked nothing


@SQLITE_ONLY
def test_tenant_and_database_names_come_from_settings(api, alice):
    api.services.settings = api.services.settings.model_copy(update={"tenant": "ACME", "database": "ML1"})
    assert (
        password_grant(api, "alice", "password-of-alice", TENANT_TOKEN_URL.format(t="acme", d="ml1")).status_code == 200
    )
    assert (
        password_grant(api, "alice", "password-of-alice", TENANT_TOKEN_URL.format(t="PYQD", d="PYQD")).status_code
        == 404
    )


def test_user_names_are_case_insensitive_at_login(api, alice):
    for spelling in ("alice", "ALICE", "Alice"):
        r = password_grant(api, spelling, "password-of-alice")
        assert r.status_code == 200, spelling
        assert payload_of(r.json()["accessToken"])["sub"] == "ALICE"


def test_bad_password_and_unknown_user_get_the_same_401(api, alice):
    wrong = password_grant(api, "alice", "wrong")
    unknown = password_grant(api, "nobody", "password-of-alice")
    invalid_name = password_grant(api, "../etc", "password-of-alice")
    for r in (wrong, unknown, invalid_name):
        assert_unauthorized(r)
    # Same message either way, so the endpoint does not tell which user names exist.
    assert wrong.json()["errorMessage"] == unknown.json()["errorMessage"] == invalid_name.json()["errorMessage"]


def test_passwords_are_case_sensitive(api, alice):
    assert_unauthorized(password_grant(api, "alice", "PASSWORD-OF-ALICE"))


@SQLITE_ONLY
def test_malformed_grants_are_400_in_oml_shape(api, alice):
    for body in [
        {"grant_type": "password", "username": "alice"},
        {"grant_type": "password", "password": "password-of-alice"},
        {"grant_type": "password", "username": "alice", "password": ""},
        {"grant_type": "password", "username": ["alice"], "password": "password-of-alice"},
        {"grant_type": "client_credentials"},
        {"grant_type": "authorization_code", "code": "x"},
        {"username": "alice", "password": "password-of-alice"},
        {"grant_type": "refresh_token"},
        {"grant_type": "refresh_token", "refresh_token": 42},
    ]:
        r = api.client.post(TOKEN_URL, json=body)
        assert r.status_code == 400, (body, r.text)
        assert set(r.json()) == {"errorCode", "errorMessage"}
        assert r.json()["errorCode"] == 1000


@SQLITE_ONLY
def test_non_object_json_bodies_are_400(api):
    for raw in [b"", b"{not json", b"[1, 2]", b'"password"', b"null"]:
        r = api.client.post(TOKEN_URL, content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, raw
        assert set(r.json()) == {"errorCode", "errorMessage"}


# --- refresh ---------------------------------------------------------------------------------------


#: Where OML clients put the token to refresh: (body key or None, also as Bearer header).
REFRESH_FORMS = [("refresh_token", True), ("refresh_token", False), ("token", True), ("token", False), (None, True)]


def test_refresh_accepts_the_token_in_any_place_oml_clients_put_it(api, alice):
    for i, (key, header) in enumerate(REFRESH_FORMS):
        url = TOKEN_URLS[i % len(TOKEN_URLS)]
        old = api.services.signer.issue("ALICE", now=time.time() - 1800)
        r = refresh(api, old.token, key=key, header=header, url=url)
        assert r.status_code == 200, (key, header, url, r.text)
        body = r.json()
        assert set(body) == {"accessToken", "expiresIn", "tokenType"}
        assert body["expiresIn"] == 3600 and body["tokenType"] == "Bearer"
        new = payload_of(body["accessToken"])
        was = payload_of(old.token)
        assert new["sid"] == was["sid"] and new["oat"] == was["oat"] and new["sub"] == "ALICE"
        assert new["exp"] > was["exp"]  # an hour from now: later than the half hour left on the old one
        assert works(api, body["accessToken"])
        assert works(api, old.token)  # refreshing does not kill the old token


def test_refresh_never_goes_past_eight_hours_after_the_first_issue(api, alice):
    signer = api.services.signer
    start = int(time.time()) - 7 * HOUR - 1800
    first = signer.issue("ALICE", now=start)
    # The session's token as refreshed 7 h in: valid for another 30 minutes.
    current = signer.refresh(first.claims, now=start + 7 * HOUR)
    assert works(api, current.token)
    r = refresh(api, current.token)
    assert r.status_code == 200, r.text
    claims = payload_of(r.json()["accessToken"])
    assert claims["exp"] == start + 8 * HOUR
    assert 0 < r.json()["expiresIn"] <= 1800


def test_token_past_its_refresh_window_cannot_be_refreshed(api, alice):
    # Only a signer with a longer window could have made this token; the server's own window is 8 h.
    generous = TokenSigner(app_key(api.services), max_age_s=100 * HOUR)
    start = time.time() - 9 * HOUR
    first = generous.issue("ALICE", now=start)
    current = generous.refresh(first.claims, now=time.time() - 60)
    assert works(api, current.token)  # valid, but its session began 9 h ago
    r = refresh(api, current.token)
    assert_unauthorized(r)
    assert "refresh" in r.json()["errorMessage"].lower()


def test_expired_token_cannot_be_refreshed(api, alice):
    expired = api.services.signer.issue("ALICE", now=time.time() - HOUR - 10)
    assert not works(api, expired.token)
    r = refresh(api, expired.token)
    assert_unauthorized(r)
    assert "expired" in r.json()["errorMessage"]


@SQLITE_ONLY
def test_refresh_with_a_garbage_token_is_401(api, alice):
    assert_unauthorized(refresh(api, "garbage"))
    assert_unauthorized(refresh(api, "garbage", header=False))


def test_refresh_prefers_the_body_over_the_header(api, alice):
    """dbt-oracle sends its session's Bearer header along; the body names the token to refresh."""
    api.user("bob")
    backdate_user(api.services, "BOB")
    bob = api.services.signer.issue("BOB").token
    alice_token = api.services.signer.issue("ALICE").token
    r = api.client.post(TOKEN_URL, json={"grant_type": "refresh_token", "token": alice_token}, headers=bearer(bob))
    assert r.status_code == 200
    assert payload_of(r.json()["accessToken"])["sub"] == "ALICE"


# --- revoke ----------------------------------------------------------------------------------------


def revoke(api, token: str, url: str = TOKEN_URL):
    return api.client.post(url + "/revoke", headers=bearer(token))


@pytest.mark.parametrize("which", ["original", "refreshed"])
def test_revoking_any_token_of_a_session_revokes_them_all(api, alice, which):
    original = api.services.signer.issue("ALICE", now=time.time() - 120).token
    r = refresh(api, original)
    assert r.status_code == 200
    refreshed = r.json()["accessToken"]
    assert refreshed != original
    other_session = password_grant(api, "alice", "password-of-alice").json()["accessToken"]

    r = revoke(api, original if which == "original" else refreshed)
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}

    for token in (original, refreshed):
        for path in (SCRIPTS, TABLES, "/oml/tenants/PYQD/databases/PYQD/api/py-scripts/v2/scripts/all"):
            assert_unauthorized(api.client.get(path, headers=bearer(token)))
        for key in ("refresh_token", "token", None):
            assert_unauthorized(refresh(api, token, key=key))
        assert_unauthorized(revoke(api, token))
    assert "revoked" in api.client.get(SCRIPTS, headers=bearer(refreshed)).json()["errorMessage"]
    # Other sessions of the same user, and new logins, are not affected.
    assert works(api, other_session)
    assert works(api, password_grant(api, "alice", "password-of-alice").json()["accessToken"])


def test_revoke_takes_the_token_from_a_json_body_and_the_tenant_url(api, alice):
    token = password_grant(api, "alice", "password-of-alice").json()["accessToken"]
    r = api.client.post(TENANT_TOKEN_URL.format(t="pyqd", d="pyqd") + "/revoke", json={"token": token})
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert not works(api, token)


@SQLITE_ONLY
def test_revoke_without_a_valid_token_is_401(api, alice):
    for headers in [{}, {"Authorization": "Bearer garbage"}, {"Authorization": "Basic YWxpY2U6cHctYWxpY2U="}]:
        r = api.client.post(TOKEN_URL + "/revoke", headers=headers)
        assert_unauthorized(r)
        assert r.headers["www-authenticate"].lower().startswith("bearer")


def test_revoke_of_an_expired_token_is_401(api, alice):
    expired = api.services.signer.issue("ALICE", now=time.time() - HOUR - 10).token
    assert_unauthorized(revoke(api, expired))
