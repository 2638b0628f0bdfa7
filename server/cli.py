"""The `pyqd` command: serve, and manage users, API clients, tables and models. Every command takes the same
--data-dir / --database-url / --host / --port flags (or PYQD_* environment variables)."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from server.settings import Settings

if TYPE_CHECKING:
    from models.service import DeploymentInfo, NewModel
    from server.services import Services


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


@main.group()
def model() -> None:
    """Store models and deploy them as OML Services scoring endpoints (on the store directly, like `table load`)."""


#: File suffixes stored as ONNX unless --type says otherwise (an ONNX zip or a bare .onnx); the rest are PYTHON.
ONNX_SUFFIXES = (".onnx", ".zip")
#: Workers the CLI starts to read a model being stored (the CLI, like the server, never unpickles one itself).
CLI_WORKERS = 1
#: Reads the access token out of the token endpoint's answer, in the curl line `model deploy` prints.
READ_ACCESS_TOKEN = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"accessToken\"])'"


@model.command("deploy")
@common_options
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="Model name: 1 to 50 letters, digits or _")
@click.option("--uri", required=True, help="The endpoint: scored at /omlmod/v1/deployment/URI/score")
@click.option(
    "--type",
    "model_type",
    type=click.Choice(["PYTHON", "ONNX", "ONNX_IMG"], case_sensitive=False),
    help="Default: ONNX for .onnx and .zip files, else PYTHON (a pickle or joblib file of an estimator)",
)
@click.option("--version", default="1.0", show_default=True, help="Model version, like 1.0")
@click.option("--namespace", default="", help="Namespace to store the model in")
@click.option("--description", help="Free text shown with the model")
@click.option("--shared/--private", default=False, show_default=True, help="Whether every user may see and score it")
@click.option("--user", "user_name", required=True, help="The user who owns the model and the endpoint")
def model_deploy(
    settings: Settings,
    file: Path,
    name: str,
    uri: str,
    model_type: str | None,
    version: str,
    namespace: str,
    description: str | None,
    shared: bool,
    user_name: str,
) -> None:
    """Store a model file for a user and deploy it at URI; prints the scoring URL and a ready curl line."""
    from models import service as models_service
    from models.errors import ModelExists, UriTaken
    from models.service import NewModel
    from server.auth import service as auth_service

    kind = (model_type or ("ONNX" if file.suffix.lower() in ONNX_SUFFIXES else "PYTHON")).upper()
    new = NewModel(name, version, kind, namespace, description, shared)
    svc = _services(settings)
    try:
        models_service.check_new(new)
        models_service.check_uri(uri)
        with svc.sessions() as session:  # refused before a worker is started to read the model
            owner = auth_service.get_user(session, user_name).name
            if models_service.exists(session, owner, new):
                raise ModelExists(new.name, new.version, new.namespace)
            if models_service.find_deployment(session, uri) is not None:
                raise UriTaken(uri)
        deployed = _store_and_deploy(svc, owner, new, file.read_bytes(), uri)
    except Exception as e:  # noqa: BLE001 - shown to the operator
        _fail(e)
    finally:
        svc.close()
    click.echo(_deployed_text(settings, deployed))


def _store_and_deploy(svc: Services, owner: str, new: NewModel, data: bytes, uri: str) -> DeploymentInfo:
    """Have a worker of the owner read the model, store it, and deploy it (removing it again if that fails)."""
    from models import service as models_service
    from server.db import write_session
    from server.scoring import open_scorer, store_model
    from server.services import make_pool

    # One worker, nothing preloaded: it loads one model once, importing only what that model needs.
    lean = {"workers": CLI_WORKERS, "warm_workers": 0, "worker_preload": ""}
    pool = make_pool(svc.settings.model_copy(update=lean))
    pool.start(wait=True)
    svc.pool = pool
    try:
        svc.scorer = open_scorer(svc)
        info = store_model(svc, owner, new, data)
    finally:
        svc.scorer, svc.pool = None, None
        pool.close()
    try:
        with write_session(svc.sessions) as session:
            return models_service.deploy(session, owner, info.id, uri)
    except Exception:
        with write_session(svc.sessions) as session:  # stored for this endpoint only: not left behind
            models_service.delete_model(session, owner, info.id)
        raise


def _base_url(settings: Settings) -> str:
    """Where clients reach the server: PYQD_PUBLIC_URL, else the address it listens on."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(settings.host, settings.host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def _deployed_text(settings: Settings, d: DeploymentInfo) -> str:
    """What `model deploy` prints: the model, its URLs, how to get a token, and a curl line that scores."""
    import json
    import shlex

    from server.omlmod_openapi import endpoint_document

    m = d.model
    base = _base_url(settings)
    service = f"{base}/omlmod/v1"
    score_url = f"{service}/deployment/{d.uri}/score"
    document = endpoint_document(d, service)
    post = document["paths"][f"/deployment/{d.uri}/score"]["post"]
    example = post["requestBody"]["content"]["application/json"]["example"]
    token_body = json.dumps({"grant_type": "password", "username": m.owner, "password": "YOUR_PASSWORD"})
    count = len(m.metadata.get("attributes", []))
    inputs = f"{count} input" + ("" if count == 1 else "s")
    function = str(m.metadata.get("miningFunction", "")).lower()
    return "\n".join(
        [
            f"stored {m.model_type} model {m.name} {m.version} of {m.owner} ({function}, {inputs}): {m.id}",
            f"deployed at {d.uri}" + (" (shared)" if m.shared else ""),
            "",
            f"score:   POST {score_url}",
            f"OpenAPI: GET  {service}/deployment/{d.uri}/api",
            "",
            f"Get a token as {m.owner} (or for an API client: pyqd client add NAME --user {m.owner}, then the",
            f"client_credentials grant at {base}/oauth/token):",
            f"  TOKEN=$(curl -s -X POST {base}/omlusers/api/oauth2/v1/token -H 'Content-Type: application/json' "
            f"-d {shlex.quote(token_body)} | {READ_ACCESS_TOKEN})",
            "Score (one record per row; replace the example values):",
            f"  curl -X POST {score_url} -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' "
            f"-d {shlex.quote(json.dumps(example, separators=(',', ':')))}",
        ]
    )


@model.command("list")
@common_options
@click.option("--user", "user_name", help="Only what this user sees (their models and shared ones); default: all")
def model_list(settings: Settings, user_name: str | None) -> None:
    """List stored models: id, owner, name, version, namespace, type, function, sharing, endpoint."""
    from models import service as models_service
    from server.auth import service as auth_service

    svc = _services(settings)
    try:
        with svc.sessions() as session:
            if user_name is not None:
                viewer = auth_service.get_user(session, user_name).name
                found = models_service.list_models(session, viewer)
                endpoints = models_service.list_deployments(session, viewer)
            else:  # each user's own models: together, every model
                found, endpoints = [], []
                for u in auth_service.list_users(session):
                    found += [m for m in models_service.list_models(session, u.name) if m.owner == u.name]
                    endpoints += models_service.list_deployments(session, u.name)
    except Exception as e:  # noqa: BLE001
        _fail(e)
    finally:
        svc.close()
    uris = {d.model.id: d.uri for d in endpoints}
    for m in found:
        function = str(m.metadata.get("miningFunction", "")).lower()
        sharing = "shared" if m.shared else "private"
        fields = [m.id, m.owner, m.name, m.version, m.namespace, m.model_type, function, sharing, uris.get(m.id, "")]
        click.echo("\t".join(fields))


def _as_user(settings: Settings, user_name: str, change: Callable[[Any, str], object]) -> None:
    """Run `change(session, user)` in one write transaction as the named user; one line and exit 1 on refusal."""
    from server.auth import service as auth_service
    from server.db import write_session

    svc = _services(settings)
    try:
        with write_session(svc.sessions) as session:
            change(session, auth_service.get_user(session, user_name).name)
    except Exception as e:  # noqa: BLE001
        _fail(e)
    finally:
        svc.close()


@model.command("undeploy")
@common_options
@click.argument("uri")
@click.option("--user", "user_name", required=True, help="The model's owner or the endpoint's creator")
def model_undeploy(settings: Settings, uri: str, user_name: str) -> None:
    """Remove the endpoint at URI (the model stays stored)."""
    from models import service as models_service

    _as_user(settings, user_name, lambda session, user: models_service.undeploy(session, user, uri))
    click.echo(f"removed endpoint {uri}")


@model.command("delete")
@common_options
@click.argument("model_id")
@click.option("--user", "user_name", required=True, help="The model's owner")
def model_delete(settings: Settings, model_id: str, user_name: str) -> None:
    """Delete a stored model (undeploy its endpoint first)."""
    from models import service as models_service

    _as_user(settings, user_name, lambda session, user: models_service.delete_model(session, user, model_id))
    click.echo(f"deleted model {model_id}")


@main.group()
def env() -> None:
    """Manage per-script environments (envName): packages added to the server's, built with uv.

    An environment adds packages; numpy, pandas, pyqd and everything else the server has come from the server.
    The requirements file holds package requirements only; where packages come from is given here."""


@env.command("create")
@common_options
@click.argument("name")
@click.option(
    "-r",
    "--requirements",
    "requirements",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Requirements file: one `name[extras] specifier ; marker` per line (no options, URLs or paths)",
)
@click.option("--description", help="Shown in GET /py-scripts/v1/envs")
@click.option("--replace", is_flag=True, help="Build it again if it exists (running calls keep the old build)")
@click.option("--index-url", help="Package index (default: PyPI)")
@click.option("--extra-index-url", multiple=True, help="Another package index (repeatable)")
@click.option("--find-links", multiple=True, help="A directory or page of wheels to use (repeatable)")
@click.option("--no-index", is_flag=True, help="Use no index: only --find-links")
@click.option("--allow-build", is_flag=True, help="Build source distributions too (runs their build scripts)")
def env_create(
    settings: Settings,
    name: str,
    requirements: Path,
    description: str | None,
    replace: bool,
    index_url: str | None,
    extra_index_url: tuple[str, ...],
    find_links: tuple[str, ...],
    no_index: bool,
    allow_build: bool,
) -> None:
    """Build environment NAME from a requirements file."""
    from engines import envbuild
    from engines.envs import EnvError, EnvStore

    index = envbuild.IndexOptions(index_url, extra_index_url, find_links, no_index, allow_build)
    try:
        info = envbuild.create(
            EnvStore.of_data_dir(settings.data_dir),
            name,
            requirements.read_text(),
            description=description,
            replace=replace,
            index=index,
        )
    except (EnvError, OSError, UnicodeDecodeError) as e:
        _fail(e)
    added = ", ".join(f"{p['name']} {p['version']}" for p in info.packages) or "nothing"
    click.echo(f"built environment {info.name} in {info.build_seconds:.1f} s: {added}")


@env.command("list")
@common_options
def env_list(settings: Settings) -> None:
    """List the environments: name, size, packages, description."""
    from engines.envs import EnvStore, human_size

    for info in EnvStore.of_data_dir(settings.data_dir).list():
        packages = " ".join(f"{p['name']}=={p['version']}" for p in info.packages)
        click.echo(f"{info.name}\t{human_size(info.size)}\t{info.created}\t{packages}\t{info.description or ''}")


@env.command("drop")
@common_options
@click.argument("name")
def env_drop(settings: Settings, name: str) -> None:
    """Remove environment NAME (calls running in it finish; new calls naming it get a 400)."""
    from engines import envbuild
    from engines.envs import EnvError, EnvStore

    try:
        envbuild.drop(EnvStore.of_data_dir(settings.data_dir), name)
    except EnvError as e:
        _fail(e)
    click.echo(f"dropped environment {name}")
