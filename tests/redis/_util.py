"""Small helpers for the Redis tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import veo4k

__all__ = ["SLOW", "eventually", "submitted"]

SLOW = veo4k.PollPolicy(
    first_delay=30.0, first_delay_jitter=0.0, wait_initial=30.0, wait_max=30.0,
    wait_jitter=0.0, timeout=20.0,
)  # fmt: skip
"""After the first request, nothing for 30 s: only a callback or a shared result ends a wait."""


async def eventually(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Return once ``condition()`` is true; fail after ``timeout`` seconds (a bounded poll of a
    state that offers no event to await)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110  (a state with no event: polled, bounded)
            await asyncio.sleep(0.01)


async def submitted(
    client: veo4k.Veo4kClient, task_id: str, index: int = 0, **options: Any
) -> asyncio.Future[veo4k.FourKResult]:
    """A ``SLOW`` wait that has sent its first request (so it holds or follows the lease)."""
    sent = asyncio.Event()
    wait = asyncio.ensure_future(
        client.wait_for_4k(
            task_id, index, poll_policy=SLOW, on_update=lambda e: sent.set(), **options
        )
    )
    await sent.wait()
    return wait
