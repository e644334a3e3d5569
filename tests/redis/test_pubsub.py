"""Pub/sub that survives real network trouble: a half-open connection, a killed subscription,
and every client of a process hearing of a result at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

import veo4k
from veo4k._secret import ApiKey
from veo4k.redis import RedisCoordinator
from veo4k.testing import FakeKie

from ._proxy import Proxy
from ._server import RedisServer
from ._util import SLOW, eventually, submitted
from .conftest import Factory

FAST_CHECKS = {"timeout": 0.3, "retry_interval": 0.2, "health_check_interval": 0.3}


def ready(task_id: str) -> veo4k.FourKStatus:
    """What a poll in another process saw."""
    return veo4k.FourKStatus(
        task_id=task_id, index=0, ready=True, result_urls=(f"https://cdn.example/{task_id}.mp4",)
    )


async def test_a_half_open_subscription_is_replaced_and_the_gap_caught_up(
    proxy: Proxy, kie: FakeKie, clients: Factory,
    coordinators: Callable[..., RedisCoordinator], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """A proxy silently drops the established pub/sub connection: the PING health check
    notices, the listener resubscribes and re-reads the kept result published meanwhile, so
    the wait ends in about a second, not at its poll 30 s later; commands never fell back."""
    kie.add_task("gap", ready_after=60.0)
    here = coordinators(proxy.url, **FAST_CHECKS)
    elsewhere = coordinators()
    elsewhere.bind_key(ApiKey(kie.api_key))  # a process of the same account
    client = clients(here)
    await here.subscribed()
    wait = await submitted(client, "gap")
    assert proxy.blackhole_pubsub() == 1
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.INFO, logger="veo4k"):
        await elsewhere.publish_result(ready("gap"), "another-process")
        result = await asyncio.wait_for(wait, 10)
    assert loop.time() - started < 5.0
    assert result.video_url == "https://cdn.example/gap.mp4"
    assert result.requests == 1
    assert here._caught_up >= 1  # the resubscribe's read ended it, not a message
    assert here.health.outages == 0
    assert here.health.fallbacks == 0
    lost = [r for r in caplog.records if "pub/sub" in r.getMessage() and "lost" in r.getMessage()]
    assert len(lost) == 1


async def test_a_killed_subscription_catches_up_without_falling_back(
    kie: FakeKie, clients: Factory, coordinators: Callable[..., RedisCoordinator],
    redis_server: RedisServer,
) -> None:  # fmt: skip
    """``CLIENT KILL TYPE pubsub`` and a result published before the listener is back: the
    resubscribe reads it; slots and leases stayed on Redis all along."""
    kie.add_task("killed", ready_after=60.0)
    here, elsewhere = coordinators(**FAST_CHECKS), coordinators()
    elsewhere.bind_key(ApiKey(kie.api_key))
    client = clients(here)
    await here.subscribed()
    wait = await submitted(client, "killed")
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
    finally:
        await admin.aclose()
    await elsewhere.publish_result(ready("killed"), "another-process")
    result = await asyncio.wait_for(wait, 10)
    assert result.requests == 1
    assert here._caught_up >= 1
    assert here._listener is not None
    assert here._listener.subscriptions == 2
    assert here.health.outages == 0
    assert here.health.up


async def test_every_client_sharing_a_coordinator_hears_of_a_result_at_once(
    kie: FakeKie, clients: Factory, coordinators: Callable[..., RedisCoordinator]
) -> None:
    """Two clients of one process on one coordinator (the documented pattern): the one that
    follows learns the other's result when it is seen, not at its own next poll."""
    kie.add_task("two", ready_after=0.3)
    shared = coordinators()
    polling, following = clients(shared), clients(shared)
    first = asyncio.ensure_future(polling.wait_for_4k("two"))
    await eventually(lambda: kie.posts("two") >= 1)  # the first client holds the lease
    loop = asyncio.get_running_loop()
    started = loop.time()
    second = await asyncio.wait_for(following.wait_for_4k("two", poll_policy=SLOW), 10)
    assert loop.time() - started < 3.0  # not the follower's poll, 30 s later
    assert second.requests == 0
    assert (await first).result_urls == second.result_urls
    assert kie.submissions("two") == 1
