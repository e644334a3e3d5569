"""A client's rate limiter over the account's shared schedule in Redis (``_budget``).

Each process keeps at most one reservation on the shared schedule at a time (one server task
reserves the next slot, waits for it, and repeats while local requests wait), so K busy
processes take turns slot by slot: nobody starves, and the namespace as a whole never goes
faster than the schedule. Each slot goes, when it is reserved, to the best local candidate of
this client's :class:`~veo4k._schedule.Schedule`, which sends at the slot's time: its lease
claim (a round trip) overlaps that wait instead of delaying the request past its slot.

Across processes the reservation carries the :class:`~veo4k._schedule.Rank` of that candidate
and what else waits here; the shared schedule refuses it while another process has a candidate
that goes first (a follow-up of any process before a submission of any process, a spare poll
after anyone's submission), and this limiter asks again when told, or at once when a better
candidate comes. A slot handed back unused (another process polls the task, or the wait
stopped) is a spare for the next candidate while it is fresh (one interval).

When Redis is unavailable the client falls back to a local :class:`~veo4k._limiter.Pacer` at
``fallback_share`` of ``rate_limit`` for the timing, with the same local schedule deciding who.
The pacer goes on from the schedule this limiter last saw (its next slot one fallback interval
after the last shared one, at the shared rate's factor), so an outage starts at the fallback's
pace, never with a burst, and Redis is asked again when it may be back before a fallback slot
is used: a blip shorter than one fallback interval sends nothing the shared schedule did not
grant.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import secrets
from typing import NamedTuple, Protocol

from .._config import RateLimit
from .._limiter import Pacer
from .._schedule import Ask, Demand, Lane, Rank, Schedule, wait_for_slot
from ._health import RedisDown

__all__ = ["RedisLimiter", "Reservation", "SharedSchedule", "fallback_limit"]

log = logging.getLogger("veo4k")


class Reservation(NamedTuple):
    """The shared schedule's answer to a process asking for a slot."""

    granted: bool
    wait_ms: float
    """Granted: ms until the slot. Refused: ms until asking again."""
    slot_ms: float
    """Granted: the slot, Redis ms. Refused: where the slots reserved so far end."""
    factor: float
    """The shared rate now, as a fraction of the full rate (below 1 after 429s)."""


class SharedSchedule(Protocol):
    """What the limiter needs from its coordinator: the account's schedule in Redis.

    ``slot`` and ``rate_limited`` raise :class:`~veo4k.redis._health.RedisDown` when Redis is
    unavailable.
    """

    async def slot(
        self, who: str, interval_ms: float, limit: RateLimit, demand: Demand, share: float
    ) -> Reservation:
        """Reserve the next shared slot for ``demand.rank`` (or be told when to ask again)."""

    async def rate_limited(
        self, slot_ms: float, retry_after: float | None, limit: RateLimit
    ) -> None:
        """Report a 429 for the request granted at ``slot_ms``."""

    def retry_in(self) -> float:
        """Seconds until Redis is tried again after a failure (0 while it is up)."""


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
        self._who = secrets.token_hex(8)  # this limiter in the shared schedule's demand
        self._woken = asyncio.Event()  # a candidate came while a refused rank waits
        self._seen: tuple[float, float] | None = None  # last shared slot (loop time), factor
        self.refused = 0
        """Reservations the shared schedule refused (another process's candidates first)."""

    @property
    def pacer(self) -> Pacer:
        """The local fallback pacer (used while Redis is unavailable)."""
        return self._fallback

    def offer(self, ask: Ask) -> None:
        """Queue ``ask``; a fresh spare slot is handed out at once, else the server runs."""
        self.schedule.push(ask)
        self._woken.set()
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
                    if self._spare is None:
                        continue  # refused, or Redis may be back: ask again
                when, shared = self._spare
                if self._hand(when, shared):
                    self._spare = None
                elif not self.schedule:
                    return  # nobody left: the slot stays a spare while fresh
                await asyncio.sleep(max(0.0, when - loop.time()))
        finally:
            self._server = None

    async def _reserve(self, loop: asyncio.AbstractEventLoop) -> tuple[float, float | None] | None:
        """The next shared slot (loop time, Redis ms), a fallback one while Redis is away, or
        None after a refusal (asked again once the wait it was told is over)."""
        demand = self.schedule.demand(loop.time())
        if demand.rank is None:
            return None  # nobody can take a slot now (the loop's condition decides)
        try:
            got = await self._coordinator.slot(
                self._who, self._interval_ms, self._limit, demand, self.schedule.submit_share
            )
        except Exception as exc:  # RedisDown, or a reply it could not read
            return await self._fall_back(loop, exc)
        if not got.granted:
            self.refused += 1
            await self._nap(loop, got.wait_ms / 1000.0, demand.rank)
            return None
        when = loop.time() + got.wait_ms / 1000.0
        self._seen = (when, got.factor)
        return when, got.slot_ms

    async def _nap(self, loop: asyncio.AbstractEventLoop, seconds: float, refused: Rank) -> None:
        """Wait ``seconds`` after a refusal, or less if a candidate of a better rank comes."""
        until = loop.time() + seconds
        while (left := until - loop.time()) > 0:
            self._woken.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._woken.wait()
            rank = self.schedule.demand(loop.time()).rank
            if rank is None or rank < refused:
                return

    async def _fall_back(
        self, loop: asyncio.AbstractEventLoop, exc: Exception
    ) -> tuple[float, None] | None:
        """A slot from the local pacer, or None when Redis may be back first (ask it again).

        The first fallback slot after shared ones comes one fallback interval after the last
        shared slot (``Pacer.resume``), not at once: a blip shorter than that (with the
        defaults at Kie's limit, 2.1 s against a 0.5 s timeout and a 1 s retry) sends nothing
        the shared schedule did not grant.
        """
        if not isinstance(exc, RedisDown) and not self._warned:
            self._warned = True  # a bug must not leave the candidates waiting
            log.warning("shared rate slot failed (%r): using the local pacer", exc)
        if self._seen is not None:
            self._fallback.resume(*self._seen)
            self._seen = None
        retry = self._coordinator.retry_in() if isinstance(exc, RedisDown) else 0.0
        try:
            async with asyncio.timeout(retry or None):
                await self._fallback.acquire()  # the fallback's timing, our candidates
        except TimeoutError:
            return None
        return loop.time(), None

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
