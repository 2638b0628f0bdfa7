"""dbt-oracle's Python models against pyqd: the script its macros render runs unchanged in the engine, submitted by
dbt-oracle's own OML REST client, and materializes its table.

dbt-oracle runs in a venv of its own (tests/oml/dbt_runner.py runs there), built once per machine from pyproject's
`dbt` extra into the user's cache: dbt-core's pins cannot share the dev venv (see pyproject.toml), and dbt is a
separate process anyway.
What dbt-oracle does over SQL on Oracle (`sys.pyqScriptCreate`, renaming `<model>__dbt_tmp`) the test does with
pyqd's client: the script is stored with `oml.script.create`, and the `__DBT_TMP` table is what is checked.
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

import oml
from oml._source import parse_script
from server.cli import main as pyqd_cli
from server.settings import Settings

#: One worker runs this module, so dbt renders the project once.
pytestmark = pytest.mark.xdist_group("dbt")

REPO = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("dbt_runner.py")
#: Seconds allowed to build the dbt venv (pip from PyPI, once per machine) and for one dbt step.
VENV_BUILD_TIMEOUT_S = 900
DBT_STEP_TIMEOUT_S = 300
SCHEMA = "oml_user"  # dbt's target schema: the pyqd user the models run as
NUMBERS = pd.DataFrame({"N": [1, 2, 3], "NAME": ["one", "two", "three"]})

PROJECT = {
    "dbt_project.yml": """
        name: pyqd_dbt
        version: "1.0"
        config-version: 2
        profile: pyqd
    """,
    # dbt never connects: nothing listens on port 1. The run step points dbt-oracle's OML client at the server.
    "profiles.yml": f"""
        pyqd:
          target: dev
          outputs:
            dev:
              type: oracle
              user: {SCHEMA}
              pass: unused
              protocol: tcp
              host: 127.0.0.1
              port: 1
              service: pyqd
              database: pyqd
              schema: {SCHEMA}
              threads: 1
              oml_cloud_service_url: http://127.0.0.1:1
    """,
    "seeds/numbers.csv": "N,NAME\n1,one\n2,two\n3,three\n",
    "models/sources.yml": f"""
        version: 2
        sources:
          - name: raw
            schema: {SCHEMA}
            tables:
              - name: numbers
    """,
    # No database to ask whether the model's table exists: a table model is never incremental.
    "macros/offline.sql": "{% macro is_incremental() %}{{ return(False) }}{% endmacro %}\n",
    "models/py_pandas.py": """
        def model(dbt, session):
            dbt.config(materialized="table")
            numbers = dbt.source("raw", "numbers").pull()
            numbers["SQUARE"] = numbers["N"] * numbers["N"]
            return numbers[numbers["N"] > 1]
    """,
    "models/py_proxy.py": """
        def model(dbt, session):
            dbt.config(materialized="table", async_flag=True)
            numbers = dbt.ref("numbers")
            return numbers[numbers["N"] > 1]
    """,
    "models/py_env.py": """
        def model(dbt, session):
            dbt.config(materialized="table", conda_env_name="dbt_env")
            import sys

            import pandas as pd
            from text_unidecode import unidecode

            return pd.DataFrame({"PREFIX": [sys.prefix], "PLAIN": [unidecode("déjà")]})
    """,
}


def dbt_requirements() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dbt"]


def dbt_venv(requirements: list[str]) -> Path:
    """Where the venv for these requirements lives: the user's cache, so it outlives checkouts and dev venvs."""
    key = hashlib.sha256("\n".join([sys.version, *requirements]).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "pyqd-tests" / f"dbt-oracle-{key}"


@pytest.fixture(scope="session")
def dbt_python() -> Path:
    """The python of a venv holding pyproject's `dbt` extra, built on first use (a lock keeps the test workers
    from building it twice; a stamp written last makes a half-built one be built again)."""
    requirements = dbt_requirements()
    venv = dbt_venv(requirements)
    python, stamp = venv / "bin" / "python", venv / ".pyqd-built"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
            built = subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements],
                capture_output=True,
                text=True,
                timeout=VENV_BUILD_TIMEOUT_S,
            )
            assert built.returncode == 0, f"installing {requirements} failed:\n{built.stdout}\n{built.stderr}"
            stamp.touch()
    return python


def dbt_step(python: Path, command: str, argument: Path, out: Path) -> Any:
    done = subprocess.run(
        [str(python), str(RUNNER), command, str(argument), str(out)],
        capture_output=True,
        text=True,
        timeout=DBT_STEP_TIMEOUT_S,
        cwd=argument if argument.is_dir() else argument.parent,
    )
    assert done.returncode == 0, f"dbt_runner {command} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def rendered(dbt_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """{alias: {"script", "model"}}: each Python model's script as dbt-oracle renders it, and its parsed model."""
    project = tmp_path_factory.mktemp("dbt_project")
    for name, text in PROJECT.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(textwrap.dedent(text).lstrip())
    return dbt_step(dbt_python, "render", project, project / "rendered.json")


def run_model(dbt_python: Path, tmp_path: Path, oml_user: tuple[str, str, str], model: dict[str, Any]) -> Any:
    """dbt-oracle's OracleADBSPythonJob against the live server: {"ok", "error", "exchanges"}."""
    url, user, password = oml_user
    request = tmp_path / f"{model['alias']}_request.json"
    request.write_text(json.dumps({"url": url, "user": user, "password": password, "model": model}))
    return dbt_step(dbt_python, "run", request, tmp_path / f"{model['alias']}_outcome.json")


def store_script(rendered: dict[str, Any], alias: str) -> None:
    """What `OracleAdapter.submit_python_job` does with `sys.pyqScriptCreate(name, code, FALSE, TRUE)`."""
    oml.script.create(f"{alias}_dbt_py_script", func=rendered[alias]["script"], is_global=False, overwrite=True)


def connect_and_seed(oml_user: tuple[str, str, str]) -> None:
    url, user, password = oml_user
    oml.connect(url=url, username=user, password=password)
    oml.create(NUMBERS, table="NUMBERS")  # what `dbt seed` loads


def table_rows(table: str) -> pd.DataFrame:
    proxy = oml.sync(table=table)
    assert not isinstance(proxy, dict)
    return proxy.pull().sort_values("N").reset_index(drop=True)


def test_dbt_oracle_renders_the_script_pyqd_runs(rendered):
    """The script is dbt-oracle's template: one `main(action, client_identifier, clientinfo, module)` that tags
    `oml.core.methods._get_conn()`, loads refs with `oml.sync`, and writes `<model>__DBT_TMP`."""
    assert set(rendered) == {"py_pandas", "py_proxy", "py_env"}
    for alias, item in rendered.items():
        script = item["script"]
        ast.parse(script)
        assert parse_script(f"{alias}_dbt_py_script", script)[1] == "main"
        assert script.startswith("def main(action, client_identifier, clientinfo, module):")
        assert "connection = oml.core.methods._get_conn()" in script
        assert "dbt = dbtObj(load_df_function=oml.sync)" in script
        assert 'table_name = f"{dbt.this.identifier}__dbt_tmp"' in script
        assert "materialize(final_df, table=table_name.upper(), session=oml)" in script
        assert "elif isinstance(df, oml.core.frame.DataFrame):\n           df.materialize(table=table)" in script
        assert item["model"]["alias"] == alias
    assert 'sources = {"raw.numbers": "oml_user.numbers"}' in rendered["py_pandas"]["script"]
    assert 'refs = {"numbers": "oml_user.numbers"}' in rendered["py_proxy"]["script"]
    assert rendered["py_proxy"]["model"]["config"]["async_flag"] is True
    assert rendered["py_env"]["model"]["config"]["conda_env_name"] == "dbt_env"


def do_eval_calls(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    return [x for x in outcome["exchanges"] if "/oml/api/py-scripts/v1/do-eval/" in x["url"]]


def test_pandas_model_runs_synchronously(rendered, dbt_python, oml_user, tmp_path):
    """A model reading a dbt source and returning a pandas DataFrame: the script stores it with `oml.create`
    (a persistent table written from inside the engine); dbt-oracle's client gets a
    token, calls do-eval synchronously, and finds no errorMessage."""
    connect_and_seed(oml_user)
    store_script(rendered, "py_pandas")
    outcome = run_model(dbt_python, tmp_path, oml_user, rendered["py_pandas"]["model"])
    assert outcome["ok"], outcome
    token = outcome["exchanges"][0]
    assert token["url"].endswith("/omlusers/api/oauth2/v1/token") and token["status"] == 200
    assert token["request"]["grant_type"] == "password"
    [call] = do_eval_calls(outcome)
    assert call["url"].endswith("/oml/api/py-scripts/v1/do-eval/py_pandas_dbt_py_script") and call["status"] == 200
    assert call["request"]["service"] == "HIGH" and "envName" not in call["request"]
    assert set(json.loads(call["request"]["parameters"])) == {"action", "client_identifier", "clientinfo", "module"}
    assert json.loads(call["response"]) == {"result": [{"result": 1}]}

    expected = NUMBERS[NUMBERS["N"] > 1].assign(SQUARE=[4, 9]).reset_index(drop=True)
    pd.testing.assert_frame_equal(table_rows("PY_PANDAS__DBT_TMP"), expected, check_dtype=False)


def test_proxy_model_runs_asynchronously(rendered, dbt_python, oml_user, tmp_path):
    """A model returning a proxy (`oml.core.frame.DataFrame`): the script calls `df.materialize(table=...)`, so
    the rows go from table to table in the database. `async_flag` makes dbt-oracle submit a job (201 +
    Location), poll it until 302, and read `<Location>/result`."""
    connect_and_seed(oml_user)
    store_script(rendered, "py_proxy")
    outcome = run_model(dbt_python, tmp_path, oml_user, rendered["py_proxy"]["model"])
    assert outcome["ok"], outcome
    submit, *polls = do_eval_calls(outcome)
    assert submit["status"] == 201 and submit["request"]["asyncFlag"] is True
    assert submit["request"]["timeout"] == 1800  # dbt-oracle's default: ADB's minimum
    location = submit["headers"]["location"]
    statuses = [x["status"] for x in outcome["exchanges"] if x["url"].startswith(location)]
    assert statuses[-2:] == [302, 200] and set(statuses[:-2]) <= {202}
    result = outcome["exchanges"][-1]
    assert result["url"] == f"{location}/result" and json.loads(result["response"]) == {"result": [{"result": 1}]}

    expected = NUMBERS[NUMBERS["N"] > 1].reset_index(drop=True)
    pd.testing.assert_frame_equal(table_rows("PY_PROXY__DBT_TMP"), expected, check_dtype=False)


def store_flags(settings: Settings) -> list[str]:
    flags = ["--data-dir", str(settings.data_dir)]
    if settings.database_url:
        flags += ["--database-url", settings.database_url]
    return flags


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
def test_conda_env_name_runs_the_model_in_that_environment(rendered, dbt_python, oml_user, settings, tmp_path):
    """dbt-oracle sends a model's `conda_env_name` as `envName`: an unknown one fails clearly; once an admin has
    built it (`pyqd env create`), the model runs there and imports what only that environment has."""
    connect_and_seed(oml_user)
    store_script(rendered, "py_env")
    model = rendered["py_env"]["model"]

    missing = run_model(dbt_python, tmp_path, oml_user, model)
    assert not missing["ok"]
    [call] = do_eval_calls(missing)
    assert call["request"]["envName"] == "dbt_env" and call["status"] == 400
    assert "dbt_env" in json.loads(call["response"])["errorMessage"]

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("text-unidecode\n")
    built = CliRunner().invoke(pyqd_cli, ["env", "create", "dbt_env", "-r", str(requirements), *store_flags(settings)])
    assert built.exit_code == 0, built.output

    outcome = run_model(dbt_python, tmp_path, oml_user, model)
    assert outcome["ok"], outcome
    rows = oml.sync(table="PY_ENV__DBT_TMP").pull()
    assert rows["PLAIN"].tolist() == ["deja"]
    assert rows["PREFIX"].iloc[0] != sys.prefix  # not the server's own environment
