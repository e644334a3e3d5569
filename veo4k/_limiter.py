"""One client-wide request pacer: FIFO, adaptive (AIMD) on 429, cancellable while queued.

Why not aiolimiter: its leaky bucket lets ``max_rate`` requests through at once and then drips,
so an account limit of 20 per 10 s sees up to 40 requests in the first 10 s window and Kie
answers the surplus with 429 (``benchmarks/ratelimit.py`` measures it); and its rate is fixed
at construction, while a 429 must lower the rate of the whole client, even one built with no
configured limit. This pacer spaces grants ``1 / rate`` seconds apart (so no window of
``period`` seconds ever holds more than ``max_requests``), serves waiters strictly first come
first served, and changes its rate at run time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
from typing import Protocol

from ._config import RateLimit

__all__ = ["Limiter", "Pacer"]

_OBSERVE_WINDOW = 10.0  # seconds of history used to guess the rate when no limit is configured
_DOCUMENTED_RATE = 2.0  # Kie's documented 20 requests per 10 s: the floor of that guess
_UNKNOWN_WINDOW = 1.0  # without a configured limit: pause and cut at most once per second


class Limiter(Protocol):
    """Hands out request slots; the transport holds one per client."""

    @property
    def pacer(self) -> Pacer:
        """The in-process pacer behind it (the whole limiter, or its fallback)."""

    async def acquire(self) -> float:
        """Wait for a slot; return the loop time it was granted at."""

    def on_rate_limited(self, granted_at: float, retry_after: float | None, now: float) -> None:
        """A request granted at ``granted_at`` was answered 429."""

    def close(self) -> None:
        """Drop timers and background work."""


class Pacer:
    """Hands out request slots in arrival order at the current rate (requests per second)."""

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
        self._waiters: collections.deque[asyncio.Future[float]] = collections.deque()
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
        """This pacer (the :class:`~veo4k._coordination.Limiter` interface)."""
        return self

    @property
    def queued(self) -> int:
        """Waiters still in the queue (cancelled ones may linger until the next wake)."""
        return len(self._waiters)

    async def acquire(self) -> float:
        """Wait for a slot; return the loop time at which it was granted.

        Cancelling the caller while it queues removes it from the queue: deadlines hold.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self._waiters and now >= self._earliest():
            return self._grant(now)
        fut: asyncio.Future[float] = loop.create_future()
        self._waiters.append(fut)
        self._schedule(loop)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted, then cancelled: the slot is spent
                pass
            else:
                self._discard(fut)
            raise

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

    def _discard(self, fut: asyncio.Future[float]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(fut)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._wake_handle is not None or not self._waiters:
            return
        self._wake_handle = loop.call_at(self._earliest(), self._wake, loop)

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        self._wake_handle = None
        while self._waiters:
            now = loop.time()
            if now < self._earliest():
                break
            fut = self._waiters.popleft()
            if fut.done():
                continue
            fut.set_result(self._grant(now))
        self._schedule(loop)

    def close(self) -> None:
        """Drop the wake-up timer; queued waiters are cancelled by their owners."""
        if self._wake_handle is not None:
            self._wake_handle.cancel()
            self._wake_handle = None
