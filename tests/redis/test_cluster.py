"""Redis Cluster: a one-node cluster started by the test, killed and restarted under load."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from veo4k.redis import RedisCoordinator
from veo4k.testing import FakeKie

from ._server import RedisServer
from ._util import eventually
from .conftest import Factory


async def test_cluster_killed_and_restarted_falls_back_then_shares_again(
    kie: FakeKie, clients: Factory, own_cluster: RedisServer,
    coordinators: Callable[..., RedisCoordinator], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """redis-py raises ``RedisClusterException`` (not a ``RedisError``) when no node answers:
    waits fall back instead of raising it, the lease renewer and the listener survive, and
    after the restart the processes share results and leases again."""
    options = {"timeout": 0.3, "retry_interval": 0.2, "lease_ttl": 0.6}
    one = coordinators(own_cluster.url, **options)
    two = coordinators(own_cluster.url, **options)
    a, b = clients(one), clients(two)
    await a.wait_for_4k("before")
    await one.subscribed()
    listener, renewer = one._listener, one._leases._renewer
    assert listener is not None
    assert renewer is not None
    subscriptions = listener.subscriptions

    own_cluster.stop()
    with caplog.at_level(logging.WARNING, logger="veo4k"):
        results = await asyncio.gather(*(a.wait_for_4k(f"down{i}") for i in range(3)))
    assert [r.task_id for r in results] == ["down0", "down1", "down2"]
    assert not one.health.up
    assert any("RedisClusterException" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no "unexpected"

    own_cluster.start()
    kie.add_task("after", ready_after=0.3)
    ra, rb = await asyncio.gather(a.wait_for_4k("after"), b.wait_for_4k("after"))
    assert one.health.up
    assert two.health.up
    assert kie.submissions("after") == 1  # one request stream again
    assert min(ra.requests, rb.requests) == 0
    assert one._leases._renewer is renewer
    assert not renewer.done()
    await eventually(lambda: listener.subscriptions > subscriptions)  # resubscribed
    assert listener._task is not None
    assert not listener._task.done()
