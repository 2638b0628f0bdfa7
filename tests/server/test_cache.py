"""LookupCache: what it keeps, what forgetting drops, and that a load overtaken by a change is not kept."""

from __future__ import annotations

import sys
import threading

import pytest

from server.cache import LookupCache


def test_a_loaded_value_is_kept_and_served_without_loading_again():
    cache: LookupCache[str, int] = LookupCache(300)
    loads: list[str] = []
    assert cache.get_or_load("a", lambda: loads.append("a") or 1) == 1
    assert cache.get_or_load("a", lambda: loads.append("a") or 2) == 1
    assert loads == ["a"] and cache.get("a") == 1


def test_a_zero_ttl_keeps_nothing():
    cache: LookupCache[str, int] = LookupCache(0)
    assert cache.get_or_load("a", lambda: 1) == 1
    assert cache.get_or_load("a", lambda: 2) == 2
    cache.put("a", 3, cache.epoch)
    assert cache.get("a") is None and len(cache) == 0


def test_failed_loads_are_not_kept():
    cache: LookupCache[str, int] = LookupCache(300)

    def fail() -> int:
        raise LookupError("gone")

    with pytest.raises(LookupError):
        cache.get_or_load("a", fail)
    assert cache.get_or_load("a", lambda: 1) == 1


def test_forget_drops_the_matching_entries_only():
    cache: LookupCache[tuple[str, str], int] = LookupCache(300)
    for i, key in enumerate([("ALICE", "f"), ("BOB", "f"), ("ALICE", "g")]):
        cache.put(key, i, cache.epoch)
    cache.forget(lambda k: k[1] == "f")
    assert [cache.get(k) for k in [("ALICE", "f"), ("BOB", "f"), ("ALICE", "g")]] == [None, None, 2]
    cache.forget()
    assert len(cache) == 0


def test_a_value_loaded_before_a_change_is_not_kept_after_it():
    """The change commits and forgets while the load is under way: what the load read may predate the change."""
    cache: LookupCache[str, str] = LookupCache(300)

    def load_then_change() -> str:
        cache.forget(lambda k: k == "other")  # a change to anything, committed during this load
        return "read before the change"

    assert cache.get_or_load("a", load_then_change) == "read before the change"
    assert cache.get("a") is None
    assert cache.get_or_load("a", lambda: "fresh") == "fresh"
    assert cache.get("a") == "fresh"


def test_the_oldest_entries_go_when_full():
    cache: LookupCache[int, int] = LookupCache(300, maxsize=3)
    for i in range(3):
        cache.put(i, i, cache.epoch)
    assert cache.get(0) == 0  # used: 1 is now the least recently used
    cache.put(3, 3, cache.epoch)
    assert [cache.get(i) for i in range(4)] == [0, None, 2, 3]


def test_concurrent_use_keeps_it_consistent():
    cache: LookupCache[int, int] = LookupCache(300, maxsize=100)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(2000):
                key = (i + offset) % 300
                assert cache.get_or_load(key, lambda key=key: key * 2) == key * 2
                if i % 50 == 0:
                    cache.forget(lambda k: k % 7 == 0)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n * 37,)) for n in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, inside the cache's own steps too
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        sys.setswitchinterval(interval)
    assert not errors and not any(t.is_alive() for t in threads)
    assert len(cache) <= 100
