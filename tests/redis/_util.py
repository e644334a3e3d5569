"""Small helpers for the Redis tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["eventually"]


async def eventually(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Return once ``condition()`` is true; fail after ``timeout`` seconds (a bounded poll of a
    state that offers no event to await)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110  (a state with no event: polled, bounded)
            await asyncio.sleep(0.01)
