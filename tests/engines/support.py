"""Helpers for the fast engine tests: calls run by a `Runner` on the in-process twin of the worker pool.

Scripts that must block (to finish last, to be cancelled, to run past a time limit) wait on a `Gate` of this
module: the inline worker runs them in this process, so they find it by name with `gate_of(module, name)`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa

from engines.errors import ExecutionError
from engines.inline import InlinePool
from engines.protocol import Kind
from engines.runner import Limits, Runner
from engines.spec import Call, parse_request

USER = "ALICE"
#: Longest a gated script waits before giving up by itself (a test that fails never leaves it blocked longer).
GATE_TIMEOUT_S = 30.0
#: Source of the helper a gated script calls: `gate(module, name)` is the Gate the test made.
GATE_HELPER = """
def gate(module, name):
    import importlib
    return importlib.import_module(module).GATES[name]
"""
#: What `gate_kwargs` names: this module, where the gates live.
MODULE = __name__


class Gate:
    """A script sets `entered` when it reaches the gate, then waits for the test to `open()` it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()

    def wait(self) -> bool:
        self.entered.set()
        return self.released.wait(GATE_TIMEOUT_S)

    def open(self) -> None:
        self.released.set()


#: The gates of the running test, by name (the `gates` fixture opens and forgets them afterwards).
GATES: dict[str, Gate] = {}


def gated(body: str, name: str = "f", args: str = "") -> str:
    """A script whose function `name(args, module, gate_name)` runs `body` with `g` the named Gate."""
    sep = ", " if args else ""
    lines = "\n".join("    " + line for line in body.strip("\n").splitlines())
    return f"def {name}({args}{sep}module, gate_name):\n    g = gate(module, gate_name)\n{lines}\n{GATE_HELPER}"


def gate_kwargs(name: str) -> dict[str, str]:
    return {"module": MODULE, "gate_name": name}


def make_call(kind: Kind, source: str, body: dict[str, Any] | None = None, *, name: str = "f") -> Call:
    """A call of the caller's own script, its request parsed from an OML body as a route would."""
    body = dict(body or {})
    if kind in ("table", "row", "group"):
        body.setdefault("input", "select * from t")
    return Call(user=USER, script_name=name, source=source, script_owner=USER, request=parse_request(kind, body))


def make_runner(
    pool: InlinePool,
    kind: Kind,
    source: str,
    body: dict[str, Any] | None = None,
    *,
    batches: Iterable[pa.RecordBatch] | None = None,
    limits: Limits | None = None,
    time_limit_s: float = 30.0,
    is_job: bool = False,
    group_columns: tuple[str, ...] = (),
) -> Runner:
    return Runner(
        pool,
        make_call(kind, source, body),
        limits or Limits(),
        call_id="test-call",
        time_limit_s=time_limit_s,
        is_job=is_job,
        batches=batches,
        group_columns=group_columns,
    )


def run_json(pool: InlinePool, kind: Kind, source: str, body: dict[str, Any] | None = None, **kw: Any) -> Any:
    """The answer body a call makes, parsed (it must be OML's `{"result": ...}`)."""
    return orjson.loads(make_runner(pool, kind, source, body, **kw).run().read())


def batches_of(df: pd.DataFrame | dict[str, list], size: int = 1_000_000) -> list[pa.RecordBatch]:
    """The rows as record batches of at most `size` rows (as a query would stream them)."""
    frame = df if isinstance(df, pd.DataFrame) else pd.DataFrame(df)
    return pa.Table.from_pandas(frame, preserve_index=False).to_batches(max_chunksize=size)


class Background:
    """`runner.run()` in a thread of its own, so the test can act while it runs."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.outcome: list[Any] = []
        self._thread = threading.Thread(target=self._run, name="test-runner", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.outcome.append(self.runner.run())
        except ExecutionError as e:
            self.outcome.append(e)

    def result(self, timeout_s: float = 10.0) -> Any:
        """What `run()` returned (the parsed body) or raised, once it has ended: soon, since the test has let it
        go on (a blocked script gives up only after GATE_TIMEOUT_S, the call's time limit after 30 s)."""
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the call did not end"
        value = self.outcome[0]
        return value if isinstance(value, ExecutionError) else orjson.loads(value.read())


def counting(batches: Iterable[pa.RecordBatch], seen: list[int]) -> Iterator[pa.RecordBatch]:
    """The batches, lazily, counting in `seen[0]` how many have been read."""
    for b in batches:
        seen[0] += 1
        yield b
