"""What processes share is scoped: results and budgets to the account, callbacks to the video
index they are for."""

from __future__ import annotations

import asyncio
import json
import logging
import pathlib
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

import veo4k
from veo4k.redis import RedisCoordinator
from veo4k.testing import FAST_POLICY, FAST_RETRY, FakeKie

from ._server import RedisServer, free_port
from ._util import submitted
from .conftest import Factory


async def test_two_keys_in_one_namespace_share_no_result_and_no_budget(
    kie: FakeKie, clients: Factory, coordinators: Callable[..., RedisCoordinator],
    redis_server: RedisServer,
) -> None:  # fmt: skip
    """Key B (another account) asks for a task key A already has the 4K of: B pays its own
    request (Kie checks its access), never gets A's URLs from the cache; budgets are apart too,
    and no key (or its plain hash) is in any Redis key or value."""
    kie.add_task("acct", ready_after=0.0)
    first = await clients(coordinators()).wait_for_4k("acct")
    again = await clients(coordinators()).wait_for_4k("acct")
    assert again.requests == 0  # same key: the kept result
    async with FakeKie(api_key="key-of-account-b", ready_after=0.0) as other:
        other.add_task("acct", ready_after=0.0)
        coord_b = coordinators()
        async with veo4k.Veo4kClient(
            other.api_key, base_url=other.base_url, poll_policy=FAST_POLICY,
            retry_policy=FAST_RETRY, coordinator=coord_b,
        ) as b:  # fmt: skip
            result_b = await b.wait_for_4k("acct")
        assert result_b.requests >= 1
        assert other.submissions("acct") == 1
        assert result_b.result_urls != first.result_urls
    coord_a = coordinators()
    clients(coord_a)
    assert coord_a.namespace == coord_b.namespace
    assert coord_a._scope.account_key("tat") != coord_b._scope.account_key("tat")
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        keys = [k async for k in raw.scan_iter(match=f"veo4k:{{{coord_a.namespace}}}:*")]
        assert keys
        for key in keys:
            stored = await raw.dump(key) or b""
            for secret in (kie.api_key, "key-of-account-b"):
                assert secret.encode() not in key + stored
    finally:
        await raw.aclose()


async def deliver(kie: FakeKie, receiver: veo4k.CallbackReceiver, task_id: str, index: int) -> None:
    """Kie's callback for one video of a task, as a worker's route receives it."""
    raw = json.dumps(kie.callback_payload(kie.tasks[task_id], index)).encode()
    await receiver.handle(raw, {}, token="tok")


async def test_a_trusted_callback_never_ends_another_index_in_another_process(
    kie: FakeKie, clients: Factory, coordinators: Callable[..., RedisCoordinator],
    redis_server: RedisServer,
) -> None:  # fmt: skip
    """Process A waits for video 0 of a task, process B for video 1, both trusting callbacks.
    Kie's callback names no index: the one for video 0 cannot be told apart, so both confirm by
    a poll and each gets its own video; video 1's callback is kept apart from video 0's."""
    task = kie.add_task("multi", ready_after=60.0, indices=2)
    receiving = coordinators()
    receiver = veo4k.CallbackReceiver(token="tok", coordinator=receiving)
    waits = [
        await submitted(clients(coordinators(), trust_callback_urls=True), "multi", index)
        for index in (0, 1)
    ]  # both submitted, both claimed
    task.ready_after = 0.0  # both videos are ready now; Kie calls back for video 0 first
    await deliver(kie, receiver, "multi", 0)
    video0, video1 = await asyncio.wait_for(asyncio.gather(*waits), 10)
    assert video0.video_url == kie.result_url("multi", 0)
    assert video1.video_url == kie.result_url("multi", 1)  # not video 0's
    assert (video0.requests, video1.requests) == (2, 2)  # each confirmed its own
    await deliver(kie, receiver, "multi", 1)
    await receiver.aclose()
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await raw.hlen(receiving._scope.key("cb", "multi")) == 2  # no duplicate of 0's
    finally:
        await raw.aclose()


async def test_a_callback_for_the_one_index_waited_for_ends_it_in_any_process(
    kie: FakeKie, clients: Factory, coordinators: Callable[..., RedisCoordinator]
) -> None:
    """The namespace waits for video 1 only: the callback is that video's, kept with its index,
    and ends the trusted wait in another process (one request), and a later wait at once."""
    task = kie.add_task("one", ready_after=60.0, indices=2)
    receiver = veo4k.CallbackReceiver(token="tok", coordinator=coordinators())
    wait = await submitted(clients(coordinators(), trust_callback_urls=True), "one", 1)
    task.ready_after = 0.0
    await deliver(kie, receiver, "one", 1)
    result = await asyncio.wait_for(wait, 10)
    assert (result.video_url, result.requests) == (kie.result_url("one", 1), 1)
    later = await clients(coordinators(), trust_callback_urls=True).wait_for_4k("one", 1)
    assert (later.video_url, later.requests) == (kie.result_url("one", 1), 0)
    await receiver.aclose()


async def test_redis_url_credentials_are_redacted_everywhere(
    kie: FakeKie, clients: Factory, caplog: pytest.LogCaptureFixture, tmp_path: pathlib.Path
) -> None:
    """Userinfo, ``?password=`` and unix-socket credentials: never in a repr, a log line or an
    error, whichever way the URL is written and whatever Redis answers (nothing listens)."""
    port = free_port()
    socket = tmp_path / "nobody.sock"
    urls = {
        "pw-userinfo": f"redis://someone:pw-userinfo@127.0.0.1:{port}/0",
        "pw-query": f"redis://127.0.0.1:{port}/0?password=pw-query",
        "pw-unix": f"unix://:pw-unix@{socket}",
        "pw-unix-query": f"unix://{socket}?password=pw-unix-query&db=0",
        "pw-cluster": f"redis+cluster://someone:pw-cluster@127.0.0.1:{port}",
    }
    with caplog.at_level(logging.DEBUG, logger="veo4k"):
        for n, (secret, url) in enumerate(urls.items()):
            coord = RedisCoordinator.from_url(url, namespace="redacted", timeout=0.2)
            shown = repr(coord)
            client = clients(coord)
            result = await client.wait_for_4k(f"redacted{n}")  # Redis unreachable: fallback
            assert result.requests >= 1
            await client.aclose()
            await coord.aclose()
            assert secret not in shown, shown
            assert "***" in shown
            assert "someone" not in shown
        with pytest.raises(veo4k.ConfigurationError) as bad:
            RedisCoordinator.from_url(f"redis://127.0.0.1:{port}/x?password=pw-bad&db=zero")
    assert "pw-bad" not in str(bad.value)
    assert caplog.records  # the fallbacks were logged...
    for secret in [*urls, "pw-bad"]:
        assert secret not in caplog.text  # ...without a credential


def test_kept_callbacks_of_unknown_index_count_only_while_unambiguous() -> None:
    """Kept under ``u:`` (no index): this index's while the namespace waits for no other and
    they agree; under ``i<n>:``: index n's only."""
    from veo4k.redis._messages import callback_field, encode_event, kept_callback

    def kept(slot: str, url: str) -> list[str]:
        event = veo4k.CallbackEvent(task_id="t", ok=True, code=200, msg="", result_urls=(url,))
        return [slot + callback_field(event), json.dumps(encode_event(event))]

    one, two = kept("u", "https://a/0.mp4"), kept("u", "https://a/1.mp4")
    found = kept_callback(one, [b"0"], 0)
    assert found is not None
    assert (found.index, found.result_urls) == (0, ("https://a/0.mp4",))
    assert kept_callback(one, [b"0", b"1"], 0) is None  # another index is waited for
    assert kept_callback(one + two, [b"0"], 0) is None  # two videos' URLs: which is 0's?
    indexed = kept("i1", "https://a/1.mp4")
    assert kept_callback(indexed + one + two, [b"0", b"1"], 0) is None
    found = kept_callback(indexed + one + two, [b"0", b"1"], 1)
    assert found is not None
    assert found.result_urls == ("https://a/1.mp4",)


async def test_a_callback_kept_for_one_index_never_ends_a_later_wait_for_another(
    kie: FakeKie, clients: Factory, coordinators: Callable[..., RedisCoordinator]
) -> None:
    """Video 0's callback reached this process's receiver (another process waited for video 0);
    a trusted wait for video 1 started here later polls for its own video."""
    task = kie.add_task("later", ready_after=60.0, indices=2)
    here = coordinators()
    receiver = veo4k.CallbackReceiver(token="tok", coordinator=here)
    local = clients(here, callbacks=receiver, callback_url="https://app.example/cb",
                    trust_callback_urls=True)  # fmt: skip
    elsewhere = await submitted(clients(coordinators(), trust_callback_urls=True), "later")
    task.ready_after = 0.0
    await deliver(kie, receiver, "later", 0)
    assert (await asyncio.wait_for(elsewhere, 10)).video_url == kie.result_url("later", 0)
    mine = await local.wait_for_4k("later", 1, poll_policy=veo4k.PollPolicy(
        first_delay=0.01, first_delay_jitter=0.0, wait_initial=0.01, wait_max=0.01, timeout=10.0,
    ))  # fmt: skip
    assert mine.video_url == kie.result_url("later", 1)
    await receiver.aclose()
