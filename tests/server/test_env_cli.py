"""`pyqd env create/list/drop`, run for real in subprocesses, building with the real uv from local wheels only."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from engines.envs import EnvStore
from tests.envs_support import PACKAGE, make_wheels
from tests.server.procs import run_pyqd
from tests.server.test_cli import failed, ok


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_wheels(tmp_path_factory.mktemp("wheels"))


def offline(wheels: Path) -> list[str]:
    return ["--no-index", "--find-links", str(wheels)]


def test_create_list_rebuild_and_drop(tmp_path, wheels):
    data = ["--data-dir", str(tmp_path / "data")]
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(f"# what the scripts need\n{PACKAGE}>=1.0\n")
    create = ["env", "create", "seaborn_env", "-r", str(reqs)]
    out = ok(run_pyqd(*create, "--description", "for plots", *offline(wheels), *data))
    assert re.search(rf"built environment seaborn_env in [\d.]+ s: {PACKAGE} 1\.0", out), out
    listed = ok(run_pyqd("env", "list", *data))
    assert listed.startswith("seaborn_env\t") and f"{PACKAGE}==1.0" in listed and "for plots" in listed

    failed(run_pyqd(*create, *offline(wheels), *data), "exists.*--replace")
    started = time.monotonic()
    out = ok(run_pyqd(*create, "--replace", *offline(wheels), *data))
    took = time.monotonic() - started
    build_s = float(re.search(r"in ([\d.]+) s", out).group(1))  # type: ignore[union-attr]
    print(f"\ncached rebuild through the CLI: {took:.2f} s in all, {build_s:.2f} s building")
    assert build_s < 5.0 and took < 30.0  # the command's own start-up is the rest
    info = EnvStore.of_data_dir(tmp_path / "data").get("seaborn_env")
    assert info is not None and info.packages == [{"name": PACKAGE, "version": "1.0"}]
    assert info.description == "for plots"  # a rebuild keeps it

    ok(run_pyqd("env", "drop", "seaborn_env", *data))
    assert ok(run_pyqd("env", "list", *data)) == ""
    failed(run_pyqd("env", "drop", "seaborn_env", *data), "no environment named seaborn_env")


@pytest.mark.parametrize(
    ("name", "requirements", "message"),
    [
        ("../escape", PACKAGE, "not a valid environment name"),
        (".cache", PACKAGE, "not a valid environment name"),
        ("ok", f"--index-url https://evil.example/simple\n{PACKAGE}\n", "options are not allowed"),
        ("ok", f"{PACKAGE} @ https://evil.example/x.whl\n", "direct references"),
        ("ok", "pyqd_envtest_greedy\n", "needs numpy>=99, but the server has numpy"),
        ("ok", "numpy<1\n", "one of the server's packages"),
    ],
)
def test_a_bad_environment_is_refused_with_the_reason(tmp_path, wheels, name, requirements, message):
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(requirements)
    data = ["--data-dir", str(tmp_path / "data")]
    failed(run_pyqd("env", "create", name, "-r", str(reqs), *offline(wheels), *data), re.escape(message))
    assert EnvStore.of_data_dir(tmp_path / "data").list() == []
