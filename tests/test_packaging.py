"""The container image stays in step with the package list. (docker-compose.yml has tests/test_compose.py.)"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_dockerfile_copies_every_package():
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"][
        "packages"
    ]
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    copied = {line.split()[1] for line in lines if line.startswith("COPY ")}
    assert set(packages) <= copied
    assert lines[[line.split()[0] if line else "" for line in lines].index("FROM")].startswith("FROM python:3.11")
    assert any(line.startswith("CMD") and "serve" in line for line in lines)


def test_dockerfile_installs_every_dependency_and_the_worker_account():
    text = (ROOT / "Dockerfile").read_text()
    # The dependencies are read from pyproject.toml, so the Dask engine's come along; the build imports them.
    assert "['project']['dependencies']" in text and "pip install --no-deps ." in text
    assert "import distributed" in text
    assert "useradd" in text and "pyqd-worker" in text
