"""The script repository over REST: pyqd's create/get/drop/grant and Oracle's v1/v2 listings."""

from __future__ import annotations

import re

import pytest

EXT = "/oml/api/pyqd/v1"
#: The two spellings of Oracle's py-scripts prefix (DESIGN §5).
PY_SCRIPTS_FORMS = ["/oml/api/py-scripts", "/oml/tenants/PYQD/databases/PYQD/api/py-scripts"]
LISTING_KEYS = {"owner", "date", "name", "description", "script"}
#: OML's timestamps: ISO-8601 UTC with milliseconds and Z, e.g. 2020-08-27T15:53:56.000Z.
OML_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


def fn(name: str, body: str = "return 1") -> str:
    return f"def {name}(x=None):\n    {body}\n"


def create(api, headers, name, source=None, **extra):
    body = {"name": name, "script": source if source is not None else fn(name), **extra}
    return api.client.post(f"{EXT}/scripts", headers=headers, json=body)


def get(api, headers, name, owner=None):
    params = {"owner": owner} if owner else {}
    return api.client.get(f"{EXT}/scripts/{name}", headers=headers, params=params)


def names(api, headers, path):
    r = api.client.get(path, headers=headers)
    assert r.status_code == 200, r.text
    return sorted((i["owner"], i["name"]) for i in r.json()["result"])


def v2(api, headers, sctype, prefix=PY_SCRIPTS_FORMS[0]):
    return names(api, headers, f"{prefix}/v2/scripts/{sctype}")


def v1(api, headers, prefix=PY_SCRIPTS_FORMS[0]):
    return names(api, headers, f"{prefix}/v1/scripts")


def assert_error(r, status: int, *fragments: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"errorCode", "errorMessage"}
    for f in fragments:
        assert f in body["errorMessage"], body["errorMessage"]


# --- create, overwrite, get ---------------------------------------------------------------------------


def test_create_then_get_returns_the_stored_script(api):
    alice = api.user("alice")
    src = "import math\n\ndef area(r):\n    return math.pi * r * r\n"
    r = create(api, alice, "area", src, description="circle area")
    assert r.status_code == 201, r.text
    created = r.json()["result"]
    assert created["owner"] == "ALICE" and created["name"] == "area" and created["script"] == src
    assert created["description"] == "circle area"

    got = get(api, alice, "area").json()["result"]
    assert set(got) == LISTING_KEYS
    assert got == created


def test_create_existing_without_overwrite_is_400_and_keeps_the_old_source(api):
    alice = api.user("alice")
    assert create(api, alice, "f", fn("f", "return 'old'")).status_code == 201
    assert_error(create(api, alice, "f", fn("f", "return 'new'")), 400, "already exists")
    assert_error(create(api, alice, "f", fn("f", "return 'new'"), overwrite=False), 400, "already exists")
    assert get(api, alice, "f").json()["result"]["script"] == fn("f", "return 'old'")


def test_overwrite_replaces_source_and_description(api):
    alice = api.user("alice")
    assert create(api, alice, "f", fn("f", "return 'old'"), description="first").status_code == 201
    r = create(api, alice, "f", fn("f", "return 'new'"), overwrite=True)
    assert r.status_code == 201, r.text
    got = get(api, alice, "f").json()["result"]
    assert got["script"] == fn("f", "return 'new'")
    assert got["description"] is None
    # Still one script, not two.
    assert v2(api, alice, "user") == [("ALICE", "f")]


def test_overwrite_of_a_missing_script_creates_it(api):
    alice = api.user("alice")
    assert create(api, alice, "fresh", overwrite=True).status_code == 201
    assert get(api, alice, "fresh").status_code == 200


def test_repository_name_need_not_match_the_def_name(api):
    alice = api.user("alice")
    assert create(api, alice, "MyLM_function", "def build_lm_str(dat):\n    return dat\n").status_code == 201
    assert get(api, alice, "MyLM_function").json()["result"]["script"].startswith("def build_lm_str")


def test_names_are_case_sensitive(api):
    alice = api.user("alice")
    assert create(api, alice, "Score", fn("Score", "return 'upper'")).status_code == 201
    assert create(api, alice, "score", fn("score", "return 'lower'")).status_code == 201
    assert "upper" in get(api, alice, "Score").json()["result"]["script"]
    assert "lower" in get(api, alice, "score").json()["result"]["script"]


def test_unknown_body_fields_and_wrong_types_are_400(api):
    alice = api.user("alice")
    r = api.client.post(f"{EXT}/scripts", headers=alice, json={"name": "f", "script": fn("f"), "bogus": 1})
    assert_error(r, 400)
    r = api.client.post(f"{EXT}/scripts", headers=alice, json={"name": "f", "script": 42})
    assert_error(r, 400)
    r = api.client.post(f"{EXT}/scripts", headers=alice, content=b"not json", params={})
    assert_error(r, 400)
    assert get(api, alice, "f").status_code == 404


def test_requests_without_a_token_are_401(api):
    assert api.client.post(f"{EXT}/scripts", json={"name": "f", "script": fn("f")}).status_code == 401
    assert api.client.get(f"{EXT}/scripts/f").status_code == 401
    assert api.client.get("/oml/api/py-scripts/v1/scripts").status_code == 401
    r = api.client.get("/oml/api/py-scripts/v1/scripts", headers={"Authorization": "Bearer not-a-jwt"})
    assert r.status_code == 401


# --- global scripts -----------------------------------------------------------------------------------


def test_global_script_shows_owner_pyqsys_and_is_visible_to_everyone(api):
    alice, bob = api.user("alice"), api.user("bob")
    r = create(api, api.admin, "shared", isGlobal=True)
    assert r.status_code == 201, r.text
    assert r.json()["result"]["owner"] == "PYQSYS"

    for who in (alice, bob, api.admin):
        got = get(api, who, "shared")
        assert got.status_code == 200, got.text
        assert got.json()["result"]["owner"] == "PYQSYS"
        assert ("PYQSYS", "shared") in v1(api, who)
        assert v2(api, who, "global") == [("PYQSYS", "shared")]
        assert ("PYQSYS", "shared") in v2(api, who, "all")
        assert get(api, who, "shared", owner="PYQSYS").status_code == 200
    # A global script is nobody's own and was granted to nobody.
    assert v2(api, alice, "user") == []
    assert v2(api, bob, "granted") == []


def test_global_and_private_scripts_of_one_name_live_side_by_side(api):
    alice = api.user("alice")
    assert create(api, alice, "f", fn("f", "return 'private'")).status_code == 201
    assert create(api, api.admin, "f", fn("f", "return 'global'"), isGlobal=True).status_code == 201
    assert v2(api, alice, "all") == [("ALICE", "f"), ("PYQSYS", "f")]
    r = api.client.delete(f"{EXT}/scripts/f", headers=alice)
    assert r.status_code == 200, r.text
    assert "global" in get(api, alice, "f").json()["result"]["script"]


def test_only_an_administrator_may_create_replace_or_drop_a_global_script(api):
    alice, bob = api.user("alice"), api.user("bob")
    # The attack: an ordinary user plants a trojan global script that others would run with their identity.
    trojan = fn("g", "import oml; return oml._connection.current().token()")
    assert_error(create(api, alice, "g", trojan, isGlobal=True), 403, "administrator")
    assert v2(api, bob, "global") == [] and v2(api, alice, "all") == []
    assert_error(get(api, bob, "g"), 404)

    assert create(api, api.admin, "g", fn("g", "return 'admin'"), isGlobal=True).status_code == 201
    # Neither replacing nor dropping it is open to ordinary users.
    assert_error(create(api, alice, "g", trojan, isGlobal=True, overwrite=True), 403, "administrator")
    assert_error(api.client.delete(f"{EXT}/scripts/g", headers=bob, params={"global": "true"}), 403, "g")
    assert "admin" in get(api, bob, "g").json()["result"]["script"]
    # Dropping without global=true looks for bob's own private script: there is none.
    assert_error(api.client.delete(f"{EXT}/scripts/g", headers=bob), 404)

    other_admin = api.user("root2", admin=True)
    r = create(api, other_admin, "g", fn("g", "return 'root2'"), isGlobal=True, overwrite=True)
    assert r.status_code == 201, r.text
    assert "root2" in get(api, alice, "g").json()["result"]["script"]
    r = api.client.delete(f"{EXT}/scripts/g", headers=api.admin, params={"global": "true"})
    assert r.status_code == 200, r.text
    assert get(api, alice, "g").status_code == 404
    assert v2(api, bob, "global") == []


# --- private scripts and grants -----------------------------------------------------------------------


def test_private_script_is_invisible_to_other_users(api):
    alice, bob = api.user("alice"), api.user("bob")
    assert create(api, alice, "secret").status_code == 201

    assert_error(get(api, bob, "secret"), 404)
    assert_error(get(api, bob, "secret", owner="ALICE"), 404)
    assert v1(api, bob) == []
    for sctype in ("user", "all", "global", "granted", "grant"):
        assert v2(api, bob, sctype) == [], sctype
    # The answer for a hidden script is the answer for a missing one: existence is not revealed.
    hidden = get(api, bob, "secret", owner="ALICE").json()["errorMessage"]
    missing = get(api, bob, "nosuch", owner="ALICE").json()["errorMessage"]
    assert hidden == missing.replace("nosuch", "secret")
    # Bob cannot grant, revoke or drop Alice's script either.
    assert_error(api.client.post(f"{EXT}/scripts/secret/grants", headers=bob, json={"user": "BOB"}), 404)
    assert_error(api.client.delete(f"{EXT}/scripts/secret", headers=bob), 404)
    assert get(api, alice, "secret").status_code == 200


def test_grant_to_a_user_makes_the_script_visible_and_revoke_hides_it(api):
    alice, bob, carol = api.user("alice"), api.user("bob"), api.user("carol")
    assert create(api, alice, "shared_fn").status_code == 201

    r = api.client.post(f"{EXT}/scripts/shared_fn/grants", headers=alice, json={"user": "bob"})
    assert r.status_code == 200, r.text

    assert get(api, bob, "shared_fn", owner="ALICE").json()["result"]["owner"] == "ALICE"
    assert get(api, bob, "shared_fn", owner="alice").status_code == 200  # owner names are case-insensitive
    assert v1(api, bob) == [("ALICE", "shared_fn")]
    assert v2(api, bob, "all") == [("ALICE", "shared_fn")]
    assert v2(api, bob, "granted") == [("ALICE", "shared_fn")]
    assert v2(api, bob, "user") == []
    grants = api.client.get("/oml/api/py-scripts/v2/scripts/grant", headers=alice).json()["result"]
    assert [(g["name"], g["grantee"]) for g in grants] == [("shared_fn", "BOB")]
    # Only bob got it.
    assert_error(get(api, carol, "shared_fn", owner="ALICE"), 404)
    assert v2(api, carol, "all") == []

    r = api.client.delete(f"{EXT}/scripts/shared_fn/grants/BOB", headers=alice)
    assert r.status_code == 200, r.text
    assert_error(get(api, bob, "shared_fn", owner="ALICE"), 404)
    assert v1(api, bob) == []
    assert v2(api, bob, "granted") == []
    assert api.client.get("/oml/api/py-scripts/v2/scripts/grant", headers=alice).json()["result"] == []


def test_granting_twice_is_idempotent(api):
    alice, _ = api.user("alice"), api.user("bob")
    assert create(api, alice, "f").status_code == 201
    for _ in range(2):
        assert api.client.post(f"{EXT}/scripts/f/grants", headers=alice, json={"user": "BOB"}).status_code == 200
    grants = api.client.get("/oml/api/py-scripts/v2/scripts/grant", headers=alice).json()["result"]
    assert [g["grantee"] for g in grants] == ["BOB"]


def test_grant_to_public_reaches_every_user_and_revoke_takes_it_back(api):
    alice, bob, carol = api.user("alice"), api.user("bob"), api.user("carol")
    assert create(api, alice, "pub").status_code == 201
    # PUBLIC is spelled as an empty body, a null user, the name PUBLIC, or no body at all.
    for kwargs in ({"json": {}}, {"json": {"user": None}}, {"json": {"user": "public"}}, {}):
        r = api.client.post(f"{EXT}/scripts/pub/grants", headers=alice, **kwargs)
        assert r.status_code == 200, (kwargs, r.text)
        for who in (bob, carol):
            assert get(api, who, "pub", owner="ALICE").status_code == 200, kwargs
            assert v2(api, who, "granted") == [("ALICE", "pub")]
        grants = api.client.get("/oml/api/py-scripts/v2/scripts/grant", headers=alice).json()["result"]
        assert [(g["name"], g["grantee"]) for g in grants] == [("pub", "PUBLIC")], kwargs

        assert api.client.delete(f"{EXT}/scripts/pub/grants/PUBLIC", headers=alice).status_code == 200
        for who in (bob, carol):
            assert_error(get(api, who, "pub", owner="ALICE"), 404)
            assert v1(api, who) == []


def test_grant_to_an_unknown_user_is_404_and_grants_nothing(api):
    alice = api.user("alice")
    assert create(api, alice, "f").status_code == 201
    assert_error(api.client.post(f"{EXT}/scripts/f/grants", headers=alice, json={"user": "NOBODY"}), 404)
    assert api.client.get("/oml/api/py-scripts/v2/scripts/grant", headers=alice).json()["result"] == []


def test_grants_apply_to_private_scripts_only(api):
    alice, _ = api.user("alice"), api.user("bob")
    assert create(api, api.admin, "g", isGlobal=True).status_code == 201
    # Alice has no private script g; the global one needs no grant.
    assert_error(api.client.post(f"{EXT}/scripts/g/grants", headers=alice, json={"user": "BOB"}), 404)


def test_dropping_a_script_drops_its_grants(api):
    alice, bob = api.user("alice"), api.user("bob")
    assert create(api, alice, "f").status_code == 201
    assert api.client.post(f"{EXT}/scripts/f/grants", headers=alice, json={"user": "BOB"}).status_code == 200
    assert api.client.delete(f"{EXT}/scripts/f", headers=alice).status_code == 200
    assert create(api, alice, "f").status_code == 201
    assert_error(get(api, bob, "f", owner="ALICE"), 404)
    assert api.client.get("/oml/api/py-scripts/v2/scripts/grant", headers=alice).json()["result"] == []


# --- resolution ---------------------------------------------------------------------------------------


def test_resolution_is_own_first_then_global_and_owner_picks_explicitly(api):
    alice, bob = api.user("alice"), api.user("bob")
    assert create(api, api.admin, "f", fn("f", "return 'global'"), isGlobal=True).status_code == 201
    assert create(api, alice, "f", fn("f", "return 'alice'")).status_code == 201

    assert "alice" in get(api, alice, "f").json()["result"]["script"]
    assert "global" in get(api, bob, "f").json()["result"]["script"]
    assert "global" in get(api, alice, "f", owner="PYQSYS").json()["result"]["script"]
    assert "alice" in get(api, alice, "f", owner="ALICE").json()["result"]["script"]

    # Without owner, another user's granted script is not picked: own, then global only.
    assert api.client.post(f"{EXT}/scripts/f/grants", headers=alice, json={"user": "BOB"}).status_code == 200
    assert "global" in get(api, bob, "f").json()["result"]["script"]
    assert "alice" in get(api, bob, "f", owner="ALICE").json()["result"]["script"]

    assert api.client.delete(f"{EXT}/scripts/f", headers=alice).status_code == 200
    assert "global" in get(api, alice, "f").json()["result"]["script"]


def test_missing_script_is_404(api):
    alice = api.user("alice")
    assert_error(get(api, alice, "nosuch"), 404, "nosuch")
    assert_error(api.client.delete(f"{EXT}/scripts/nosuch", headers=alice), 404, "nosuch")
    assert_error(api.client.delete(f"{EXT}/scripts/nosuch", headers=api.admin, params={"global": "true"}), 404)
    assert_error(api.client.post(f"{EXT}/scripts/nosuch/grants", headers=alice, json={}), 404)
    assert_error(api.client.delete(f"{EXT}/scripts/nosuch/grants/PUBLIC", headers=alice), 404)


# --- listings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", PY_SCRIPTS_FORMS)
def test_listings_have_oracles_shape_in_both_url_forms(api, prefix):
    alice, bob = api.user("alice"), api.user("bob")
    assert create(api, alice, "mine", description="my function").status_code == 201
    assert create(api, api.admin, "everyone", isGlobal=True).status_code == 201
    assert create(api, bob, "bobs").status_code == 201
    assert api.client.post(f"{EXT}/scripts/bobs/grants", headers=bob, json={"user": "ALICE"}).status_code == 200
    assert api.client.post(f"{EXT}/scripts/mine/grants", headers=alice, json={"user": "BOB"}).status_code == 200

    expected = {
        "v1/scripts": [("ALICE", "mine"), ("BOB", "bobs"), ("PYQSYS", "everyone")],
        "v2/scripts": [("ALICE", "mine"), ("BOB", "bobs"), ("PYQSYS", "everyone")],
        "v2/scripts/all": [("ALICE", "mine"), ("BOB", "bobs"), ("PYQSYS", "everyone")],
        "v2/scripts/user": [("ALICE", "mine")],
        "v2/scripts/global": [("PYQSYS", "everyone")],
        "v2/scripts/granted": [("BOB", "bobs")],
        "v2/scripts/grant": [("ALICE", "mine")],
    }
    for path, want in expected.items():
        r = api.client.get(f"{prefix}/{path}", headers={**alice, "Accept": "application/json"})
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"].startswith("application/json")
        body = r.json()
        assert set(body) == {"result"}
        items = body["result"]
        # Sorted by owner, then name, as Oracle lists them.
        assert [(i["owner"], i["name"]) for i in items] == want, path
        for item in items:
            keys = LISTING_KEYS | {"grantee"} if path.endswith("/grant") else LISTING_KEYS
            assert set(item) == keys, (path, item)
            assert OML_DATE_RE.fullmatch(item["date"]), item["date"]
            assert item["script"].startswith("def ")
    mine = api.client.get(f"{prefix}/v2/scripts/user", headers=alice).json()["result"][0]
    assert mine["description"] == "my function" and mine["script"] == fn("mine")
    granted = api.client.get(f"{prefix}/v2/scripts/grant", headers=alice).json()["result"][0]
    assert granted["grantee"] == "BOB"
    everyone = api.client.get(f"{prefix}/v2/scripts/global", headers=alice).json()["result"][0]
    assert everyone["description"] is None


def test_listing_date_is_the_last_change_in_utc(api):
    from datetime import UTC, datetime, timedelta

    alice = api.user("alice")
    before = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    assert create(api, alice, "f").status_code == 201
    (item,) = api.client.get("/oml/api/py-scripts/v2/scripts/user", headers=alice).json()["result"]
    stamp = datetime.strptime(item["date"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert before <= stamp <= datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=1)


def test_unknown_tenant_and_script_type_are_rejected(api):
    alice = api.user("alice")
    r = api.client.get("/oml/tenants/OTHER/databases/PYQD/api/py-scripts/v1/scripts", headers=alice)
    assert_error(r, 404)
    r = api.client.get("/oml/tenants/pyqd/databases/pyqd/api/py-scripts/v1/scripts", headers=alice)
    assert r.status_code == 200  # tenant and database names are case-insensitive
    assert_error(api.client.get("/oml/api/py-scripts/v2/scripts/everything", headers=alice), 400)


def test_extension_routes_answer_in_the_tenant_form_too(api):
    alice = api.user("alice")
    base = "/oml/tenants/PYQD/databases/PYQD/api/pyqd/v1"
    r = api.client.post(f"{base}/scripts", headers=alice, json={"name": "t", "script": fn("t")})
    assert r.status_code == 201, r.text
    assert api.client.get(f"{base}/scripts/t", headers=alice).json()["result"]["name"] == "t"
    assert api.client.delete(f"{base}/scripts/t", headers=alice).status_code == 200
    assert get(api, alice, "t").status_code == 404


# --- source and name checks ---------------------------------------------------------------------------


def test_syntax_error_is_400_with_the_line_number(api):
    alice = api.user("alice")
    src = "def f(x):\n    y = x + 1\n    return (y\n\n"
    r = create(api, alice, "broken", src)
    assert_error(r, 400, "SyntaxError", "line 3")
    src = "def f(x):\n    return x\n\ndef g(:\n    pass\n"
    assert_error(create(api, alice, "broken", src), 400, "line 4")
    assert get(api, alice, "broken").status_code == 404


def test_source_without_a_top_level_function_is_400(api):
    alice = api.user("alice")
    for source in [
        "x = 1\nprint(x)\n",
        "class Model:\n    def predict(self, x):\n        return x\n",
        "f = lambda x: x\n",
        "import math\n",
    ]:
        assert_error(create(api, alice, "nofunc", source), 400, "function")
    assert v2(api, alice, "user") == []


def test_empty_source_is_400(api):
    alice = api.user("alice")
    for source in ["", "   \n\t\n", "\n"]:
        assert_error(create(api, alice, "empty", source), 400, "empty")
    assert v2(api, alice, "user") == []


def test_source_with_a_nul_byte_is_400(api):
    alice = api.user("alice")
    assert_error(create(api, alice, "nul", "def f():\n    return '\x00'\x00\n"), 400)


INVALID_NAMES = ["../x", "a/b", "a b", "x" * 129, "1abc", "", "-x", "a\\b", "a%2Fb", "ä", ".hidden", "a\x00b"]
#: The same tricks as they appear in a URL path.
INVALID_PATH_NAMES = ["..%2Fx", "a%2Fb", "a%20b", "x" * 129, "1abc", "a%00b", "%2E%2E", "a%5Cb"]


def test_invalid_names_are_400_on_create(api):
    alice = api.user("alice")
    for name in INVALID_NAMES:
        r = create(api, alice, name, fn("f"))
        assert r.status_code == 400, (name, r.text)
        assert set(r.json()) == {"errorCode", "errorMessage"}
    assert v2(api, alice, "user") == []


def test_invalid_names_in_the_path_are_400_or_404_never_500(api):
    alice = api.user("alice")
    assert create(api, alice, "victim").status_code == 201
    for name in INVALID_PATH_NAMES:
        for method, path, kwargs in [
            ("GET", f"{EXT}/scripts/{name}", {}),
            ("DELETE", f"{EXT}/scripts/{name}", {}),
            ("POST", f"{EXT}/scripts/{name}/grants", {"json": {}}),
            ("DELETE", f"{EXT}/scripts/{name}/grants/PUBLIC", {}),
        ]:
            r = api.client.request(method, path, headers=alice, **kwargs)
            assert r.status_code in (400, 404), (method, path, r.status_code, r.text)
            assert set(r.json()) == {"errorCode", "errorMessage"}
    assert get(api, alice, "victim").status_code == 200


def test_longest_valid_name_works(api):
    alice = api.user("alice")
    name = "n" * 128
    assert create(api, alice, name).status_code == 201
    assert get(api, alice, name).json()["result"]["name"] == name
    assert api.client.delete(f"{EXT}/scripts/{name}", headers=alice).status_code == 200


def test_odd_owner_parameters_are_400_or_404(api):
    alice = api.user("alice")
    assert create(api, alice, "f").status_code == 201
    for owner in ["../ALICE", "x" * 31, "ALICE; DROP TABLE x", "PUBLIC"]:
        r = get(api, alice, "f", owner=owner)
        assert r.status_code in (400, 404), (owner, r.text)


# --- concurrency over a real socket -------------------------------------------------------------------


def test_concurrent_creates_of_one_script(live_server, services):
    """Racing creates: with overwrite every one succeeds and one source wins whole; without, one wins, the
    rest are told it exists. Never a 500."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from server import accounts

    accounts.add_user(services, "RACER", "racer-pw-long-password")
    token = httpx.post(
        f"{live_server}/omlusers/api/oauth2/v1/token",
        json={"grant_type": "password", "username": "RACER", "password": "racer-pw-long-password"},
    ).json()["accessToken"]
    headers = {"Authorization": f"Bearer {token}"}
    racers = 6

    def create_version(args: tuple[str, int, bool]) -> int:
        name, i, overwrite = args
        body = {"name": name, "script": fn(name, f"return {i}"), "overwrite": overwrite}
        with httpx.Client(base_url=live_server, timeout=60) as c:
            return c.post(f"{EXT}/scripts", headers=headers, json=body).status_code

    with ThreadPoolExecutor(racers) as pool:
        replaced = list(pool.map(create_version, [("replaced", i, True) for i in range(racers)]))
        created = list(pool.map(create_version, [("created", i, False) for i in range(racers)]))
    assert replaced == [201] * racers
    assert sorted(created) == [201] + [400] * (racers - 1)
    with httpx.Client(base_url=live_server) as c:
        items = c.get("/oml/api/py-scripts/v2/scripts/user", headers=headers).json()["result"]
    assert sorted(i["name"] for i in items) == ["created", "replaced"]
    for item in items:
        assert item["script"] in [fn(item["name"], f"return {i}") for i in range(racers)]
