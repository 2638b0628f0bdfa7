"""Attacks on identity from inside a script: the worker holds no credential, whatever Authorization it sends
is replaced by its call's narrow script token, and that token opens only what `import oml` needs, dies with
the caller's session, and never outlives the session's 8-hour cap."""

from __future__ import annotations

import json
import time

import jwt
import pytest

from server.auth.tokens import SCRIPT_SCOPE
from tests.conftest import wait_for

PYQD = "/oml/api/pyqd/v1"
TOKEN = "/omlusers/api/oauth2/v1/token"


def bearer_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].split(" ", 1)[1]


def script_token_for(api, headers: dict[str, str], call_id: str = "call-1") -> str:
    """A script token of the session behind `headers`, as the bridge mints it (what a thief would hold)."""
    signer = api.services.signer
    return signer.issue_script(signer.decode(bearer_of(headers)), call_id, expires_at=time.time() + 600).token


def record_mints(api, monkeypatch) -> list[str]:
    """Every script token the server mints from now on."""
    minted: list[str] = []
    signer = api.services.signer
    original = signer.issue_script

    def issue_script(*args, **kwargs):
        issued = original(*args, **kwargs)
        minted.append(issued.token)
        return issued

    monkeypatch.setattr(signer, "issue_script", issue_script)
    return minted


# The attacker's script: it holds no token of its own, so it tries every Authorization it can think of,
# including a real administrator's token passed to it, and reports what the server let it do.
PROBE = """def probe(stolen):
    import oml
    from oml._connection import current
    http = current().http
    out = {"held": current().token()}
    for label, auth in [("none", None), ("forged", "Bearer forged.jwt.value"), ("stolen", "Bearer " + stolen)]:
        headers = {"Authorization": auth} if auth else {}
        headers["Cookie"] = "session=" + stolen
        users = http.get("/oml/api/pyqd/v1/admin/users", headers=headers)
        mine = http.get("/oml/api/pyqd/v1/datastores", headers=headers)
        glob = http.post("/oml/api/pyqd/v1/scripts", headers=headers,
                         json={"name": "trojan", "script": "def trojan():\\n    return 1\\n", "isGlobal": True})
        out[label] = [users.status_code, mine.status_code, glob.status_code]
    out["refresh"] = http.post("/omlusers/api/oauth2/v1/token",
                               json={"grant_type": "password", "username": "ADMIN", "password": "x"}).status_code
    oml.ds.save(objs={"v": 1}, name="probe_ds", overwrite=True)
    return out
"""


def test_a_script_gets_its_callers_narrow_identity_whatever_authorization_it_sends(api, monkeypatch):
    minted = record_mints(api, monkeypatch)
    alice = api.user("ALICE")
    api.script(alice, "probe", PROBE)
    stolen = bearer_of(api.admin)
    r = api.run(alice, "do-eval", "probe", {"parameters": json.dumps({"stolen": stolen})})
    assert r.status_code == 200, r.text
    out = r.json()["result"]
    assert out["held"] == "channel"  # the worker never received a usable token
    for label in ("none", "forged", "stolen"):
        # admin route refused (403), own datastores listed (200), global script refused (403)
        assert out[label] == [403, 200, 403], (label, out)
    assert out["refresh"] == 400  # the bridge does not reach the token service at all
    # What the script saved belongs to the caller, not to the admin whose token it held.
    described = api.client.get(f"{PYQD}/datastores/probe_ds", headers=alice).json()["result"]
    assert described["owner"] == "ALICE"
    assert api.client.get(f"{PYQD}/datastores/probe_ds", headers=api.admin).status_code == 404
    assert api.client.get("/oml/api/py-scripts/v2/scripts/global", headers=alice).json()["result"] == []
    # One call, one token: minted once, for the caller's session, marked as a script's.
    assert len(minted) == 1
    claims = api.services.signer.decode(minted[0])
    assert claims.user == "ALICE" and claims.scope == SCRIPT_SCOPE and claims.call_id
    assert claims.sid == api.services.signer.decode(bearer_of(alice)).sid


def test_calls_that_never_import_oml_mint_no_token(api, monkeypatch):
    minted = record_mints(api, monkeypatch)
    alice = api.user("ALICE")
    api.script(alice, "plain", "def plain():\n    return 1\n")
    assert api.run(alice, "do-eval", "plain").json() == {"result": 1}
    assert minted == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", f"{PYQD}/admin/users", None),
        ("POST", f"{PYQD}/admin/users", {"name": "mallory", "password": "mallory-password", "admin": True}),
        ("POST", f"{PYQD}/admin/clients", {"name": "backdoor", "user": "ALICE"}),
        ("POST", f"{PYQD}/scripts", {"name": "t", "script": "def t():\n    return 1\n", "isGlobal": True}),
        ("POST", f"{PYQD}/scripts", {"name": "t", "script": "def t():\n    return 1\n"}),
        ("DELETE", f"{PYQD}/scripts/mine", None),
        ("POST", "/oml/api/py-scripts/v1/do-eval/mine", {}),
        ("GET", "/oml/api/py-scripts/v2/jobs", None),
        ("DELETE", f"{PYQD}/tables/T", None),
        ("GET", "/metrics", None),
        ("POST", f"{PYQD}/datastores/mine/grants", {"user": "MALLORY"}),
        ("DELETE", f"{PYQD}/datastores/mine/grants/MALLORY", None),
    ],
)
def test_a_stolen_script_token_is_refused_outside_what_oml_needs(api, method, path, body):
    alice = api.user("ALICE", admin=True)  # even an administrator's script token is no administrator
    api.script(alice, "mine", "def mine():\n    return 1\n")
    token = script_token_for(api, alice)
    r = api.client.request(method, path, headers={"Authorization": f"Bearer {token}"}, json=body)
    assert r.status_code == 403, r.text
    assert set(r.json()) == {"errorCode", "errorMessage"} and r.json()["errorCode"] == 1003
    # ... while the routes `import oml` uses accept it, as the caller.
    for ok_path in (f"{PYQD}/datastores", "/oml/api/py-scripts/v1/scripts", f"{PYQD}/scripts/mine", f"{PYQD}/tables"):
        assert api.client.get(ok_path, headers={"Authorization": f"Bearer {token}"}).status_code == 200, ok_path
    assert api.client.get(f"{PYQD}/scripts/mine", headers=alice).status_code == 200  # nothing was dropped


def test_a_script_token_can_neither_be_refreshed_nor_revoke_nor_reach_the_standard_endpoint(api):
    alice = api.user("ALICE")
    token = script_token_for(api, alice)
    r = api.client.post(TOKEN, json={"grant_type": "refresh_token", "refresh_token": token})
    assert r.status_code == 401 and "script" in r.json()["errorMessage"]
    r = api.client.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": token})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = api.client.post(f"{TOKEN}/revoke", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert api.client.get(f"{PYQD}/datastores", headers=alice).status_code == 200  # the session lives on


def test_revoking_the_callers_session_revokes_its_script_tokens_at_once(api):
    alice = api.user("ALICE")
    token = script_token_for(api, alice)
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.get(f"{PYQD}/datastores", headers=headers).status_code == 200  # now cached as good
    r = api.client.post(f"{TOKEN}/revoke", headers=alice)
    assert r.status_code == 200, r.text
    r = api.client.get(f"{PYQD}/datastores", headers=headers)
    assert r.status_code == 401 and "revoked" in r.json()["errorMessage"]


def test_a_password_change_ends_the_script_tokens_of_earlier_sessions(api):
    alice = api.user("ALICE")
    token = script_token_for(api, alice)
    r = api.client.put(f"{PYQD}/admin/users/ALICE/password", headers=api.admin, json={"password": "a-new-password"})
    assert r.status_code == 200, r.text
    assert api.client.get(f"{PYQD}/datastores", headers={"Authorization": f"Bearer {token}"}).status_code == 401


# A job that shows its oml works, then keeps using it until the server refuses: the test revokes the
# session that submitted the job in between.
WATCH = """def watch():
    import time
    import oml
    oml.ds.save(objs={"v": 1}, name="started", overwrite=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            oml.ds.dir()
        except oml.AuthenticationError as e:
            return "refused: " + str(e)
        time.sleep(0.05)
    return "still allowed"
"""


def test_a_running_jobs_oml_dies_with_the_session_that_submitted_it(api):
    alice = api.user("ALICE")
    other_session = api.headers("ALICE", "password-of-ALICE")  # the same user, a session of its own
    api.script(alice, "watch", WATCH)
    r = api.run(alice, "do-eval", "watch", {"asyncFlag": True})
    assert r.status_code == 201, r.text
    location = r.headers["location"]
    wait_for(lambda: api.client.get(f"{PYQD}/datastores/started", headers=other_session).status_code == 200, 60)
    assert api.client.post(f"{TOKEN}/revoke", headers=alice).status_code == 200

    def finished():
        r = api.client.get(location, headers=other_session, follow_redirects=False)
        return r.status_code == 302

    wait_for(finished, timeout=120)
    result = api.client.get(f"{location}/result", headers=other_session)
    assert result.status_code == 200, result.text
    assert result.json()["result"].startswith("refused: "), result.text


def test_a_jobs_script_token_never_outlives_the_8_hour_session_cap(api, monkeypatch):
    minted = record_mints(api, monkeypatch)
    alice = api.user("ALICE")
    api.script(alice, "uses_oml", "def uses_oml():\n    import oml\n    return len(oml.ds.dir())\n")
    started = time.time()
    r = api.run(alice, "do-eval", "uses_oml", {"asyncFlag": True, "timeout": 43200})  # a 12-hour job
    assert r.status_code == 201, r.text
    location = r.headers["location"]
    wait_for(lambda: api.client.get(location, headers=alice, follow_redirects=False).status_code == 302, 60)
    assert api.client.get(f"{location}/result", headers=alice).json() == {"result": 0}
    assert len(minted) == 1
    payload = jwt.decode(minted[0], options={"verify_signature": False})
    assert payload["scp"] == SCRIPT_SCOPE
    session_first_issue = payload["oat"] / 1000
    assert payload["exp"] <= session_first_issue + api.services.settings.token_max_age_s
    assert payload["exp"] <= started + 8 * 3600 + 5


def test_the_bridge_answers_garbage_with_a_400_and_never_raises(api):
    bridge = api.services.bridge
    assert bridge is not None
    no_token = lambda: None  # noqa: E731
    good_headers = [(b"accept", b"*/*")]
    garbage = [
        None,
        "http",
        ("http",),
        ("http", "GET", "/oml/api/pyqd/v1/datastores", good_headers),
        ("https", "GET", "/oml/api/pyqd/v1/datastores", good_headers, b""),
        ("http", "TRACE", "/oml/api/pyqd/v1/datastores", good_headers, b""),
        ("http", b"GET", "/oml/api/pyqd/v1/datastores", good_headers, b""),
        ("http", "GET", "oml/api/pyqd/v1/datastores", good_headers, b""),
        ("http", "GET", "//evil.example/oml/x", good_headers, b""),
        ("http", "GET", "/omlusers/api/oauth2/v1/token", good_headers, b""),
        ("http", "GET", "/oml/../omlusers/api/oauth2/v1/token", good_headers, b""),
        ("http", "GET", "/oml/%2e%2e/admin", good_headers, b""),
        ("http", "GET", "/oml/api/pyqd/v1/datastores\r\nX: y", good_headers, b""),
        ("http", "GET", "/oml/" + "a" * 20000, good_headers, b""),
        ("http", "GET", "/oml/api/pyqd/v1/datastores", "headers", b""),
        ("http", "GET", "/oml/api/pyqd/v1/datastores", [("accept", "*/*")], b""),
        ("http", "GET", "/oml/api/pyqd/v1/datastores", [(b"accept", b"x" * 10000)], b""),
        ("http", "GET", "/oml/api/pyqd/v1/datastores", [(b"x", b"y")] * 1000, b""),
        ("http", "GET", "/oml/api/pyqd/v1/datastores", [(b"accept", b"a\r\nb")], b""),
        ("http", "POST", "/oml/api/pyqd/v1/datastores/x", good_headers, "text, not bytes"),
    ]
    for message in garbage:
        answer = bridge.handle(message, no_token)  # type: ignore[arg-type]
        assert answer[0] == "http-response" and answer[1] == 400, message
        assert json.loads(answer[3])["errorCode"] == 1000
    # A well-formed request of a call without a session: a clean 401, not a crash.
    answer = bridge.handle(("http", "GET", "/oml/api/pyqd/v1/datastores", good_headers, b""), no_token)
    assert answer[1] == 401
    assert api.client.get("/health").status_code == 200


# A script Mallory grants to Alice: when Alice runs it, it tries to hand Alice's datastore to Mallory.
TROJAN = """def trojan():
    import oml
    oml.ds.save(objs={"loot": "alice's secret"}, name="loot", overwrite=True, grantable=True)
    try:
        oml.grant(name="loot", typ="datastore", user="MALLORY")
        return "granted"
    except Exception as e:
        return type(e).__name__
"""


def test_a_granted_trojan_script_cannot_grant_its_callers_datastores_to_its_author(api):
    mallory, alice = api.user("MALLORY"), api.user("ALICE")
    api.script(mallory, "trojan", TROJAN)
    r = api.client.post(f"{PYQD}/scripts/trojan/grants", headers=mallory, json={"user": "ALICE"})
    assert r.status_code in (200, 201, 204), r.text
    r = api.run(alice, "do-eval", "trojan", {"trustPickle": True}, owner="MALLORY")  # trusted: it may write
    assert r.status_code == 200, r.text
    assert r.json()["result"] != "granted"
    assert api.client.get(f"{PYQD}/datastores/loot", headers=mallory, params={"owner": "ALICE"}).status_code == 404
    assert api.client.get(f"{PYQD}/datastores/loot", headers=alice).status_code == 200  # Alice's, and hers only


# A script Mallory grants to Alice: it tries to plant a pickle in Alice's datastore (it would run when Alice
# loads it) and to leave code behind in the worker for Alice's own next call.
PLANT = """def plant():
    import sys, oml
    sys._pyqd_planted = "mallory was here"
    try:
        oml.ds.save(objs={"model": 1}, name="ALICE_DS", overwrite=True)
        return "saved"
    except Exception as e:
        return type(e).__name__
"""
MINE = "def mine():\n    import sys\n    return getattr(sys, '_pyqd_planted', None)\n"


def test_another_owners_script_may_only_read_and_never_shares_the_callers_workers(api):
    mallory, alice = api.user("MALLORY"), api.user("ALICE")
    api.script(mallory, "plant", PLANT)
    r = api.client.post(f"{PYQD}/scripts/plant/grants", headers=mallory, json={"user": "ALICE"})
    assert r.status_code in (200, 201, 204), r.text
    api.script(alice, "mine", MINE)
    assert api.run(alice, "do-eval", "mine").json() == {"result": None}  # Alice's own worker, warm
    r = api.run(alice, "do-eval", "plant", owner="MALLORY")
    assert r.status_code == 200, r.text
    assert r.json()["result"] != "saved"
    assert api.client.get(f"{PYQD}/datastores/ALICE_DS", headers=alice).status_code == 404
    for _ in range(3):  # Alice's own code never runs where Mallory's ran
        assert api.run(alice, "do-eval", "mine").json() == {"result": None}
    # Trusting the owner (the same opt-in as for its pickles) lets its oml write as the caller.
    r = api.run(alice, "do-eval", "plant", {"trustPickle": True}, owner="MALLORY")
    assert r.json()["result"] == "saved"
    assert api.client.get(f"{PYQD}/datastores/ALICE_DS", headers=alice).status_code == 200
