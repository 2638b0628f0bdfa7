"""Per-script environments on real uv builds (offline) and real, sandboxed worker processes: the build layers on
the server's packages, a script imports the environment's package only with it, and the walls hold (names, the
sandbox, the pools of other environments and users)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from engines import envbuild
from engines.envs import (
    BUILDS_DIR,
    BadRequirements,
    BuildFailed,
    EnvExists,
    EnvMissing,
    EnvStore,
    InvalidEnvName,
    check_name,
    with_env,
)
from engines.errors import EnvironmentNotFound
from engines.identity import worker_limits
from engines.pool import PoolConfig, WorkerPool
from engines.protocol import Task, Unit
from tests.conftest import wait_for
from tests.envs_support import PACKAGE, USES_PACKAGE, build, make_wheels

#: What a worker can see of the environment's files and everything around them.
PROBE = """def probe(paths=None):
    import os, sys
    if not hasattr(sys, "_pyqd_token"):
        sys._pyqd_token = os.urandom(8).hex()
    out = {"token": sys._pyqd_token}
    try:
        import pyqd_envtest_pkg
        out["value"] = pyqd_envtest_pkg.VALUE
        here = pyqd_envtest_pkg.__file__
        site = sys.path[0]  # the environment's packages, reached through a descriptor
        paths = {**(paths or {}), "read own package": here, "write own package": here,
                 "write new file in site": os.path.join(site, "planted.py"),
                 "read metadata above the descriptor": os.path.join(site, "..", "env.json"),
                 "list builds above the descriptor": os.path.join(site, "..", ".."),
                 "list envs root above the descriptor": os.path.join(site, "..", "..", ".."),
                 "list data dir above the descriptor": os.path.join(site, "..", "..", "..", "..")}
    except ImportError as e:
        out["import"] = str(e)
    try:
        import pyqd_envtest_other
        out["other"] = pyqd_envtest_other.VALUE
    except ImportError:
        out["other"] = None
    results = {}
    for what, path in (paths or {}).items():
        try:
            if what.startswith("write"):
                with open(path, "a") as f:
                    f.write("x")
            elif what.startswith("list"):
                os.listdir(path)
            else:
                open(path, "rb").read(1)
            results[what] = "allowed"
        except OSError as e:
            results[what] = type(e).__name__
    out["results"] = results
    return out
"""


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_wheels(tmp_path_factory.mktemp("wheels"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, wheels: Path) -> EnvStore:
    """A data directory (closed, as the server keeps it) with two environments, built once for the module."""
    data = tmp_path_factory.mktemp("data")
    data.chmod(0o700)
    store = EnvStore.of_data_dir(data)
    started = time.monotonic()
    build(store, "envtest", f"{PACKAGE}  # the test package\n", wheels, description="the test package")
    print(f"\nfirst build of envtest: {time.monotonic() - started:.3f} s")
    build(store, "other.env-2", "pyqd_envtest_other==2.0\n", wheels)
    return store


@pytest.fixture(scope="module")
def pool(store: EnvStore) -> Iterator[WorkerPool]:
    """Real workers as the server makes them: their own account (when run as root), Landlock, seccomp."""
    limits = worker_limits(memory_mb=1024, cpu_seconds=0, user_setting="auto", sandbox=True)
    p = WorkerPool(PoolConfig(size=4, warm=1, limits=limits, envs_dir=str(store.root)))
    p.start()
    yield p
    p.close()


def run(pool: WorkerPool, key: str, source: str = PROBE, **kwargs: object) -> dict:
    (worker,) = pool.acquire(key, 1, 30)
    try:
        name = source.split("(", 1)[0].removeprefix("def ")
        task = Task(uuid.uuid4().hex, key, name, source, "eval", [Unit("")], kwargs=kwargs)
        (result,) = worker.run(task, [], 30)
    finally:
        pool.release(worker)
    assert result.ok, result.error
    return orjson.loads(result.json)


# -- requirements and names ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "--index-url https://evil.example/simple\nnumpy\n",
        "-i https://evil.example/simple\n",
        "--extra-index-url https://evil.example/simple\n",
        "-f /tmp\n",
        "--find-links=/tmp\n",
        "--trusted-host evil.example\n",
        "-e git+https://evil.example/x.git\n",
        "-r other.txt\n",
        "-c constraints.txt\n",
        "pkg @ https://evil.example/pkg.whl\n",
        "pkg @ file:///etc/passwd\n",
        "./local/pkg\n",
        "/abs/path/pkg.whl\n",
        "pkg \\\n  >=1\n",
        "pkg >= \n",
        "# only a comment\n\n",
        "",
    ],
)
def test_requirements_hold_package_requirements_only(text):
    with pytest.raises(BadRequirements):
        envbuild.parse_requirements(text)


def test_requirements_keep_extras_versions_and_markers():
    reqs = envbuild.parse_requirements("# comment\nseaborn[stats]>=0.13 ; python_version >= '3.8'  # why\n\nrich\n")
    assert [str(r) for r in reqs] == ['seaborn[stats]>=0.13; python_version >= "3.8"', "rich"]


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "../schemas",
        "a/../../b",
        "/etc",
        "/tmp/x",
        ".cache",
        ".builds",
        "-x",
        "a b",
        "a\x00b",
        "é",
        "x" * 65,
    ],
)
def test_environment_names_are_strict(name, store):
    with pytest.raises(InvalidEnvName):
        check_name(name)
    with pytest.raises(InvalidEnvName):
        store.build_dir(name)


@pytest.mark.parametrize("name", [42, None, ["envtest"], {"name": "envtest"}])
def test_an_environment_name_of_another_type_is_refused(name):
    with pytest.raises(InvalidEnvName):
        check_name(name)


# -- building ------------------------------------------------------------------------------------------------
def test_a_build_adds_only_its_packages_to_the_servers(store):
    info = store.get("envtest")
    assert info is not None and info.description == "the test package"
    # numpy, which the package needs, comes from the server: it was neither fetched (there is no index) nor copied
    assert info.packages == [{"name": PACKAGE, "version": "1.0"}]
    assert sorted(os.listdir(info.site)) == [PACKAGE, f"{PACKAGE}-1.0.dist-info"]
    # compiled at build time: workers cannot write bytecode, and would compile every module again without it
    assert [f.endswith(".pyc") for f in os.listdir(os.path.join(info.site, PACKAGE, "__pycache__"))] == [True]
    assert info.requirements == [PACKAGE] and info.python.count(".") == 1 and info.size > 0
    assert [e.name for e in store.list()] == ["envtest", "other.env-2"]


def test_a_cached_rebuild_takes_well_under_five_seconds(store, wheels, pool):
    before = run(pool, with_env("REBUILDER", "envtest"))
    old = store.get("envtest")
    assert old is not None
    (pyc,) = os.scandir(os.path.join(old.site, PACKAGE, "__pycache__"))
    started = time.monotonic()
    info = build(store, "envtest", f"{PACKAGE}\n", wheels, description="the test package", replace=True)
    took = time.monotonic() - started
    print(f"\ncached rebuild of envtest: {took:.3f} s")
    assert took < 5.0
    assert store.get("envtest") == info and info.path != old.path and not os.path.exists(old.path)
    # the unchanged package's bytecode was taken over, not compiled again
    (again,) = os.scandir(os.path.join(info.site, PACKAGE, "__pycache__"))
    assert again.name == pyc.name and again.inode() == pyc.inode()
    # the worker of the old build is not handed out again: a new one, confined to the new build, runs the call
    after = run(pool, with_env("REBUILDER", "envtest"))
    assert after.get("value") == 42 and after["token"] != before["token"], (before, after)


def test_a_rebuild_without_replace_is_refused(store, wheels):
    with pytest.raises(EnvExists):
        build(store, "envtest", f"{PACKAGE}\n", wheels)


def test_a_package_that_needs_another_numpy_fails_the_build_and_leaves_nothing(store, wheels):
    with pytest.raises(BuildFailed, match=r"pyqd_envtest_greedy 1.0 needs numpy>=99, but the server has numpy"):
        build(store, "greedy", "pyqd_envtest_greedy\n", wheels)
    assert store.get("greedy") is None
    live = {os.path.basename(e.path) for e in store.list()}
    assert set(os.listdir(store.root / BUILDS_DIR)) == live


def test_requiring_another_version_of_a_server_package_is_refused_before_uv_runs(store, wheels):
    with pytest.raises(BuildFailed, match="is one of the server's packages"):
        build(store, "numpy-old", "numpy<1.0\n", wheels)
    assert store.get("numpy-old") is None


def test_an_unknown_package_fails_with_uvs_reason(store, wheels):
    with pytest.raises(BuildFailed, match="no-such-package-anywhere was not found"):
        build(store, "missing", "no_such_package_anywhere\n", wheels)


def test_only_a_finished_build_inside_the_environments_directory_is_an_environment(store, tmp_path):
    os.symlink("/", store.root / "rootlink")
    os.symlink(store.root.parent, store.root / "datalink")
    (store.root / "halfbuilt").mkdir()
    try:
        for name in ("rootlink", "datalink", "halfbuilt", "nothing"):
            assert store.get(name) is None and store.build_dir(name) is None
        assert [e.name for e in store.list()] == ["envtest", "other.env-2"]
    finally:
        (store.root / "rootlink").unlink()
        (store.root / "datalink").unlink()
        (store.root / "halfbuilt").rmdir()


def test_drop_removes_the_environment_and_calls_then_get_a_clear_error(store, wheels, pool):
    build(store, "short-lived", "pyqd_envtest_other\n", wheels)
    assert run(pool, with_env("DROPPER", "short-lived"))["other"] == 7
    envbuild.drop(store, "short-lived")
    assert store.get("short-lived") is None
    with pytest.raises(EnvironmentNotFound, match="short-lived"):
        pool.acquire(with_env("DROPPER", "short-lived"), 1, 5)
    with pytest.raises(EnvMissing):
        envbuild.drop(store, "short-lived")


# -- running -------------------------------------------------------------------------------------------------
def test_a_script_imports_the_environments_package_only_in_it(pool):
    assert run(pool, with_env("ALICE", "envtest"), USES_PACKAGE) == {"value": 42, "numpy_from_server": True}
    (worker,) = pool.acquire("ALICE", 1, 30)
    try:
        task = Task(uuid.uuid4().hex, "ALICE", "uses_package", USES_PACKAGE, "eval", [Unit("")])
        (result,) = worker.run(task, [], 30)
    finally:
        pool.release(worker)
    assert not result.ok and f"No module named '{PACKAGE}'" in (result.error or "")


def test_an_unknown_environment_is_refused_at_once(pool):
    started = time.monotonic()
    with pytest.raises(EnvironmentNotFound, match="'nothing-here'"):
        pool.acquire(with_env("ALICE", "nothing-here"), 1, 30)
    assert time.monotonic() - started < 5


def test_workers_never_cross_environments_or_users(pool):
    keys = [
        with_env("ALICE", "envtest"),
        "ALICE",
        with_env("ALICE", "other.env-2"),
        with_env("BOB", "envtest"),
        with_env("ALICE\x00BOB", "envtest"),
    ]
    seen: dict[str, set[str]] = {k: set() for k in keys}
    for _ in range(3):
        for key in keys:
            out = run(pool, key)
            seen[key].add(out["token"])
            env = key.partition("\x01")[2]
            assert (out.get("value"), out["other"]) == {
                "envtest": (42, None),
                "other.env-2": (None, 7),
                "": (None, None),
            }[env]
    tokens = [t for k in keys for t in seen[k]]
    assert len(tokens) == len(set(tokens))  # no worker served two keys


def test_an_environments_package_cannot_write_or_read_outside_the_sandbox(pool, store):
    info, other = store.get("envtest"), store.get("other.env-2")
    assert info is not None and other is not None
    out = run(
        pool,
        with_env("MALLORY", "envtest"),
        paths={
            "read own package": os.path.join(info.site, PACKAGE, "__init__.py"),
            "write own package": os.path.join(info.site, PACKAGE, "__init__.py"),
            "write new file in site": os.path.join(info.site, "planted.py"),
            "write envs root": str(store.root / "planted.py"),
            "write uv cache": str(store.cache / "planted"),
            "read own metadata": os.path.join(info.path, "env.json"),
            "read other env": os.path.join(other.site, "pyqd_envtest_other", "__init__.py"),
            "list envs root": str(store.root),
            "list data dir": str(store.root.parent),
            "read data dir file": str(store.root / ".lock"),
        },
    )
    assert out["value"] == 42 and out["other"] is None
    results = out["results"]
    assert results.pop("read own package") == "allowed"
    assert all(v != "allowed" for v in results.values()), results
    # and nothing was written
    assert not os.path.exists(os.path.join(info.site, "planted.py")) and not (store.root / "planted.py").exists()
    with open(os.path.join(info.site, PACKAGE, "__init__.py")) as f:
        assert f.read() == "VALUE = 42\n"


def test_an_environments_warm_workers_grow_with_use_and_idle_down(store):
    # An idle timeout long enough for a busy machine to start a worker within it, short enough to wait out.
    limits = worker_limits(memory_mb=1024, cpu_seconds=0, user_setting="auto", sandbox=True)
    p = WorkerPool(PoolConfig(size=4, warm=1, limits=limits, envs_dir=str(store.root), idle_timeout_s=6))
    p.start()
    try:
        assert p.env_stats() == {}  # none ready for an environment nobody used
        run(p, with_env("ALICE", "envtest"))  # found none ready: one is kept ready from now on
        wait_for(lambda: p.env_stats().get("envtest") == {"fresh": 1, "wanted": 1})
        out = run(p, with_env("BOB", "envtest"))  # takes the ready one (another user: it was given to no one)
        assert out["value"] == 42
        wait_for(lambda: p.env_stats().get("envtest") == {"fresh": 1, "wanted": 1})  # and it is replaced
        wait_for(lambda: p.env_stats() == {} and p.stats()["env_fresh"] == 0, timeout=30)  # unused: back to none
        p.hold("envtest", 60)  # a preload keeps one ready
        wait_for(lambda: p.env_stats().get("envtest") == {"fresh": 1, "wanted": 1})
        p.hold("envtest", 0)
        wait_for(lambda: p.env_stats() == {} and p.stats()["env_fresh"] == 0)
        with pytest.raises(EnvironmentNotFound):
            p.hold("nothing-here", 60)
    finally:
        p.close()


# -- the request and the engines -----------------------------------------------------------------------------
def test_envName_is_parsed_into_the_request_and_the_worker_key():
    from engines.spec import Call, parse_request

    request = parse_request("eval", {"envName": "envtest"})
    assert request.env_name == "envtest"
    assert parse_request("eval", {"envName": ""}).env_name is None
    own = Call(user="ALICE", script_name="f", source="", script_owner="ALICE", request=request)
    foreign = Call(user="ALICE", script_name="f", source="", script_owner="BOB", request=request)
    assert own.worker_key == "ALICE\x01envtest" and foreign.worker_key == "ALICE\x00BOB\x01envtest"
    assert request.model_validate_json(request.model_dump_json()) == request  # as an async job stores it


@pytest.mark.parametrize("engine", ["dask", "inline"])
def test_an_engine_without_environments_refuses_envName_clearly(engine):
    from engines.dask.engine import DaskConfig, DaskWorkers
    from engines.errors import EnvironmentUnsupported
    from engines.inline import InlinePool
    from engines.pool import PoolSettings
    from engines.runner import Limits
    from engines.service import ExecutionService
    from tests.engines.support import make_call

    if engine == "dask":  # never started: the refusal comes before any cluster is asked
        workers: object = DaskWorkers(
            DaskConfig(scheduler="tcp://127.0.0.1:9", api_url="http://127.0.0.1:9", host=PoolSettings())
        )
        message = "envName is not supported on the Dask engine"
    else:
        workers, message = InlinePool(1), "envName is not supported by this engine"
    service = ExecutionService(workers, None, None, Limits())  # type: ignore[arg-type]
    with pytest.raises(EnvironmentUnsupported, match=message):
        service.run(make_call("eval", "def f():\n    return 1\n", {"envName": "envtest"}))
    with pytest.raises(EnvironmentUnsupported, match=message):
        service.submit(make_call("eval", "def f():\n    return 1\n", {"envName": "envtest"}), "v1", "do-eval")


def test_preloads_are_per_user_with_a_quota():
    from engines.envs import MAX_PRELOADS_PER_USER, Preloads

    preloads = Preloads()
    for i in range(MAX_PRELOADS_PER_USER):
        preloads.add("ALICE", f"env{i}", overwrite=False)
    with pytest.raises(ValueError, match="quota"):
        preloads.add("ALICE", "one-more", overwrite=False)
    with pytest.raises(ValueError, match="already preloaded"):
        preloads.add("ALICE", "env0", overwrite=False)
    again = preloads.add("ALICE", "env0", overwrite=True)  # within the quota: it replaces its own
    preloads.add("BOB", "env0", overwrite=False)  # another user's preloads are his own
    assert [p.env for p in preloads.of("BOB")] == ["env0"]
    assert preloads.until("env0") >= again.expires
    assert preloads.remove("ALICE", "env0") and not preloads.remove("ALICE", "env0")
    item = preloads.add("CAROL", "e", overwrite=False, seconds=3600)
    listing = item.listing(now=item.created + 1723)
    assert listing["duration"] == "0 hrs, 28 mins, 43 secs" and listing["envName"] == "e"
    assert item.listing(now=item.created + 7200)["duration"] == "1 hrs, 0 mins, 0 secs"  # up until it expired
