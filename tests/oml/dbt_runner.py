"""Runs in the dbt venv of tests/oml/test_dbt.py (dbt-oracle installed, pyqd not): what dbt-oracle does for a
Python model, split where it would need an Oracle database.

    python dbt_runner.py render PROJECT_DIR OUT.json
        Parse and compile the project's Python models with dbt, then render each one's script through dbt's
        own machinery: the table materialization's `create_table_as(False, <alias>__dbt_tmp, compiled_code,
        'python')`, which dispatches to dbt-oracle's `oracle__create_table_as` -> `py_write_table`, and strip it
        as `OracleAdapter.submit_python_job` does before `sys.pyqScriptCreate`. Writes {alias: {"script",
        "model"}} where "model" is the parsed model dict dbt hands to `submit_python_job`.

    python dbt_runner.py run REQUEST.json OUT.json
        REQUEST is {"url", "user", "password", "model"}: run dbt-oracle's own `OracleADBSPythonJob` (its OML REST
        client: token, do-eval, async polling) against `url`. Writes {"ok", "error", "exchanges"}: every HTTP
        exchange the client made, recorded with requests' response hook.

The project must override `is_incremental()` (no database to ask whether the table exists).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def render(project: Path, out: Path) -> None:
    from dbt.adapters.factory import FACTORY
    from dbt.cli.main import dbtRunner
    from dbt.context.providers import generate_runtime_model_context

    flags = ["--profiles-dir", str(project), "--project-dir", str(project)]
    parsed = dbtRunner().invoke(["--quiet", "parse", *flags])
    if not parsed.success:
        raise SystemExit(f"dbt parse failed: {parsed.exception}")
    manifest = parsed.result
    compiled = dbtRunner(manifest=manifest).invoke(
        ["--quiet", "compile", *flags, "--no-populate-cache", "--select", "resource_type:model"]
    )
    if not compiled.success:
        raise SystemExit(f"dbt compile failed: {compiled.exception}")
    adapter = FACTORY.adapters["oracle"]
    scripts: dict[str, Any] = {}
    for result in compiled.result.results:
        node = result.node
        if node.language != "python":
            continue
        context = generate_runtime_model_context(node, adapter.config, manifest)
        relation = adapter.Relation.create(
            identifier=f"{node.alias}__dbt_tmp", schema=node.schema, database=node.database, type="table"
        )
        code = context["create_table_as"](False, relation, node.compiled_code, "python")
        scripts[node.alias] = {"script": str(code).strip(), "model": node.to_dict()}
    out.write_text(json.dumps(scripts))


def run(request_file: Path, out: Path) -> None:
    import dbt_common.exceptions
    from dbt.adapters.oracle import OracleAdapterCredentials
    from dbt.adapters.oracle.python_submissions import OracleADBSPythonJob

    request = json.loads(request_file.read_text())
    credentials = OracleAdapterCredentials(
        user=request["user"],
        password=request["password"],
        database=request["model"]["database"],
        schema=request["model"]["schema"],
        oml_cloud_service_url=request["url"],
    )
    job = OracleADBSPythonJob(parsed_model=request["model"], credential=credentials)
    exchanges: list[dict[str, Any]] = []

    def record(response: Any, *args: Any, **kwargs: Any) -> None:
        body = response.request.body
        exchanges.append(
            {
                "method": response.request.method,
                "url": response.request.url,
                "request": json.loads(body) if body else None,
                "status": response.status_code,
                "headers": dict(response.headers),
                "response": response.text[:4000],
            }
        )

    job.oml4py_client.session.hooks["response"].append(record)
    outcome: dict[str, Any] = {"ok": True, "error": None}
    try:
        job()
    except dbt_common.exceptions.DbtRuntimeError as e:
        outcome = {"ok": False, "error": str(e)}
    out.write_text(json.dumps({**outcome, "exchanges": exchanges}))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"render": render, "run": run}[command](*(Path(a) for a in args))
