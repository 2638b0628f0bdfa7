"""LoginThrottle and HashGate on their own: lockouts, backoff, memory bounds, bounded hashing."""

from __future__ import annotations

import threading

import pytest

from server.auth import throttle as th
from server.auth.errors import HashingBusy, LoginThrottled
from server.auth.throttle import HashGate, LoginThrottle, ThrottleConfig
from tests.conftest import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lockout_starts_at_the_threshold_and_doubles_with_each_further_failure():
    clock = Clock()
    t = LoginThrottle(ThrottleConfig(user_max_failures=3, lockout_s=2, lockout_max_s=10), clock)
    for _ in range(2):
        t.check("alice", "1.2.3.4")
        t.failed("alice", "1.2.3.4")
    t.check("alice", "1.2.3.4")  # two failures: not locked yet
    t.failed("alice", "1.2.3.4")
    with pytest.raises(LoginThrottled) as e:
        t.check("alice", "9.9.9.9")  # the user is locked from every address
    assert e.value.retry_after == 2
    t.check("bob", "1.2.3.4")  # other users are not
    clock.now += 2
    t.check("alice", "1.2.3.4")
    t.failed("alice", "1.2.3.4")
    with pytest.raises(LoginThrottled) as e:
        t.check("ALICE", None)
    assert e.value.retry_after == 4
    for _ in range(5):
        clock.now += 100
        t.failed("alice", None)
    with pytest.raises(LoginThrottled) as e:
        t.check("alice", None)
    assert e.value.retry_after == 10  # capped


def test_an_address_is_locked_for_every_user_name_and_success_does_not_clear_it():
    clock = Clock()
    t = LoginThrottle(ThrottleConfig(user_max_failures=100, address_max_failures=4, lockout_s=30), clock)
    for i in range(4):
        t.failed(f"guess{i}", "6.6.6.6")
        t.succeeded("bob")
    with pytest.raises(LoginThrottled):
        t.check("bob", "6.6.6.6")
    t.check("bob", "7.7.7.7")


def test_success_clears_the_users_count_and_quiet_time_forgets_failures():
    clock = Clock()
    t = LoginThrottle(ThrottleConfig(user_max_failures=3, failure_window_s=60), clock)
    t.failed("alice", None)
    t.failed("alice", None)
    t.succeeded("alice")
    t.failed("alice", None)
    t.failed("alice", None)
    t.check("alice", None)
    clock.now += 61
    t.failed("alice", None)
    t.check("alice", None)  # the two earlier failures were forgotten


def test_a_spray_of_made_up_names_cannot_grow_memory_without_bound(monkeypatch):
    monkeypatch.setattr(th, "MAX_KEYS", 100)
    t = LoginThrottle(ThrottleConfig(), Clock())
    for i in range(1000):
        t.failed(f"user{i}", None)
    assert len(t._records) <= 100


def test_the_hash_gate_runs_at_most_its_slots_and_refuses_a_long_queue_at_once():
    gate = HashGate(1, wait_s=30)
    inside, release = threading.Event(), threading.Event()
    outcomes: list[str] = []

    def hold() -> None:
        with gate.slot():
            inside.set()
            release.wait(30)

    def queued() -> None:
        try:
            with gate.slot():
                outcomes.append("ran")
        except HashingBusy:
            outcomes.append("busy")

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(10)
    waiters = [threading.Thread(target=queued) for _ in range(th.WAITERS_PER_SLOT)]
    for w in waiters:
        w.start()
    wait_for(lambda: gate._queued == 1 + th.WAITERS_PER_SLOT, timeout=10)
    with pytest.raises(HashingBusy):  # the queue is full: refused without waiting
        with gate.slot():
            pass
    release.set()
    holder.join(10)
    for w in waiters:
        w.join(10)
    assert outcomes == ["ran"] * th.WAITERS_PER_SLOT and gate.peak == 1


def test_a_request_that_waits_too_long_for_a_slot_is_refused():
    gate = HashGate(1, wait_s=0.05)
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with gate.slot():
            inside.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(10)
    try:
        with pytest.raises(HashingBusy):
            with gate.slot():
                pass
    finally:
        release.set()
        holder.join(10)
    with gate.slot():  # free again
        pass
