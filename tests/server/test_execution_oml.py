"""`import oml` inside a script acts with the caller's rights, through the worker's pipe."""

from __future__ import annotations

import io
import json

import cloudpickle
import pandas as pd
import pytest

pytestmark = pytest.mark.usefixtures("engine")


def save_datastore(api, headers, name, objs, grantable=False):
    files = {"meta": (None, json.dumps({"overwrite": True, "grantable": grantable}))}
    for key, value in objs.items():
        files[key] = (key, io.BytesIO(cloudpickle.dumps(value)))
    r = api.client.post(f"/oml/api/pyqd/v1/datastores/{name}", headers=headers, files=files)
    assert r.status_code == 201, r.text


LOAD = """def load(owner=None):
    import oml
    return oml.ds.load(name="ds", owner=owner, to_globals=False)["x"]
"""


def test_scripts_load_their_callers_datastores(api):
    alice = api.user("ALICE")
    save_datastore(api, alice, "ds", {"x": {"answer": 42}})
    api.script(alice, "load", LOAD)
    assert api.run(alice, "do-eval", "load").json() == {"result": {"answer": 42}}


def test_a_script_cannot_read_what_its_caller_cannot(api):
    alice, bob = api.user("ALICE"), api.user("BOB")
    save_datastore(api, alice, "ds", {"x": "alice's"}, grantable=True)
    api.script(bob, "load", LOAD)
    r = api.run(bob, "do-eval", "load", {"parameters": '{"owner": "ALICE"}'})
    assert r.status_code == 400 and "does not exist or is not accessible" in r.json()["errorMessage"]
    api.client.post("/oml/api/pyqd/v1/datastores/ds/grants", headers=alice, json={"user": "BOB"})
    assert api.run(bob, "do-eval", "load", {"parameters": '{"owner": "ALICE"}'}).json() == {"result": "alice's"}


def test_a_granted_script_runs_with_the_callers_rights_not_the_owners(api):
    alice, bob = api.user("ALICE"), api.user("BOB")
    save_datastore(api, alice, "ds", {"x": "alice's"})
    save_datastore(api, bob, "ds", {"x": "bob's"})
    api.script(alice, "load", LOAD)
    api.client.post("/oml/api/pyqd/v1/scripts/load/grants", headers=alice, json={"user": "BOB"})
    assert api.run(bob, "do-eval", "load", owner="ALICE").json() == {"result": "bob's"}


def test_scripts_save_datastores_and_read_tables_through_oml(api):
    alice = api.user("ALICE")
    api.table(alice, "T", pd.DataFrame({"A": [1, 2, 3]}))
    src = """def train():
    import oml
    total = int(oml.sync(table="T").pull()["A"].sum())
    oml.ds.save(objs={"total": total}, name="trained", overwrite=True)
    return oml.ds.load(name="trained", to_globals=False)["total"]
"""
    api.script(alice, "train", src)
    assert api.run(alice, "do-eval", "train").json() == {"result": 6}
    described = api.client.get("/oml/api/pyqd/v1/datastores/trained", headers=alice).json()["result"]
    assert described["owner"] == "ALICE" and [o["object_name"] for o in described["objects"]] == ["total"]


def test_repeated_loads_in_one_call_fetch_the_metadata_once(api):
    alice = api.user("ALICE")
    save_datastore(api, alice, "ds", {"x": 1})
    api.table(alice, "NUMS", pd.DataFrame({"N": range(40)}))
    src = """def count_calls(d):
    import oml, oml._connection as c
    oml.ds.load(name="ds", to_globals=False)
    return len(c.current().metadata_cache or {})
"""
    api.script(alice, "count_calls", src)
    r = api.run(alice, "row-apply", "count_calls", {"input": "select * from nums", "rows": 2})
    assert r.json() == {"result": [1] * 20}


def test_a_changed_datastore_is_seen_by_the_next_call(api):
    alice = api.user("ALICE")
    api.script(alice, "load", LOAD)
    for value in ("first", "second", "third"):
        save_datastore(api, alice, "ds", {"x": value})
        assert api.run(alice, "do-eval", "load").json() == {"result": value}
    save_script = "def put(v):\n    import oml\n    oml.ds.save(objs={'x': v}, name='ds', overwrite=True)\n"
    api.script(alice, "put", save_script)
    assert api.run(alice, "do-eval", "put", {"parameters": '{"v": "from a script"}'}).status_code == 200
    assert api.run(alice, "do-eval", "load").json() == {"result": "from a script"}
    api.client.delete("/oml/api/pyqd/v1/datastores/ds", headers=alice)
    assert api.run(alice, "do-eval", "load").status_code == 400
