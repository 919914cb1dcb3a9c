"""Shared fixtures of the model tests: an explicit clock and a private cache pool."""

from __future__ import annotations

import pytest

from model import CachePool, ManualClock


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test says so."""
    return ManualClock(1000.0)


@pytest.fixture
def pool(clock: ManualClock) -> CachePool:
    """An unbounded pool private to the test (the shared default would leak between tests)."""
    return CachePool(None, clock=clock)
