"""RedisLimiter over a stand-in for the shared schedule (no server; virtual time): local
candidates in the schedule's order, a slot handed out ahead of its time, spares."""

from __future__ import annotations

import asyncio

import veo4k
from veo4k._schedule import Demand, Lane
from veo4k.redis._limiter import RedisLimiter, Reservation

from ..virtual import virtual_time

LIMIT = veo4k.RateLimit(max_requests=10, period=1.0)  # with 95 % headroom: one slot per 105 ms


class OneProcessGCRA:
    """The shared schedule as the SLOT script keeps it, for one process, in loop time."""

    def __init__(self) -> None:
        self.tat = 0.0
        self.reserved: list[float] = []

    async def slot(
        self, who: str, interval_ms: float, limit: object, demand: Demand, share: float
    ) -> Reservation:
        now = asyncio.get_running_loop().time() * 1000.0
        slot = max(self.tat, now)
        self.tat = slot + interval_ms
        self.reserved.append(slot / 1000.0)
        return Reservation(granted=True, wait_ms=slot - now, slot_ms=slot, factor=1.0)

    async def rate_limited(self, slot_ms: float, retry_after: float | None, limit: object) -> None:
        return None

    def retry_in(self) -> float:
        return 0.0


def limiter() -> tuple[RedisLimiter, OneProcessGCRA]:
    shared = OneProcessGCRA()
    return RedisLimiter(shared, LIMIT, share=0.25, headroom=0.95), shared


@virtual_time
async def test_local_candidates_go_in_the_schedules_order() -> None:
    """Submissions queued first, a follow-up asked for later: the follow-up gets the next
    slot not handed out yet (s2's was, one reservation ahead), before s3 and s4; one
    reservation at a time, each on the shared schedule's beat."""
    redis_limiter, shared = limiter()
    order: list[str] = []

    async def take(name: str, lane: Lane) -> None:
        await redis_limiter.acquire(lane)
        order.append(name)

    tasks = [asyncio.create_task(take(f"s{i}", Lane.SUBMIT)) for i in range(5)]
    await asyncio.sleep(0.15)  # s0 and s1 have their slots
    tasks.append(asyncio.create_task(take("confirm", Lane.FOLLOW_UP)))
    await asyncio.gather(*tasks)
    assert order == ["s0", "s1", "s2", "confirm", "s3", "s4"]
    gaps = [b - a for a, b in zip(shared.reserved, shared.reserved[1:], strict=False)]
    assert all(abs(gap - 1 / 9.5) < 1e-6 for gap in gaps)
    assert len(shared.reserved) == 6  # one reservation per request: none wasted
    redis_limiter.close()


@virtual_time
async def test_a_slot_is_handed_out_ahead_of_its_time() -> None:
    """The next slot goes to its candidate when it is reserved, stamped with its time: a
    claim the request makes first overlaps the wait instead of making it late."""
    redis_limiter, shared = limiter()
    loop = asyncio.get_running_loop()
    first = await redis_limiter.acquire()
    assert first == loop.time()
    second = await redis_limiter.acquire()
    assert second - loop.time() == 1 / 9.5  # handed now, to be used at its time
    assert shared.reserved == [first, second]
    redis_limiter.close()


@virtual_time
async def test_an_unused_slot_goes_to_the_next_candidate() -> None:
    """A slot handed back unused (another process polls the task) is a spare: the next local
    candidate takes it instead of reserving one more."""
    redis_limiter, shared = limiter()
    granted = await redis_limiter.acquire()
    redis_limiter.unused(granted)
    assert await redis_limiter.acquire() == granted
    assert len(shared.reserved) == 1
    redis_limiter.close()
