"""OML execution request bodies (reference §3.2, §4) as pydantic models, and the one parsed form the engine runs.

A route declares the body model of its verb (so OpenAPI shows the fields, and FastAPI answers a malformed body
with a 400 before any work), then `to_request` folds the `oml_*` controls of `parameters` into an `ApplyRequest`:
the plain, validated request an async job stores and runs later without reading the body again.

OML's spellings are kept: `parameters` is a JSON *string* holding an object (an object is accepted too, and
Oracle's documented typo `parameter`); booleans may be `true`/`false`, `"true"`/`"false"` in any case, or 0/1;
`rows`, `times` and `timeout` may be numeric strings; `groupBy`/`orderBy` are comma-separated or lists.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Json,
    ValidationError,
    field_validator,
    model_validator,
)

from engines import envs
from engines.errors import InvalidApplyRequest
from engines.extensions import FuncValue, Pickled
from engines.protocol import InputType, Kind
from engines.worker.arguments import FUNC_VALUE, PICKLED_FUNC, PICKLED_KWARGS

#: Most parallel workers each service level may use (Oracle: LOW 2, MEDIUM 4, HIGH 8). TP runs serially.
SERVICE_DOP = {"LOW": 2, "MEDIUM": 4, "HIGH": 8, "TP": 1, "TPURGENT": 8}
INPUT_TYPES: tuple[str, ...] = ("default", "pandas.DataFrame", "numpy.recarray")
#: Bounds on `rows`, `times`, `parallel` and `timeout`.
MAX_ROWS = 100_000_000
MAX_TIMES = 1_000_000
MAX_PARALLEL = 1024
MAX_TIMEOUT_S = 43_200
#: The verbs as they appear in URLs.
VERBS: dict[str, Kind] = {
    "do-eval": "eval",
    "table-apply": "table",
    "row-apply": "row",
    "group-apply": "group",
    "index-apply": "index",
}


def _oml_bool(value: object) -> object:
    """OML's booleans: true/false, their strings in any case, or 0/1; anything else is left for pydantic to
    refuse (pydantic's own lax rules would also take "yes", "on", "t"...)."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError("must be true or false")


def _columns(value: object) -> object:
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        cols = [v.strip() for v in value if v.strip()]
        if not cols:
            raise ValueError("names no column")
        return cols
    raise ValueError("must be a comma-separated list of column names")


def _parameters(value: object) -> object:
    """An empty string means no parameters; an object is taken as it is (the Json type reads the string)."""
    if value is None or value == "":
        return "{}"
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return value


OmlBool = Annotated[bool, BeforeValidator(_oml_bool)]
Columns = Annotated[str | list[str], BeforeValidator(_columns)]  # validated into a list of names
Parameters = Annotated[
    Json[dict[str, Any]],
    BeforeValidator(_parameters),
    Field(
        validation_alias=AliasChoices("parameters", "parameter"),
        description="Keyword arguments of the function and `oml_*` controls: a JSON object encoded as a string, "
        'e.g. "{\\"num\\":10,\\"oml_input_type\\":\\"pandas.DataFrame\\"}" (`parameter` is accepted too)',
    ),
]


class ExecutionBody(BaseModel):
    """The fields every verb takes. Unknown fields are ignored, as Oracle does."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    parameters: Parameters = Field(default_factory=dict)
    service: str | None = Field(None, description="Service level: LOW, MEDIUM, HIGH (caps parallelism at 2/4/8)")
    asyncFlag: OmlBool | None = Field(None, description="Run as an async job: 201 with the job's Location")
    timeout: int | None = Field(None, ge=1, le=MAX_TIMEOUT_S, description="An async job's time limit, seconds")
    graphicsFlag: OmlBool | None = Field(None, description="Return the figures the function drew, as PNG")
    parallelFlag: OmlBool | None = Field(None, description="Run units in parallel workers")
    parallel: bool | int | None = Field(None, description="Degree of parallelism (or true/false)")
    envName: str | None = Field(
        None,
        description="The environment to run in: packages added to the server's (`pyqd env create`; "
        "GET /py-scripts/v1/envs lists them). Not on the Dask engine",
    )
    resultFormat: Literal["json", "pickle"] | None = Field(
        None, description="pyqd extension: `pickle` returns the values pickled, for the Python client"
    )
    trustPickle: bool | None = Field(
        None, description="pyqd extension: accept pickled results of another owner's script"
    )
    pickledKwargs: Pickled = Field(
        None,
        description="pyqd extension (the Python client): keyword arguments that are not JSON (a fitted model, a "
        "DataFrame, a proxy) as a cloudpickled dict in base64. The server passes the bytes on unread; they are "
        "loaded only in the caller's own worker",
    )
    funcValue: FuncValue | None = Field(
        None,
        description="pyqd extension (Oracle's func_value): write the function's rows to a new table in the caller's "
        "schema and answer its description instead of the values (synchronous calls)",
    )

    @field_validator("service")
    @classmethod
    def _service(cls, v: str | None) -> str | None:
        if v is not None and v.upper() not in SERVICE_DOP:
            raise ValueError(f"must be one of {', '.join(SERVICE_DOP)}")
        return v

    @field_validator("parallel")
    @classmethod
    def _parallel(cls, v: bool | int | None) -> bool | int | None:
        if v is not None and not isinstance(v, bool) and not 1 <= v <= MAX_PARALLEL:
            raise ValueError(f"must be between 1 and {MAX_PARALLEL}")
        return v

    @field_validator("envName")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        """A valid name (whether it exists is the engine's to say); an empty one means none."""
        return envs.check_name(v) if v else None

    def to_request(self, kind: Kind) -> ApplyRequest:
        """The engine's form: `oml_*` controls folded in (first-class body fields win over their twins inside
        `parameters`, reference §4); InvalidApplyRequest says what is wrong."""
        controls = {k: v for k, v in self.parameters.items() if k.startswith("oml_")}
        kwargs = {k: v for k, v in self.parameters.items() if not k.startswith("oml_")}
        input_type = controls.get("oml_input_type", "default")
        if input_type not in INPUT_TYPES:
            raise InvalidApplyRequest(f"oml_input_type must be one of {', '.join(INPUT_TYPES)}")
        service = self.service or _control(controls, "oml_service_level", str) or "LOW"
        if service.upper() not in SERVICE_DOP:
            raise InvalidApplyRequest(f"service must be one of {', '.join(SERVICE_DOP)}")
        flag = _flag(self.parallelFlag, controls, "oml_parallel_flag")
        requested = None
        if isinstance(self.parallel, bool):
            parallel = self.parallel or flag
        else:
            requested = self.parallel
            parallel = flag or (requested or 0) > 1
        # The fields were validated above: build without validating again (this is on every call's path).
        verb = self.__dict__  # the verb's own fields (`input`, `rows`, ...), absent from other verbs' bodies
        graphics = _flag(self.graphicsFlag, controls, "oml_graphics_flag")
        async_flag = _flag(self.asyncFlag, controls, "oml_async_flag")
        result_format = self.resultFormat or "json"
        if self.pickledKwargs is not None:
            kwargs[PICKLED_KWARGS] = self.pickledKwargs
        if verb.get("pickledFunc") is not None:
            kwargs[PICKLED_FUNC] = verb["pickledFunc"]
        if self.funcValue is not None:
            if async_flag:
                raise InvalidApplyRequest("funcValue works with synchronous calls only (not with asyncFlag)")
            # Rows of a table: images are dropped (as Oracle's relational output drops them), values are JSON.
            kwargs[FUNC_VALUE] = [[name, kind] for name, kind in self.funcValue.columns.items()]
            graphics, result_format = False, "json"
        return ApplyRequest.model_construct(
            kind=kind,
            kwargs=kwargs,
            input_type=input_type,
            na_omit=_flag(None, controls, "oml_na_omit"),
            graphics=graphics,
            input=verb.get("input"),
            rows=verb.get("rows"),
            group_by=tuple(verb.get("groupBy") or ()),
            order_by=tuple(verb.get("orderBy") or ()),
            times=verb.get("times"),
            parallel=parallel,
            requested_dop=requested,
            service=service.upper(),
            async_flag=async_flag,
            timeout=self.timeout,
            result_format=result_format,
            trust_pickle=self.trustPickle is True,
            func_value=self.funcValue,
            env_name=self.envName,
        )

    def pickled_bytes(self) -> int:
        """About how many bytes of pickled data the body carries (base64 is 4 characters per 3 bytes)."""
        text = len(self.pickledKwargs or "") + len(self.__dict__.get("pickledFunc") or "")
        return text * 3 // 4


def _control(controls: dict[str, Any], key: str, kind: type) -> Any:
    value = controls.get(key)
    if value is not None and not isinstance(value, kind):
        raise InvalidApplyRequest(f"{key} must be a {kind.__name__}")
    return value


def _flag(field: bool | None, controls: dict[str, Any], key: str) -> bool:
    if field is not None:
        return field
    try:
        return bool(_oml_bool(controls.get(key)))
    except ValueError:
        raise InvalidApplyRequest(f"{key} must be true or false") from None


Query = Annotated[str, Field(min_length=1, pattern=r"\S", description="The input: one SQL query")]


class DoEvalBody(ExecutionBody):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"parameters": '{"num":10,"scale":100}', "service": "LOW"}]}
    )


class TableApplyBody(ExecutionBody):
    input: Query
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"input": "select * from IRIS", "parameters": '{"oml_input_type":"pandas.DataFrame"}'}]
        }
    )


class RowApplyBody(ExecutionBody):
    input: Query
    rows: int = Field(ge=1, le=MAX_ROWS, description="Rows per chunk: the function is called once per chunk")
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "input": "select * from IRIS",
                    "parameters": '{"oml_input_type":"pandas.DataFrame"}',
                    "rows": 5,
                    "parallelFlag": True,
                    "service": "MEDIUM",
                }
            ]
        }
    )


class GroupApplyBody(ExecutionBody):
    input: Query
    groupBy: Columns = Field(description="Column(s) whose values make the groups (comma-separated)")
    orderBy: Columns | None = Field(None, description="Column(s) that order the rows within a group")
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "input": "select * from IRIS",
                    "groupBy": "SPECIES",
                    "orderBy": "SEPAL_LENGTH",
                    "parameters": '{"oml_input_type":"pandas.DataFrame"}',
                }
            ]
        }
    )


class IndexApplyBody(ExecutionBody):
    times: int = Field(ge=1, le=MAX_TIMES, description="How many times to call the function (with 1..times)")
    model_config = ConfigDict(json_schema_extra={"examples": [{"times": 10}]})


#: The body model of each verb.
BODIES: dict[Kind, type[ExecutionBody]] = {
    "eval": DoEvalBody,
    "table": TableApplyBody,
    "row": RowApplyBody,
    "group": GroupApplyBody,
    "index": IndexApplyBody,
}


class AdHoc(BaseModel):
    """pyqd extension: the function comes in the body instead of the repository: its source, or (the Python
    client, for lambdas and functions without source) the function cloudpickled."""

    script: str | None = Field(None, min_length=1, description="The function's source (one `def`, helpers allowed)")
    name: str = Field("script", description="The function's name (the entry point when there are several)")
    pickledFunc: Pickled = Field(
        None,
        description="Instead of `script`: the function cloudpickled, in base64 (loaded only in the caller's worker)",
    )

    @model_validator(mode="after")
    def _one_function(self) -> AdHoc:
        if (self.script is None) == (self.pickledFunc is None):
            raise ValueError("give the function either as `script` (its source) or as `pickledFunc`")
        return self


#: The ad-hoc body of each verb: the verb's fields plus `script` and `name`.
ADHOC_BODIES: dict[Kind, type[ExecutionBody]] = {
    kind: type(
        f"AdHoc{model.__name__}",
        (model, AdHoc),
        {
            "__module__": __name__,
            "model_config": ConfigDict(
                json_schema_extra={
                    "examples": [
                        {
                            **model.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index,dict-item]
                            "script": "def f(*args, **kwargs):\n    return 1\n",
                            "name": "f",
                        }
                    ]
                }
            ),
        },
    )
    for kind, model in BODIES.items()
}


class ApplyRequest(BaseModel):
    """A validated execution request, as the engine runs it (and as a job stores it, in JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Kind
    #: Keyword arguments for the user's function (the non-`oml_` keys of `parameters`).
    kwargs: dict[str, Any] = {}
    input_type: InputType = "default"
    na_omit: bool = False
    graphics: bool = False
    input: str | None = None
    rows: int | None = None
    #: Column names as written in the request (the gate applies Oracle's case rules).
    group_by: tuple[str, ...] = ()
    order_by: tuple[str, ...] = ()
    times: int | None = None
    parallel: bool = False
    requested_dop: int | None = None
    service: str = "LOW"
    async_flag: bool = False
    timeout: int | None = None
    #: pyqd extension `resultFormat`: "json" (OML's) or "pickle" (the Python client's).
    result_format: Literal["json", "pickle"] = "json"
    #: pyqd extension `trustPickle`: the caller accepts pickles, and datastore writes, of another owner's script.
    trust_pickle: bool = False
    #: pyqd extension `funcValue`: the values become rows of a new table in the caller's schema.
    func_value: FuncValue | None = None
    #: `envName`: the per-script environment the call's workers run in (`engines.envs`; None: the server's own).
    env_name: str | None = None

    def degree_of_parallelism(self, pool_size: int) -> int:
        """Workers to use: 1 unless parallel; else `parallel` (or the service default), capped by the
        service level and the pool."""
        if not self.parallel:
            return 1
        cap = SERVICE_DOP[self.service]
        return max(1, min(self.requested_dop or cap, cap, pool_size))


class Call(BaseModel):
    """One call to run, now or as a job: who calls, which script (its source as resolved when the call was
    made), and the parsed request. Plain values: a job stores it as JSON and runs it later as it is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str
    script_name: str
    source: str
    #: The script's owner: another owner's script runs on workers of its own, and its `import oml` may only read
    #: unless the caller trusts it (None: unknown, treated as another owner's).
    script_owner: str | None
    request: ApplyRequest
    #: The caller's session, opaque to the engine: the server mints the script's token for it when the script's
    #: `import oml` first asks (None: the script gets no identity).
    session: dict[str, Any] | None = None

    @property
    def own_script(self) -> bool:
        return self.script_owner == self.user

    @property
    def trusted(self) -> bool:
        """The script may act for the caller: the caller's own, or trusted with `trustPickle`."""
        return self.own_script or self.request.trust_pickle

    @property
    def worker_key(self) -> str:
        """Which workers may run it: the caller's own, or a separate set for another owner's code (it could
        leave code behind in a process the caller's own calls would reuse), each per environment (`envName`)."""
        key = self.user if self.own_script else f"{self.user}{WORKER_KEY_SEPARATOR}{self.script_owner or '?'}"
        return envs.with_env(key, self.request.env_name)


#: Separates the caller from a foreign script's owner in a worker key (user names never contain it).
WORKER_KEY_SEPARATOR = "\x00"


def describe(error: ValidationError) -> str:
    """A pydantic validation error as one line: `field: what is wrong; ...`."""
    parts = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts)


def parse_request(kind: Kind, body: dict[str, Any]) -> ApplyRequest:
    """Validate a body given as a dict for one verb; InvalidApplyRequest says what is wrong."""
    try:
        model = BODIES[kind].model_validate(body)
    except ValidationError as e:
        raise InvalidApplyRequest(describe(e)) from None
    return model.to_request(kind)
