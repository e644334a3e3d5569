"""Run by ``test_floor.py`` in a venv holding the oldest redis-py that pyproject allows:
``python -m tests.redis.floor_check <redis+cluster url> <expected redis-py version>``.

Two "processes" (coordinators) on a Redis Cluster and the fake Kie: one polls a task, the
other follows and learns the result by pub/sub; a callback received by one ends a trusted
wait in the other. Prints ``OK <json>`` or raises.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

import redis

import veo4k
from veo4k.redis import RedisCoordinator
from veo4k.testing import FAST_POLICY, FAST_RETRY, FakeKie

SLOW = veo4k.PollPolicy(
    first_delay=30.0, first_delay_jitter=0.0, wait_initial=30.0, wait_max=30.0,
    wait_jitter=0.0, timeout=20.0,
)  # fmt: skip


async def main(url: str) -> dict[str, object]:
    namespace = "floor" + uuid.uuid4().hex[:8]
    async with (
        FakeKie(ready_after=0.3) as kie,
        RedisCoordinator.from_url(url, namespace=namespace) as one,
        RedisCoordinator.from_url(url, namespace=namespace) as two,
    ):
        options = {"base_url": kie.base_url, "retry_policy": FAST_RETRY}
        polling = veo4k.Veo4kClient(
            kie.api_key, poll_policy=FAST_POLICY, **options, coordinator=one
        )
        following = veo4k.Veo4kClient(
            kie.api_key, coordinator=two, trust_callback_urls=True, **options
        )
        async with polling, following:
            await one.subscribed()
            await two.subscribed()
            first = asyncio.ensure_future(polling.wait_for_4k("floor-task"))
            async with asyncio.timeout(10):  # the first client holds the lease now
                while kie.posts("floor-task") == 0:  # noqa: ASYNC110  (bounded poll, no event)
                    await asyncio.sleep(0.01)
            followed = await asyncio.wait_for(
                following.wait_for_4k("floor-task", poll_policy=SLOW), 10
            )
            await first
            receiver = veo4k.CallbackReceiver(token="tok", coordinator=one)
            kie.add_task("floor-cb", ready_after=60.0)
            sent = asyncio.Event()
            wait = asyncio.ensure_future(
                following.wait_for_4k(
                    "floor-cb",
                    poll_policy=SLOW,
                    on_update=lambda e: sent.set(),
                    callback_url="https://app.example/cb",
                )
            )
            await sent.wait()
            body = json.dumps(kie.callback_payload(kie.tasks["floor-cb"], 0)).encode()
            await receiver.handle(body, {}, token="tok")
            by_callback = await asyncio.wait_for(wait, 10)
            await receiver.aclose()
        return {
            "redis_py": redis.__version__,
            "followed_requests": followed.requests,
            "callback_requests": by_callback.requests,
            "via_callback": by_callback.via_callback,
            "outages": one.health.outages + two.health.outages,
        }


if __name__ == "__main__":
    cluster_url, expected = sys.argv[1], sys.argv[2]
    assert redis.__version__ == expected, (redis.__version__, expected)
    print("OK", json.dumps(asyncio.run(main(cluster_url))), flush=True)
