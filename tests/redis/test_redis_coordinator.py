"""RedisCoordinator in one process against a real Redis: each coordinator stands for a process."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

import veo4k
from veo4k._schedule import Demand, Rank
from veo4k._secret import ApiKey
from veo4k.redis import RedisCoordinator
from veo4k.testing import FAST_POLICY, FAST_RETRY, FakeKie

from ._server import RedisServer, free_port
from ._util import SLOW
from .conftest import Factory


async def test_same_task_is_one_request_stream_and_a_finished_one_costs_nothing(
    kie: FakeKie, coordinators: Callable[..., RedisCoordinator], clients: Factory
) -> None:
    kie.add_task("t1", ready_after=0.3)
    a, b = clients(coordinators()), clients(coordinators())
    ra, rb = await asyncio.gather(a.wait_for_4k("t1"), b.wait_for_4k("t1"))
    assert ra.result_urls == rb.result_urls
    assert kie.submissions("t1") == 1
    # one stream: the follower sent nothing, the holder polled about every 20-50 ms
    assert min(ra.requests, rb.requests) == 0
    assert kie.posts("t1") == ra.requests + rb.requests
    # a stateless worker asking later: the kept result, 0 requests to Kie
    posts = kie.posts("t1")
    late = await clients(coordinators()).wait_for_4k("t1")
    assert (late.requests, kie.posts("t1")) == (0, posts)
    assert late.result_urls == ra.result_urls


async def test_callback_received_by_one_process_ends_waits_in_another(
    kie: FakeKie, coordinators: Callable[..., RedisCoordinator], clients: Factory
) -> None:
    kie.add_task("t2", ready_after=0.2)
    receiving, waiting = coordinators(), coordinators()
    receiver = veo4k.CallbackReceiver(token="shared-token", coordinator=receiving)
    async with veo4k.CallbackServer(receiver) as server:
        url = server.url
        client = clients(waiting, trust_callback_urls=True)
        # the waiting process runs no server: it only knows the app's public callback URL
        result = await client.wait_for_4k("t2", callback_url=url, poll_policy=SLOW, timeout=5)
    assert result.via_callback
    assert result.requests == 1  # the submission; the callback ended it
    assert receiver.received == 1


async def test_duplicate_deliveries_to_two_workers_end_each_wait_once(
    kie: FakeKie, coordinators: Callable[..., RedisCoordinator], clients: Factory
) -> None:
    kie.add_task("t3", ready_after=0.1)
    one, two, three = coordinators(), coordinators(), coordinators()
    r1 = veo4k.CallbackReceiver(token="tok", coordinator=one)
    r2 = veo4k.CallbackReceiver(token="tok", coordinator=two)
    client = clients(three)
    submitted = asyncio.Event()
    wait = asyncio.ensure_future(
        client.wait_for_4k("t3", poll_policy=SLOW, on_update=lambda e: submitted.set())
    )
    await submitted.wait()
    await three.subscribed()
    await asyncio.sleep(0.15)  # the 4K is ready now; only a callback can tell the wait so
    raw = json.dumps(kie.callback_payload(kie.tasks["t3"], 0)).encode()
    await r1.handle(raw, {}, token="tok")
    await r2.handle(raw, {}, token="tok")
    result = await asyncio.wait_for(wait, 5)
    # untrusted: the callback triggered one confirming poll, not one per delivery
    assert result.via_callback
    assert result.requests == 2
    await r1.aclose()
    await r2.aclose()


async def test_shared_budget_two_processes_stay_within_the_limit(
    coordinators: Callable[..., RedisCoordinator],
) -> None:
    async with FakeKie(ready_after=0.3, rate_limit=(10, 0.5)) as fake:
        limit = veo4k.RateLimit(max_requests=10, period=0.5)
        made = [
            veo4k.Veo4kClient(
                fake.api_key,
                base_url=fake.base_url,
                poll_policy=FAST_POLICY,
                retry_policy=FAST_RETRY,
                rate_limit=limit,
                coordinator=coordinators(),
            )
            for _ in range(2)
        ]
        try:
            results = await asyncio.gather(
                made[0].wait_for_4k_many([f"a{i}" for i in range(8)]),
                made[1].wait_for_4k_many([f"b{i}" for i in range(8)]),
            )
        finally:
            for c in made:
                await c.aclose()
        assert sum(len(r) for r in results) == 16
        assert fake.stats.rate_limited == 0
        assert fake.max_in_window(0.5) <= 10


async def test_redis_unavailable_never_fails_a_wait_and_warns_once(
    kie: FakeKie, clients: Factory, caplog: pytest.LogCaptureFixture, namespace: str
) -> None:
    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"  # nobody listens there
    coord = RedisCoordinator.from_url(url, namespace=namespace, timeout=0.2)
    assert "s3cret-pw" not in repr(coord)
    assert "redis://***@127.0.0.1" in repr(coord)
    client = clients(coord)
    with caplog.at_level(logging.WARNING, logger="veo4k"):
        results = await client.wait_for_4k_many([f"d{i}" for i in range(5)])
    assert len(results) == 5
    warnings = [r for r in caplog.records if "Redis" in r.getMessage()]
    assert len(warnings) == 1
    assert "s3cret-pw" not in caplog.text
    assert "unavailable" in repr(coord)
    await client.aclose()
    await coord.aclose()


async def test_keys_have_ttls_and_hold_no_secrets(
    kie: FakeKie, coordinators: Callable[..., RedisCoordinator], clients: Factory,
    redis_server: RedisServer, namespace: str,
) -> None:  # fmt: skip
    kie.add_task("t5", ready_after=0.1)
    receiving = coordinators()
    receiver = veo4k.CallbackReceiver(token="my-secret-token", coordinator=receiving)
    async with veo4k.CallbackServer(receiver) as server:
        await clients(coordinators()).wait_for_4k("t5", callback_url=server.url)
        await asyncio.sleep(0.2)  # the callback lands after the result
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        keys = [k async for k in raw.scan_iter(match=f"veo4k:{{{namespace}}}:*")]
        assert keys, "the run left no keys at all"
        for key in keys:
            assert await raw.pttl(key) > 0, key
            value = await raw.dump(key)
            assert value is not None
            for secret in (kie.api_key, "my-secret-token"):
                assert secret.encode() not in key
                assert secret.encode() not in value
    finally:
        await raw.aclose()


async def test_client_accepts_the_apps_own_receiver(
    kie: FakeKie, coordinators: Callable[..., RedisCoordinator], clients: Factory
) -> None:
    kie.add_task("t6", ready_after=0.2)
    coord = coordinators()
    receiver = veo4k.CallbackReceiver(token="app-token", coordinator=coord)
    async with veo4k.CallbackServer(receiver, port=0) as server:  # stands for the app's route
        public = f"http://127.0.0.1:{server.port}/veo4k/callback"
        client = clients(coord, callbacks=receiver, callback_url=public, trust_callback_urls=True)
        result = await client.wait_for_4k("t6", timeout=5)
    assert result.via_callback
    assert result.requests == 1
    with pytest.raises(veo4k.ConfigurationError):
        veo4k.Veo4kClient(kie.api_key, callbacks=receiver)  # a receiver needs callback_url


def test_receiver_token_is_shared_by_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VEO4K_CALLBACK_TOKEN", raising=False)
    assert veo4k.CallbackReceiver("k1").token == veo4k.CallbackReceiver("k1").token
    assert veo4k.CallbackReceiver("k1").token != veo4k.CallbackReceiver("k2").token
    assert "k1" not in veo4k.CallbackReceiver("k1").token
    assert veo4k.CallbackReceiver().token != veo4k.CallbackReceiver().token
    monkeypatch.setenv("VEO4K_CALLBACK_TOKEN", "from-env")
    assert veo4k.CallbackReceiver().token == "from-env"


async def test_client_never_closes_a_coordinator_it_was_given(
    kie: FakeKie, coordinators: Callable[..., RedisCoordinator], clients: Factory
) -> None:
    coord = coordinators()
    async with clients(coord) as first:
        await first.wait_for_4k("t7")
    async with clients(coord) as second:  # the same coordinator serves the next client
        result = await second.wait_for_4k("t7")
    assert result.requests == 0  # kept result
    with pytest.raises(veo4k.ConfigurationError):
        RedisCoordinator.from_url("redis://localhost:6379/0", namespace="a{b}")


async def test_a_429_in_one_process_slows_all_and_deadlines_hold_while_queued(
    kie: FakeKie, coordinators: Callable[..., RedisCoordinator], clients: Factory,
    redis_server: RedisServer, namespace: str,
) -> None:  # fmt: skip
    limit = veo4k.RateLimit(max_requests=10, period=1.0)
    one, two = coordinators(), coordinators()
    one.bind_key(ApiKey(kie.api_key))
    urgent = Demand(Rank.URGENT, (False, False, False))
    reserved = await one.budget.slot("one", 100.0, limit, urgent, 0.25)
    # a 429 answered that request, with Retry-After: 5 s: the whole namespace pauses and slows
    await one.budget.rate_limited(reserved.slot_ms, 5.0, limit)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        assert float(await raw.hget(one._scope.account_key("rate"), "f")) == 0.5
    finally:
        await raw.aclose()
    other = clients(two, rate_limit=limit)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(veo4k.WaitTimeoutError):
        await other.wait_for_4k("queued", timeout=0.3)
    assert loop.time() - started < 1.0  # the deadline held while the wait queued
    assert kie.posts("queued") == 0  # the other process respected the pause


async def test_listener_stays_subscribed_without_reconnecting(
    coordinators: Callable[..., RedisCoordinator],
) -> None:
    coord = coordinators()
    await coord.subscribed()
    trips = coord.health.round_trips
    await asyncio.sleep(1.5)  # idle longer than the socket timeout (0.5 s) and get_message's 1 s
    assert coord.health.outages == 0
    assert coord.health.up
    assert coord.health.round_trips == trips


async def test_callback_before_anyone_waits_is_kept_for_a_later_wait_elsewhere(
    kie: FakeKie, coordinators: Callable[..., RedisCoordinator], clients: Factory
) -> None:
    kie.add_task("t8", ready_after=0.0)
    receiving, later = coordinators(), coordinators()
    receiver = veo4k.CallbackReceiver(token="tok", coordinator=receiving)
    raw = json.dumps(kie.callback_payload(kie.tasks["t8"], 0)).encode()
    await receiver.handle(raw, {}, token="tok")
    await receiver.aclose()  # published and kept (nobody waited yet)
    result = await clients(later, trust_callback_urls=True).wait_for_4k("t8", timeout=5)
    assert result.requests == 0  # ended by the kept callback: not one request to Kie
    assert result.video_url == kie.result_url("t8")
    assert result.via_callback  # as when the callback came to this process
    # too large to keep: published, but not stored
    small = coordinators(max_event_bytes=10)
    big = veo4k.CallbackReceiver(token="tok", coordinator=small)
    kie.add_task("t9", ready_after=0.0)
    await big.handle(json.dumps(kie.callback_payload(kie.tasks["t9"], 0)).encode(), {}, token="tok")
    await big.aclose()
    claim = await later.claim("t9", 0, "someone")
    assert claim.early is None


async def test_cluster_url_shares_one_stream_and_callbacks(
    kie: FakeKie, clients: Factory, cluster_redis: RedisServer, namespace: str
) -> None:
    kie.add_task("c1", ready_after=0.2)
    kie.add_task("c2", ready_after=0.2)
    made = [RedisCoordinator.from_url(cluster_redis.url, namespace=namespace) for _ in range(2)]
    a, b = made
    try:
        results = await asyncio.gather(clients(a).wait_for_4k("c1"), clients(b).wait_for_4k("c1"))
        assert sorted(r.requests for r in results)[0] == 0  # one stream between them
        assert kie.submissions("c1") == 1
        receiver = veo4k.CallbackReceiver(token="tok", coordinator=a)
        async with veo4k.CallbackServer(receiver) as server:
            waiter = clients(b, trust_callback_urls=True)
            result = await waiter.wait_for_4k("c2", callback_url=server.url, poll_policy=SLOW)
        assert result.via_callback
        assert (a.health.outages, b.health.outages) == (0, 0)
    finally:
        for coord in made:
            await coord.aclose()


async def test_a_busy_process_does_not_starve_another(
    coordinators: Callable[..., RedisCoordinator],
) -> None:
    limit = veo4k.RateLimit(max_requests=20, period=1.0)  # one slot per ~53 ms
    made = [coordinators(), coordinators()]
    for coord in made:
        coord.bind_key(ApiKey("the-account-key"))
    busy, quiet = (coord.limiter(limit) for coord in made)
    loop = asyncio.get_running_loop()
    backlog = [asyncio.ensure_future(busy.acquire()) for _ in range(20)]
    await asyncio.wait(backlog, return_when=asyncio.FIRST_COMPLETED)
    started = loop.time()
    await asyncio.gather(quiet.acquire(), quiet.acquire())
    # the quiet process takes turns with the busy one: not behind its 20-slot backlog (~1 s)
    assert loop.time() - started < 0.5
    assert sum(f.done() for f in backlog) < 10
    for f in backlog:
        f.cancel()
    await asyncio.gather(*backlog, return_exceptions=True)
    busy.close()
    quiet.close()


async def test_a_slow_redis_falls_back_then_rejoins(
    kie: FakeKie, clients: Factory, own_redis: RedisServer, namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    coord = RedisCoordinator.from_url(own_redis.url, namespace=namespace, timeout=0.2)
    client = clients(coord)
    await client.wait_for_4k("before")
    blocker = aioredis.Redis.from_url(own_redis.url)
    with caplog.at_level(logging.INFO, logger="veo4k"):
        # every client's commands wait 1 s (DEBUG SLEEP is off by default on Redis 7); this
        # PING answers when the pause ends
        await blocker.execute_command("CLIENT", "PAUSE", "1000")
        stall = asyncio.ensure_future(blocker.ping())
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await client.wait_for_4k_many([f"slow{i}" for i in range(3)])
        assert len(results) == 3
        assert loop.time() - started < 1.0  # served by the local fallback meanwhile
        await stall
        await blocker.aclose()
        assert not coord.health.up
        await asyncio.sleep(coord.health.retry_interval)  # the next call probes Redis again
        await client.wait_for_4k("after")
        assert coord.health.up
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1
    assert sum("is back:" in r.getMessage() for r in caplog.records) == 1
    await client.aclose()
    await coord.aclose()


async def test_the_lease_of_a_dead_holder_is_taken_over(
    kie: FakeKie, coordinators: Callable[..., RedisCoordinator], clients: Factory,
    redis_server: RedisServer, namespace: str,
) -> None:  # fmt: skip
    kie.add_task("h1", ready_after=0.0)
    coord = coordinators()
    client = clients(coord)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:  # a process took the lease and died: nobody renews it, it expires in 0.4 s
        await raw.set(coord._leases.key("h1", 0), "dead-process", px=400)
    finally:
        await raw.aclose()
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await client.wait_for_4k("h1", timeout=5)
    assert loop.time() - started >= 0.3  # it followed the (dead) holder until the lease expired
    assert result.requests >= 1  # then polled itself
    assert kie.submissions("h1") == 1


async def test_a_wait_that_ends_early_hands_its_lease_over_at_once(
    kie: FakeKie, coordinators: Callable[..., RedisCoordinator], clients: Factory
) -> None:
    """The holder's wait times out: it frees the task's lease as it leaves, so the follower in
    another process polls at once instead of waiting out the 10 s lease."""
    kie.add_task("h2", ready_after=1.0)
    holding = asyncio.Event()
    holder = clients(coordinators())
    first = asyncio.create_task(
        holder.wait_for_4k("h2", timeout=0.4, on_update=lambda event: holding.set())
    )
    await holding.wait()  # the holder has sent its submission: it holds the lease
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await clients(coordinators()).wait_for_4k("h2", timeout=5)
    with pytest.raises(veo4k.WaitTimeoutError):
        await first
    assert result.requests >= 1  # it took over the polling
    assert loop.time() - started < 3.0  # long before the lease would have expired
    assert kie.submissions("h2") == 1


def test_default_namespace_derives_from_the_clients_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without namespace=, the client's own key decides it (not KIE_API_KEY), salted: the key
    shows nowhere; construction needs no key in the environment; another key is refused."""
    monkeypatch.delenv("KIE_API_KEY", raising=False)
    one = RedisCoordinator.from_url("redis://localhost:6379/0")
    two = RedisCoordinator.from_url("redis://:pw@localhost:6379/0")
    veo4k.Veo4kClient("sk-very-secret", coordinator=one)
    monkeypatch.setenv("KIE_API_KEY", "sk-other-key")  # the client's key wins over this
    veo4k.Veo4kClient("sk-very-secret", coordinator=two)
    assert one.namespace == two.namespace
    assert "secret" not in one.namespace
    assert one._scope.account != one.namespace
    assert "sk-" not in repr(two)
    assert "pw" not in repr(two)
    with pytest.raises(veo4k.ConfigurationError, match="another Kie API key"):
        veo4k.Veo4kClient("sk-another-account", coordinator=one)
    from_env = RedisCoordinator.from_url("redis://localhost:6379/0")
    assert from_env.namespace != one.namespace  # a receiver-only process: KIE_API_KEY's
    monkeypatch.delenv("KIE_API_KEY")
    with pytest.raises(veo4k.ConfigurationError, match="namespace"):
        _ = RedisCoordinator.from_url("redis://localhost:6379/0").namespace


async def test_many_concurrent_calls_queue_locally_not_as_an_outage(
    coordinators: Callable[..., RedisCoordinator],
) -> None:
    """400 waits claiming at once (more than redis-py's 100-connection pool) queue for a
    connection in this process: Redis is not declared down, every claim is answered by Redis."""
    coord = coordinators()
    coord.bind_key(ApiKey("the-account-key"))
    claims = await asyncio.gather(*(coord.claim(f"many{i}", 0, "me") for i in range(400)))
    assert all(claim.granted for claim in claims)
    assert coord.health.outages == 0
    assert coord.health.fallbacks == 0
    assert coord.health.round_trips >= 400
