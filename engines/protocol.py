"""What crosses the process boundary between the server and a worker: plain, importable dataclasses.

A `Task` travels as a msgpack header (`engines.wire`); its input data follows as Arrow IPC streams whose
record batches, in order, are the inputs of the units that have data. The worker answers with one `Result`
per unit, stopping at the first failure. Nothing a worker sends is unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["eval", "table", "row", "group", "index"]
InputType = Literal["default", "pandas.DataFrame", "numpy.recarray"]
#: How a unit failed: the user's code raised, its value cannot be rendered as JSON, it is too long, or too big.
FailureKind = Literal["exception", "serialize", "output", "size"]


@dataclass(frozen=True)
class Unit:
    """One invocation of the user's function."""

    #: Chunk number (row-apply), group key (group-apply), index (index-apply) or "" (do-eval, table-apply).
    name: str
    #: The argument for index-apply.
    index: int | None = None
    #: Position of this unit's record batch in the task's Arrow stream (None: no data).
    batch: int | None = None
    #: The unit's input (a pyarrow RecordBatch) while the server holds it; it travels as Arrow IPC beside the
    #: task, never in its header (the worker's units have None here).
    data: Any = field(default=None, compare=False, repr=False)

    @property
    def rows(self) -> int:
        return 0 if self.data is None else int(self.data.num_rows)


@dataclass(frozen=True)
class Task:
    call_id: str
    user: str
    script_name: str
    source: str
    kind: Kind
    units: list[Unit]
    kwargs: dict = field(default_factory=dict)
    input_type: InputType = "default"
    na_omit: bool = False
    graphics: bool = False
    #: Whether the script's `import oml` may call the server (through the worker's channel; the server attaches
    #: the caller's identity, the worker never holds a token).
    oml: bool = False
    #: The server's datastore generation (with the server's identity): while it is unchanged, datastore metadata
    #: a worker has seen still holds.
    datastore_generation: str = ""
    #: Largest result length (rows of a DataFrame, items of a list) allowed per unit.
    output_limit: int = 10_000_000
    #: Largest rendered result allowed per task, bytes.
    output_max_bytes: int = 256 * 1024**2
    #: "json": OML's REST rendering; "pickle": the value itself, pickled (for the Python client).
    result_format: Literal["json", "pickle"] = "json"
    #: Arrow IPC streams that follow the task (their record batches, in order, are the units' inputs).
    data_messages: int = 0


@dataclass(frozen=True)
class Image:
    png: bytes
    title: str | None = None


@dataclass(frozen=True)
class Result:
    """A worker's answer for one unit: its value rendered, or how it failed."""

    name: str
    ok: bool
    #: The function's value rendered as JSON (OML's shapes).
    json: bytes = b"null"
    #: True when the value was a DataFrame (row-apply splices those into one records list).
    is_frame: bool = False
    #: Rows of a DataFrame, items of a list or dict, else 1 (for the output limit).
    length: int = 1
    images: list[Image] = field(default_factory=list)
    stdout: str = ""
    error: str | None = None
    failure: FailureKind | None = None


@dataclass(frozen=True)
class WorkerLimits:
    """How a worker process confines itself before running user code."""

    #: Address-space limit, bytes (None: unlimited).
    memory_bytes: int | None = 2 * 1024**3
    #: Lifetime CPU-seconds limit of the worker process (None: unlimited).
    cpu_seconds: int | None = None
    #: Largest file the worker may write, bytes.
    file_bytes: int = 1024**3
    #: Most processes (and threads) the worker's account may have at once (RLIMIT_NPROC; None: unlimited).
    max_processes: int | None = 512
    #: Run as this uid/gid (set when the server runs as root).
    uid: int | None = None
    gid: int | None = None
    #: Confine file access with Landlock when the kernel has it, and forbid sockets with seccomp.
    sandbox: bool = True
    read_paths: tuple[str, ...] = ()
    #: Environment of the user's code (nothing of the server's).
    env: tuple[tuple[str, str], ...] = ()
    #: A per-script environment's packages (`engines.envs`: a build's `site` directory): readable, and first on
    #: sys.path.
    env_dir: str | None = None
