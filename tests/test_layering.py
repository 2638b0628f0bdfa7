"""The import rules of DESIGN §2, checked on the source tree."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["server", "repository", "datastore", "tables", "engines", "oml"]
#: package → first-party packages it must not import.
FORBIDDEN = {
    "repository": {"server", "datastore", "tables", "engines"},
    "datastore": {"server", "repository", "tables", "engines"},
    "tables": {"server", "repository", "datastore", "engines"},
    "engines": {"server", "repository", "datastore"},
    "oml": {"server", "repository", "datastore", "tables", "engines"},
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
}


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
