"""A client's rate limiter over the namespace's shared GCRA schedule in Redis.

Each process keeps at most one reservation on the shared schedule at a time (its local waiters
queue first come first served behind an ``asyncio.Lock``), so K busy processes take turns
slot by slot: nobody starves, and the namespace as a whole never goes faster than the schedule.
A waiter cancelled while it sleeps towards its reserved slot leaves that slot to the next local
waiter, so deadlines hold without wasting the budget. When Redis is unavailable the client
falls back to a local :class:`~veo4k._limiter.Pacer` at ``fallback_share`` of ``rate_limit``.
"""

from __future__ import annotations

import asyncio
import collections
import math
from typing import Protocol

from .._config import RateLimit
from .._limiter import Pacer
from ._health import RedisDown

__all__ = ["RedisLimiter", "SharedSchedule", "fallback_limit"]


class SharedSchedule(Protocol):
    """What the limiter needs from its coordinator: the namespace's GCRA schedule in Redis.

    Both raise :class:`~veo4k.redis._health.RedisDown` when Redis is unavailable.
    """

    async def slot(
        self, interval_ms: float, period_ms: float, increase: float
    ) -> tuple[float, float]:
        """Reserve the next slot: ``(ms to wait, slot in Redis ms)``."""
        ...

    async def rate_limited(
        self, slot_ms: float, retry_after: float | None, limit: RateLimit
    ) -> None:
        """Report a 429 for the request granted at ``slot_ms``."""
        ...


def fallback_limit(limit: RateLimit, share: float) -> RateLimit:
    """``limit`` scaled down to ``share`` (at least one request per period)."""
    return RateLimit(
        max_requests=max(1, math.floor(limit.max_requests * share)),
        period=limit.period,
        decrease=limit.decrease,
        increase=limit.increase,
        min_fraction=limit.min_fraction,
    )


class RedisLimiter:
    """Slots from the shared schedule; the local fallback pacer while Redis is away."""

    def __init__(
        self, coordinator: SharedSchedule, limit: RateLimit, *, share: float, headroom: float
    ) -> None:
        self._coordinator = coordinator
        self._limit = limit
        self._interval_ms = limit.period * 1000.0 / (limit.max_requests * headroom)
        self._stale = self._interval_ms / 1000.0
        self._fallback = Pacer(fallback_limit(limit, share), headroom=headroom)
        self._lock = asyncio.Lock()
        self._spare: tuple[float, float] | None = None  # (loop time, Redis ms) of a paid slot
        self._grants: collections.OrderedDict[float, float] = collections.OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pacer(self) -> Pacer:
        """The local fallback pacer (used while Redis is unavailable)."""
        return self._fallback

    async def acquire(self) -> float:
        """Wait for the next shared slot (or a fallback one); return the loop time of the grant."""
        loop = asyncio.get_running_loop()
        try:
            async with self._lock:
                if self._spare is not None and self._spare[0] < loop.time() - self._stale:
                    self._spare = None  # its moment has passed: others use the slots now
                if self._spare is None:
                    wait_ms, slot_ms = await self._coordinator.slot(
                        self._interval_ms, self._limit.period * 1000.0, self._limit.increase
                    )
                    self._spare = (loop.time() + wait_ms / 1000.0, slot_ms)
                when, slot_ms = self._spare
                await asyncio.sleep(max(0.0, when - loop.time()))  # a cancel keeps the spare
                self._spare = None
        except RedisDown:
            return await self._fallback.acquire()
        granted = loop.time()
        self._grants[granted] = slot_ms
        while len(self._grants) > 1000:
            self._grants.popitem(last=False)
        return granted

    def on_rate_limited(self, granted_at: float, retry_after: float | None, now: float) -> None:
        """Tell the namespace (every process slows down), and the fallback pacer."""
        self._fallback.on_rate_limited(granted_at, retry_after, now)
        slot_ms = self._grants.pop(granted_at, None)
        if slot_ms is None:
            return  # a fallback grant: the local pacer was all that knew about it
        task = asyncio.get_running_loop().create_task(
            self._coordinator.rate_limited(slot_ms, retry_after, self._limit)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        """Drop the fallback pacer's timer and any 429 report still in flight."""
        self._fallback.close()
        for task in self._tasks:
            task.cancel()
