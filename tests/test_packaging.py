"""The container files are valid and stay in step with the package list."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_matches_the_compose_spec():
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(ROOT / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_runs_pyqd_on_postgres_and_requires_secrets():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["pyqd"]["environment"]
    assert env["PYQD_DATABASE_URL"].startswith("postgresql+psycopg://")
    for secret in ("PYQD_SIGNING_KEY", "PYQD_ADMIN_PASSWORD"):
        assert ":?" in env[secret], f"{secret} must be required, not defaulted"
    assert compose["services"]["pyqd"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_dockerfile_copies_every_package():
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"][
        "packages"
    ]
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    copied = {line.split()[1] for line in lines if line.startswith("COPY ")}
    assert set(packages) <= copied
    assert lines[[line.split()[0] if line else "" for line in lines].index("FROM")].startswith("FROM python:3.11")
    assert any(line.startswith("CMD") and "serve" in line for line in lines)
