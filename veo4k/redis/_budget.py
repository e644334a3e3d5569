"""The account's rate budget in Redis: one GCRA schedule with ranks, shared by every process.

Each process asks for the next slot in the :class:`~veo4k._schedule.Rank` of its best local
candidate and, in the same atomic step (the ``SLOT`` script), publishes which ranks it still
has waiting. The script refuses a rank while the slots are taken and another process has fresh
demand of a rank that goes first: an urgent follow-up of any process before a due poll, a due
poll before a submission (but for the submissions' share), a submission before a spare poll.
A refused process asks again when the slots reserved so far have passed (at least one
interval later). Demand stays fresh until shortly after the process's next call is due
(``timeout`` plus one interval), so a process that died or was cut off stops counting within
about a second; every key has a TTL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .._config import RateLimit
from .._schedule import Demand, Rank
from ._health import Health
from ._limiter import Reservation
from ._messages import text
from ._scope import Scope

__all__ = ["Budget"]

Script = Callable[..., Awaitable[Any]]


def _ttl_ms(period_ms: float) -> int:
    return int(max(60_000.0, 10 * period_ms))


class Budget:
    """The namespace's shared schedule for one account (one per coordinator)."""

    def __init__(self, *, health: Health, scope: Scope, slot: Script, rate_limited: Script):
        self._health = health
        self._scope = scope
        self._slot, self._rate_limited = slot, rate_limited

    def keys(self) -> list[str]:
        """tat, rate, then the processes with demand left per rank up to ``SUBMIT``."""
        key = self._scope.account_key
        return [key("tat"), key("rate"), *(key("want", rank) for rank in range(Rank.SPARE))]

    async def slot(
        self, who: str, interval_ms: float, limit: RateLimit, demand: Demand, share: float
    ) -> Reservation:
        """Reserve the next slot for ``demand.rank``, or be told when to ask again."""
        assert demand.rank is not None
        period_ms = limit.period * 1000.0
        args = [
            interval_ms, _ttl_ms(period_ms), period_ms, limit.increase, who, int(demand.rank),
            "".join("1" if left else "0" for left in demand.left),
            interval_ms + self._health.timeout * 1000.0, share,
        ]  # fmt: skip
        keys = self.keys()
        reply = await self._health.run(lambda: self._slot(keys=keys, args=args), rate=True)
        return Reservation(
            granted=text(reply[0]) == "ok",
            wait_ms=float(reply[1]),
            slot_ms=float(reply[2]),
            factor=float(reply[3]),
        )

    async def rate_limited(
        self, slot_ms: float, retry_after: float | None, limit: RateLimit
    ) -> None:
        """Report a 429 for the request granted at ``slot_ms`` (Redis time)."""
        period_ms = limit.period * 1000.0
        pause_ms = (retry_after or 0.0) * 1000.0
        keys = self.keys()[:2]
        args = [
            slot_ms, pause_ms, limit.decrease, limit.min_fraction, period_ms, _ttl_ms(period_ms),
        ]  # fmt: skip
        await self._health.quietly(lambda: self._rate_limited(keys=keys, args=args), rate=True)

    def retry_in(self) -> float:
        """Seconds until Redis is tried again (0 while it is up)."""
        return self._health.retry_in(asyncio.get_running_loop().time())
