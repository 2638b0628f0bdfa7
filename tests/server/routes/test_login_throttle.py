"""Attacks on the login endpoints over real HTTP: password guessing per user and per address, client-secret
guessing, a flood of logins, and 1-character passwords."""

from __future__ import annotations

import threading
from collections import Counter

import httpx
import pytest

from server import accounts
from server.auth import service as auth_service
from server.auth.throttle import HashGate, LoginThrottle, ThrottleConfig

OML_TOKEN = "/omlusers/api/oauth2/v1/token"
OAUTH = "/oauth/token"


def client(url: str, address: str = "127.0.0.1") -> httpx.Client:
    """An HTTP client whose connections come from `address` (any 127.x address reaches the server)."""
    return httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address=address), timeout=60)


def oml_login(c: httpx.Client, user: str, password: str) -> httpx.Response:
    return c.post(OML_TOKEN, json={"grant_type": "password", "username": user, "password": password})


def throttle(services, **config: float) -> None:
    """A long first lockout, so that the test's next request surely falls inside it."""
    services.login_throttle = LoginThrottle(ThrottleConfig(**{"lockout_s": 300, **config}))


def test_guessing_a_users_password_locks_that_user_out_with_429_and_retry_after(live_server, services):
    throttle(services, user_max_failures=5)
    accounts.add_user(services, "ALICE", "alice-right-password")
    accounts.add_user(services, "BOB", "bob-right-password")
    with client(live_server) as c:
        for i in range(5):
            assert oml_login(c, "alice", f"guess-{i}").status_code == 401
        # Locked now: even the right password is refused, on both token endpoints, without hashing anything.
        r = oml_login(c, "alice", "alice-right-password")
        assert r.status_code == 429, r.text
        assert r.json()["errorCode"] == 1429 and "try again" in r.json()["errorMessage"]
        assert 1 <= int(r.headers["Retry-After"]) <= 300
        r = c.post(OAUTH, data={"grant_type": "password", "username": "ALICE", "password": "alice-right-password"})
        assert r.status_code == 429 and r.json()["error"] == "slow_down" and int(r.headers["Retry-After"]) >= 1
        # Other users from the same address are unaffected, and the server stays healthy.
        assert oml_login(c, "bob", "bob-right-password").status_code == 200
        assert c.get("/health").status_code == 200


def test_guessing_from_one_address_locks_that_address_for_every_user(live_server, services):
    throttle(services, user_max_failures=100, address_max_failures=8)
    accounts.add_user(services, "BOB", "bob-right-password")
    with client(live_server, "127.0.0.2") as attacker, client(live_server, "127.0.0.3") as elsewhere:
        for i in range(8):  # a spray: a different name each time, so no user threshold is reached
            assert oml_login(attacker, f"user{i}", "password123456").status_code == 401
        r = oml_login(attacker, "bob", "bob-right-password")
        assert r.status_code == 429 and "Retry-After" in r.headers
        assert oml_login(elsewhere, "bob", "bob-right-password").status_code == 200


def test_guessing_a_client_secret_is_throttled_on_the_standard_endpoint(live_server, services):
    throttle(services, user_max_failures=3)
    accounts.add_user(services, "APEX_USER", "apex-user-password")
    with services.sessions() as session:
        api_client, secret = auth_service.create_client(session, "apex", "APEX_USER")
        client_id = api_client.client_id
        session.commit()
    with client(live_server) as c:
        for i in range(3):
            r = c.post(OAUTH, data={"grant_type": "client_credentials"}, auth=(client_id, f"wrong-{i}"))
            assert r.status_code == 401 and r.json()["error"] == "invalid_client"
        r = c.post(OAUTH, data={"grant_type": "client_credentials"}, auth=(client_id, secret))
        assert r.status_code == 429 and r.json()["error"] == "slow_down" and int(r.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
def test_a_flood_of_logins_hashes_a_bounded_number_at_once_and_never_fails_badly(live_server, services, monkeypatch):
    """300 wrong passwords from 40 threads: every answer is 401, 429 or 503, never more than the gate's slots
    hash at once, and the right password works once the lockouts are set aside."""
    gate = HashGate(2)
    monkeypatch.setattr(auth_service, "hash_gate", gate)
    throttle(services, user_max_failures=10_000, address_max_failures=10_000)
    accounts.add_user(services, "VICTIM", "victim-right-password")
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    names = iter(range(300))

    def attack() -> None:
        with client(live_server) as c:
            while True:
                with lock:
                    i = next(names, None)
                if i is None:
                    return
                status = oml_login(c, "victim", f"wrong-{i}").status_code
                with lock:
                    statuses[status] += 1

    threads = [threading.Thread(target=attack) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert sum(statuses.values()) == 300
    assert set(statuses) <= {401, 429, 503}, statuses
    assert 1 <= gate.peak <= 2
    with client(live_server) as c:
        assert c.get("/health").status_code == 200
        assert oml_login(c, "victim", "victim-right-password").status_code == 200


def test_short_passwords_are_refused_with_a_clear_400(api):
    admin = api.admin
    r = api.client.post("/oml/api/pyqd/v1/admin/users", headers=admin, json={"name": "shorty", "password": "x"})
    assert r.status_code == 400 and r.json()["errorCode"] == 1000
    assert "at least 12 characters" in r.json()["errorMessage"]
    users = api.client.get("/oml/api/pyqd/v1/admin/users", headers=admin).json()["result"]
    assert [u["name"] for u in users] == ["ADMIN"]
    api.user("alice", "alice-long-password")
    r = api.client.put("/oml/api/pyqd/v1/admin/users/alice/password", headers=admin, json={"password": "elevenchars"})
    assert r.status_code == 400 and "at least 12 characters" in r.json()["errorMessage"]
    assert api.token("alice", "alice-long-password")
    r = api.client.put("/oml/api/pyqd/v1/admin/users/alice/password", headers=admin, json={"password": "twelve-chars"})
    assert r.status_code == 200, r.text
    assert api.token("alice", "twelve-chars")
