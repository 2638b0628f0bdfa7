"""The bearer-token guard in front of every API route: what is let in, what is refused, and how."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import pytest

from tests.server.jwts import HS256_HEADER, app_key, bearer, craft, payload_of, with_payload
from tests.server.support import backdate_user

#: Guarded routes of different kinds: an Oracle route in both spellings, pyqd extensions, an admin route.
GUARDED = [
    "/oml/api/py-scripts/v1/scripts",
    "/oml/tenants/PYQD/databases/PYQD/api/py-scripts/v2/scripts/all",
    "/oml/api/pyqd/v1/tables",
    "/oml/api/pyqd/v1/datastores",
    "/oml/api/pyqd/v1/admin/users",
]
HOUR = 3600


def assert_refused(r, route: str) -> None:
    assert r.status_code == 401, (route, r.status_code, r.text)
    assert r.json().keys() == {"errorCode", "errorMessage"}, route
    assert r.json()["errorCode"] == 1001
    assert r.headers["www-authenticate"].lower().startswith("bearer"), route
    assert r.headers["content-type"].startswith("application/json")


@pytest.fixture
def boss(api) -> str:
    """A valid token of BOSS, an administrator (so every guarded route answers 200 to it)."""
    api.user("boss", admin=True)
    backdate_user(api.services, "BOSS")
    return api.token("boss", "password-of-boss")


def test_a_valid_token_passes_every_guarded_route(api, boss):
    """The control for the refusals below: the same routes answer 200 to a good token."""
    for route in GUARDED:
        r = api.client.get(route, headers=bearer(boss))
        assert r.status_code == 200, (route, r.text)


def _key(api) -> bytes:
    return app_key(api.services)


#: Ways to present a bad token: each maps (api, a valid token of BOSS) to request headers.
BAD_CREDENTIALS: dict[str, Callable[..., dict[str, str]]] = {
    "missing header": lambda api, t: {},
    "Basic instead of Bearer": lambda api, t: {"Authorization": "Basic Ym9zczpwdy1ib3Nz"},
    "token without a scheme": lambda api, t: {"Authorization": t},
    "Bearer with nothing": lambda api, t: {"Authorization": "Bearer "},
    "garbage": lambda api, t: bearer("garbage"),
    "expired": lambda api, t: bearer(api.services.signer.issue("BOSS", now=time.time() - HOUR - 5).token),
    "tampered sub": lambda api, t: bearer(with_payload(t, {**payload_of(t), "sub": "ADMIN"})),
    "tampered exp": lambda api, t: bearer(with_payload(t, {**payload_of(t), "exp": payload_of(t)["exp"] + 9 * HOUR})),
    "alg none": lambda api, t: bearer(craft({"alg": "none", "typ": "JWT"}, {**payload_of(t), "sub": "ADMIN"}, None)),
    "wrong key": lambda api, t: bearer(craft(HS256_HEADER, payload_of(t), secrets.token_bytes(32))),
    "HS512 header, HS256 signature": lambda api, t: bearer(
        craft({"alg": "HS512", "typ": "JWT"}, payload_of(t), _key(api))
    ),
    "HS512 header and signature": lambda api, t: bearer(
        craft({"alg": "HS512", "typ": "JWT"}, payload_of(t), _key(api), "sha512")
    ),
    "RS256 header, HS256 signature": lambda api, t: bearer(
        craft({"alg": "RS256", "typ": "JWT"}, payload_of(t), _key(api))
    ),
    "no session id": lambda api, t: bearer(
        craft(HS256_HEADER, {k: v for k, v in payload_of(t).items() if k != "sid"}, _key(api))
    ),
    "well signed, unknown user": lambda api, t: bearer(api.services.signer.issue("GHOST").token),
    "well signed, unknown client": lambda api, t: bearer(api.services.signer.issue("BOSS", client_id="gone").token),
}


def test_bad_credentials_are_refused_with_401_everywhere(api, boss):
    for kind, make in BAD_CREDENTIALS.items():
        headers = make(api, boss)
        for route in GUARDED:
            assert_refused(api.client.get(route, headers=headers), f"{kind}: {route}")
    assert api.client.get(GUARDED[0], headers=bearer(boss)).status_code == 200  # nothing else broke


def test_crafting_with_the_app_key_is_what_the_server_signs_with(api, boss):
    """Guards the forgeries above: re-signing the same claims with the app key gives an accepted token."""
    r = api.client.get(GUARDED[0], headers=bearer(craft(HS256_HEADER, payload_of(boss), _key(api))))
    assert r.status_code == 200


def test_revoked_token_is_refused_everywhere(api, boss):
    assert api.client.post("/omlusers/api/oauth2/v1/token/revoke", headers=bearer(boss)).json() == {"status": "ok"}
    for route in GUARDED:
        assert_refused(api.client.get(route, headers=bearer(boss)), route)


def test_tokens_fit_in_255_characters_for_the_longest_user_name(api):
    name = "U" + "X" * 29
    api.user(name)
    r = api.client.post(
        "/oml/api/pyqd/v1/admin/clients", headers=api.admin, json={"name": "apex-" + "c" * 100, "user": name}
    )
    client = r.json()["result"]
    password_token = api.token(name, f"password-of-{name}")
    r = api.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client["client_id"], client["client_secret"]),
    )
    client_token = r.json()["access_token"]
    refreshed = api.client.post(
        "/omlusers/api/oauth2/v1/token", json={"grant_type": "refresh_token", "token": client_token}
    ).json()["accessToken"]
    for token in (password_token, client_token, refreshed):
        assert len(token) < 255, len(token)
        assert api.client.get(GUARDED[0], headers=bearer(token)).status_code == 200


def test_password_change_refuses_every_older_token(api):
    api.user("alice")
    backdate_user(api.services, "ALICE")
    earlier = api.services.signer.issue("ALICE", now=time.time() - 600).token
    just_now = api.token("alice", "password-of-alice")
    for token in (earlier, just_now):
        assert api.client.get(GUARDED[0], headers=bearer(token)).status_code == 200

    r = api.client.put(
        "/oml/api/pyqd/v1/admin/users/alice/password", headers=api.admin, json={"password": "new-pw-long-password"}
    )
    assert r.status_code == 200, r.text

    for token in (earlier, just_now):
        for route in GUARDED[:4]:
            assert_refused(api.client.get(route, headers=bearer(token)), route)
        r = api.client.post("/omlusers/api/oauth2/v1/token", json={"grant_type": "refresh_token", "token": token})
        assert r.status_code == 401
    assert api.client.get(GUARDED[0], headers=api.headers("alice", "new-pw-long-password")).status_code == 200


def test_removed_user_token_is_refused_even_if_the_name_comes_back(api):
    alice = api.user("alice")
    assert api.client.get(GUARDED[0], headers=alice).status_code == 200
    assert api.client.delete("/oml/api/pyqd/v1/admin/users/alice", headers=api.admin).status_code == 200
    for route in GUARDED[:4]:
        assert_refused(api.client.get(route, headers=alice), route)

    # A new ALICE is another person: the old ALICE's token must not speak for her.
    new_alice = api.user("alice", "another-pw-long-password")
    assert api.client.get(GUARDED[0], headers=new_alice).status_code == 200
    assert_refused(api.client.get(GUARDED[0], headers=alice), GUARDED[0])


def test_a_refused_request_says_why(api, boss):
    expired = api.services.signer.issue("BOSS", now=time.time() - HOUR - 5).token
    assert "expired" in api.client.get(GUARDED[0], headers=bearer(expired)).json()["errorMessage"]
    assert "bearer" in api.client.get(GUARDED[0]).json()["errorMessage"].lower()
