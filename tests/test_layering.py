"""The import rules of DESIGN §2, checked on the source tree."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["server", "repository", "datastore", "tables", "models", "engines", "oml"]
#: package → first-party packages it must not import.
FORBIDDEN = {
    "repository": {"server", "datastore", "tables", "models", "engines"},
    "datastore": {"server", "repository", "tables", "models", "engines"},
    "tables": {"server", "repository", "datastore", "models", "engines"},
    "models": {"server", "repository", "datastore", "tables", "engines"},
    "engines": {"server", "repository", "datastore", "models"},
    "oml": {"server", "repository", "datastore", "tables", "models", "engines"},
}
#: Modules that run inside worker processes: only the standard library, the data stack and `oml`.
WORKER_MODULES = [
    "engines/worker",
    "engines/serialize.py",
    "engines/channel.py",
    "engines/wire.py",
    "engines/protocol.py",
]
WORKER_ALLOWED_THIRD_PARTY = {
    "numpy",
    "pandas",
    "pyarrow",
    "cloudpickle",
    "orjson",
    "msgpack",
    "matplotlib",
    "httpx",
    "cachetools",
    "oml",
    "engines",
    # scoring a stored model (engines/worker/onnx_model.py, python_model.py): onnxruntime, images for ONNX_IMG,
    # and what unpickles a PYTHON model and reads its kind
    "onnxruntime",
    "PIL",
    "joblib",
    "sklearn",
}


#: What a worker process imports: the template's entry (`python -m engines.worker.template`, started by
#: engines/spawner.py) imports the preload; a worker forked from it runs `engines.worker.main.serve`, which confines
#: itself (sandbox) and runs tasks (runtime, results), compiling scripts with `oml.script` and serving their
#: `import oml` through the bridge.
WORKER_ENTRY = [
    "engines.worker.template",
    "engines.worker.preload",
    "engines.worker.main",
    "engines.worker.sandbox",
    "engines.worker.runtime",
    "engines.worker.results",
    "engines.worker.bridge",
    "oml.script",
    "oml._connection",
]
#: Modules (with their submodules) a worker process must never load: the server, its database and secrets, the
#: domain packages, and the server side of the engine.
NEVER_IN_A_WORKER = [
    "sqlalchemy",
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic",
    "pydantic_settings",
    "jwt",
    "alembic",
    "psycopg",
    "server",
    "repository",
    "datastore",
    "tables",
    "models",
    "engines.scoring",
    "engines.jobs",
    "engines.service",
    "engines.runner",
    "engines.pool",
    "engines.spec",
]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def python_files(rel: str) -> list[Path]:
    p = ROOT / rel
    return [p] if p.is_file() else sorted(p.rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_domain_packages_keep_to_their_layer(package):
    bad = {str(f.relative_to(ROOT)): sorted(imports_of(f) & FORBIDDEN[package]) for f in python_files(package)}
    assert {f: b for f, b in bad.items() if b} == {}


def test_no_fastapi_below_server():
    offenders = [
        str(f.relative_to(ROOT))
        for pkg in PACKAGES
        if pkg != "server"
        for f in python_files(pkg)
        if imports_of(f) & {"fastapi", "starlette"}
    ]
    assert offenders == []


def test_worker_side_imports_only_the_data_stack():
    import sys

    stdlib = set(sys.stdlib_module_names)
    offenders = {}
    for rel in WORKER_MODULES:
        for f in python_files(rel):
            extra = imports_of(f) - stdlib - WORKER_ALLOWED_THIRD_PARTY
            if extra:
                offenders[str(f.relative_to(ROOT))] = sorted(extra)
    assert offenders == {}


def _worker_side(module: str) -> bool:
    """Whether a first-party module is one of WORKER_MODULES (or a package holding them)."""
    if module in ("engines", "oml") or module.startswith("oml."):
        return True
    prefixes = [rel.removesuffix(".py").replace("/", ".") for rel in WORKER_MODULES]
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_a_worker_process_loads_nothing_of_the_server():
    """What a worker's entry really loads, in a fresh interpreter: an import anywhere below it (also of a module
    of `engines` the source check above allows) that pulls in the server side shows here."""
    from engines.spawner import clean_environment

    code = "".join(f"import {m}\n" for m in WORKER_ENTRY) + "import sys\nprint('\\n'.join(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean_environment(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    loaded = set(out.stdout.split())
    assert set(WORKER_ENTRY) <= loaded
    forbidden = sorted(m for m in loaded if any(m == n or m.startswith(n + ".") for n in NEVER_IN_A_WORKER))
    assert forbidden == []
    first_party = sorted(m for m in loaded if m.split(".")[0] in PACKAGES)
    assert [m for m in first_party if not _worker_side(m)] == []
