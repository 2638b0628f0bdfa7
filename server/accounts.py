"""Account lifecycle across packages: a user's schema is made on creation and everything is dropped on removal."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from datastore import service as ds
from models import service as models_service
from repository import service as repo
from server.auth import service as auth_service
from server.auth.errors import LastAdministrator, UserExists
from server.auth.models import User
from server.db import write_session
from server.services import Services
from tables import service as tbl


def add_user(services: Services, name: str, password: str, *, is_admin: bool = False) -> User:
    """Create the account and its (empty) schema."""
    with write_session(services.sessions) as session:
        user = auth_service.create_user(
            session, name, password, is_admin=is_admin, min_length=services.settings.password_min_length
        )
    services.user_data.ensure_schema(user.name)
    return user


def set_password(services: Services, name: str, password: str) -> None:
    """Change a password (at least PYQD_PASSWORD_MIN_LENGTH characters); the user's tokens stop working."""
    with write_session(services.sessions) as session:
        auth_service.set_password(session, name, password, min_length=services.settings.password_min_length)
    services.forget_sessions(user=name.upper())


def remove_user(services: Services, name: str, *, removed_by: str | None = None) -> None:
    """Drop the account, its API clients, private scripts, datastores, tables and grants to it."""
    with write_session(services.sessions) as session:
        user = auth_service.get_user(session, name)
        if user.is_admin and sum(u.is_admin for u in auth_service.list_users(session)) == 1:
            raise LastAdministrator(user.name)
        repo.drop_owner(session, user.name, reassign_globals_to=removed_by)
        ds.drop_owner(session, user.name)
        models_service.remove_user(session, user.name)
        tbl.drop_owner(session, services.user_data, user.name)
        auth_service.remove_user(session, user.name)
        name = user.name
    services.forget_sessions(user=name)
    services.forget_scripts()  # their scripts, and those granted to them
    services.forget_datastore_generation()
    services.forget_deployments()


#: Name of the administrator created on first start.
ADMIN_NAME = "ADMIN"


def bootstrap_admin(services: Services) -> str | None:
    """On first start (no users yet) create ADMIN; returns the generated password, or None if none was made.

    The password is PYQD_ADMIN_PASSWORD when set, else a random one the caller prints once.
    """
    import secrets

    with services.sessions() as session:
        if auth_service.list_users(session):
            return None
    given = services.settings.admin_password
    password = given.get_secret_value() if given else secrets.token_urlsafe(18)
    try:
        add_user(services, ADMIN_NAME, password, is_admin=True)
    except (UserExists, IntegrityError):  # another server process of this first start made it
        return None
    return None if given else password
