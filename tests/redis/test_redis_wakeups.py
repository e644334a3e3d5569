"""No lost wake-ups with a Redis coordinator (issue 17 item 7): it showed there in real time,
where claims and published results race the steps of the poll loops."""

from __future__ import annotations

import asyncio

from veo4k.redis import RedisCoordinator

from ..test_poll_signals import one_batch
from ._server import RedisServer

RUNS = 6  # the runs of the report that saw 13 waits hang in one; about 2 s each


async def test_a_thousand_wait_batch_with_redis_leaves_no_wait_behind(
    redis_server: RedisServer, namespace: str
) -> None:
    """Real time, tiny delays, a real Redis: runs of 1,000 waits whose callbacks race their
    polls and claims; every wait ends with its 4K."""
    loop = asyncio.get_running_loop()
    for run in range(RUNS):
        start = loop.time()
        url = redis_server.url
        async with RedisCoordinator.from_url(url, namespace=f"{namespace}{run}") as coord:
            ok, errors = await one_batch(1000, coordinator=coord)
        assert (ok, errors) == (1000, []), f"run {run}"
        assert loop.time() - start < 30, f"run {run}"
