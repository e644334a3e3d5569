"""on_update delivery (``_listeners.ListenerHub``): never inline for async listeners, in order
per listener, bounded, logged, and cancelled cleanly at close."""

from __future__ import annotations

import asyncio
import logging

import pytest

import veo4k
from veo4k._listeners import MAX_BACKLOG, ListenerHub

from .virtual import virtual_time


def event(n: int) -> veo4k.WaitEvent:
    return veo4k.WaitEvent(
        task_id="t", index=0, state=veo4k.WaitState.PROCESSING, attempt=n, elapsed=float(n)
    )


@virtual_time
async def test_async_listener_runs_off_the_caller_in_order() -> None:
    """deliver() returns at once; a slow async listener sees its events in order."""
    hub = ListenerHub()
    seen: list[int] = []

    async def slow(e: veo4k.WaitEvent) -> None:
        await asyncio.sleep(10)
        seen.append(e.attempt)

    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in range(5):
        hub.deliver(slow, event(n))
    assert loop.time() == start  # nothing waited for the listener
    await asyncio.sleep(60)
    assert seen == [0, 1, 2, 3, 4]


@virtual_time
async def test_backlog_is_bounded_and_close_cancels_cleanly() -> None:
    """Beyond MAX_BACKLOG the oldest events are dropped; close() cancels what is left and
    closes unrun coroutines (no 'never awaited' warning under filterwarnings=error)."""
    hub = ListenerHub()
    seen: list[int] = []

    async def stuck(e: veo4k.WaitEvent) -> None:
        seen.append(e.attempt)
        await asyncio.sleep(3600)

    for n in range(MAX_BACKLOG + 10):
        hub.deliver(stuck, event(n))
    await asyncio.sleep(1)
    assert seen == [10]  # the ten oldest were dropped before the listener task ran
    await hub.close()
    hub.deliver(stuck, event(-1))  # after close: dropped, coroutine closed
    assert seen == [10]


async def test_sync_listener_error_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A raising sync listener is logged with its traceback; deliver() does not raise."""
    hub = ListenerHub()

    def broken(e: veo4k.WaitEvent) -> None:
        raise ValueError("bug in a progress bar")

    with caplog.at_level(logging.ERROR, logger="veo4k"):
        hub.deliver(broken, event(1))
    assert "on_update callback raised" in caplog.text
    assert "bug in a progress bar" in caplog.text
