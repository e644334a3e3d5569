"""The shared budget through partial outages (issue 19, item 9): real processes, one of them
behind a TCP proxy that stalls or cuts off its Redis connections. Rate 20 per 1 s."""

from __future__ import annotations

import asyncio
import time

from ._proxy import Proxy
from ._server import RedisServer
from .test_lanes import Grants, Slots, between, workers

LIMIT = 20


def most_in_a_period(grants: Grants, start: float, end: float) -> int:
    """The most grants in any window of (just under) one period starting in [start, end]."""
    times = sorted(at for _, at in grants)
    starts = [at for at in times if start <= at <= end] or [start]
    return max(between(grants, at - 1e-6, at + 0.98) for at in starts)


async def test_a_blip_sends_nothing_the_shared_schedule_did_not_grant(
    proxy: Proxy, redis_server: RedisServer, namespace: str
) -> None:
    """One Redis call of one process times out (its connection stalls 0.8 s, timeout 0.2 s)
    while another process keeps the budget busy. Its fallback pacer goes on from the last
    shared slot (next one a fallback interval later: 1 per second at 1/4 of 4 per second), and
    Redis, back after the 0.5 s retry, is asked first: no period holds more than the limit.
    (Kie's ratio: 2.1 s against the defaults' 0.5 s timeout and 1 s retry.)"""
    timing = ("--rate", "4/1", "--timeout", "0.2", "--retry-interval", "0.5")
    blipped = await Slots.start(proxy.url, namespace, "submit:10", *timing)
    other = await Slots.start(redis_server.url, namespace, "submit:14", "--rate", "4/1")
    async with workers(blipped, other):
        await asyncio.gather(blipped.go(), other.go())
        for _ in range(3):
            await blipped.next_grant()
        blip = time.time()
        await proxy.stall(0.8)
        grants = [*await blipped.done(), *await other.done()]
    assert blipped.stats["outages"] == 1
    # a fresh pacer granted at once: 5 in a period
    assert most_in_a_period(grants, blip - 1.0, blip + 2.0) <= 4
    assert between(blipped.grants, blip, blip + 1.0) <= 1  # the slot it had reserved


async def test_a_process_cut_off_alone_stays_within_its_share(
    proxy: Proxy, redis_server: RedisServer, namespace: str
) -> None:
    """A process cut off from Redis while another keeps it falls back to its documented share
    (``fallback_share`` of ``rate_limit``, 1/4: 5 per second here) from the last shared slot,
    never in a burst, and shares the budget again once it is back."""
    timing = ("--timeout", "0.2", "--retry-interval", "0.5")
    cut_off = await Slots.start(proxy.url, namespace, "submit:60", *timing)
    other = await Slots.start(redis_server.url, namespace, "submit:100")
    async with workers(cut_off, other):
        await asyncio.gather(cut_off.go(), other.go())
        for _ in range(5):
            await cut_off.next_grant()
        cut = time.time()
        proxy.cut()
        await asyncio.sleep(2.0)  # the outage being measured
        proxy.restore()
        restored = time.time()
        await cut_off.done()
        await other.done()
    alone = sorted(at for _, at in cut_off.grants if cut < at < restored)
    # the slot it had reserved before the cut, then its share
    assert 2 <= len(alone) <= 1 + 0.25 * LIMIT * (restored - cut), alone
    assert alone[1] - alone[0] >= 0.9 / (0.25 * LIMIT * 0.95)  # no burst: its share's pace
    assert cut_off.stats["outages"] >= 1
    # the other process kept the shared budget (about 19 per second) meanwhile
    assert between(other.grants, cut, restored) >= 0.8 * 19 * (restored - cut)
