"""Per-script environments over the OML REST API, on SQLite and PostgreSQL: Oracle's environment listing and
conda preloads, `envName` on every verb (sync and async jobs, v1 and v2, as dbt-oracle sends it), and clear OML
400s for names that are not an environment. One server per backend for the module, on real worker processes;
the environments are built once, with the real uv, offline."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from engines.envs import EnvStore
from server.settings import Settings
from tests.conftest import Api, api_with_own_pool
from tests.envs_support import PACKAGE, USES_PACKAGE, build, make_wheels
from tests.server.test_jobs import wait_done

TOKEN = "def token():\n    import os, sys\n    sys._t = getattr(sys, '_t', os.urandom(8).hex())\n    return sys._t\n"
ROWS = f"def rows(d):\n    import {PACKAGE}\n    d['V'] = {PACKAGE}.VALUE\n    return d\n"
INDEX = f"def index(i):\n    import {PACKAGE}\n    return i * {PACKAGE}.VALUE\n"


#: The module's server (tests.conftest.module_settings): a pool of 4 workers, one kept warm.
MODULE_SETTINGS = {"workers": 4, "warm_workers": 1}


@pytest.fixture(scope="module")
def api(module_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A server of its own (its pool runs the environments of its data directory), two environments in it."""
    module_settings.data_dir.mkdir(parents=True, exist_ok=True)
    wheels = make_wheels(tmp_path_factory.mktemp("wheels"))
    store = EnvStore.of_data_dir(module_settings.data_dir)
    build(store, "envtest", f"{PACKAGE}\n", wheels, description="the test package")
    build(store, "other", "pyqd_envtest_other\n", wheels)
    yield from api_with_own_pool(module_settings)


@pytest.fixture(scope="module")
def alice(api: Api) -> dict[str, str]:
    headers = api.user("ALICE")
    api.script(headers, "uses_package", USES_PACKAGE)
    api.script(headers, "token", TOKEN)
    api.script(headers, "rows", ROWS)
    api.script(headers, "index", INDEX)
    api.table(headers, "NUMS", pd.DataFrame({"N": range(10)}))
    return headers


@pytest.fixture(scope="module")
def bob(api: Api) -> dict[str, str]:
    headers = api.user("BOB")
    api.script(headers, "token", TOKEN)
    return headers


def oml_error(r, status: int = 400) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"errorCode", "errorMessage"} and isinstance(body["errorCode"], int), body
    return body["errorMessage"]


# -- listing -------------------------------------------------------------------------------------------------
def test_the_environments_are_listed_in_oracles_shape(api, alice):
    for path in ("/oml/api/py-scripts/v1/envs", "/oml/tenants/PYQD/databases/PYQD/api/py-scripts/v1/envs"):
        r = api.client.get(path, headers=alice)
        assert r.status_code == 200, r.text
        envs = r.json()["result"]["envs"]
        assert [e["name"] for e in envs] == ["envtest", "other"]
        first = envs[0]
        assert set(first) == {"size", "name", "description", "number_of_installed_packages", "tags"}
        assert first["description"] == "the test package" and first["number_of_installed_packages"] == 1
        assert re.fullmatch(r"\d+ B|\d+\.\d (KiB|MiB|GiB)", first["size"])
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        assert first["tags"] == {"python": python, "application": "OML4PY"}
    assert oml_error(api.client.get("/oml/api/py-scripts/v1/envs"), 401)


# -- envName on the verbs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_script_runs_in_its_environment_and_fails_clearly_without_it(api, alice, version):
    r = api.run(alice, "do-eval", "uses_package", {"envName": "envtest"}, version=version)
    assert r.status_code == 200, r.text
    assert r.json() == {"result": {"value": 42, "numpy_from_server": True}}
    message = oml_error(api.run(alice, "do-eval", "uses_package", {}, version=version))
    assert f"No module named '{PACKAGE}'" in message
    message = oml_error(api.run(alice, "do-eval", "uses_package", {"envName": "other"}, version=version))
    assert f"No module named '{PACKAGE}'" in message


def test_every_verb_runs_in_the_environment(api, alice):
    body = {"input": "select * from NUMS", "envName": "envtest", "parameters": '{"oml_input_type":"pandas.DataFrame"}'}
    r = api.run(alice, "row-apply", "rows", {**body, "rows": 3, "parallelFlag": True})
    assert r.status_code == 200, r.text
    assert sorted(row["N"] for row in r.json()["result"]) == list(range(10))
    assert {row["V"] for row in r.json()["result"]} == {42}
    r = api.run(alice, "table-apply", "rows", body)
    assert r.status_code == 200 and {row["V"] for row in r.json()["result"]} == {42}, r.text
    r = api.run(alice, "group-apply", "rows", {**body, "groupBy": "N"})
    assert r.status_code == 200 and len(r.json()["result"]) == 10, r.text
    r = api.run(alice, "index-apply", "index", {"times": 3, "envName": "envtest"})
    assert r.status_code == 200 and r.json() == {"result": [42, 84, 126]}, r.text


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_an_async_job_runs_in_its_environment(api, alice, version):
    """As dbt-oracle's Python models send it: `envName` with `asyncFlag`, then the job's result."""
    body = {"service": "HIGH", "asyncFlag": True, "timeout": 1800, "envName": "envtest"}
    r = api.client.post(f"/oml/api/py-scripts/{version}/do-eval/uses_package", headers=alice, json=body)
    assert r.status_code == 201, r.text
    done = wait_done(api, alice, r.headers["location"])
    result = api.client.get(done.headers["content-location"], headers=alice)
    assert result.status_code == 200 and result.json() == {"result": {"value": 42, "numpy_from_server": True}}


@pytest.mark.parametrize(
    "name",
    [
        "../envtest",
        "envtest/../other",
        "/etc",
        str(Path("/") / "tmp"),
        ".cache",
        ".builds",
        "envs",
        "schemas",  # a directory of the data directory, but not an environment
        "nothing-here",
        "x" * 65,
        " envtest",
        42,
        True,
        ["envtest"],
        {"name": "envtest"},
    ],
)
@pytest.mark.parametrize("async_flag", [False, True])
def test_a_name_that_is_not_an_environment_gets_a_clear_oml_400(api, alice, name, async_flag):
    before = api.client.get("/oml/api/py-scripts/v2/jobs", headers=alice).json()
    r = api.run(alice, "do-eval", "uses_package", {"envName": name, "asyncFlag": async_flag})
    message = oml_error(r)
    assert "envName" in message or "Environment" in message, message
    assert api.client.get("/oml/api/py-scripts/v2/jobs", headers=alice).json() == before  # no job was made


def test_one_users_environment_workers_serve_no_other_user_or_environment(api, alice, bob):
    def token(headers, env):
        r = api.run(headers, "do-eval", "token", {"envName": env} if env else {})
        assert r.status_code == 200, r.text
        return r.json()["result"]

    seen: dict[tuple[str, str | None], set[str]] = {}
    for _ in range(2):
        for who, headers in (("ALICE", alice), ("BOB", bob)):
            for env in ("envtest", "other", None):
                seen.setdefault((who, env), set()).add(token(headers, env))
    tokens = [t for ts in seen.values() for t in ts]
    assert len(tokens) == len(set(tokens))  # each worker served one user in one environment only


# -- preloads ------------------------------------------------------------------------------------------------
def test_preloading_an_environment_in_oracles_shape(api, alice, bob):
    url = "/oml/api/py-scripts/v2/preload/conda"
    assert api.client.get(url, headers=alice).json() == {"environments": []}
    r = api.client.post(url, headers=alice, json={"envName": "envtest"})
    assert r.status_code == 200, r.text
    item = r.json()["result"]
    assert item["envName"] == "envtest" and set(item) == {"envName", "created", "expires", "duration"}
    stamp = r"[A-Z][a-z]{2} \d{2}, \d{4} \d{2}:\d{2}:\d{2} UTC"
    assert re.fullmatch(stamp, item["created"]) and re.fullmatch(stamp, item["expires"])
    assert re.fullmatch(r"\d+ hrs, \d+ mins, \d+ secs", item["duration"])
    listed = api.client.get(url, headers=alice).json()["environments"]
    assert [p["envName"] for p in listed] == ["envtest"]
    assert api.client.get(url, headers=bob).json() == {"environments": []}  # the caller's own preloads only
    pool = api.services.pool
    assert pool is not None
    # the pool keeps a worker ready for it (once there is room: the users' idle workers here are not stale)
    assert pool.env_stats()["envtest"]["wanted"] >= 1
    assert "already preloaded" in oml_error(api.client.post(url, headers=alice, json={"envName": "envtest"}))
    r = api.client.post(url, headers=alice, json={"envName": "envtest", "overwrite": True})
    assert r.status_code == 200, r.text
    r = api.client.delete(f"{url}/envtest", headers=alice)
    assert r.status_code == 200 and r.json() == {"result": "Preloaded environment 'envtest' deleted successfully"}
    message = oml_error(api.client.delete(f"{url}/envtest", headers=alice))
    assert message == "Preloaded environment not found with name 'envtest'"
    assert api.client.get(url, headers=alice).json() == {"environments": []}


@pytest.mark.parametrize(
    "body", [None, {}, {"envName": "nothing-here"}, {"envName": "../envtest"}, {"envName": 7}, {"overwrite": True}]
)
def test_a_preload_of_no_environment_gets_a_clear_oml_400(api, alice, body):
    url = "/oml/api/py-scripts/v2/preload/conda"
    r = api.client.post(url, headers=alice, json=body) if body is not None else api.client.post(url, headers=alice)
    oml_error(r)
    assert api.client.get(url, headers=alice).json() == {"environments": []}


def test_preloads_are_refused_on_the_dask_engine(api, alice):
    from engines.dask.engine import DaskConfig, DaskWorkers
    from engines.pool import PoolSettings

    nowhere = "tcp://127.0.0.1:9"
    api.services.cluster = DaskWorkers(DaskConfig(scheduler=nowhere, api_url="http://127.0.0.1:9", host=PoolSettings()))
    try:
        r = api.client.post("/oml/api/py-scripts/v2/preload/conda", headers=alice, json={"envName": "envtest"})
        assert oml_error(r) == "envName is not supported on the Dask engine"
    finally:
        api.services.cluster = None
