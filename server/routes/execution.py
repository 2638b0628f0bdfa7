"""The five execution verbs (reference §3): do-eval, table-apply, row-apply, group-apply, index-apply, each
also with `/{ownerName}`, under v1 and v2 and both URL forms; `asyncFlag` turns a call into a job."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from engines.runner import Execution
from engines.spec import VERBS
from server import calls, jobs
from server.deps import Caller, CurrentUser, ServicesDep
from server.fairness import user_slots
from server.routes.common import EXTENSION_TAG, include_both_forms, json_body, tenant_url
from server.services import Services

router = APIRouter(tags=["embedded Python execution"])
ScriptName = Annotated[str, Path(description="Script name in the repository", max_length=128)]
OwnerName = Annotated[str, Path(description="Owner of the script (PYQSYS for global scripts)", max_length=30)]

_EXAMPLES: dict[str, dict[str, Any]] = {
    "do-eval": {"parameters": '{"num":10,"scale":100}', "service": "LOW"},
    "table-apply": {"input": "select * from IRIS", "parameters": '{"oml_input_type":"pandas.DataFrame"}'},
    "row-apply": {
        "input": "select * from IRIS",
        "parameters": '{"oml_input_type":"pandas.DataFrame"}',
        "rows": 5,
        "parallelFlag": True,
        "service": "MEDIUM",
    },
    "group-apply": {
        "input": "select * from IRIS",
        "groupBy": "SPECIES",
        "orderBy": "SEPAL_LENGTH",
        "parameters": '{"oml_input_type":"pandas.DataFrame"}',
    },
    "index-apply": {"times": 10},
}


async def _execute(
    verb: str, script: str | None, owner: str | None, request: Request, caller: Caller, services: Services
) -> Response:
    body = await json_body(request, required=False)
    # One user's calls may hold only a few of the threads that serve blocking work (decided here, before any).
    async with user_slots(request.app.state, services.settings).hold(caller.name):
        name, source, script_owner, execution = await run_in_threadpool(
            _prepare, services, caller, verb, script, owner, body
        )
        req = execution.call.request
        if req.async_flag:
            version = "v1" if "/py-scripts/v1/" in request.url.path else "v2"
            job = await run_in_threadpool(
                jobs.submit,
                services,
                caller.name,
                version,
                verb,
                name,
                source,
                body,
                req.timeout,
                caller.claims,
                script_owner,
            )
            location = tenant_url(request, services.settings, f"py-scripts/{version}/jobs/{job.id}")
            return Response(status_code=201, headers={"Location": location})
        answer = await run_in_threadpool(execution.run)
    request.app.state.metrics.observe_execution(execution, "sync")
    media = calls.media_type(execution)
    if answer.path is None:
        return Response(answer.read(), media_type=media)
    # A large result was assembled on disk: stream it (and remove the file once sent).
    return StreamingResponse(
        iterate_in_threadpool(answer.chunks()), media_type=media, headers={"Content-Length": str(answer.size)}
    )


def _prepare(
    services: Services, caller: Caller, verb: str, script: str | None, owner: str | None, body: dict[str, Any]
) -> tuple[str, str, str, Execution]:
    name, source, script_owner = calls.resolve_script(services, caller.name, script, owner, body)
    execution = calls.prepare(
        services, caller.name, verb, name, source, body, auth_session=caller.claims, script_owner=script_owner
    )
    return name, source, script_owner, execution


def _add_verb(verb: str) -> None:
    summary = f"Run a script ({verb})"
    extra = {
        "requestBody": {
            "required": verb != "do-eval",
            "content": {"application/json": {"schema": {"type": "object"}, "example": _EXAMPLES[verb]}},
        }
    }

    @router.post(f"/{verb}/{{scriptName}}", summary=summary, openapi_extra=extra)
    async def run_own(
        scriptName: ScriptName,
        request: Request,
        caller: CurrentUser,  # noqa: N803
        services: ServicesDep,
    ) -> Response:
        return await _execute(verb, scriptName, None, request, caller, services)

    @router.post(f"/{verb}/{{scriptName}}/{{ownerName}}", summary=summary + " of another owner", openapi_extra=extra)
    async def run_owned(
        scriptName: ScriptName,
        ownerName: OwnerName,
        request: Request,  # noqa: N803
        caller: CurrentUser,
        services: ServicesDep,
    ) -> Response:
        return await _execute(verb, scriptName, ownerName, request, caller, services)


for _verb in VERBS:
    _add_verb(_verb)


ext = APIRouter(tags=[EXTENSION_TAG])


def _add_adhoc(verb: str) -> None:
    extra = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "object"},
                    "example": {**_EXAMPLES[verb], "script": "def f(*args, **kwargs):\n    return 1\n", "name": "f"},
                }
            },
        }
    }

    @ext.post(
        f"/run/{verb}", summary=f"Run a function given in the body ({verb}), without storing it", openapi_extra=extra
    )
    async def run_adhoc(request: Request, caller: CurrentUser, services: ServicesDep) -> Response:
        return await _execute(verb, None, None, request, caller, services)


for _verb in VERBS:
    _add_adhoc(_verb)


def install(app: FastAPI) -> None:
    include_both_forms(app, router, "oml", "py-scripts/v1")
    include_both_forms(app, router, "oml", "py-scripts/v2")
    include_both_forms(app, ext, "oml", "pyqd/v1")
