"""A server per test module and backend (`module_api`, on `tests.conftest.module_settings`), for the table tests
that can share one: each test makes users of its own (`new_user`), so what one test writes never meets another's.
A module changes the server's settings with a `MODULE_SETTINGS` dict."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from engines.pool import WorkerPool
from server.app import create_app
from server.services import open_services
from server.settings import Settings
from tests.conftest import Api

_users = itertools.count(1)


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
