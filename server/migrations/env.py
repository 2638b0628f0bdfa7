"""Alembic environment: every domain package's tables, on the connection the server hands in."""

from __future__ import annotations

from alembic import context

from datastore.models import DatastoreBase
from engines.jobs.models import EnginesBase
from models.models import ModelsBase
from repository.models import RepoBase
from server.auth.models import AuthBase
from tables.models import TablesBase

target_metadata = [
    AuthBase.metadata,
    RepoBase.metadata,
    DatastoreBase.metadata,
    TablesBase.metadata,
    EnginesBase.metadata,
    ModelsBase.metadata,
]


def run_migrations_online() -> None:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
