"""Which video index a callback is for, when the namespace's record of the indexes waited for
was lost (a FLUSHALL, a restart without persistence)."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

import veo4k
from veo4k._secret import ApiKey
from veo4k.redis import RedisCoordinator

from ._server import RedisServer

SUCCESS = veo4k.CallbackEvent(
    task_id="T", ok=True, code=200, msg="", result_urls=("https://cdn.example/T_0.mp4",)
)
"""Kie's callback for index 0 of T (it names no index)."""


async def test_a_flushed_index_record_never_gives_a_callback_to_another_index(
    coordinators: Callable[..., RedisCoordinator], own_redis: RedisServer
) -> None:
    """A waits for index 0 of T, B for index 1; Redis is flushed. Index 0's callback then
    comes (kept, of unknown index): B's next claim, alone in the emptied record, must not take
    it as index 1's video, and the renewals rebuild the record of both indexes."""
    a, b = coordinators(own_redis.url), coordinators(own_redis.url)
    for coord in (a, b):
        coord.bind_key(ApiKey("the-account-key"))
    assert (await a.claim("T", 0, "owner-a")).granted
    assert (await b.claim("T", 1, "owner-b")).granted
    raw = aioredis.Redis.from_url(own_redis.url)
    try:
        await raw.flushall()
        await b.publish_callback(SUCCESS)  # index unknown: kept under its URLs only
        b._leases._held[("T", 1, "owner-b")].confirmed -= b._leases.lease_ms  # ask Redis again
        claim = await b.claim("T", 1, "owner-b")
        assert claim.early is None  # index 0's video never ends index 1's wait
        for coord in (a, b):
            await coord._leases._renew_once()
        indexes = {m.decode() for m in await raw.smembers(a._scope.key("idx", "T"))}
        assert {"0", "1"} <= indexes
    finally:
        await raw.aclose()
