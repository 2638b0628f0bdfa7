"""The five execution verbs (reference §3): do-eval, table-apply, row-apply, group-apply, index-apply, each
also with `/{ownerName}`, under v1 and v2 and both URL forms; `asyncFlag` turns a call into a job."""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from engines.assemble import Body
from engines.spec import ADHOC_BODIES, BODIES, VERBS, ExecutionBody, describe
from server import execution
from server.deps import Caller, CurrentUser
from server.errors import BadRequest
from server.fairness import user_slots
from server.routes.common import EXTENSION_TAG, include_both_forms, tenant_url
from server.services import Services

router = APIRouter(tags=["embedded Python execution"])
ScriptName = Annotated[str, Path(description="Script name in the repository", max_length=128)]
OwnerName = Annotated[str, Path(description="Owner of the script (PYQSYS for global scripts)", max_length=30)]
#: OpenAPI schemas of the request bodies, by name (server.openapi adds them to the document's components).
BODY_SCHEMAS: dict[str, dict[str, Any]] = {}


def typed_body(model: type[ExecutionBody]) -> Callable[[Request], Awaitable[ExecutionBody | BadRequest]]:
    """A dependency that reads the body as `model` (an empty body is `{}`): any Content-Type is read as JSON,
    as Oracle does. A body that does not validate gives the 400 naming each field that is wrong, raised once
    the script is found (an unknown script is a 404 whatever the body)."""

    async def read(request: Request) -> ExecutionBody | BadRequest:
        raw = await request.body()
        try:
            return model.model_validate_json(raw if raw.strip() else b"{}")
        except ValidationError as e:
            return BadRequest("Invalid request: " + describe(e))

    return read


def _request_body(model: type[ExecutionBody], required: bool) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    BODY_SCHEMAS.update(schema.pop("$defs", {}))  # nested models (FuncValue) are components of their own
    BODY_SCHEMAS[model.__name__] = schema
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {
        "requestBody": {"required": required, "content": {"application/json": {"schema": ref}}},
        "responses": {
            "200": {
                "description": 'OML\'s `{"result": ...}`; with `resultFormat: pickle` the pickled values; with '
                "`funcValue` the description of the result table",
                "content": {
                    "application/json": {"schema": {"type": "object", "properties": {"result": {}}}},
                    execution.PICKLE_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
                },
            },
            "201": {
                "description": "With `asyncFlag`: the job was queued; `Location` is its status URL",
                "headers": {"Location": {"description": "The job's status URL", "schema": {"type": "string"}}},
            },
        },
    }


async def _execute(
    verb: str,
    script: str | None,
    owner: str | None,
    body: ExecutionBody | BadRequest,
    request: Request,
    caller: Caller,
) -> Response:
    services: Services = request.app.state.services
    version = "v1" if "/py-scripts/v1/" in request.url.path else "v2"
    # One user's calls may hold only a few of the threads that serve blocking work (decided here, before any).
    async with user_slots(request.app.state, services.settings).hold(caller.name):
        ran, outcome = await run_in_threadpool(execution.execute, services, caller, verb, script, owner, body, version)
    if not isinstance(outcome, Body):
        location = tenant_url(request, services.settings, f"py-scripts/{version}/jobs/{outcome.id}")
        return Response(status_code=201, headers={"Location": location})
    media = execution.media_type(ran)
    if outcome.path is None:
        return Response(outcome.data, media_type=media)
    # A large result was assembled on disk: stream it (and remove the file once sent).
    return StreamingResponse(
        iterate_in_threadpool(outcome.chunks()), media_type=media, headers={"Content-Length": str(outcome.size)}
    )


def _add_verb(verb: str) -> None:
    summary = f"Run a script ({verb})"
    model = BODIES[VERBS[verb]]
    extra = _request_body(model, required=verb != "do-eval")
    Typed = Annotated[ExecutionBody | BadRequest, Depends(typed_body(model))]

    @router.post(f"/{verb}/{{scriptName}}", summary=summary, openapi_extra=extra)
    async def run_own(scriptName: ScriptName, body: Typed, request: Request, caller: CurrentUser) -> Response:  # noqa: N803
        return await _execute(verb, scriptName, None, body, request, caller)

    @router.post(f"/{verb}/{{scriptName}}/{{ownerName}}", summary=summary + " of another owner", openapi_extra=extra)
    async def run_owned(
        scriptName: ScriptName,  # noqa: N803
        ownerName: OwnerName,  # noqa: N803
        body: Typed,
        request: Request,
        caller: CurrentUser,
    ) -> Response:
        return await _execute(verb, scriptName, ownerName, body, request, caller)


for _verb in VERBS:
    _add_verb(_verb)


ext = APIRouter(tags=[EXTENSION_TAG])


def _add_adhoc(verb: str) -> None:
    model = ADHOC_BODIES[VERBS[verb]]
    extra = _request_body(model, required=True)
    Typed = Annotated[ExecutionBody | BadRequest, Depends(typed_body(model))]

    @ext.post(
        f"/run/{verb}", summary=f"Run a function given in the body ({verb}), without storing it", openapi_extra=extra
    )
    async def run_adhoc(body: Typed, request: Request, caller: CurrentUser) -> Response:
        return await _execute(verb, None, None, body, request, caller)


for _verb in VERBS:
    _add_adhoc(_verb)


def install(app: FastAPI) -> None:
    app.state.body_schemas = BODY_SCHEMAS
    include_both_forms(app, router, "oml", "py-scripts/v1")
    include_both_forms(app, router, "oml", "py-scripts/v2")
    include_both_forms(app, ext, "oml", "pyqd/v1")
