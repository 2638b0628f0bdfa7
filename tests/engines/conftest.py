"""Fixtures of the fast engine tests: an in-process worker pool, and gates that scripts wait at."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import pytest

from engines.inline import InlinePool
from tests.engines.support import GATES, Gate


@pytest.fixture
def inline_pool() -> Iterator[InlinePool]:
    """Two inline workers; every one must be back in the pool when the test ends."""
    # Inline workers capture print() by swapping this process's sys.stdout; two at once can leave it swapped.
    streams = sys.stdout, sys.stderr
    pool = InlinePool(2)
    yield pool
    sys.stdout, sys.stderr = streams
    assert pool.busy() == 0


@pytest.fixture
def gates() -> Iterator[Callable[[str], Gate]]:
    """Makes named gates; every one is opened when the test ends, so no worker thread stays blocked."""
    made: list[str] = []

    def make(name: str) -> Gate:
        GATES[name] = Gate()
        made.append(name)
        return GATES[name]

    yield make
    for name in made:
        GATES.pop(name).open()
