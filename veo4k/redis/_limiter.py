"""A client's rate limiter over the namespace's shared GCRA schedule in Redis.

Each process keeps at most one reservation on the shared schedule at a time (one server task
reserves the next slot, waits for it, and repeats while local requests wait), so K busy
processes take turns slot by slot: nobody starves, and the namespace as a whole never goes
faster than the schedule. Each slot goes, when it is reserved, to the best local candidate of
this client's :class:`~veo4k._schedule.Schedule` (follow-ups before submissions), which sends
at the slot's time: its lease claim (a round trip) overlaps that wait instead of delaying the
request past its slot. A slot handed back unused (another process polls the task, or the wait
stopped) is a spare for the next candidate while it is fresh (one interval). When Redis is
unavailable the client falls back to a local :class:`~veo4k._limiter.Pacer` at
``fallback_share`` of ``rate_limit`` for the timing, with the same local schedule deciding who.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from typing import Protocol

from .._config import RateLimit
from .._limiter import Pacer
from .._schedule import Ask, Lane, Schedule, wait_for_slot
from ._health import RedisDown

__all__ = ["RedisLimiter", "SharedSchedule", "fallback_limit"]

log = logging.getLogger("veo4k")


class SharedSchedule(Protocol):
    """What the limiter needs from its coordinator: the namespace's GCRA schedule in Redis.

    Both raise :class:`~veo4k.redis._health.RedisDown` when Redis is unavailable.
    """

    async def slot(
        self, interval_ms: float, period_ms: float, increase: float
    ) -> tuple[float, float]:
        """Reserve the next shared slot: ``(ms to wait, slot in Redis ms)``."""

    async def rate_limited(
        self, slot_ms: float, retry_after: float | None, limit: RateLimit
    ) -> None:
        """Report a 429 for the request granted at ``slot_ms``."""


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
    """Slots from the shared schedule (or the local fallback), each to the best local ask."""

    def __init__(
        self, coordinator: SharedSchedule, limit: RateLimit, *, share: float, headroom: float
    ) -> None:
        self._coordinator = coordinator
        self._limit = limit
        self._interval_ms = limit.period * 1000.0 / (limit.max_requests * headroom)
        self._stale = self._interval_ms / 1000.0
        self._fallback = Pacer(fallback_limit(limit, share), headroom=headroom)
        self.schedule = Schedule()
        """Who gets each slot (the client sets its connection cap, ``max_in_flight``)."""
        self.schedule.slot_gap = self._interval_ms / 1000.0
        self._spare: tuple[float, float | None] | None = None  # (loop time, Redis ms) of a slot
        self._server: asyncio.Task[None] | None = None
        self._grants: collections.OrderedDict[float, float] = collections.OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._warned = False

    @property
    def pacer(self) -> Pacer:
        """The local fallback pacer (used while Redis is unavailable)."""
        return self._fallback

    def offer(self, ask: Ask) -> None:
        """Queue ``ask``; a fresh spare slot is handed out at once, else the server runs."""
        self.schedule.push(ask)
        self._serve()

    def withdraw(self, ask: Ask) -> None:
        """Take ``ask`` out: its place is free at once."""
        self.schedule.remove(ask)

    async def acquire(self, lane: Lane = Lane.FOLLOW_UP, latest: float | None = None) -> float:
        """Wait for the next shared slot (or a fallback one); return the loop time of the grant."""
        return await wait_for_slot(self, lane, latest)

    def finished(self) -> None:
        """A granted request ended: its connection is free."""
        self.schedule.finished()
        self._serve()

    def unused(self, granted_at: float) -> None:
        """A granted slot was not used (another process polls the task): keep it as a spare
        for the next local candidate, while it is fresh."""
        self.schedule.finished()
        slot_ms = self._grants.pop(granted_at, None)
        if self._spare is None:
            self._spare = (granted_at, slot_ms)
        self._serve()

    def _serve(self) -> None:
        if self._closed or not self.schedule or not self.schedule.has_room:
            return
        if self._server is None:
            self._server = asyncio.get_running_loop().create_task(
                self._run(), name="veo4k-redis-slots"
            )

    def _hand(self, now: float, slot_ms: float | None) -> bool:
        if not self.schedule.grant(now):
            return False
        if slot_ms is not None:  # a shared slot: a 429 for it is reported to the namespace
            self._grants[now] = slot_ms
            while len(self._grants) > 1000:
                self._grants.popitem(last=False)
        return True

    async def _run(self) -> None:
        """Reserve slot after slot while local asks wait, one reservation at a time.

        Each slot is handed at once to the best local ask, which sends at the slot's time: a
        lease claim before its request (a Redis round trip) overlaps with that wait, so
        requests leave on the shared schedule's beat. The next slot is reserved once this
        one's time has come; a spare (a slot nobody took, or one handed back unused) is used
        first while fresh.
        """
        loop = asyncio.get_running_loop()
        try:
            while self.schedule and self.schedule.has_room:
                if self._spare is not None and self._spare[0] < loop.time() - self._stale:
                    self._spare = None  # its moment has passed: others use the slots now
                if self._spare is None:
                    self._spare = await self._reserve(loop)
                when, shared = self._spare
                if self._hand(when, shared):
                    self._spare = None
                elif not self.schedule:
                    return  # nobody left: the slot stays a spare while fresh
                await asyncio.sleep(max(0.0, when - loop.time()))
        finally:
            self._server = None

    async def _reserve(self, loop: asyncio.AbstractEventLoop) -> tuple[float, float | None]:
        """The next shared slot (loop time, Redis ms), or a fallback one while Redis is away."""
        try:
            wait_ms, slot_ms = await self._coordinator.slot(
                self._interval_ms, self._limit.period * 1000.0, self._limit.increase
            )
        except Exception as exc:  # RedisDown, or a reply it could not read
            if not isinstance(exc, RedisDown) and not self._warned:
                self._warned = True  # a bug must not leave the candidates waiting
                log.warning("shared rate slot failed (%r): using the local pacer", exc)
            await self._fallback.acquire()  # the fallback's timing, our candidates
            return loop.time(), None
        return loop.time() + wait_ms / 1000.0, slot_ms

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
        """Stop reserving slots; drop the fallback pacer's timer and any 429 report in flight."""
        self._closed = True
        self._fallback.close()
        if self._server is not None:
            self._server.cancel()
        for task in self._tasks:
            task.cancel()
