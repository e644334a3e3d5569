"""Deliver ``on_update`` events without letting a listener hold up a wait.

A sync listener is called inline (it should be quick: a progress bar, a counter). An async one
is called inline too, which only creates its coroutine; the coroutine runs in a task of its own,
so a listener that sleeps an hour delays neither the result nor the deadline of any wait. Each
listener gets one such task at a time, fed in order, so it sees its events in the order they
happened. A listener's exception is logged, never raised into the wait. The client's
``aclose()`` cancels the listener tasks still running, except the one calling it: a listener may
close the client.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable

from ._models import WaitEvent

__all__ = ["Listener", "ListenerHub"]

log = logging.getLogger("veo4k")

Listener = Callable[[WaitEvent], object]
"""An ``on_update`` callback: sync, or async (its awaitable is run in a task of its own)."""

CLOSE_GRACE = 1.0
"""Seconds ``aclose()`` waits for cancelled listener tasks to end."""

MAX_BACKLOG = 1000
"""Events an async listener may fall behind by; beyond it the oldest are dropped (logged)."""


class _Pump:
    __slots__ = ("backlog", "dropped", "listener", "task")

    def __init__(self, listener: Listener) -> None:
        self.listener = listener  # held so its id() is not reused while the pump lives
        self.backlog: collections.deque[Awaitable[object]] = collections.deque()
        self.task: asyncio.Task[None] | None = None
        self.dropped = 0


class ListenerHub:
    """The listener tasks of one client, one per async listener with events pending."""

    def __init__(self) -> None:
        self._pumps: dict[int, _Pump] = {}
        self._closed = False

    def deliver(
        self, listener: Listener, event: WaitEvent, context: contextvars.Context | None = None
    ) -> None:
        """Call ``listener`` with ``event``; an awaitable it returns runs in its pump task."""
        try:
            result = listener(event)
        except Exception:
            log.exception("on_update callback raised; the wait goes on")
            return
        if not inspect.isawaitable(result):
            return
        if self._closed:
            _discard(result)
            return
        key = id(listener)
        pump = self._pumps.get(key)
        if pump is None:
            pump = self._pumps[key] = _Pump(listener)
            pump.task = asyncio.get_running_loop().create_task(
                self._run(key, pump), name="veo4k-listener", context=context
            )
        pump.backlog.append(result)
        if len(pump.backlog) > MAX_BACKLOG:
            _discard(pump.backlog.popleft())
            pump.dropped += 1
            if pump.dropped == 1:  # once per backlog, not once per event
                log.warning(
                    "on_update listener is %d events behind; dropping the oldest", MAX_BACKLOG
                )

    async def _run(self, key: int, pump: _Pump) -> None:
        try:
            while pump.backlog:
                awaitable = pump.backlog.popleft()
                try:
                    await awaitable
                except Exception:
                    log.exception("on_update callback raised; the wait goes on")
        finally:
            if self._pumps.get(key) is pump:
                del self._pumps[key]
            while pump.backlog:
                _discard(pump.backlog.popleft())

    async def close(self) -> None:
        """Cancel the listener tasks still running (not the caller's own) and wait for them."""
        self._closed = True
        current = asyncio.current_task()
        pumps = [p for p in self._pumps.values() if p.task is not current]
        tasks = [p.task for p in pumps if p.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: a listener that swallows its cancellation must not hang aclose()
            _, stuck = await asyncio.wait(tasks, timeout=CLOSE_GRACE)
            if stuck:
                log.warning("%d on_update listener(s) ignored cancellation at close", len(stuck))
        for pump in pumps:  # a task cancelled before it ran never reached its finally
            while pump.backlog:
                _discard(pump.backlog.popleft())


def _discard(awaitable: Awaitable[object]) -> None:
    """Drop an awaitable that will never run, without a 'never awaited' warning."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()
