"""Run a test coroutine on a looptime event loop: sleeps take no real time."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any

import looptime


def virtual_time(fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Decorate an ``async def test_...()``: it runs in virtual time on its own closed loop."""

    @functools.wraps(fn)
    def run() -> None:
        loop = looptime.new_event_loop()
        try:
            loop.run_until_complete(fn())
        finally:
            loop.close()

    return run
