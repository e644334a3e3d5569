"""wait_for_4k against the fake Kie server over real sockets: every path of a wait."""

from __future__ import annotations

import asyncio
import gc
import itertools
import warnings

import aiohttp
import attrs
import pytest

import veo4k
from veo4k.testing import FAST_POLICY, FAST_RETRY, FakeKie, FaultKind, TaskOutcome

from .conftest import ClientFactory, veo4k_tasks


async def test_wait_returns_urls_and_cost(kie: FakeKie, client: veo4k.Veo4kClient) -> None:
    """A wait submits once, polls, and returns the URLs with its request count and duration."""
    result = await client.wait_for_4k("veo_task_1")
    assert result.video_url == kie.result_url("veo_task_1")
    assert result.image_urls[0].endswith(".jpg")
    assert result.requests == kie.posts("veo_task_1") >= 2
    assert kie.submissions("veo_task_1") == 1
    assert 0.05 <= result.elapsed < 2


@pytest.mark.parametrize(
    "options",
    [
        {"done_code": 200},
        {"done_code": 422},
        {"urls_as_string": True},
        {"legacy_accept": True},
        {"ready_after": 0.0},
    ],
    ids=["done-200", "done-422", "urls-as-string", "legacy-accept", "already-finished"],
)
async def test_every_success_shape(
    kie: FakeKie, client: veo4k.Veo4kClient, options: dict[str, object]
) -> None:
    """Both success codes, URL strings, the legacy accept shape and finished tasks all resolve."""
    kie.add_task("t", **options)
    result = await client.wait_for_4k("t")
    assert result.result_urls == (kie.result_url("t"),)


async def test_mirrored_http_status(make_client: ClientFactory) -> None:
    """A fake that puts the code in the HTTP status too (HTTP 422) gives the same result."""
    async with FakeKie(ready_after=0.05, mirror_status=True) as fake:
        client = make_client(base_url=fake.base_url, api_key=fake.api_key)
        result = await client.wait_for_4k("t")
        assert result.video_url == fake.result_url("t")


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        (TaskOutcome.UNAVAILABLE, veo4k.FourKUnavailableError),
        (TaskOutcome.SOURCE_FAILED, veo4k.SourceTaskFailedError),
        (TaskOutcome.EXPIRED, veo4k.ValidationError),
        (TaskOutcome.BLANK, veo4k.ValidationError),
        (TaskOutcome.FETCH_FAILED, veo4k.MediaFetchError),
    ],
)
async def test_failing_tasks_raise_typed_errors(
    kie: FakeKie, client: veo4k.Veo4kClient, outcome: TaskOutcome, error: type[Exception]
) -> None:
    """Each permanent failure of kie-api.md ends the wait with its typed error, no retries."""
    kie.add_task("t", outcome=outcome)
    with pytest.raises(error) as info:
        await client.wait_for_4k("t")
    assert getattr(info.value, "task_id", None) == "t"
    assert kie.submissions("t") <= 1


async def test_unavailable_is_never_resubmitted(kie: FakeKie, client: veo4k.Veo4kClient) -> None:
    """After "4K unavailable" the wait ends; asking again gets the same answer, no new job."""
    kie.add_task("t", outcome=TaskOutcome.UNAVAILABLE)
    with pytest.raises(veo4k.FourKUnavailableError):
        await client.wait_for_4k("t")
    posts = kie.posts("t")
    with pytest.raises(veo4k.FourKUnavailableError):
        await client.wait_for_4k("t")
    assert kie.submissions("t") == 1
    assert kie.posts("t") == posts + 1


async def test_unknown_task_is_validation_error(make_client: ClientFactory) -> None:
    """An id Kie does not know gives 422 "record is null." as ValidationError."""
    async with FakeKie(auto_create=False) as fake:
        client = make_client(base_url=fake.base_url, api_key=fake.api_key)
        with pytest.raises(veo4k.ValidationError, match="record is null"):
            await client.wait_for_4k("nope")


async def test_source_still_generating_then_ok(kie: FakeKie, client: veo4k.Veo4kClient) -> None:
    """A source that is still generating is waited for, then upscaled once."""
    kie.add_task("t", outcome=TaskOutcome.SOURCE_GENERATING, source_ready_after=0.1)
    states: list[veo4k.WaitState] = []
    result = await client.wait_for_4k("t", on_update=lambda e: states.append(e.state))
    assert result.video_url
    assert veo4k.WaitState.SOURCE_PENDING in states
    assert kie.stats.requests["/api/v1/veo/record-info"] >= 1
    assert kie.submissions("t") == 1


async def test_bad_key(kie: FakeKie, make_client: ClientFactory) -> None:
    """A wrong key ends the wait at once with AuthenticationError."""
    client = make_client(api_key="wrong")
    with pytest.raises(veo4k.AuthenticationError):
        await client.wait_for_4k("t")
    assert kie.stats.requests["/api/v1/veo/get-4k-video"] == 1


async def test_deadline_is_met_not_overshot(kie: FakeKie, client: veo4k.Veo4kClient) -> None:
    """A 0.3 s timeout with 10 s poll intervals raises WaitTimeoutError at about 0.3 s."""
    kie.add_task("t", ready_after=60)
    slow = attrs.evolve(FAST_POLICY, first_delay=10, wait_initial=10, wait_max=10)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(veo4k.WaitTimeoutError) as info:
        await client.wait_for_4k("t", timeout=0.3, poll_policy=slow)
    took = loop.time() - start
    assert 0.3 <= took < 0.6
    err = info.value
    assert isinstance(err, TimeoutError)
    # the submission, then one last look just before the deadline (issue 11)
    assert (err.task_id, err.index, err.timeout, err.attempts) == ("t", 0, 0.3, 2)
    assert "not ready after 0.3 s and 2 request(s)" in str(err)


async def test_policy_timeout_is_the_default(kie: FakeKie, client: veo4k.Veo4kClient) -> None:
    """Without timeout=, the policy's timeout bounds the wait."""
    kie.add_task("t", ready_after=60)
    with pytest.raises(veo4k.WaitTimeoutError) as info:
        await client.wait_for_4k("t", poll_policy=attrs.evolve(FAST_POLICY, timeout=0.2))
    assert info.value.timeout == 0.2
    assert info.value.attempts >= 2


async def test_concurrent_waits_share_one_loop(kie: FakeKie, client: veo4k.Veo4kClient) -> None:
    """Two waits on one task+index share a request stream: one submission, same result."""
    kie.add_task("t", ready_after=0.2)
    first, second = await asyncio.gather(client.wait_for_4k("t"), client.wait_for_4k("t"))
    assert first == second
    assert kie.submissions("t") == 1
    assert kie.posts("t") == first.requests


async def test_different_indices_are_separate_jobs(kie: FakeKie, client: veo4k.Veo4kClient) -> None:
    """Index 0 and index 1 are two 4K jobs."""
    kie.add_task("t", indices=2)
    a, b = await asyncio.gather(client.wait_for_4k("t", 0), client.wait_for_4k("t", 1))
    assert a.video_url != b.video_url
    assert (kie.submissions("t", 0), kie.submissions("t", 1)) == (1, 1)


async def test_one_waiter_cancelled_the_other_goes_on(
    kie: FakeKie, client: veo4k.Veo4kClient
) -> None:
    """Cancelling one of two waiters on a task leaves the shared loop running for the other."""
    kie.add_task("t", ready_after=0.2)
    seen = asyncio.Event()
    first = asyncio.create_task(client.wait_for_4k("t", on_update=lambda e: seen.set()))
    second = asyncio.create_task(client.wait_for_4k("t"))
    await seen.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (await second).video_url


async def test_cancel_leaves_no_task_behind(kie: FakeKie, client: veo4k.Veo4kClient) -> None:
    """Cancelling the only waiter propagates CancelledError and stops its poll loop."""
    kie.add_task("t", ready_after=60)
    seen = asyncio.Event()
    waiter = asyncio.create_task(client.wait_for_4k("t", on_update=lambda e: seen.set()))
    await seen.wait()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert veo4k_tasks() == []
    assert "waits=0" in repr(client)


async def test_close_while_waiting_is_client_state_error(
    kie: FakeKie, client: veo4k.Veo4kClient
) -> None:
    """Closing the client under a wait ends it with ClientStateError, not a bare cancel."""
    kie.add_task("t", ready_after=60)
    seen = asyncio.Event()
    waiter = asyncio.create_task(client.wait_for_4k("t", on_update=lambda e: seen.set()))
    await seen.wait()
    await client.aclose()
    with pytest.raises(veo4k.ClientStateError, match="closed"):
        await waiter


async def test_use_after_close_and_idempotent_close(client: veo4k.Veo4kClient) -> None:
    """aclose twice is fine; any call afterwards raises ClientStateError."""
    await client.aclose()
    await client.aclose()
    assert client.closed
    with pytest.raises(veo4k.ClientStateError, match="closed"):
        await client.wait_for_4k("t")
    with pytest.raises(veo4k.ClientStateError):
        await client.request_4k("t")
    with pytest.raises(veo4k.ClientStateError):
        async with client:
            pass


def test_other_event_loop_is_refused(kie: FakeKie, make_client: ClientFactory) -> None:
    """A client bound to one loop raises ClientStateError from another, instead of hanging."""
    client = make_client(base_url="http://127.0.0.1:9")

    async def use() -> None:
        await client.request_4k("t")

    async def bind() -> None:
        client._check_usable()

    asyncio.run(bind())
    with pytest.raises(veo4k.ClientStateError, match="another event loop"):
        asyncio.run(use())


async def test_user_session_is_not_closed(kie: FakeKie, make_client: ClientFactory) -> None:
    """A session passed in belongs to the caller: the client never closes it."""
    async with aiohttp.ClientSession() as session:
        client = make_client(session=session)
        assert (await client.wait_for_4k("t")).video_url
        await client.aclose()
        assert not session.closed


async def test_on_update_sync_and_async(kie: FakeKie, client: veo4k.Veo4kClient) -> None:
    """on_update may be sync or async; it sees submitted, processing and ready in order."""
    kie.add_task("t", ready_after=0.1)
    events: list[veo4k.WaitEvent] = []

    async def record(event: veo4k.WaitEvent) -> None:
        events.append(event)

    await client.wait_for_4k("t", on_update=record)
    states = [e.state for e in events]
    assert states[0] is veo4k.WaitState.SUBMITTED
    assert veo4k.WaitState.PROCESSING in states
    assert states[-1] is veo4k.WaitState.READY
    assert [e.attempt for e in events] == sorted(e.attempt for e in events)
    assert all(e.next_delay is not None for e in events[:-1])
    assert all(e.task_id == "t" and e.index == 0 for e in events)


async def test_on_update_errors_do_not_kill_the_wait(
    kie: FakeKie, client: veo4k.Veo4kClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A raising on_update is logged and the paid wait still completes."""

    def broken(event: veo4k.WaitEvent) -> None:
        raise RuntimeError("progress bar bug")

    assert (await client.wait_for_4k("t", on_update=broken)).video_url
    assert "on_update callback raised" in caplog.text


async def test_timeout_event_reaches_on_update(kie: FakeKie, client: veo4k.Veo4kClient) -> None:
    """A timed-out wait tells its on_update FAILED with the WaitTimeoutError."""
    kie.add_task("t", ready_after=60)
    events: list[veo4k.WaitEvent] = []
    with pytest.raises(veo4k.WaitTimeoutError):
        await client.wait_for_4k("t", timeout=0.1, on_update=events.append)
    assert events[-1].state is veo4k.WaitState.FAILED
    assert isinstance(events[-1].error, veo4k.WaitTimeoutError)


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": FaultKind.HTML, "status": 502},
        {"kind": FaultKind.ENVELOPE, "code": 500},
        {"kind": FaultKind.ENVELOPE, "code": 455, "msg": "maintenance"},
        {"kind": FaultKind.TRUNCATED},
        {"kind": FaultKind.EMPTY},
        {"kind": FaultKind.NON_JSON},
        {"kind": FaultKind.NOT_ENVELOPE},
        {"kind": FaultKind.RESET_BEFORE},
        {"kind": FaultKind.RESET_AFTER},
    ],
    ids=lambda f: f"{f['kind']}-{f.get('status') or f.get('code') or ''}",
)
async def test_transient_faults_are_survived(
    kie: FakeKie, client: veo4k.Veo4kClient, fault: dict[str, object]
) -> None:
    """A transient fault on the submission and on a poll is retried; the wait succeeds once."""
    kie.add_task("t", ready_after=0.1)
    kie.inject(times=2, **fault)  # type: ignore[arg-type]
    result = await client.wait_for_4k("t")
    assert result.video_url
    assert kie.submissions("t") == 1


async def test_persistent_fault_ends_in_typed_error(
    kie: FakeKie, client: veo4k.Veo4kClient
) -> None:
    """Faults beyond the retry budget end a one-off call with TransportError; a wait rides
    them out to its deadline and times out from the last one (issue 11 changed the wait)."""
    kie.inject(FaultKind.HTML, status=503, times=1000)
    with pytest.raises(veo4k.TransportError) as info:
        await client.request_4k("t")
    assert info.value.status == 503
    assert info.value.attempts == 5
    with pytest.raises(veo4k.WaitTimeoutError) as waited:
        await client.wait_for_4k("t", timeout=0.5)
    cause = waited.value.__cause__
    assert isinstance(cause, veo4k.TransportError)
    assert cause.status == 503


async def test_slow_answer_hits_request_timeout(kie: FakeKie, make_client: ClientFactory) -> None:
    """An answer slower than request_timeout is retried; the next fast one wins."""
    client = make_client(request_timeout=0.2)
    kie.inject(FaultKind.SLOW, delay=1.0, times=1)
    assert (await client.wait_for_4k("t")).video_url


async def test_connection_refused(make_client: ClientFactory) -> None:
    """Nobody listening: a one-off call fails with TransportError after its bounded retries;
    a wait keeps trying until its deadline, then times out from that error."""
    client = make_client(base_url="http://127.0.0.1:9")
    with pytest.raises(veo4k.TransportError, match="connection failed"):
        await client.request_4k("t")
    with pytest.raises(veo4k.WaitTimeoutError) as info:
        await client.wait_for_4k("t", timeout=0.3)
    assert isinstance(info.value.__cause__, veo4k.TransportError)
    assert "connection failed" in str(info.value.__cause__)


async def test_forty_concurrent_waits_with_faults(make_client: ClientFactory) -> None:
    """40 waits against a fake answering 20% of requests with faults all complete, once each."""
    async with FakeKie(ready_after=0.1, fault_rate=0.2, seed=7) as fake:
        # 5 attempts fail an exchange with p = 0.2**5 (about 6 % per run over ~200 exchanges);
        # 10 attempts make that 1e-7 per exchange.
        retry = attrs.evolve(FAST_RETRY, attempts=10)
        client = make_client(base_url=fake.base_url, api_key=fake.api_key, retry_policy=retry)
        ids = [f"task_{i}" for i in range(40)]
        results = await asyncio.gather(*(client.wait_for_4k(t) for t in ids))
        assert [r.task_id for r in results] == ids
        assert all(fake.submissions(t) == 1 for t in ids)
        assert sum(fake.stats.faults_fired.values()) > 0


async def test_no_resource_warnings_after_close(kie: FakeKie, make_client: ClientFactory) -> None:
    """A used and closed client leaves no unclosed session or transport behind."""
    client = make_client()
    await client.wait_for_4k("t")
    await client.aclose()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del client
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


async def test_each_waiter_keeps_its_own_deadline(kie: FakeKie, client: veo4k.Veo4kClient) -> None:
    """A second waiter with a longer timeout does not stretch the first one's deadline."""
    kie.add_task("t", ready_after=0.5)
    loop = asyncio.get_running_loop()
    start = loop.time()
    short = asyncio.create_task(client.wait_for_4k("t", timeout=0.2))
    long = asyncio.create_task(client.wait_for_4k("t", timeout=5))
    with pytest.raises(veo4k.WaitTimeoutError) as info:
        await short
    assert 0.2 <= loop.time() - start < 0.4
    assert info.value.timeout == 0.2
    assert (await long).video_url
    assert kie.submissions("t") == 1


async def test_batch_first_polls_are_spread_evenly(kie: FakeKie, client: veo4k.Veo4kClient) -> None:
    """Waits started together get evenly spread phases: no gap wider than 2/n of the range."""
    kie.ready_after = 60
    shared = [client._waits.join(f"t{i}", 0, FAST_POLICY, None) for i in range(200)]
    phases = sorted(s._phase for s in shared if s._phase is not None)
    gaps = [b - a for a, b in itertools.pairwise(phases)] + [1 - phases[-1] + phases[0]]
    assert len(phases) == 200
    assert max(gaps) < 2 / 200
    await client.aclose()


async def test_new_wait_right_after_the_last_one_left(
    kie: FakeKie, client: veo4k.Veo4kClient
) -> None:
    """A wait started in the same tick as the previous last waiter's cancellation gets a loop of
    its own, not the stopping one's cancellation."""
    kie.add_task("t", ready_after=0.2)
    in_flight = asyncio.Event()
    kie.on_submission = lambda task, index: in_flight.set()  # the server has the request
    first = asyncio.create_task(client.wait_for_4k("t"))
    await in_flight.wait()
    first.cancel()
    second = asyncio.create_task(client.wait_for_4k("t"))
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (await second).video_url
    assert kie.submissions("t") == 1
    assert veo4k_tasks() == []
