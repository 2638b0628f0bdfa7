"""Datastores over REST (multipart saves, describe, load, delete, grants, limits, concurrency) and through `oml.ds`."""

from __future__ import annotations

import hashlib
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression

import oml
from server import accounts

EXT = "/oml/api/pyqd/v1"


def save(client, headers, name, objs, **meta):
    """POST a multipart save: a `meta` JSON part and one file part per object (`objs`: name → bytes)."""
    files = [(k, (k, v, "application/octet-stream")) for k, v in objs.items()]
    return client.post(
        f"{EXT}/datastores/{name}", headers=headers, data={"meta": orjson.dumps(meta).decode()}, files=files
    )


def describe(client, headers, name, owner=None):
    params = {"owner": owner} if owner else {}
    return client.get(f"{EXT}/datastores/{name}", headers=headers, params=params)


def contents(client, headers, name, owner=None) -> dict[str, bytes]:
    """Every object of a datastore as name → bytes, read back over REST."""
    r = describe(client, headers, name, owner)
    assert r.status_code == 200, r.text
    out = {}
    params = {"owner": owner} if owner else {}
    for o in r.json()["result"]["objects"]:
        got = client.get(f"{EXT}/datastores/{name}/objects/{o['object_name']}", headers=headers, params=params)
        assert got.status_code == 200, got.text
        out[o["object_name"]] = got.content
    return out


def listing(client, headers, dstype="user"):
    r = client.get(f"{EXT}/datastores", headers=headers, params={"type": dstype})
    assert r.status_code == 200, r.text
    return r.json()["result"]


def assert_error(r, status: int, *fragments: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"errorCode", "errorMessage"}
    for f in fragments:
        assert f in body["errorMessage"], body["errorMessage"]


# --- REST: save, describe, load -----------------------------------------------------------------------


def test_save_then_describe_and_load_each_object(api):
    alice = api.user("alice")
    objs = {"model": pickle.dumps({"coef": [1.5, 2.5]}), "n": pickle.dumps(7)}
    r = save(
        api.client,
        alice,
        "ds1",
        objs,
        description="first",
        grantable=True,
        objects={"model": {"class": "dict", "length": 1, "row_count": 1, "col_count": 1}, "n": {"class": "int"}},
    )
    assert r.status_code == 201, r.text
    info = r.json()["result"]
    assert info["owner"] == "ALICE" and info["datastore_name"] == "ds1"
    assert info["object_count"] == 2 and info["size"] == sum(len(v) for v in objs.values())
    assert info["description"] == "first" and info["grantable"] is True

    desc = describe(api.client, alice, "ds1").json()["result"]
    assert [o["object_name"] for o in desc["objects"]] == ["model", "n"]
    model, n = desc["objects"]
    assert model["class"] == "dict" and model["size"] == len(objs["model"])
    assert (model["length"], model["row_count"], model["col_count"]) == (1, 1, 1)
    assert model["digest"] == hashlib.sha256(objs["model"]).hexdigest()
    assert n["class"] == "int"

    assert contents(api.client, alice, "ds1") == objs
    got = api.client.get(f"{EXT}/datastores/ds1/objects/n", headers=alice)
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["x-pyqd-class"] == "int"
    assert_error(api.client.get(f"{EXT}/datastores/ds1/objects/nosuch", headers=alice), 404, "nosuch")


def test_object_get_honours_if_none_match(api):
    alice = api.user("alice")
    assert save(api.client, alice, "ds", {"x": b"version-1"}).status_code == 201
    first = api.client.get(f"{EXT}/datastores/ds/objects/x", headers=alice)
    etag = first.headers["etag"]
    assert etag == f'"{hashlib.sha256(b"version-1").hexdigest()}"'

    again = api.client.get(f"{EXT}/datastores/ds/objects/x", headers={**alice, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag

    other = api.client.get(f"{EXT}/datastores/ds/objects/x", headers={**alice, "If-None-Match": '"0000"'})
    assert other.status_code == 200 and other.content == b"version-1"

    assert save(api.client, alice, "ds", {"x": b"version-2"}, overwrite=True).status_code == 201
    changed = api.client.get(f"{EXT}/datastores/ds/objects/x", headers={**alice, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.content == b"version-2"
    assert changed.headers["etag"] != etag


def test_save_over_an_existing_datastore_without_overwrite_or_append_is_400(api):
    alice = api.user("alice")
    assert save(api.client, alice, "ds", {"a": b"old"}, description="keep").status_code == 201
    assert_error(save(api.client, alice, "ds", {"b": b"new"}), 400, "already exists")
    assert contents(api.client, alice, "ds") == {"a": b"old"}
    assert describe(api.client, alice, "ds").json()["result"]["description"] == "keep"


def test_overwrite_replaces_every_object_and_the_settings(api):
    alice = api.user("alice")
    assert save(api.client, alice, "ds", {"a": b"1", "b": b"2"}, description="v1", grantable=True).status_code == 201
    r = save(api.client, alice, "ds", {"c": b"3"}, overwrite=True, description="v2")
    assert r.status_code == 201, r.text
    assert contents(api.client, alice, "ds") == {"c": b"3"}
    desc = describe(api.client, alice, "ds").json()["result"]
    assert desc["description"] == "v2" and desc["grantable"] is False
    assert desc["object_count"] == 1 and desc["size"] == 1


def test_append_adds_objects_and_replaces_those_of_the_same_name(api):
    alice = api.user("alice")
    assert save(api.client, alice, "ds", {"a": b"a1", "b": b"b1"}, description="orig").status_code == 201
    r = save(api.client, alice, "ds", {"b": b"b2-longer", "c": b"c1"}, append=True, description="ignored")
    assert r.status_code == 201, r.text
    assert contents(api.client, alice, "ds") == {"a": b"a1", "b": b"b2-longer", "c": b"c1"}
    desc = describe(api.client, alice, "ds").json()["result"]
    assert desc["description"] == "orig"  # as in OML, append keeps the description
    assert desc["object_count"] == 3 and desc["size"] == len(b"a1b2-longerc1")


def test_append_to_a_missing_datastore_creates_it(api):
    alice = api.user("alice")
    assert save(api.client, alice, "fresh", {"a": b"1"}, append=True).status_code == 201
    assert contents(api.client, alice, "fresh") == {"a": b"1"}


def test_overwrite_and_append_together_are_400(api):
    alice = api.user("alice")
    assert_error(save(api.client, alice, "new", {"a": b"1"}, overwrite=True, append=True), 400, "exclusive")
    assert_error(describe(api.client, alice, "new"), 404)
    assert save(api.client, alice, "ds", {"a": b"1"}).status_code == 201
    assert_error(save(api.client, alice, "ds", {"b": b"2"}, overwrite=True, append=True), 400)
    assert contents(api.client, alice, "ds") == {"a": b"1"}


def test_malformed_saves_are_400_and_save_nothing(api):
    alice = api.user("alice")
    c = api.client
    # Not multipart.
    assert_error(c.post(f"{EXT}/datastores/ds", headers=alice, json={"a": 1}), 400, "multipart")
    # No objects at all: a multipart body with only the meta part.
    only_meta = b'--b\r\nContent-Disposition: form-data; name="meta"\r\n\r\n{}\r\n--b--\r\n'
    r = c.post(
        f"{EXT}/datastores/ds", headers={**alice, "Content-Type": "multipart/form-data; boundary=b"}, content=only_meta
    )
    assert_error(r, 400, "at least one")
    # A multipart body that is not one, or has no boundary.
    for ctype, body in [("multipart/form-data; boundary=b", b"garbage"), ("multipart/form-data", b"--b--")]:
        r = c.post(f"{EXT}/datastores/ds", headers={**alice, "Content-Type": ctype}, content=body)
        assert r.status_code == 400, (ctype, r.text)
    # Two meta parts.
    files = [("a", ("a", b"1", "application/octet-stream"))]
    r = c.post(f"{EXT}/datastores/ds", headers=alice, data={"meta": ["{}", "{}"]}, files=files)
    assert_error(r, 400, "meta")
    # Meta that is not JSON, or has unknown keys.
    assert_error(c.post(f"{EXT}/datastores/ds", headers=alice, data={"meta": "{nope"}, files=files), 400, "meta")
    assert_error(c.post(f"{EXT}/datastores/ds", headers=alice, data={"meta": '{"bogus": 1}'}, files=files), 400)
    # An object sent as a plain field rather than a file part.
    r = c.post(f"{EXT}/datastores/ds", headers=alice, data={"meta": "{}", "b": "plain"}, files=files)
    assert_error(r, 400, "'b'")
    # The same object name twice.
    twice = [("a", ("a", b"1", "application/octet-stream")), ("a", ("a", b"2", "application/octet-stream"))]
    assert_error(c.post(f"{EXT}/datastores/ds", headers=alice, data={"meta": "{}"}, files=twice), 400, "unique")
    assert listing(c, alice) == []


def test_an_object_may_be_called_meta(api):
    alice = api.user("alice")
    r = save(api.client, alice, "ds", {"meta": b"the object", "other": b"x"}, description="d")
    assert r.status_code == 201, r.text
    assert contents(api.client, alice, "ds") == {"meta": b"the object", "other": b"x"}
    assert describe(api.client, alice, "ds").json()["result"]["description"] == "d"


def test_meta_part_is_optional(api):
    alice = api.user("alice")
    files = [("a", ("a", b"1", "application/octet-stream"))]
    r = api.client.post(f"{EXT}/datastores/ds", headers=alice, files=files)
    assert r.status_code == 201, r.text
    (obj,) = describe(api.client, alice, "ds").json()["result"]["objects"]
    assert obj["class"] == "object"


INVALID_NAMES = ["../x", "a/b", "a b", "x" * 129, "1abc", "", ".x", "a\\b"]


def test_invalid_datastore_names_are_400_or_404_never_500(api):
    alice = api.user("alice")
    assert save(api.client, alice, "victim", {"a": b"1"}).status_code == 201
    for name in ["..%2Fx", "a%2Fb", "a%20b", "x" * 129, "1abc", "%2E%2E", "a%00b"]:
        for method, path, kwargs in [
            ("POST", f"{EXT}/datastores/{name}", {"files": [("a", ("a", b"1", "application/octet-stream"))]}),
            ("GET", f"{EXT}/datastores/{name}", {}),
            ("GET", f"{EXT}/datastores/{name}/objects/a", {}),
            ("DELETE", f"{EXT}/datastores/{name}", {}),
            ("POST", f"{EXT}/datastores/{name}/grants", {"json": {}}),
        ]:
            r = api.client.request(method, path, headers=alice, **kwargs)
            assert r.status_code in (400, 404), (method, path, r.status_code, r.text)
    assert [i["datastore_name"] for i in listing(api.client, alice)] == ["victim"]


def test_invalid_object_name_in_the_middle_of_a_batch_saves_nothing(api):
    alice = api.user("alice")
    assert save(api.client, alice, "ds", {"keep": b"original"}, description="orig").status_code == 201
    for bad in ["bad name", "../evil", "x" * 129, "1x"]:
        batch = {"first": b"1", bad: b"2", "last": b"3"}
        for flags in ({"overwrite": True}, {"append": True}):
            assert_error(save(api.client, alice, "ds", batch, **flags), 400, "object")
            assert contents(api.client, alice, "ds") == {"keep": b"original"}, (bad, flags)
        assert_error(save(api.client, alice, "new_ds", batch), 400)
    assert describe(api.client, alice, "ds").json()["result"]["description"] == "orig"
    assert [i["datastore_name"] for i in listing(api.client, alice)] == ["ds"]


# --- REST: privacy, grants, listings ------------------------------------------------------------------


def test_another_users_private_datastore_is_404_like_a_missing_one(api):
    alice, bob = api.user("alice"), api.user("bob")
    assert save(api.client, alice, "secret", {"a": b"1"}, grantable=True).status_code == 201

    hidden = describe(api.client, bob, "secret", owner="ALICE")
    missing = describe(api.client, bob, "nosuch", owner="ALICE")
    assert_error(hidden, 404)
    assert_error(missing, 404)
    assert hidden.json()["errorMessage"] == missing.json()["errorMessage"].replace("nosuch", "secret")
    assert_error(api.client.get(f"{EXT}/datastores/secret/objects/a", headers=bob, params={"owner": "ALICE"}), 404)
    # Without owner, bob looks in his own schema.
    assert_error(describe(api.client, bob, "secret"), 404)
    # He cannot delete or grant it either; the datastore stays.
    assert_error(api.client.delete(f"{EXT}/datastores/secret", headers=bob), 404)
    assert_error(api.client.post(f"{EXT}/datastores/secret/grants", headers=bob, json={"user": "BOB"}), 404)
    for dstype in ("user", "all", "granted", "grant", "grantable", "private"):
        assert listing(api.client, bob, dstype) == [], dstype
    assert contents(api.client, alice, "secret") == {"a": b"1"}


def test_grant_needs_a_grantable_datastore(api):
    alice, _ = api.user("alice"), api.user("bob")
    assert save(api.client, alice, "closed", {"a": b"1"}).status_code == 201
    assert_error(
        api.client.post(f"{EXT}/datastores/closed/grants", headers=alice, json={"user": "BOB"}), 400, "grantable"
    )
    assert_error(api.client.post(f"{EXT}/datastores/closed/grants", headers=alice, json={}), 400, "grantable")
    assert listing(api.client, alice, "grant") == []
    assert_error(api.client.post(f"{EXT}/datastores/nosuch/grants", headers=alice, json={}), 404)
    assert save(api.client, alice, "open", {"a": b"1"}, grantable=True).status_code == 201
    assert_error(api.client.post(f"{EXT}/datastores/open/grants", headers=alice, json={"user": "NOBODY"}), 404)


def test_grant_lets_the_grantee_read_and_revoke_hides_it_again(api):
    alice, bob, carol = api.user("alice"), api.user("bob"), api.user("carol")
    objs = {"m": b"model-bytes", "x": b"x"}
    assert save(api.client, alice, "shared", objs, grantable=True).status_code == 201
    r = api.client.post(f"{EXT}/datastores/shared/grants", headers=alice, json={"user": "bob"})
    assert r.status_code == 200, r.text

    assert contents(api.client, bob, "shared", owner="alice") == objs
    assert [(i["owner"], i["datastore_name"]) for i in listing(api.client, bob, "granted")] == [("ALICE", "shared")]
    assert [(i["owner"], i["datastore_name"]) for i in listing(api.client, bob, "all")] == [("ALICE", "shared")]
    assert listing(api.client, bob, "user") == []
    assert [(i["datastore_name"], i["grantee"]) for i in listing(api.client, alice, "grant")] == [("shared", "BOB")]
    assert_error(describe(api.client, carol, "shared", owner="ALICE"), 404)
    # A grant is read-only: bob cannot change alice's datastore (a save goes to his own schema).
    assert save(api.client, bob, "shared", {"m": b"bob"}, overwrite=True).status_code == 201
    assert contents(api.client, alice, "shared") == objs

    assert api.client.delete(f"{EXT}/datastores/shared/grants/BOB", headers=alice).status_code == 200
    assert_error(describe(api.client, bob, "shared", owner="ALICE"), 404)
    assert_error(api.client.get(f"{EXT}/datastores/shared/objects/m", headers=bob, params={"owner": "ALICE"}), 404)
    assert listing(api.client, bob, "granted") == []
    assert listing(api.client, alice, "grant") == []


def test_public_grant_reaches_every_user(api):
    alice, bob, carol = api.user("alice"), api.user("bob"), api.user("carol")
    assert save(api.client, alice, "pub", {"a": b"1"}, grantable=True).status_code == 201
    for kwargs in ({"json": {}}, {"json": {"user": None}}, {}):
        assert api.client.post(f"{EXT}/datastores/pub/grants", headers=alice, **kwargs).status_code == 200
        for who in (bob, carol):
            assert describe(api.client, who, "pub", owner="ALICE").status_code == 200, kwargs
        grants = listing(api.client, alice, "grant")
        assert [(i["datastore_name"], i["grantee"]) for i in grants] == [("pub", "PUBLIC")]
        assert api.client.delete(f"{EXT}/datastores/pub/grants/PUBLIC", headers=alice).status_code == 200
        for who in (bob, carol):
            assert_error(describe(api.client, who, "pub", owner="ALICE"), 404)


def test_overwriting_as_not_grantable_withdraws_grants(api):
    alice, bob = api.user("alice"), api.user("bob")
    assert save(api.client, alice, "ds", {"a": b"1"}, grantable=True).status_code == 201
    assert api.client.post(f"{EXT}/datastores/ds/grants", headers=alice, json={"user": "BOB"}).status_code == 200
    assert save(api.client, alice, "ds", {"a": b"2"}, overwrite=True).status_code == 201
    assert_error(describe(api.client, bob, "ds", owner="ALICE"), 404)
    assert listing(api.client, alice, "grant") == []


def test_dropping_and_recreating_a_datastore_does_not_revive_grants(api):
    alice, bob = api.user("alice"), api.user("bob")
    assert save(api.client, alice, "ds", {"a": b"1"}, grantable=True).status_code == 201
    assert api.client.post(f"{EXT}/datastores/ds/grants", headers=alice, json={"user": "BOB"}).status_code == 200
    assert api.client.delete(f"{EXT}/datastores/ds", headers=alice).status_code == 200
    assert save(api.client, alice, "ds", {"a": b"2"}, grantable=True).status_code == 201
    assert_error(describe(api.client, bob, "ds", owner="ALICE"), 404)


def test_listing_types(api):
    alice, bob = api.user("alice"), api.user("bob")
    assert save(api.client, alice, "a_open", {"o": b"1"}, grantable=True).status_code == 201
    assert save(api.client, alice, "a_private", {"o": b"12", "p": b"3"}).status_code == 201
    assert save(api.client, bob, "b_open", {"o": b"1"}, grantable=True).status_code == 201
    assert save(api.client, bob, "b_hidden", {"o": b"1"}, grantable=True).status_code == 201
    assert api.client.post(f"{EXT}/datastores/b_open/grants", headers=bob, json={"user": "ALICE"}).status_code == 200

    def names(dstype):
        return [(i["owner"], i["datastore_name"]) for i in listing(api.client, alice, dstype)]

    assert names("user") == [("ALICE", "a_open"), ("ALICE", "a_private")]
    assert names("grantable") == [("ALICE", "a_open")]
    assert names("private") == [("ALICE", "a_private")]
    assert names("granted") == [("BOB", "b_open")]
    assert names("all") == [("ALICE", "a_open"), ("ALICE", "a_private"), ("BOB", "b_open")]
    assert names("grant") == []
    (private,) = [i for i in listing(api.client, alice) if i["datastore_name"] == "a_private"]
    assert private["object_count"] == 2 and private["size"] == 3
    assert_error(api.client.get(f"{EXT}/datastores", headers=alice, params={"type": "everything"}), 400)


# --- REST: delete -------------------------------------------------------------------------------------


def test_delete_whole_datastore(api):
    alice = api.user("alice")
    assert save(api.client, alice, "ds", {"a": b"1", "b": b"2"}).status_code == 201
    r = api.client.delete(f"{EXT}/datastores/ds", headers=alice)
    assert r.status_code == 200 and r.json()["result"] == ["ds"]
    assert_error(describe(api.client, alice, "ds"), 404)
    assert_error(api.client.delete(f"{EXT}/datastores/ds", headers=alice), 404)
    # The name is free again.
    assert save(api.client, alice, "ds", {"c": b"3"}).status_code == 201
    assert contents(api.client, alice, "ds") == {"c": b"3"}


def test_delete_some_objects_ignores_absent_ones(api):
    alice = api.user("alice")
    assert save(api.client, alice, "ds", {"a": b"1", "b": b"2", "c": b"3"}).status_code == 201
    r = api.client.delete(f"{EXT}/datastores/ds", headers=alice, params={"objects": ["a", "IRIS", "c"]})
    assert r.status_code == 200, r.text
    assert r.json()["result"] == ["a", "c"]
    assert contents(api.client, alice, "ds") == {"b": b"2"}
    r = api.client.delete(f"{EXT}/datastores/ds", headers=alice, params={"objects": ["nothing"]})
    assert r.status_code == 200 and r.json()["result"] == []
    assert contents(api.client, alice, "ds") == {"b": b"2"}
    r = api.client.delete(f"{EXT}/datastores/ds", headers=alice, params={"objects": ["bad name"]})
    assert_error(r, 400)


# --- REST: size limit and atomicity -------------------------------------------------------------------


class TestSizeLimit:
    LIMIT = 1000

    @pytest.fixture
    def services(self, services):
        """The usual services with a small datastore_max_bytes."""
        services.settings = services.settings.model_copy(update={"datastore_max_bytes": self.LIMIT})
        return services

    def test_a_save_over_the_limit_is_413_and_saves_nothing(self, api):
        alice = api.user("alice")
        r = save(api.client, alice, "big", {"a": b"x" * 600, "b": b"y" * 600})
        assert_error(r, 413, "1200", str(self.LIMIT))
        assert_error(describe(api.client, alice, "big"), 404)
        assert listing(api.client, alice) == []
        # Exactly at the limit is allowed.
        assert save(api.client, alice, "big", {"a": b"x" * 400, "b": b"y" * 600}).status_code == 201

    def test_a_failed_overwrite_or_append_leaves_the_previous_datastore_as_it_was(self, api):
        alice, bob = api.user("alice"), api.user("bob")
        before = {"a": b"a" * 500, "b": b"b" * 300}
        assert save(api.client, alice, "ds", before, description="v1", grantable=True).status_code == 201
        assert api.client.post(f"{EXT}/datastores/ds/grants", headers=alice, json={"user": "BOB"}).status_code == 200
        snapshot = describe(api.client, alice, "ds").json()["result"]

        assert_error(save(api.client, alice, "ds", {"c": b"c" * 1001}, overwrite=True, description="v2"), 413)
        # Append counts what stays: 500 + 300 + 201 > 1000; replacing b by 201 bytes would fit.
        assert_error(save(api.client, alice, "ds", {"c": b"c" * 201}, append=True), 413)
        assert describe(api.client, alice, "ds").json()["result"] == snapshot
        assert contents(api.client, alice, "ds") == before
        assert contents(api.client, bob, "ds", owner="ALICE") == before

        assert save(api.client, alice, "ds", {"b": b"B" * 201}, append=True).status_code == 201
        assert contents(api.client, alice, "ds") == {"a": b"a" * 500, "b": b"B" * 201}


# --- REST over a real socket: concurrent overwrites ---------------------------------------------------


def _token(url: str, user: str, password: str) -> dict[str, str]:
    r = httpx.post(
        f"{url}/omlusers/api/oauth2/v1/token", json={"grant_type": "password", "username": user, "password": password}
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['accessToken']}"}


def _version(i: int) -> dict[str, bytes]:
    """One save's objects: a shared name, a name only this version has, and a larger blob."""
    return {"common": pickle.dumps(i), f"only_{i}": pickle.dumps(i), "blob": bytes([i]) * 20_000}


def test_concurrent_overwrites_leave_exactly_one_complete_version(live_server, services):
    accounts.add_user(services, "WRITER", "writer-pw-long-password")
    headers = _token(live_server, "WRITER", "writer-pw-long-password")
    writers = 6
    digests = {i: {k: hashlib.sha256(v).hexdigest() for k, v in _version(i).items()} for i in range(writers * 2)}
    mixes: list[object] = []
    reader_errors: list[BaseException] = []
    done = threading.Event()

    def write(i: int) -> int:
        with httpx.Client(base_url=live_server, timeout=60) as c:
            return save(c, headers, "race", _version(i), overwrite=True).status_code

    def read() -> None:
        # Every describe seen while the writers run shows one version's objects, never a mix.
        try:
            with httpx.Client(base_url=live_server, timeout=60) as c:
                while not done.is_set():
                    r = describe(c, headers, "race")
                    if r.status_code == 404:
                        continue
                    seen = {o["object_name"]: o["digest"] for o in r.json()["result"]["objects"]}
                    if seen not in digests.values():
                        mixes.append(seen)
        except BaseException as e:  # surfaced below: a dead reader must not pass silently
            reader_errors.append(e)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        # Round 1 races to create the datastore; round 2 races to replace it.
        for round_ in range(2):
            versions = range(round_ * writers, (round_ + 1) * writers)
            with ThreadPoolExecutor(writers) as pool:
                statuses = list(pool.map(write, versions))
            assert statuses == [201] * writers
            with httpx.Client(base_url=live_server, timeout=60) as c:
                final = contents(c, headers, "race")
            (winner,) = [i for i in versions if set(final) == set(_version(i))]
            assert final == _version(winner)
    finally:
        done.set()
        reader.join(timeout=60)
    assert reader_errors == []
    assert mixes == []
    with httpx.Client(base_url=live_server) as c:
        assert [i["datastore_name"] for i in listing(c, headers)] == ["race"]


# --- through oml.ds -----------------------------------------------------------------------------------


@pytest.fixture
def ds_users(oml_user, services):
    """(url, password per user): OML_USER connected, and OTHER_USER to switch to."""
    url, user, password = oml_user
    accounts.add_user(services, "OTHER_USER", "other-pw-long-password")
    oml.connect(url=url, username=user, password=password)
    return url, {"OML_USER": password, "OTHER_USER": "other-pw-long-password"}


def switch(ds_users, user: str) -> None:
    url, passwords = ds_users
    oml.connect(url=url, username=user, password=passwords[user])


def test_describe_follows_oracles_length_row_and_column_rules(ds_users):
    df = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5]})
    iris = load_iris()  # a Bunch: a dict subclass
    model = LinearRegression().fit(df[["a"]], df["b"])
    objs = {
        "frame": df,
        "items": [1, 2, 3, 4],
        "mapping": {"x": 1, "y": 2},
        "model": model,
        "matrix": np.zeros((10, 3)),
        "pair": (1, 2),
        "text": "hello",
        "bunch": iris,
    }
    oml.ds.save(objs, "ds_rules")
    d = oml.ds.describe("ds_rules")
    assert list(d.columns) == ["object_name", "class", "size", "length", "row_count", "col_count"]
    got = {r.object_name: (r["class"], r.length, r.row_count, r.col_count) for _, r in d.iterrows()}
    assert got == {
        "frame": ("DataFrame", 3, 3, 2),
        "items": ("list", 4, 1, 4),
        "mapping": ("dict", 2, 1, 2),
        "model": ("LinearRegression", 1, 1, 1),
        "matrix": ("ndarray", 1, 1, 1),
        "pair": ("tuple", 1, 1, 1),
        "text": ("str", 1, 1, 1),
        "bunch": ("Bunch", len(iris), 1, len(iris)),
    }
    assert (d["size"] > 0).all()
    listed = oml.ds.dir(name="ds_rules")
    assert listed["size"].tolist() == [int(d["size"].sum())]
    assert listed["object_count"].tolist() == [len(objs)]


def test_an_oml_dataframe_proxy_is_described_like_a_table_and_loads_back(ds_users):
    df = pd.DataFrame({"X": [1, 2, 3, 4], "Y": ["a", "b", "c", "d"]})
    proxy = oml.create(df, table="DS_PROXY_T")
    oml.ds.save({"proxy": proxy}, "ds_proxy")
    (row,) = oml.ds.describe("ds_proxy").to_dict("records")
    assert (row["class"], row["length"], row["row_count"], row["col_count"]) == ("oml.DataFrame", 4, 4, 2)
    loaded = oml.ds.load("ds_proxy", to_globals=False)["proxy"]
    assert isinstance(loaded, oml.DataFrame)
    pd.testing.assert_frame_equal(loaded.pull(), df, check_dtype=False)


def test_load_all_named_and_as_dict(ds_users):
    model = LinearRegression().fit([[0], [1], [2]], [1, 3, 5])
    df = pd.DataFrame({"v": [1.0, None, 3.0]})
    oml.ds.save({"regr": model, "frame": df, "n": 42}, "ds_load", description="three things")

    everything = oml.ds.load("ds_load", to_globals=False)
    assert sorted(everything) == ["frame", "n", "regr"]
    np.testing.assert_allclose(everything["regr"].coef_, model.coef_)
    pd.testing.assert_frame_equal(everything["frame"], df)
    assert everything["n"] == 42

    assert oml.ds.load(name="ds_load", objs=["n"], to_globals=False) == {"n": 42}
    with pytest.raises(ValueError, match="nosuch"):
        oml.ds.load("ds_load", objs=["n", "nosuch"], to_globals=False)
    with pytest.raises(ValueError):
        oml.ds.load("", to_globals=False)
    with pytest.raises(ValueError):
        oml.ds.load("no_such_datastore", to_globals=False)


def test_load_to_globals_injects_into_the_callers_module(ds_users):
    oml.ds.save({"ds_test_injected_a": [1, 2], "ds_test_injected_b": {"k": "v"}}, "ds_globals")
    try:
        names = oml.ds.load(name="ds_globals")
        assert sorted(names) == ["ds_test_injected_a", "ds_test_injected_b"]
        assert globals()["ds_test_injected_a"] == [1, 2]
        assert globals()["ds_test_injected_b"] == {"k": "v"}
        del globals()["ds_test_injected_a"], globals()["ds_test_injected_b"]
        assert oml.ds.load(name="ds_globals", objs=["ds_test_injected_b"], to_globals=True) == ["ds_test_injected_b"]
        assert "ds_test_injected_a" not in globals()
        assert globals()["ds_test_injected_b"] == {"k": "v"}
    finally:
        globals().pop("ds_test_injected_a", None)
        globals().pop("ds_test_injected_b", None)


def test_save_errors_raise_value_errors(ds_users):
    oml.ds.save({"a": 1}, "ds_exists")
    with pytest.raises(ValueError, match="already exists"):
        oml.ds.save({"a": 2}, "ds_exists")
    with pytest.raises(ValueError):
        oml.ds.save({"a": 2}, "ds_exists", overwrite=True, append=True)
    with pytest.raises(ValueError):
        oml.ds.save({}, "ds_empty")
    with pytest.raises(ValueError, match="object"):
        oml.ds.save({"ok": 1, "not ok": 2}, "ds_exists", overwrite=True)
    assert oml.ds.load("ds_exists", to_globals=False) == {"a": 1}

    oml.ds.save({"b": 2}, "ds_exists", append=True)
    oml.ds.save({"a": 10}, "ds_exists", append=True)
    assert oml.ds.load("ds_exists", to_globals=False) == {"a": 10, "b": 2}
    oml.ds.save({"c": 3}, "ds_exists", overwrite=True)
    assert oml.ds.load("ds_exists", to_globals=False) == {"c": 3}


def test_compressed_objects_round_trip_and_are_smaller(ds_users):
    data = {"rows": ["the same words again"] * 2000}
    oml.ds.save(data, "ds_plain")
    oml.ds.save(data, "ds_zipped", compression=True)
    assert oml.ds.load("ds_zipped", to_globals=False) == data
    sizes = {n: int(oml.ds.describe(n)["size"].iloc[0]) for n in ("ds_plain", "ds_zipped")}
    assert sizes["ds_zipped"] < sizes["ds_plain"] / 5


def test_dir_for_every_dstype(ds_users):
    oml.ds.save({"m": 1}, "ds_open", grantable=True, description="open one")
    oml.ds.save({"m": 1, "n": 2}, "ds_closed")
    oml.grant("ds_open", "datastore", "OTHER_USER")
    switch(ds_users, "OTHER_USER")
    oml.ds.save({"m": 1}, "ds_other", grantable=True)
    oml.grant("ds_other", user=None)
    switch(ds_users, "OML_USER")

    user_cols = ["datastore_name", "object_count", "size", "date", "description"]
    owner_cols = ["owner", *user_cols]
    expected = {
        "user": (user_cols, [("ds_closed",), ("ds_open",)]),
        "grantable": (user_cols, [("ds_open",)]),
        "private": (user_cols, [("ds_closed",)]),
        "all": (owner_cols, [("OML_USER", "ds_closed"), ("OML_USER", "ds_open"), ("OTHER_USER", "ds_other")]),
        "granted": (owner_cols, [("OTHER_USER", "ds_other")]),
        "grant": (["datastore_name", "grantee"], [("ds_open", "OTHER_USER")]),
    }
    for dstype, (columns, rows) in expected.items():
        df = oml.ds.dir(dstype=dstype)
        assert list(df.columns) == columns, dstype
        key = [c for c in ("owner", "datastore_name", "grantee") if c in df]
        assert [tuple(r) for r in df[key].itertuples(index=False)] == rows, dstype
    user = oml.ds.dir()
    assert user.set_index("datastore_name").loc["ds_closed", "object_count"] == 2
    assert user.set_index("datastore_name").loc["ds_open", "description"] == "open one"
    assert pd.api.types.is_datetime64_any_dtype(user["date"])
    assert oml.ds.dir(name="ds_o", regex_match=True)["datastore_name"].tolist() == ["ds_open"]
    assert oml.ds.dir(name="ds_o")["datastore_name"].tolist() == []
    with pytest.raises(ValueError):
        oml.ds.dir(dstype="everything")


def test_delete_datastores_and_objects(ds_users):
    oml.ds.save({"a": 1, "b": 2, "c": 3}, "ds_del")
    oml.ds.save({"a": 1}, "ds_tmp_1")
    oml.ds.save({"a": 1}, "ds_tmp_2")
    oml.ds.save({"a": 1}, "ds_keep")

    assert oml.ds.delete("ds_del", objs=["a", "IRIS"]) == ["a"]
    assert sorted(oml.ds.load("ds_del", to_globals=False)) == ["b", "c"]
    assert sorted(oml.ds.delete("ds_tmp_", regex_match=True)) == ["ds_tmp_1", "ds_tmp_2"]
    assert oml.ds.delete(["ds_del"]) == ["ds_del"]
    assert oml.ds.dir()["datastore_name"].tolist() == ["ds_keep"]
    with pytest.raises(ValueError):
        oml.ds.delete("ds_del")
    with pytest.raises(ValueError):
        oml.ds.delete(["ds_keep", "ds_del"], objs=["a"])


def test_grant_revoke_and_owner_loads(ds_users):
    model = LinearRegression().fit([[0], [1]], [0, 2])
    oml.ds.save({"regr": model}, "ds_shared", grantable=True)
    oml.ds.save({"x": 1}, "ds_mine")
    with pytest.raises(ValueError, match="grantable"):
        oml.grant("ds_mine", "datastore", "OTHER_USER")

    switch(ds_users, "OTHER_USER")
    with pytest.raises(oml.NotFoundError):
        oml.ds.load("ds_shared", owner="OML_USER", to_globals=False)
    with pytest.raises(ValueError):
        oml.ds.describe("ds_shared", owner="OML_USER")

    switch(ds_users, "OML_USER")
    oml.grant("ds_shared", typ="datastore", user="OTHER_USER")
    switch(ds_users, "OTHER_USER")
    loaded = oml.ds.load("ds_shared", owner="OML_USER", to_globals=False)
    np.testing.assert_allclose(loaded["regr"].coef_, model.coef_)
    assert oml.ds.describe("ds_shared", owner="OML_USER")["object_name"].tolist() == ["regr"]
    with pytest.raises(ValueError):
        oml.ds.load("ds_mine", owner="OML_USER", to_globals=False)

    switch(ds_users, "OML_USER")
    oml.revoke("ds_shared", typ="datastore", user="OTHER_USER")
    switch(ds_users, "OTHER_USER")
    with pytest.raises(oml.NotFoundError):
        oml.ds.load("ds_shared", owner="OML_USER", to_globals=False)


def test_loading_twice_fetches_object_bytes_once(ds_users):
    # Unique content, so no earlier test in this process has cached the same bytes.
    marker = hashlib.sha256(repr(id(ds_users)).encode() + np.random.default_rng().bytes(16)).hexdigest()
    oml.ds.save({"big": {"marker": marker, "payload": list(range(5000))}, "small": marker}, "ds_cached")
    conn = oml._connection.current()
    paths: list[str] = []
    conn.http.event_hooks = {"request": [lambda request: paths.append(request.url.path)], "response": []}

    first = oml.ds.load("ds_cached", to_globals=False)
    object_gets = [p for p in paths if "/objects/" in p]
    base = f"{EXT}/datastores/ds_cached/objects"
    assert sorted(object_gets) == [f"{base}/big", f"{base}/small"]

    paths.clear()
    second = oml.ds.load("ds_cached", to_globals=False)
    assert [p for p in paths if "/objects/" in p] == []
    assert paths == [f"{EXT}/datastores/ds_cached"]  # only the describe
    assert first == second and second["small"] == marker

    # New content under the same name is fetched again.
    paths.clear()
    oml.ds.save({"small": marker + "!"}, "ds_cached", append=True)
    assert oml.ds.load("ds_cached", objs=["small"], to_globals=False) == {"small": marker + "!"}
    assert [p for p in paths if "/objects/" in p] == [f"{EXT}/datastores/ds_cached/objects/small"]


def test_an_object_replaced_between_describe_and_fetch_does_not_poison_the_cache(ds_users):
    """The cache must key bytes by what arrived, not by the digest the earlier describe promised."""
    import cloudpickle

    marker = np.random.default_rng().bytes(16).hex()
    old, new = f"old-{marker}", f"new-{marker}"
    oml.ds.save({"x": old}, "ds_race")
    oml.ds.save({"x": old}, "ds_twin")  # same bytes, same digest
    conn = oml._connection.current()
    replaced: list[int] = []

    def replace_before_the_fetch(request: httpx.Request) -> None:
        if request.url.path.endswith("/ds_race/objects/x") and not replaced:
            r = httpx.post(
                f"{conn.url}{EXT}/datastores/ds_race",
                headers={"Authorization": f"Bearer {conn.token()}"},
                data={"meta": orjson.dumps({"overwrite": True}).decode()},
                files=[("x", ("x", cloudpickle.dumps(new), "application/octet-stream"))],
            )
            replaced.append(r.status_code)

    conn.http.event_hooks = {"request": [replace_before_the_fetch], "response": []}
    assert oml.ds.load("ds_race", to_globals=False) == {"x": new}  # the fetch sees the new object
    assert replaced == [201]
    assert oml.ds.load("ds_twin", to_globals=False) == {"x": old}
    assert oml.ds.load("ds_race", to_globals=False) == {"x": new}


def test_a_load_asking_for_a_replaced_version_gets_409(api):
    import io as _io
    import json as _json

    headers = api.user("DSV")

    def save(value: bytes) -> None:
        files = {"meta": (None, _json.dumps({"overwrite": True})), "x": ("x", _io.BytesIO(value))}
        assert api.client.post("/oml/api/pyqd/v1/datastores/v", headers=headers, files=files).status_code == 201

    save(b"one")
    digest = api.client.get("/oml/api/pyqd/v1/datastores/v", headers=headers).json()["result"]["objects"][0]["digest"]
    path = "/oml/api/pyqd/v1/datastores/v/objects/x"
    assert api.client.get(path, headers=headers, params={"digest": digest}).content == b"one"
    save(b"two")
    r = api.client.get(path, headers=headers, params={"digest": digest})
    assert r.status_code == 409 and r.json()["errorCode"] == 1010
