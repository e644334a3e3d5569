"""Task leases under cancellation, lost ownership and a small connection pool."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import redis.asyncio as aioredis

import veo4k
from veo4k._schedule import Demand, Rank
from veo4k._secret import ApiKey
from veo4k.redis import RedisCoordinator
from veo4k.testing import FakeKie

from ._server import RedisServer
from ._util import eventually
from .conftest import Factory


async def leases_left(server: RedisServer, coord: RedisCoordinator) -> list[bytes]:
    raw = aioredis.Redis.from_url(server.url)
    try:
        return [k async for k in raw.scan_iter(match=coord._leases.key("*", "*"), count=1000)]
    finally:
        await raw.aclose()


async def test_claims_cancelled_at_random_points_leave_no_lease(
    coordinators: Callable[..., RedisCoordinator], redis_server: RedisServer
) -> None:
    """300 claims, each cancelled at a random moment of the time 300 claims take (queued, in
    flight, or answered): the ones that ended normally are released as a wait would, and then
    no lease is left, none waiting for its 10 s TTL."""
    coord = coordinators()
    coord.bind_key(ApiKey("the-account-key"))
    loop = asyncio.get_running_loop()
    warm = [f"warm{i}" for i in range(300)]  # the pool's connections open, scripts loaded
    started = loop.time()
    await asyncio.gather(*(coord.claim(task_id, 0, "me") for task_id in warm))
    span = loop.time() - started
    for task_id in warm:
        coord.release(task_id, 0, "me")
    await eventually(lambda: not coord._leases._tasks)
    rng = random.Random(19)
    claims = [asyncio.ensure_future(coord.claim(f"cancel{i}", 0, "me")) for i in range(300)]
    for claim in claims:
        loop.call_later(rng.uniform(0.0, 1.5 * span), claim.cancel)
    await asyncio.gather(*claims, return_exceptions=True)
    cancelled = [c.cancelled() for c in claims]
    assert 0 < sum(cancelled) < len(claims)  # both kinds happened
    for i, was_cancelled in enumerate(cancelled):
        if not was_cancelled:
            coord.release(f"cancel{i}", 0, "me")  # the wait ended: it frees its lease
    await eventually(lambda: not coord._leases._tasks)  # the frees are done
    assert await leases_left(redis_server, coord) == []
    assert coord.health.outages == 0


async def test_waits_cancelled_at_random_points_leave_no_lease(
    kie: FakeKie, clients: Factory, coordinators: Callable[..., RedisCoordinator],
    redis_server: RedisServer,
) -> None:  # fmt: skip
    """The same through the public API: 100 waits cancelled at random moments."""
    coord = coordinators()
    client = clients(coord)
    for i in range(100):
        kie.add_task(f"w{i}", ready_after=5.0)
    loop = asyncio.get_running_loop()
    rng = random.Random(17)
    waits = [asyncio.ensure_future(client.wait_for_4k(f"w{i}")) for i in range(100)]
    for wait in waits:
        loop.call_later(rng.uniform(0.0, 0.05), wait.cancel)
    await asyncio.gather(*waits, return_exceptions=True)
    assert all(w.cancelled() for w in waits)
    await eventually(lambda: not coord._leases._tasks)
    assert await leases_left(redis_server, coord) == []


async def test_a_holder_that_may_have_lost_its_lease_checks_and_never_frees_anothers(
    coordinators: Callable[..., RedisCoordinator], redis_server: RedisServer
) -> None:
    """A's event loop stalled past its lease; B took the task over. A asks Redis before it
    polls again (it is told to follow), and its result neither deletes nor extends B's lease:
    every script checks the lease's token."""
    a, b = coordinators(lease_ttl=1.0), coordinators(lease_ttl=1.0)
    for coord in (a, b):
        coord.bind_key(ApiKey("the-account-key"))
    assert (await a.claim("fence", 0, "owner-a")).granted
    assert (await a.claim("fence", 0, "owner-a")).granted  # confirmed just now: no round trip
    trips = a.health.round_trips
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        lease = a._leases.key("fence", 0)
        await raw.delete(lease)  # it expired while A's loop was stalled...
        assert (await b.claim("fence", 0, "owner-b")).granted  # ...and B took over
        b_token = await raw.get(lease)
        # A wakes up: its lease was last confirmed more than half a lease ago
        a._leases._held[("fence", 0, "owner-a")].confirmed -= 1.0
        claim = await a.claim("fence", 0, "owner-a")
        assert not claim.granted  # it follows B instead of polling Kie too
        assert a.health.round_trips == trips + 1
        # a late result of A (its poll was in flight) keeps B's lease
        seen = veo4k.FourKStatus(task_id="fence", index=0, ready=True, result_urls=("u",))
        await a.publish_result(seen, "owner-a")
        a.release("fence", 0, "owner-a")
        await a._leases._renew_once()
        await eventually(lambda: not a._leases._tasks)
        assert await raw.get(lease) == b_token
        assert await raw.pttl(lease) <= 1000
    finally:
        await raw.aclose()


async def test_a_publish_cancelled_in_flight_still_keeps_the_result_and_frees_the_lease(
    coordinators: Callable[..., RedisCoordinator], redis_server: RedisServer
) -> None:
    """A's poll saw the result and its wait is cancelled while the publish is on its way to
    Redis (a slow round trip): the result is still kept and the lease freed, so B ends at once
    from the kept result instead of waiting out the lease and asking Kie again."""
    a, b = coordinators(timeout=10.0), coordinators(timeout=10.0)
    for coord in (a, b):
        coord.bind_key(ApiKey("the-account-key"))
    assert (await a.claim("late", 0, "owner-a")).granted
    entered, go = asyncio.Event(), asyncio.Event()
    script = a._pub_result

    async def slow_publish(**kwargs: object) -> object:
        entered.set()
        await go.wait()  # the round trip is slow: the wait is cancelled meanwhile
        return await script(**kwargs)

    a._pub_result = slow_publish  # type: ignore[assignment]
    seen = veo4k.FourKStatus(task_id="late", index=0, ready=True, result_urls=("u",))
    publish = asyncio.ensure_future(a.publish_result(seen, "owner-a"))
    await entered.wait()
    publish.cancel()
    await asyncio.gather(publish, return_exceptions=True)
    assert publish.cancelled()
    a.release("late", 0, "owner-a")  # the wait ends, as a cancelled wait's would
    go.set()
    await eventually(lambda: not a._leases._tasks)
    assert await leases_left(redis_server, a) == []
    claim = await b.claim("late", 0, "owner-b")
    assert claim.result is not None
    assert claim.result.result_urls == ("u",)


async def test_a_user_pool_of_20_serves_500_waits_without_an_outage(
    kie: FakeKie, clients: Factory, redis_server: RedisServer, namespace: str
) -> None:
    """``Redis(max_connections=20)`` built by the app: calls in flight follow its size, the rest
    queue; 500 waits at once see no fallback, and every task is submitted once."""
    pool = aioredis.Redis.from_url(redis_server.url, max_connections=20)
    coord = RedisCoordinator(pool, namespace=namespace)
    assert coord.health.limit == 19  # one connection stays free for the pub/sub listener
    client = clients(coord)
    ids = [f"p{i}" for i in range(500)]
    for task_id in ids:
        kie.add_task(task_id, ready_after=0.0)
    try:
        results = await client.wait_for_4k_many(ids)
        assert [r.task_id for r in results] == ids
        assert coord.health.outages == 0
        assert coord.health.fallbacks == 0
        assert max(kie.submissions(t) for t in ids) == 1
        assert coord.health.round_trips >= 1000  # a claim and a result per task, all on Redis
    finally:
        await client.aclose()
        await coord.aclose()
        await pool.aclose()


async def test_a_pool_shared_with_the_app_is_queueing_not_an_outage(
    redis_server: RedisServer, namespace: str
) -> None:
    """The app holds most of the pool's connections (blocking reads): claims that find it full
    wait for a connection within their timeout, or fall back alone; Redis is never declared
    down for it."""
    pool = aioredis.Redis.from_url(redis_server.url, max_connections=8)
    coord = RedisCoordinator(pool, namespace=namespace, timeout=0.5)
    coord.bind_key(ApiKey("the-account-key"))
    app = [asyncio.ensure_future(pool.blpop([f"{namespace}:nothing"], timeout=1)) for _ in range(6)]
    try:
        await eventually(lambda: len(pool.connection_pool._in_use_connections) >= 6)
        claims = await asyncio.gather(*(coord.claim(f"s{i}", 0, "me") for i in range(100)))
        assert len(claims) == 100
        assert coord.health.outages == 0
        assert coord.health.up
    finally:
        await asyncio.gather(*app, return_exceptions=True)
        await coord.aclose()
        await pool.aclose()


async def test_a_burst_of_claims_does_not_hold_a_rate_slot_back(
    redis_server: RedisServer, namespace: str
) -> None:
    """A pool of 20 and 2,000 claims at once: a slot asked for after them is answered while
    most of them still queue (the rate budget's calls have places of their own; queued behind
    the claims, a slot waited ~260 ms, lost time on the shared schedule)."""
    pool = aioredis.Redis.from_url(redis_server.url, max_connections=20)
    coord = RedisCoordinator(pool, namespace=namespace)
    coord.bind_key(ApiKey("the-account-key"))
    limit = veo4k.RateLimit(max_requests=20, period=1.0)
    urgent = Demand(Rank.URGENT, (False, False, False))
    try:
        await coord.budget.slot("warm", 50.0, limit, urgent, 0.25)  # the script is loaded
        claims = [asyncio.ensure_future(coord.claim(f"b{i}", 0, "me")) for i in range(2000)]
        for _ in range(3):  # each claim's round trip (a task of its own) reaches the queue
            await asyncio.sleep(0)
        assert coord.health._slots.locked()  # the claims fill every place they may use
        reserved = await coord.budget.slot("me", 50.0, limit, urgent, 0.25)
        pending = sum(not claim.done() for claim in claims)
        await asyncio.gather(*claims)
        assert reserved.granted
        assert pending > 1000, pending
        assert coord.health.fallbacks == 0
    finally:
        await coord.aclose()
        await pool.aclose()
