"""Hostile scripts against the server, through the REST API: the answer is a clean error in OML's shape,
nothing the script sent runs in the server, and the next call works."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import own_pool_api
from tests.engines.test_sandbox_attacks import FORGE


def assert_next_call_works(api, headers) -> None:
    api.script(headers, "ok", "def ok():\n    return 'fine'\n")
    assert api.run(headers, "do-eval", "ok").json() == {"result": "fine"}


@pytest.mark.usefixtures("engine")
def test_a_pickle_forged_on_the_channel_never_runs_in_the_server(api, tmp_path):
    mallory = api.user("MALLORY")
    marker = tmp_path / "pwned"
    api.script(mallory, "forge", FORGE)
    body = {"parameters": f'{{"marker": "{marker}", "how": "multiprocessing"}}'}
    r = api.run(mallory, "do-eval", "forge", body)
    assert r.status_code == 500 and r.json()["errorCode"] == 1050
    assert "malformed message" in r.json()["errorMessage"]
    assert not marker.exists()
    assert_next_call_works(api, mallory)


@pytest.mark.usefixtures("engine")
def test_import_oml_works_while_the_worker_holds_no_token(api):
    alice = api.user("ALICE")
    source = """def look():
    import gc, oml
    names = list(oml.ds.dir())
    jwts = [o for o in gc.get_objects() if isinstance(o, str) and o.startswith("eyJ")]
    return {"datastores": names, "jwts": len(jwts)}
"""
    api.script(alice, "look", source)
    r = api.run(alice, "do-eval", "look")
    assert r.status_code == 200, r.text
    assert r.json()["result"]["jwts"] == 0


@pytest.mark.usefixtures("engine")
def test_a_huge_error_message_comes_back_clipped(api):
    mallory = api.user("MALLORY")
    api.script(mallory, "loud", "def loud():\n    raise ValueError('x' * 50_000_000)\n")
    r = api.run(mallory, "do-eval", "loud")
    assert r.status_code == 400 and len(r.content) < 200_000
    assert "clipped" in r.json()["errorMessage"]
    assert_next_call_works(api, mallory)


@pytest.fixture
def small_output_api(sqlite_settings):
    with own_pool_api(sqlite_settings, workers=2, warm_workers=1, output_max_bytes=1024 * 1024) as api:
        yield api


def test_the_output_size_limit_counts_nested_bytes(small_output_api):
    api = small_output_api
    mallory = api.user("MALLORY")
    api.script(mallory, "nest", "def nest():\n    return {'a': [[['x' * 1000] * 100] * 30]}\n")
    r = api.run(mallory, "do-eval", "nest")
    assert r.status_code == 400 and r.json()["errorCode"] == 1024
    assert "maximum size" in r.json()["errorMessage"]
    api.script(mallory, "rows", "def rows(i, n):\n    return list(range(n))\n")
    r = api.run(mallory, "index-apply", "rows", {"times": 400, "parameters": '{"n": 1000}'})
    assert r.status_code == 400 and r.json()["errorCode"] == 1024  # many small units, over the size in all
    assert_next_call_works(api, mallory)


def test_a_bridged_answer_over_the_limit_is_refused_not_held(small_output_api):
    api = small_output_api
    mallory = api.user("MALLORY")
    api.table(mallory, "WIDE", pd.DataFrame({"A": range(2000), "B": ["x" * 1000] * 2000}))  # 2 MB of rows
    source = """def pull():
    import oml
    try:
        return len(oml.sync(table="WIDE").pull())
    except Exception as e:
        return type(e).__name__ + ": " + str(e)
"""
    api.script(mallory, "pull", source)
    r = api.run(mallory, "do-eval", "pull")
    assert r.status_code == 200, r.text
    assert "over 1048576 bytes" in str(r.json()["result"])
    assert_next_call_works(api, mallory)
