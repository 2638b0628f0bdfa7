"""The runner on the in-process worker: results in chunk order whatever order units finish in, a producer
that reads the input only a window ahead, cancellation, time limits, and a busy pool. No HTTP, no database, no
worker processes; tests/server/test_execution_faults.py checks what only real processes show."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pyarrow as pa
import pytest

from engines.errors import Cancelled, PoolBusy, TimeLimitExceeded
from engines.inline import InlinePool, InlineWorker
from engines.runner import Limits
from tests.conftest import wait_for
from tests.engines.support import (
    Background,
    batches_of,
    counting,
    gate_kwargs,
    gated,
    make_runner,
    run_json,
)

#: A row-apply chunk function: the chunk starting at N == 0 waits at the gate; every chunk returns itself.
FIRST_WAITS = gated("if d['N'].iloc[0] == 0:\n    assert g.wait()\nreturn d", args="d")
#: A function that waits at the gate, then returns 1.
WAITS = gated("assert g.wait()\nreturn 1")
ONE = "def f():\n    return 1\n"


def frames(gate: str, **body: object) -> dict:
    """A body whose function gets DataFrames and the gate's name."""
    parameters = {"oml_input_type": "pandas.DataFrame", **gate_kwargs(gate)}
    return {"parameters": json.dumps(parameters), **body}


def idle_workers(pool: InlinePool) -> set[InlineWorker]:
    """The pool's workers (all must be idle)."""
    workers = pool.acquire("PROBE", pool.size, timeout_s=1)
    assert len(workers) == pool.size
    for w in workers:
        pool.release(w)
    return set(workers)


def test_results_stay_in_chunk_order_when_the_first_chunk_finishes_last(inline_pool, gates):
    first = gates("first")
    body = frames("first", rows=1, parallelFlag=True)
    runner = make_runner(inline_pool, "row", FIRST_WAITS, body, batches=batches_of({"N": list(range(6))}, 1))
    call = Background(runner)
    assert first.entered.wait(30)
    wait_for(lambda: runner.progress.units_done == 5)  # chunks 2..6, on the other worker
    first.open()
    assert call.result() == {"result": [{"N": n} for n in range(6)]}


def test_the_producer_reads_the_input_only_a_window_ahead_of_the_results(inline_pool, gates):
    first = gates("window")
    read = [0]
    batches = counting(batches_of({"N": list(range(100))}, 1), read)
    runner = make_runner(inline_pool, "row", FIRST_WAITS, frames("window", rows=1, parallelFlag=True), batches=batches)
    call = Background(runner)
    # While chunk 1 waits, the other worker runs chunks until the producer stops, 4 tasks per worker ahead.
    wait_for(lambda: runner.progress.units_done >= 7)
    done_while_waiting, read_while_waiting = runner.progress.units_done, read[0]
    first.open()
    assert call.result() == {"result": [{"N": n} for n in range(100)]}
    assert (done_while_waiting, read_while_waiting <= 10, read[0]) == (7, True, 100)


def test_a_cancelled_call_kills_its_blocked_worker_and_the_pool_is_whole_again(inline_pool, gates):
    before = idle_workers(inline_pool)
    gate = gates("cancel")
    runner = make_runner(inline_pool, "eval", WAITS, {"parameters": json.dumps(gate_kwargs("cancel"))})
    call = Background(runner)
    assert gate.entered.wait(30)
    runner.cancel()
    assert isinstance(call.result(), Cancelled)
    assert inline_pool.busy() == 0
    after = idle_workers(inline_pool)
    (blocked,) = before - after
    assert blocked.killed and not any(w.killed for w in after)
    assert run_json(inline_pool, "eval", ONE) == {"result": 1}


def test_cancelling_a_parallel_call_stops_every_worker_it_holds(inline_pool, gates):
    first = gates("cancel-parallel")
    body = frames("cancel-parallel", rows=1, parallelFlag=True)
    runner = make_runner(inline_pool, "row", FIRST_WAITS, body, batches=batches_of({"N": list(range(20))}, 1))
    call = Background(runner)
    assert first.entered.wait(30)
    wait_for(lambda: runner.progress.units_done >= 1)
    runner.cancel()
    assert isinstance(call.result(), Cancelled)
    assert inline_pool.busy() == 0
    assert not any(w.killed for w in idle_workers(inline_pool))
    assert run_json(inline_pool, "index", "def f(i):\n    return i\n", {"times": 3, "parallelFlag": True}) == {
        "result": [1, 2, 3]
    }


@pytest.mark.parametrize(
    ("is_job", "message"),
    [
        (
            False,
            "The call ran longer than its time limit of 0.2 s and was stopped; "
            "run long work asynchronously (asyncFlag) with a larger timeout",
        ),
        (True, "The job ran longer than its timeout of 0.2 s and was stopped"),
    ],
)
def test_a_unit_running_past_the_time_limit_is_stopped(inline_pool, gates, is_job, message):
    before = idle_workers(inline_pool)
    gate = gates("slow")
    runner = make_runner(
        inline_pool, "eval", WAITS, {"parameters": json.dumps(gate_kwargs("slow"))}, time_limit_s=0.2, is_job=is_job
    )
    with pytest.raises(TimeLimitExceeded) as e:
        runner.run()
    assert str(e.value) == message
    assert gate.entered.wait(30) and not gate.released.is_set()  # (the first call of a process may start late)
    (blocked,) = before - idle_workers(inline_pool)
    assert blocked.killed
    assert run_json(inline_pool, "eval", ONE) == {"result": 1}


def test_a_parallel_call_past_the_time_limit_frees_the_pool(inline_pool, gates):
    gates("slow-parallel")
    body = frames("slow-parallel", rows=1, parallelFlag=True)
    runner = make_runner(
        inline_pool, "row", FIRST_WAITS, body, batches=batches_of({"N": list(range(4))}, 1), time_limit_s=0.2
    )
    with pytest.raises(TimeLimitExceeded):
        runner.run()
    assert inline_pool.busy() == 0
    assert run_json(inline_pool, "eval", ONE) == {"result": 1}


@pytest.mark.parametrize("kind", ["row", "table"])
def test_an_input_that_stalls_past_the_deadline_ends_the_call(inline_pool, kind):
    limit_s = 0.2
    deadline = time.monotonic() + limit_s

    def stalling() -> Iterator[pa.RecordBatch]:
        rows = batches_of({"N": list(range(4))}, 2)
        yield rows[0]
        wait_for(lambda: time.monotonic() > deadline + 0.05, timeout=10)  # the query stalls past the call's end
        yield rows[1]

    body = {"rows": 1, "parallelFlag": True} if kind == "row" else {}
    runner = make_runner(inline_pool, kind, "def f(d):\n    return 1\n", body, batches=stalling(), time_limit_s=limit_s)
    with pytest.raises(TimeLimitExceeded):
        runner.run()
    assert inline_pool.busy() == 0


def test_pool_busy_when_no_worker_frees_within_the_wait(inline_pool):
    held = inline_pool.acquire("BOB", inline_pool.size, timeout_s=1)
    try:
        with pytest.raises(PoolBusy):
            make_runner(inline_pool, "eval", ONE, limits=Limits(worker_wait_s=0.05)).run()
    finally:
        for w in held:
            inline_pool.release(w)
    assert run_json(inline_pool, "eval", ONE) == {"result": 1}


def test_a_job_waits_for_a_worker_as_long_as_its_time_limit(inline_pool):
    held = inline_pool.acquire("BOB", inline_pool.size, timeout_s=1)
    try:
        started = time.monotonic()
        call = Background(make_runner(inline_pool, "eval", ONE, limits=Limits(worker_wait_s=0.05), is_job=True))
        wait_for(lambda: inline_pool.waiting() == 1)
        wait_for(lambda: time.monotonic() > started + 0.2)  # well past a synchronous call's wait
        assert inline_pool.waiting() == 1
    finally:
        for w in held:
            inline_pool.release(w)
    assert call.result() == {"result": 1}


def test_a_job_cancelled_while_it_waits_for_a_worker_stops_waiting(inline_pool):
    held = inline_pool.acquire("BOB", inline_pool.size, timeout_s=1)
    try:
        runner = make_runner(inline_pool, "eval", ONE, is_job=True, time_limit_s=600)
        call = Background(runner)
        wait_for(lambda: inline_pool.waiting() == 1)
        runner.cancel()
        assert isinstance(call.result(), Cancelled)  # at once, not after the job's time limit
        assert inline_pool.waiting() == 0
    finally:
        for w in held:
            inline_pool.release(w)
