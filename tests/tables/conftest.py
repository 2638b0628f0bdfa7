"""A server per test module and backend (`module_api`), for the table tests that can share one: each test makes
users of its own (`new_user`), so what one test writes never meets another's. A module changes the server's
settings with a `MODULE_SETTINGS` dict."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from engines.pool import WorkerPool
from server.app import create_app
from server.services import open_services
from server.settings import Settings
from tables.pg_store import default_role_prefix
from tests.conftest import ADMIN_PASSWORD, BACKENDS, Api, _admin_execute, _drop_database, _drop_roles, _pg_url

_users = itertools.count(1)


@pytest.fixture(scope="module", params=BACKENDS)
def module_settings(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    common = dict(
        data_dir=tmp_path_factory.mktemp("tables") / "data",
        admin_password=ADMIN_PASSWORD,
        password_hash_time_cost=1,
        password_hash_memory_kib=1024,
        **getattr(request.module, "MODULE_SETTINGS", {}),
    )
    if request.param == "sqlite":
        yield Settings(**common)
        return
    template = request.getfixturevalue("pg_template")
    name = f"{template}_m{secrets.token_hex(3)}"
    _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield Settings(database_url=_pg_url(name), **common)
    finally:
        _drop_database(name)
        _drop_roles(default_role_prefix(name))


@pytest.fixture(scope="module")
def module_api(module_settings: Settings, worker_pool: WorkerPool) -> Iterator[Api]:
    """An in-process client of one server for the whole module (on each backend)."""
    services = open_services(module_settings)
    services.pool = worker_pool
    try:
        with TestClient(create_app(services=services)) as client:
            yield Api(client, services)
    finally:
        services.close()


def new_user(api: Api, prefix: str = "U") -> tuple[str, dict[str, str]]:
    """A user no other test has: (name, bearer headers)."""
    name = f"{prefix}{next(_users)}"
    return name.upper(), api.user(name)
