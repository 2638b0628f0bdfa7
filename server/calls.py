"""Turning an execution request into a running Execution, for synchronous calls and async jobs alike:
validate the body, resolve the script, gate the input query, mint the script's short-lived token."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

from datastore import service as ds
from engines.errors import InputQueryFailed, TimeLimitExceeded
from engines.runner import Call, Execution
from engines.spec import VERBS, ApplyRequest, parse_request
from repository import service as repo
from repository.source import entry_function
from server.auth.tokens import TokenClaims
from server.bridge import TokenSource
from server.errors import BadRequest
from server.services import Services
from tables import query as tq
from tables.errors import QueryRejected, QueryTimedOut
from tables.gate import column_name

#: What the Python client asks for with `"resultFormat": "pickle"`.
PICKLE_MEDIA_TYPE = "application/x-python-pickle"
#: Seconds a script's token outlives its call's time limit.
TOKEN_MARGIN_S = 60
#: Body field by which a caller accepts pickled results of another owner's script.
TRUST_PICKLE = "trustPickle"
#: Key under which a job's request keeps the submitting session (see `session_to_json`).
JOB_SESSION_KEY = "__pyqdSession"
#: Key under which a job's request keeps the owner of its script (set by the server, never by the caller).
JOB_SCRIPT_OWNER_KEY = "__pyqdScriptOwner"
#: Separates the caller from a foreign script's owner in a worker key (user names never contain it).
WORKER_KEY_SEPARATOR = "\x00"


def resolve_script(
    services: Services, caller: str, script: str | None, owner: str | None, body: dict[str, Any]
) -> tuple[str, str, str]:
    """(name, source, owner) of a repository script, or of an ad-hoc function given in the body (pyqd extension;
    its owner is the caller).

    A pickled result of another owner's script (global or granted) is answered as JSON instead: unpickling
    runs code in the caller's process, which only the caller's own code may do. The body opts in with
    `"trustPickle": true` (the client's `oml_trust_pickle=True`); this function sets `resultFormat` to
    "json" in `body` otherwise, so the sync answer and a job's stored request both follow."""
    if script is not None:

        def load() -> tuple[str, str, str]:
            with services.sessions() as session:
                info = repo.get_script(session, caller, script, owner)
            return info.name, info.source, info.owner

        name, source, script_owner = services.script_cache.get_or_load((caller, script, owner), load)
        if script_owner != caller and body.get("resultFormat") == "pickle" and body.get(TRUST_PICKLE) is not True:
            body["resultFormat"] = "json"
        return name, source, script_owner
    source = body.get("script")
    name = body.get("name") or "script"
    if not isinstance(source, str) or not isinstance(name, str):
        raise BadRequest("script (the function's source) is required, and name must be a string")
    repo.check_name(name)
    entry_function(name, source)
    return name, source, caller


def datastore_generation(services: Services) -> str:
    """This server's identity and the datastore generation (looked up at most every PYQD_LOOKUP_CACHE_S; local
    changes clear the cache). Workers keep datastore metadata while it stays the same."""

    def load() -> str:
        with services.sessions() as session:
            return f"{services.instance}:{ds.generation(session)}"

    return services.script_cache.get_or_load("datastore-generation", load)


def prepare(
    services: Services,
    caller: str,
    verb: str,
    script_name: str,
    source: str,
    body: dict[str, Any],
    *,
    time_limit_s: float | None = None,
    is_job: bool = False,
    auth_session: TokenClaims | None = None,
    script_owner: str | None = None,
) -> Execution:
    """An Execution ready to run (the input query is checked now; its rows are read while running). The
    script's `import oml` speaks for `auth_session` (the caller's token session) through a narrow script token;
    without a session it gets no identity at all.

    Another owner's script (`script_owner`, None when unknown) runs on workers of its own, never reused for the
    caller's own code (it could leave code behind in the process), and its `import oml` may only read, unless the
    caller trusts it (`trustPickle`): it could otherwise plant a pickle in the caller's datastores that runs
    when the caller loads it."""
    req: ApplyRequest = parse_request(VERBS[verb], body)
    settings = services.settings
    limit = time_limit_s if time_limit_s is not None else settings.sync_time_limit_s
    batches = None
    group_columns: tuple[str, ...] = ()
    if req.input is not None:
        with services.sessions() as session:
            gated = tq.gate_query(session, services.user_data, caller, req.input)
        if req.kind == "group":
            group_columns = tuple(column_name(c) for c in req.group_by)
            gated = gated.ordered_by([*group_columns, *(column_name(c) for c in req.order_by)])
        # The query has the call's own time (it starts now, as the call's clock does), at most the query limit.
        timeout_s = min(limit, settings.query_time_limit_s)
        batches = _query_errors(
            tq.stream_query(services.user_data, gated, caller, timeout_s=timeout_s), timeout_s, is_job
        )
    assert services.pool is not None
    call_id = str(uuid.uuid4())
    own = script_owner == caller
    trusted = own or body.get(TRUST_PICKLE) is True
    call = Call(
        call_id=call_id,
        user=caller,
        worker_key=caller if own else f"{caller}{WORKER_KEY_SEPARATOR}{script_owner or '?'}",
        script_name=script_name,
        source=source,
        request=req,
        dop=req.degree_of_parallelism(services.pool.config.size),
        time_limit_s=limit,
        output_limit=settings.output_limit,
        output_max_bytes=settings.output_max_bytes,
        acquire_timeout_s=limit if is_job else settings.worker_wait_s,
        datastore_generation=datastore_generation(services),
        group_columns=group_columns,
        is_job=is_job,
        spill_dir=str(settings.data_dir / "spill"),
        spill_bytes=settings.result_spill_bytes,
    )
    token = script_token(services, auth_session, call_id, time.time() + limit + TOKEN_MARGIN_S)
    on_request = services.bridge.handler_for(token, read_only=not trusted) if services.bridge else None
    return Execution(services.pool, call, batches, on_request=on_request)


def script_token(services: Services, session: TokenClaims | None, call_id: str, expires_at: float) -> TokenSource:
    """The call's script token, minted on the first request of its `import oml` (calls that never use `oml`
    mint nothing). It never reaches the worker: the bridge adds it to each request server-side."""
    lock = threading.Lock()
    minted: list[str] = []

    def token() -> str | None:
        if session is None:
            return None
        with lock:
            if not minted:
                minted.append(services.signer.issue_script(session, call_id, expires_at=expires_at).token)
            return minted[0]

    return token


def session_to_json(claims: TokenClaims) -> dict[str, Any]:
    """What a job keeps of its submitter's session, so its script token is bound to that session too."""
    return {"sub": claims.user, "sid": claims.sid, "oat": claims.first_issued_ms, "cid": claims.client_id}


def session_from_json(owner: str, data: object) -> TokenClaims | None:
    """The session a job was submitted in (None for jobs stored without one, or with a damaged record)."""
    if not isinstance(data, dict) or data.get("sub") != owner:
        return None
    sid, oat, cid = data.get("sid"), data.get("oat"), data.get("cid")
    if not isinstance(sid, str) or not isinstance(oat, int) or not (cid is None or isinstance(cid, str)):
        return None
    return TokenClaims(owner, sid, 0, oat, cid)


def media_type(execution: Execution) -> str:
    """What a successful call answers: OML's JSON, or the pickled values for the Python client."""
    return PICKLE_MEDIA_TYPE if execution.call.request.result_format == "pickle" else "application/json"


def _query_errors(batches: Iterable[pa.RecordBatch], limit: float, is_job: bool) -> Iterator[pa.RecordBatch]:
    """The batches, with the query's failures as the call's: a deadline passed is the call's time limit (1040),
    any other failure is an input-query error (1020)."""
    try:
        yield from batches
    except QueryTimedOut:
        raise TimeLimitExceeded(limit, job=is_job) from None
    except QueryRejected as e:
        raise InputQueryFailed(str(e)) from None
