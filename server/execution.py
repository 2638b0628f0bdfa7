"""The server's side of running scripts: turning an authorised request into the engine's `Call`, and the
engine's two needs that only the server can meet: a script's `import oml` (served by this app through the
bridge, with a token minted when the script first asks) and the datastore generation."""

from __future__ import annotations

import secrets
import socket
import threading
from typing import Any

from datastore import service as ds
from engines.assemble import Body
from engines.extensions import MAX_PICKLED_BYTES
from engines.jobs import JobRecord, JobStore, SchedulerConfig
from engines.pool import RequestHandler
from engines.runner import Limits
from engines.service import ExecutionService, JobLimits, Observer
from engines.spec import VERBS, AdHoc, ApplyRequest, Call, ExecutionBody
from repository import service as repo
from repository.source import entry_function
from server import func_value
from server.auth.tokens import TokenClaims
from server.bridge import TokenSource
from server.db import write_session
from server.deps import Caller
from server.errors import BadRequest, PayloadTooLarge
from server.services import DATASTORE_GENERATION, Services
from server.settings import Settings

#: What the Python client asks for with `"resultFormat": "pickle"`.
PICKLE_MEDIA_TYPE = "application/x-python-pickle"
#: File in the data directory naming this installation's server (jobs it claimed are recognised after a restart).
SERVER_ID_FILE = "server-id"


def execute(
    services: Services,
    caller: Caller,
    verb: str,
    script: str | None,
    owner: str | None,
    body: ExecutionBody | BadRequest,
    api_version: str,
) -> tuple[ApplyRequest, Body | JobRecord]:
    """Run the call now (its result body), or as a job with `asyncFlag` (its record), with the request as the
    call runs it: the one hop a route makes into the engine."""
    assert services.execution is not None
    call = make_call(services, caller, verb, script, owner, body)
    if call.request.async_flag:
        return call.request, services.execution.submit(call, api_version, verb)
    result = services.execution.run(call)
    if call.request.func_value is not None:  # the values become a table of the caller's; answer its description
        result = func_value.store(services, caller.name, call.request, result)
    return call.request, result


def make_call(
    services: Services,
    caller: Caller,
    verb: str,
    script: str | None,
    owner: str | None,
    body: ExecutionBody | BadRequest,
) -> Call:
    """The engine's Call: the body's request, the script resolved for the caller (a repository script: own,
    global, or `owner`'s if granted; or the function in the body), and the session its `import oml` speaks for.

    A pickled result of another owner's script (global or granted) is answered as JSON instead: unpickling runs
    code in the caller's process, which only the caller's own code may do. The body opts in with
    `"trustPickle": true` (the client's `oml_trust_pickle=True`). A body that did not validate is refused once
    the script is found (an unknown script is a 404 whatever the body)."""
    name, source, script_owner = resolve_script(services, caller.name, script, owner, body)
    if isinstance(body, BadRequest):
        raise body
    if body.pickled_bytes() > MAX_PICKLED_BYTES:
        raise PayloadTooLarge(
            f"The pickled arguments are {body.pickled_bytes() / 2**20:.1f} MiB; a call may send at most "
            f"{MAX_PICKLED_BYTES // 2**20} MiB (save large objects in a datastore and load them in the function)"
        )
    request = body.to_request(VERBS[verb])
    if script_owner != caller.name and request.result_format == "pickle" and not request.trust_pickle:
        request = request.model_copy(update={"result_format": "json"})
    return Call.model_construct(  # every field is known valid here: no validation on every call's path
        user=caller.name,
        script_name=name,
        source=source,
        script_owner=script_owner,
        request=request,
        session=session_to_json(caller.claims),
    )


def resolve_script(
    services: Services, caller: str, script: str | None, owner: str | None, body: ExecutionBody | BadRequest
) -> tuple[str, str, str]:
    """(name, source, owner) of a repository script, or of the ad-hoc function in the body (pyqd extension;
    its owner is the caller)."""
    if script is not None:

        def load() -> tuple[str, str, str]:
            with services.sessions() as session:
                info = repo.get_script(session, caller, script, owner)
            return info.name, info.source, info.owner

        return services.script_cache.get_or_load((caller, script, owner), load)
    if isinstance(body, BadRequest):
        raise body
    assert isinstance(body, AdHoc)
    repo.check_name(body.name)
    if body.script is None:  # a pickled function: the worker loads it (never the server)
        return body.name, f"# {body.name}: a pickled function\n", caller
    entry_function(body.name, body.script)
    return body.name, body.script, caller


def media_type(request: ApplyRequest) -> str:
    """What a successful call answers: OML's JSON, or the pickled values for the Python client."""
    return PICKLE_MEDIA_TYPE if request.result_format == "pickle" else "application/json"


# -- what the engine asks of the server ------------------------------------------------------------------------
def open_execution(services: Services, observe: Observer | None = None) -> ExecutionService:
    """The execution service of this server, running jobs too (their scheduler is not started)."""
    s = services.settings
    workers = services.cluster or services.pool  # the engine: the Dask cluster, or this server's pool
    assert workers is not None
    engine = ExecutionService(
        workers,
        services.sessions,
        services.user_data,
        limits_of(s),
        oml=lambda call, call_id, expires_at: oml_handler(services, call, call_id, expires_at),
        generation=lambda: datastore_generation(services),
        observe=observe,
    )
    store = JobStore(services.sessions, lambda: write_session(services.sessions), s.job_spill_bytes)
    config = SchedulerConfig(
        server_id=server_id(services),
        concurrency=s.job_concurrency,
        heartbeat_s=s.job_heartbeat_s,
        stale_after_s=s.job_stale_after_s,
        max_attempts=s.job_max_attempts,
        retention_s=s.job_retention_s,
        poll_s=min(1.0, s.job_heartbeat_s),
    )
    engine.open_jobs(store, config, job_limits_of(s))
    return engine


def limits_of(s: Settings) -> Limits:
    return Limits(
        sync_time_limit_s=s.sync_time_limit_s,
        query_time_limit_s=s.query_time_limit_s,
        output_limit=s.output_limit,
        output_max_bytes=s.output_max_bytes,
        worker_wait_s=s.worker_wait_s,
        spill_dir=str(s.data_dir / "spill"),
        spill_bytes=s.result_spill_bytes,
        partition_min_rows=s.partition_min_rows,
        reader_url=s.read_database_url,
    )


def job_limits_of(s: Settings) -> JobLimits:
    return JobLimits(
        queue_limit=s.job_queue_limit, queue_per_user=s.job_queue_per_user, default_timeout_s=s.job_default_timeout_s
    )


def server_id(services: Services) -> str:
    """This server among those of one database: the data directory's id, the machine, the address. The machine's
    name keeps two servers apart that share a data directory (a volume) and listen on the same address in their
    own containers: with one id, each would take the other's running jobs for its own orphans."""
    path = services.settings.data_dir / SERVER_ID_FILE
    if not path.exists():
        path.write_text(secrets.token_hex(8) + "\n")
    host = socket.gethostname()[:48]
    return f"{path.read_text().strip()}@{host}/{services.settings.host}:{services.settings.port}"


def oml_handler(services: Services, call: Call, call_id: str, expires_at: float) -> RequestHandler | None:
    """The handler of the call's `import oml` requests: served by this app through the bridge, with the call's
    script token (minted on the first request) in place of whatever the worker sent. Another owner's script
    may only read unless the caller trusts it: it could otherwise plant a pickle in the caller's datastores
    that runs when the caller loads it."""
    if services.bridge is None:
        return None
    session = session_from_json(call.user, call.session)
    read_only = not call.trusted
    token = script_token(services, session, call_id, expires_at, read_only=read_only)
    return services.bridge.handler_for(token, read_only=read_only)


def script_token(
    services: Services, session: TokenClaims | None, call_id: str, expires_at: float, *, read_only: bool = False
) -> TokenSource:
    """The call's script token, minted on the first request of its `import oml` (calls that never use `oml`
    mint nothing). It never reaches the sandboxed process: the bridge adds it to each request server-side (on the
    Dask engine the Dask worker process holds it while the call runs, and adds it as it relays; docs/scaling.md)."""
    lock = threading.Lock()
    minted: list[str] = []

    def token() -> str | None:
        if session is None:
            return None
        with lock:
            if not minted:
                issued = services.signer.issue_script(session, call_id, expires_at=expires_at, read_only=read_only)
                minted.append(issued.token)
            return minted[0]

    return token


def datastore_generation(services: Services) -> str:
    """This server's identity and the datastore generation (cached; datastore changes clear it). Workers keep
    datastore metadata while it stays the same."""

    def load() -> str:
        with services.sessions() as session:
            return f"{services.instance}:{ds.generation(session)}"

    return services.script_cache.get_or_load(DATASTORE_GENERATION, load)


def session_to_json(claims: TokenClaims) -> dict[str, Any]:
    """What a call keeps of its caller's session, so its script token is bound to that session too."""
    return {"sub": claims.user, "sid": claims.sid, "oat": claims.first_issued_ms, "cid": claims.client_id}


def session_from_json(owner: str, data: object) -> TokenClaims | None:
    """The session a call was made in (None for calls stored without one, or with a damaged record)."""
    if not isinstance(data, dict) or data.get("sub") != owner:
        return None
    sid, oat, cid = data.get("sid"), data.get("oat"), data.get("cid")
    if not isinstance(sid, str) or not isinstance(oat, int) or not (cid is None or isinstance(cid, str)):
        return None
    return TokenClaims(owner, sid, 0, oat, cid)
