"""The `pyqd` command: serve, and manage users, API clients and tables. Every command takes the same
--data-dir / --database-url / --host / --port flags (or PYQD_* environment variables)."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from server.settings import Settings


def common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add the shared flags and hand the command a built `Settings` as `settings`."""

    @click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Data directory [PYQD_DATA_DIR]")
    @click.option("--database-url", help="SQLAlchemy URL of the metadata store [PYQD_DATABASE_URL]")
    @click.option("--host", help="Address to listen on [PYQD_HOST]")
    @click.option("--port", type=int, help="Port to listen on [PYQD_PORT]")
    @functools.wraps(f)
    def wrapper(
        data_dir: Path | None, database_url: str | None, host: str | None, port: int | None, **kwargs: Any
    ) -> Any:
        overrides: dict[str, Any] = {
            k: v
            for k, v in {"data_dir": data_dir, "database_url": database_url, "host": host, "port": port}.items()
            if v is not None
        }
        if kwargs.get("dev"):
            overrides["dev"] = True
        return f(settings=Settings(**overrides), **kwargs)

    return wrapper


def _services(settings: Settings):  # noqa: ANN202
    """Open the stores, or exit with the reason (a weak signing key, an unreachable database)."""
    from server.services import open_services

    try:
        return open_services(settings)
    except Exception as e:  # noqa: BLE001 - shown to the operator
        _fail(e)


def _fail(e: Exception) -> NoReturn:
    click.echo(f"error: {e}", err=True)
    sys.exit(1)


def _read_password(password_stdin: bool, prompt: str = "Password") -> str:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt(prompt, hide_input=True, confirmation_prompt=True)
    if not password:
        _fail(ValueError("the password must not be empty"))
    return password


@click.group()
def main() -> None:
    """pyqd: a self-hosted server for embedded Python execution (OML4Py REST API)."""


@main.command()
@common_options
@click.option("--dev", is_flag=True, help="Development mode (allows a weak signing key)")
@click.option("--processes", type=int, help="Server processes answering HTTP [PYQD_PROCESSES]")
def serve(settings: Settings, dev: bool, processes: int | None) -> None:
    """Start the server (creates the data directory, signing key and admin on first start)."""
    import uvicorn

    from server.app import create_app
    from server.auth.keys import WeakSigningKey, load_signing_key

    if processes is not None:
        settings = settings.model_copy(update={"processes": processes})
    try:
        load_signing_key(settings)  # refuse a weak key here, with one line instead of a start-up traceback
    except WeakSigningKey as e:
        _fail(e)
    click.echo(f"pyqd: data in {settings.data_dir.resolve()}, metadata at {_safe_url(settings.metadata_url)}", err=True)
    # X-Forwarded-For/-Proto are believed only from the proxies the operator names (PYQD_FORWARDED_ALLOW_IPS):
    # otherwise any client could pick the address that login throttling counts.
    options = _uvicorn_options(settings)
    if settings.processes <= 1:
        uvicorn.run(create_app(settings), **options)
        return
    # Several server processes: each builds the app from the environment, so the settings travel there.
    os.environ.update(_settings_env(settings))
    uvicorn.run("server.app:create_app", factory=True, workers=settings.processes, **options)


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How uvicorn serves: no `Server` header (it names the software to a scanner), and a line per request
    only at debug level (pyqd_http_requests counts and times them by route; a log line costs each call)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": settings.log_level.lower() in ("debug", "trace"),
        "server_header": False,
        "proxy_headers": bool(settings.forwarded_allow_ips),
        "forwarded_allow_ips": settings.forwarded_allow_ips or None,
    }


def _settings_env(settings: Settings) -> dict[str, str]:
    """PYQD_* variables for the settings the command line may have changed."""
    env = {
        "PYQD_DATA_DIR": str(settings.data_dir.resolve()),
        "PYQD_HOST": settings.host,
        "PYQD_PORT": str(settings.port),
        "PYQD_PROCESSES": str(settings.processes),
    }
    if settings.database_url:
        env["PYQD_DATABASE_URL"] = settings.database_url
    if settings.dev:
        env["PYQD_DEV"] = "true"
    return env


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@main.group()
def user() -> None:
    """Manage users (each owns a schema, scripts and datastores)."""


@user.command("add")
@common_options
@click.argument("name")
@click.option("--admin", is_flag=True, help="Make the user an administrator")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input")
def user_add(settings: Settings, name: str, admin: bool, password_stdin: bool) -> None:
    """Create a user."""
    from server import accounts

    password = _read_password(password_stdin)
    svc = _services(settings)
    try:
        u = accounts.add_user(svc, name, password, is_admin=admin)
    except Exception as e:  # noqa: BLE001 - shown to the operator
        _fail(e)
    click.echo(f"created user {u.name}" + (" (admin)" if admin else ""))


@user.command("list")
@common_options
def user_list(settings: Settings) -> None:
    """List users."""
    from server.auth import service as auth_service

    with _services(settings).sessions() as session:
        for u in auth_service.list_users(session):
            click.echo(f"{u.name}\t{'admin' if u.is_admin else ''}\t{u.created_at:%Y-%m-%d %H:%M:%S}")


@user.command("passwd")
@common_options
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input")
def user_passwd(settings: Settings, name: str, password_stdin: bool) -> None:
    """Set a user's password (their existing tokens stop working)."""
    from server import accounts

    password = _read_password(password_stdin, "New password")
    try:
        accounts.set_password(_services(settings), name, password)
    except Exception as e:  # noqa: BLE001
        _fail(e)
    click.echo(f"password changed for {name.upper()}")


@user.command("remove")
@common_options
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation")
def user_remove(settings: Settings, name: str, yes: bool) -> None:
    """Remove a user and everything they own (scripts, datastores, tables)."""
    from server import accounts

    if not yes:
        click.confirm(f"Remove {name.upper()} and all their scripts, datastores and tables?", abort=True)
    try:
        accounts.remove_user(_services(settings), name)
    except Exception as e:  # noqa: BLE001
        _fail(e)
    click.echo(f"removed user {name.upper()}")


@main.group()
def client() -> None:
    """Manage API clients (OAuth2 client credentials for APEX, Postman, scripts)."""


@client.command("add")
@common_options
@click.argument("name")
@click.option("--user", "user_name", required=True, help="The user the client acts as")
def client_add(settings: Settings, name: str, user_name: str) -> None:
    """Register a client; prints its id and secret (the secret is not shown again)."""
    from server.auth import service as auth_service
    from server.db import write_session

    try:
        with write_session(_services(settings).sessions) as session:
            c, secret = auth_service.create_client(session, name, user_name)
    except Exception as e:  # noqa: BLE001
        _fail(e)
    click.echo(f"client_id: {c.client_id}\nclient_secret: {secret}")


@client.command("list")
@common_options
def client_list(settings: Settings) -> None:
    """List clients."""
    from server.auth import service as auth_service

    with _services(settings).sessions() as session:
        for c in auth_service.list_clients(session):
            click.echo(f"{c.client_id}\t{c.name}\t{c.user_name}")


@client.command("remove")
@common_options
@click.argument("client_id")
def client_remove(settings: Settings, client_id: str) -> None:
    """Remove a client (its tokens stop working)."""
    from server.auth import service as auth_service
    from server.db import write_session

    try:
        with write_session(_services(settings).sessions) as session:
            auth_service.remove_client(session, client_id)
    except Exception as e:  # noqa: BLE001
        _fail(e)
    click.echo(f"removed client {client_id}")


@main.group()
def table() -> None:
    """Manage user tables."""


@table.command("load")
@common_options
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--table", "table_name", required=True, help="Table name (case kept)")
@click.option("--owner", required=True, help="The user whose schema gets the table")
@click.option("--mode", type=click.Choice(["create", "replace", "append"]), default="create", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet", "json"]), help="Default: from the extension")
def table_load(settings: Settings, file: Path, table_name: str, owner: str, mode: str, fmt: str | None) -> None:
    """Load a CSV, Parquet or JSON-records file into a user's table."""
    from server.auth import service as auth_service
    from server.db import write_session
    from tables import service as tbl
    from tables.frames import UPLOAD_FORMATS
    from tables.uploads import open_upload

    fmt = fmt or file.suffix.lstrip(".").lower()
    if fmt not in UPLOAD_FORMATS:
        _fail(ValueError(f"cannot tell the format of {file.name}; pass --format csv|parquet|json"))
    svc = _services(settings)
    try:
        with file.open("rb") as f, write_session(svc.sessions) as session:  # read in chunks, not whole
            data = open_upload(f, fmt)  # type: ignore[arg-type]
            owner_name = auth_service.get_user(session, owner).name
            desc = tbl.write_table(session, svc.user_data, owner_name, table_name, data, mode)  # type: ignore[arg-type]
    except Exception as e:  # noqa: BLE001
        _fail(e)
    click.echo(f"loaded {desc.row_count} rows into {desc.owner}.{desc.name}")
