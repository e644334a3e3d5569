"""Many waits on one client: shared pacing, 429 recovery, as_completed, wait_for_4k_many."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

import veo4k
from veo4k.testing import FakeKie, TaskOutcome

from .conftest import ClientFactory, veo4k_tasks


async def test_limiter_is_shared_across_waiters(make_client: ClientFactory) -> None:
    """30 concurrent waits under 20 requests per 0.5 s: the fake never sees more in a window."""
    async with FakeKie(ready_after=0.1) as fake:
        limit = veo4k.RateLimit(max_requests=20, period=0.5)
        client = make_client(base_url=fake.base_url, api_key=fake.api_key, rate_limit=limit)
        results = await client.wait_for_4k_many([f"t{i}" for i in range(30)])
        assert len(results) == 30
        assert fake.max_in_window(0.5) <= 20
        assert fake.stats.rate_limited == 0
        assert sum(fake.stats.requests.values()) >= 60


async def test_429_storm_recovers_without_configured_limit(make_client: ClientFactory) -> None:
    """No client limit against a fake enforcing 20 per 0.5 s: 429s slow the whole client
    down, every wait completes once, and the 429s stop instead of storming."""
    async with FakeKie(ready_after=0.1, rate_limit=(20, 0.5)) as fake:
        retry = veo4k.RetryPolicy(attempts=10, wait_initial=0.05, wait_max=0.5)
        client = make_client(
            base_url=fake.base_url, api_key=fake.api_key, rate_limit=None, retry_policy=retry
        )
        ids = [f"t{i}" for i in range(40)]
        results = await client.wait_for_4k_many(ids)
        assert [r.task_id for r in results] == ids  # type: ignore[union-attr]
        assert all(fake.submissions(t) == 1 for t in ids)
        assert 0 < fake.stats.rate_limited < sum(fake.stats.requests.values()) / 2
        assert client.pacer.rate < float("inf")


async def test_deadline_holds_while_queued(make_client: ClientFactory) -> None:
    """A wait stuck behind the pacer still times out on time."""
    async with FakeKie(ready_after=60) as fake:
        limit = veo4k.RateLimit(max_requests=1, period=30.0)
        client = make_client(base_url=fake.base_url, api_key=fake.api_key, rate_limit=limit)
        await client.request_4k("first")
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(veo4k.WaitTimeoutError) as info:
            await client.wait_for_4k("second", timeout=0.2)
        assert loop.time() - start < 0.5
        assert info.value.attempts == 0
        assert fake.posts("second") == 0


async def test_as_completed_yields_in_completion_order(
    kie: FakeKie, client: veo4k.Veo4kClient
) -> None:
    """Outcomes arrive as tasks finish, not in input order; failures are outcomes too."""
    kie.add_task("slow", ready_after=0.4)
    kie.add_task("fast", ready_after=0.05)
    kie.add_task("broken", outcome=TaskOutcome.EXPIRED)
    seen = [o async for o in client.as_completed(["slow", "fast", ("broken", 0)])]
    assert [o.task_id for o in seen] == ["broken", "fast", "slow"]
    assert isinstance(seen[0].error, veo4k.ValidationError)
    assert not seen[0].ok
    assert seen[1].ok
    assert seen[2].result is not None
    assert seen[2].result.video_url == kie.result_url("slow")


async def test_one_failure_does_not_cancel_the_others(
    kie: FakeKie, client: veo4k.Veo4kClient
) -> None:
    """A batch with failures returns every result, each in its input slot."""
    kie.add_task("bad", outcome=TaskOutcome.UNAVAILABLE)
    out = await client.wait_for_4k_many(["a", "bad", ("b", 0)], return_exceptions=True)
    assert isinstance(out[0], veo4k.FourKResult)
    assert isinstance(out[1], veo4k.FourKUnavailableError)
    assert isinstance(out[2], veo4k.FourKResult)
    assert out[2].task_id == "b"


async def test_many_raises_first_error_and_cancels_rest(
    kie: FakeKie, client: veo4k.Veo4kClient
) -> None:
    """Without return_exceptions the first error is raised and the other waits stop."""
    kie.add_task("bad", outcome=TaskOutcome.BLANK)
    kie.add_task("long", ready_after=60)
    with pytest.raises(veo4k.ValidationError):
        await client.wait_for_4k_many(["long", "bad"])
    assert veo4k_tasks() == []


async def test_breaking_out_cancels_outstanding_waits(
    kie: FakeKie, client: veo4k.Veo4kClient
) -> None:
    """Leaving as_completed early (aclosing) cancels every wait still running."""
    for i in range(5):
        kie.add_task(f"long{i}", ready_after=60)
    stream = client.as_completed(["t", *(f"long{i}" for i in range(5))])
    async with contextlib.aclosing(stream):
        async for outcome in stream:
            assert outcome.ok
            break
    assert veo4k_tasks() == []
    assert "waits=0" in repr(client)


async def test_cancelling_the_consumer_cancels_waits(
    kie: FakeKie, client: veo4k.Veo4kClient
) -> None:
    """Cancelling the task iterating as_completed leaves no wait running."""
    kie.add_task("long", ready_after=60)
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in client.as_completed(["long"], on_update=lambda e: started.set()):
            pass

    consumer = asyncio.create_task(consume())
    await started.wait()
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert veo4k_tasks() == []


async def test_batch_arguments_validated_up_front(kie: FakeKie, client: veo4k.Veo4kClient) -> None:
    """A bad item anywhere in the batch fails before any request."""
    with pytest.raises(veo4k.ConfigurationError, match="tasks"):
        await client.wait_for_4k_many(["ok", ("x", -1)])
    with pytest.raises(veo4k.ConfigurationError, match="single string"):
        await client.wait_for_4k_many("abc")
    assert sum(kie.stats.requests.values()) == 0


async def test_batch_progress_counts(kie: FakeKie, client: veo4k.Veo4kClient) -> None:
    """BatchProgress fed by on_update counts submitted, processing, done and failed."""
    kie.add_task("bad", outcome=TaskOutcome.SOURCE_FAILED)
    progress = veo4k.BatchProgress(total=4)
    snapshots = []
    async for _ in client.as_completed(["a", "b", "c", "bad"], on_update=progress):
        snapshots.append(progress.counts())
    final = progress.counts()
    assert final == veo4k.ProgressCounts(total=4, submitted=3, processing=0, done=3, failed=1)
    finished = [s.finished for s in snapshots]
    assert finished == sorted(finished)
    assert all(f >= seen for seen, f in enumerate(finished, 1))  # events come before outcomes
    assert max(s.processing for s in snapshots) >= 1


async def test_batch_outcomes_keep_final_errors_and_timeout_causes(
    kie: FakeKie, client: veo4k.Veo4kClient
) -> None:
    """In a batch, a final answer ends its task at once; an endless outage on another task
    ends it at the deadline with WaitTimeoutError caused by the outage; the rest succeed."""
    kie.inject("envelope", code=402, msg="Insufficient credits", task_id="broke", times=100)
    kie.inject("html", status=502, task_id="dark", times=10_000)
    outcomes = {o.task_id: o async for o in client.as_completed(["ok", "broke", "dark"],
                                                                 timeout=0.5)}  # fmt: skip
    assert outcomes["ok"].ok
    assert isinstance(outcomes["broke"].error, veo4k.InsufficientCreditsError)
    dark = outcomes["dark"].error
    assert isinstance(dark, veo4k.WaitTimeoutError)
    assert isinstance(dark.__cause__, veo4k.TransportError)
