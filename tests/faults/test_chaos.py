"""500 tasks against a fake that answers 20 % of requests with a random fault and enforces a
rate limit: every task ends with its result, nothing is submitted twice, well within time."""

from __future__ import annotations

import asyncio

import attrs
import pytest

import veo4k
from veo4k.testing import FAST_RETRY, FakeKie

from ..conftest import ClientFactory

pytestmark = pytest.mark.faults


async def test_chaos_run(make_client: ClientFactory) -> None:
    """Faults (HTML 5xx, 500/455/429 envelopes, garbage, resets) and a rate limit at once."""
    deadline = 120.0  # random 429s (2 % of answers) keep the pacer's AIMD low: ~12 s here
    async with FakeKie(ready_after=(0.05, 0.5), fault_rate=0.2, seed=11,
                       rate_limit=(400, 1.0)) as fake:  # fmt: skip
        client = make_client(
            base_url=fake.base_url,
            api_key=fake.api_key,
            # 10 attempts: an exchange fails for good with p = 0.2**10 = 1e-7
            retry_policy=attrs.evolve(FAST_RETRY, attempts=10),
            rate_limit=veo4k.RateLimit(max_requests=400, period=1.0),
        )
        ids = [f"chaos_{i}" for i in range(500)]
        loop = asyncio.get_running_loop()
        start = loop.time()
        results = await client.wait_for_4k_many(ids, timeout=deadline)
        took = loop.time() - start
        assert [r.task_id for r in results] == ids  # type: ignore[union-attr]
        assert all(isinstance(r, veo4k.FourKResult) for r in results)
        assert [fake.submissions(t) for t in ids] == [1] * len(ids)
        assert took < deadline / 4
        fired = sum(fake.stats.faults_fired.values())
        assert fired > 0.15 * sum(fake.stats.requests.values())
        assert len(fake.stats.faults_fired) >= 8  # a real mix of fault kinds


async def test_thirty_percent_broken_answers_and_a_tiny_retry_budget(
    make_client: ClientFactory,
) -> None:
    """Issue 11: with 30 % of answers broken and RetryPolicy.attempts=2, waits still ride the
    faults out to their results: the retry budget bounds one-off calls, not waits."""
    async with FakeKie(ready_after=(0.05, 0.3), fault_rate=0.3, seed=7) as fake:
        client = make_client(
            base_url=fake.base_url,
            api_key=fake.api_key,
            retry_policy=attrs.evolve(FAST_RETRY, attempts=2),
        )
        ids = [f"storm_{i}" for i in range(150)]
        outcomes = [o async for o in client.as_completed(ids, timeout=60)]
        assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok][:3]
        assert sorted(o.task_id for o in outcomes) == sorted(ids)
        assert [fake.submissions(t) for t in ids] == [1] * len(ids)
        assert sum(fake.stats.faults_fired.values()) > 0.2 * sum(fake.stats.requests.values())
