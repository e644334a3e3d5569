"""The client-wide request pacer: when the next slot exists, adaptive (AIMD) on 429.

Why not aiolimiter: its leaky bucket lets ``max_rate`` requests through at once and then drips,
so an account limit of 20 per 10 s sees up to 40 requests in the first 10 s window and Kie
answers the surplus with 429 (``benchmarks/ratelimit.py`` measures it); and its rate is fixed
at construction, while a 429 must lower the rate of the whole client, even one built with no
configured limit. This pacer spaces grants ``1 / rate`` seconds apart (so no window of
``period`` seconds ever holds more than ``max_requests``) and changes its rate at run time.
*Who* gets each slot is decided by its :class:`~veo4k._schedule.Schedule` at the moment the
slot exists: follow-ups of tasks already paid for before new submissions.
"""

from __future__ import annotations

import asyncio
import collections
import math
from typing import Protocol

from ._config import RateLimit
from ._schedule import Ask, Lane, Schedule, wait_for_slot

__all__ = ["Limiter", "Pacer"]

_OBSERVE_WINDOW = 10.0  # seconds of history used to guess the rate when no limit is configured
_DOCUMENTED_RATE = 2.0  # Kie's documented 20 requests per 10 s: the floor of that guess
_UNKNOWN_WINDOW = 1.0  # without a configured limit: pause and cut at most once per second


class Limiter(Protocol):
    """Hands out the account's request slots; the transport and the poll loops hold one.

    A request waiting for a slot is an :class:`Ask` in the limiter's :class:`Schedule` (its
    lane and urgency). When a slot exists the limiter hands it to the schedule's best candidate
    at that moment (``schedule.grant``): who goes next is decided when the slot comes, not when
    a request started queueing. A granted request reports its end with :meth:`finished` (or
    :meth:`unused` when it was never sent), which frees its connection (``max_in_flight``).
    """

    @property
    def pacer(self) -> Pacer:
        """The in-process pacer behind it (the whole limiter, or its fallback)."""

    @property
    def schedule(self) -> Schedule:
        """The local candidates: lanes, urgency, admission, the connection cap."""

    def offer(self, ask: Ask) -> None:
        """Queue ``ask``; ``ask.granted(at)`` is called when its slot comes (maybe at once)."""

    def withdraw(self, ask: Ask) -> None:
        """Take a queued ``ask`` out: its place is free at once (no-op if not queued)."""

    async def acquire(self, lane: Lane = Lane.FOLLOW_UP, latest: float | None = None) -> float:
        """Wait for a slot as a one-off request; return the loop time it was granted at."""

    def finished(self) -> None:
        """A granted request has ended."""

    def unused(self, granted_at: float) -> None:
        """A slot granted at ``granted_at`` was not used for a request after all."""

    def on_rate_limited(self, granted_at: float, retry_after: float | None, now: float) -> None:
        """A request granted at ``granted_at`` was answered 429."""

    def close(self) -> None:
        """Drop timers and background work."""


class Pacer:
    """Hands out request slots at the current rate (requests per second), each to the best
    candidate of its :class:`Schedule` at that moment."""

    def __init__(self, limit: RateLimit | None, *, headroom: float = 0.95) -> None:
        self._limit = limit
        self._period = limit.period if limit else _OBSERVE_WINDOW
        self._ceiling = limit.max_requests / limit.period * headroom if limit else math.inf
        self._rate = self._ceiling
        # The unit of additive increase and of the floor: the configured limit, or without one
        # Kie's documented rate (never the first burst we saw, which may be 1,000 times too high).
        self._base = self._ceiling if limit else _DOCUMENTED_RATE
        self._next_slot = -math.inf
        self._paused_until = -math.inf
        self._last_decrease = -math.inf
        self._last_increase = -math.inf
        self.schedule = Schedule()
        """Who gets each slot (the client sets its connection cap, ``max_in_flight``)."""
        self._wake_handle: asyncio.TimerHandle | None = None
        self._recent: collections.deque[float] = collections.deque(maxlen=100_000)
        self._first_grant = math.inf
        self._cut_gap = limit.period if limit else _UNKNOWN_WINDOW
        self.rate_limited = 0
        """How many 429 answers this pacer has been told about."""

    @property
    def rate(self) -> float:
        """The current rate in requests per second (``inf`` when unlimited)."""
        return self._rate

    @property
    def pacer(self) -> Pacer:
        """This pacer (the :class:`Limiter` interface)."""
        return self

    @property
    def queued(self) -> int:
        """Requests waiting for a slot."""
        return len(self.schedule)

    def offer(self, ask: Ask) -> None:
        """Queue ``ask``; it is granted at once when a slot and a connection are free and it is
        the best candidate."""
        self.schedule.slot_gap = 0.0 if math.isinf(self._rate) else 1.0 / self._rate
        self.schedule.push(ask)
        self._wake(asyncio.get_running_loop())

    def withdraw(self, ask: Ask) -> None:
        """Take ``ask`` out of the queue: its place is free at once."""
        self.schedule.remove(ask)

    async def acquire(self, lane: Lane = Lane.FOLLOW_UP, latest: float | None = None) -> float:
        """Wait for a slot; return the loop time at which it was granted.

        Cancelling the caller while it queues removes it from the queue: deadlines hold.
        """
        return await wait_for_slot(self, lane, latest)

    def finished(self) -> None:
        """A granted request ended: its connection is free for the next candidate."""
        self.schedule.finished()
        if self.schedule:
            self._wake(asyncio.get_running_loop())

    def unused(self, granted_at: float) -> None:
        """A granted slot was not used: its connection is free; the slot itself stays spent
        (the grid counted it, and no window may hold one request more than the limit)."""
        self.finished()

    def on_rate_limited(self, granted_at: float, retry_after: float | None, now: float) -> None:
        """A request granted at ``granted_at`` was answered 429: slow the whole client down.

        The rate is cut at most once per window (the configured period, else 1 s, with a 1 s
        pause): 429s for requests granted before the last cut, or while the server's window
        still holds the burst that caused it, say nothing new.
        """
        self.rate_limited += 1
        if retry_after is not None and retry_after > 0:
            self._paused_until = max(self._paused_until, now + min(retry_after, 3600.0))
        if granted_at <= self._last_decrease or now - self._last_decrease < self._cut_gap:
            return  # the server's window still holds the burst we already reacted to
        decrease = self._limit.decrease if self._limit else 0.5
        min_fraction = self._limit.min_fraction if self._limit else 0.05
        if math.isinf(self._rate):  # first 429 without a configured limit: start from what we sent
            window = min(max(now - self._first_grant, 0.1), self._period)
            observed = sum(1 for t in self._recent if t > now - window) / window
            self._rate = max(observed, _DOCUMENTED_RATE)
            self._recent.clear()
        self._rate = max(self._rate * decrease, self._base * min_fraction)
        self._last_decrease = self._last_increase = now
        if self._limit is None and retry_after is None:
            self._paused_until = max(self._paused_until, now + _UNKNOWN_WINDOW)
        self._next_slot = max(self._next_slot, now + 1.0 / self._rate)

    def resume(self, last_grant: float, fraction: float = 1.0) -> None:
        """Go on from a schedule kept elsewhere (a shared one, before a fallback): the next
        slot is one interval after ``last_grant``, at most ``fraction`` of the full rate."""
        loop = asyncio.get_running_loop()
        if fraction < 1 and not math.isinf(self._rate):
            min_fraction = self._limit.min_fraction if self._limit else 0.05
            floor = self._base * min_fraction
            self._rate = max(min(self._rate, self._ceiling * fraction), floor)
            self._last_increase = loop.time()  # recover from here, a period at a time
        if not math.isinf(self._rate):
            self._next_slot = max(self._next_slot, last_grant + 1.0 / self._rate)
        if self.schedule:
            self._wake(loop)

    def _earliest(self) -> float:
        return max(self._next_slot, self._paused_until)

    def _recover(self, now: float) -> None:
        if self._rate >= self._ceiling or now - self._last_increase < self._period:
            return
        steps = math.floor((now - self._last_increase) / self._period)
        increase = self._limit.increase if self._limit else 0.1
        self._rate = min(self._ceiling, self._rate + steps * increase * self._base)
        self._last_increase += steps * self._period

    def _grant(self, now: float) -> float:
        self._recover(now)
        interval = 0.0 if math.isinf(self._rate) else 1.0 / self._rate
        # Stay on the ideal grid when a wake-up comes less than one interval late, so timer
        # lateness does not leak rate. Grants are never earlier than their grid slot, so a
        # window of ``period`` holds at most floor((period + interval) / interval) of them:
        # with 5 % headroom that is max_requests (19 + 1 for 20 per 10 s).
        slot = self._next_slot if now - self._next_slot < interval else now
        self._next_slot = slot + interval
        if self._limit is None:
            self._recent.append(now)
            self._first_grant = min(self._first_grant, now)
        return now

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._wake_handle is not None:
            self._wake_handle.cancel()
            self._wake_handle = None
        while self.schedule and self.schedule.has_room:
            now = loop.time()
            if now < self._earliest() or not self.schedule.grant(now):
                break
            self._grant(now)
        if self.schedule and self.schedule.has_room:
            self._wake_handle = loop.call_at(self._earliest(), self._wake, loop)

    def close(self) -> None:
        """Drop the wake-up timer; queued asks are withdrawn by their owners."""
        if self._wake_handle is not None:
            self._wake_handle.cancel()
            self._wake_handle = None
