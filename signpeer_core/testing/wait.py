"""Waiting on a condition instead of sleeping for a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 60.0, what: str = "the condition",
               interval: float = 0.05, retry_on: tuple[type[Exception], ...] = ()) -> T:
    """Call ``predicate`` until it returns something true, and return that.

    The test waits exactly as long as the condition takes; ``timeout`` is only a safety net
    for a condition that never comes (keep it generous: a loaded machine is slow, not wrong),
    after which an :class:`AssertionError` names ``what`` was awaited. Exceptions of the types
    in ``retry_on`` count as "not yet" until then, and the last one is raised at the timeout.
    Polling starts at a few milliseconds and backs off to ``interval``.
    """
    deadline = time.monotonic() + timeout
    pause = min(0.005, interval)
    while True:
        try:
            result = predicate()
        except retry_on:
            if time.monotonic() >= deadline:
                raise
        else:
            if result:
                return result
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, interval)
