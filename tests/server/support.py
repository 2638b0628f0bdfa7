"""Small helpers shared by the server tests."""

from __future__ import annotations

from datetime import timedelta

import pytest

from server.auth import service as auth_service
from server.db import write_session
from server.services import Services

#: For tests of request parsing and checking only, where the metadata backend plays no part.
SQLITE_ONLY = pytest.mark.parametrize("settings", ["sqlite"], indirect=True)


def backdate_user(services: Services, name: str, hours: float = 10) -> None:
    """Make a user look created `hours` ago, so tokens issued with an earlier `now=` are theirs."""
    with write_session(services.sessions) as session:
        user = auth_service.get_user(session, name)
        user.created_at -= timedelta(hours=hours)
        user.tokens_valid_after -= timedelta(hours=hours)
