"""Issue 11 in virtual time (looptime): a wait means what it says.

Each test runs the real client against ``FakeKie`` through ``InProcessSession`` (no sockets),
so minutes of polling, outages and deadlines take milliseconds, and times are exact.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

import veo4k
from veo4k.testing import FakeKie, FaultKind

from .virtual import simulated, virtual_time

FAST = veo4k.PollPolicy(first_delay=0, wait_initial=0.05, wait_max=0.25, timeout=15)


def outage(fake: FakeKie, start: float, after: int = 0) -> None:
    """Ten minutes down: refused connections, then 455 maintenance, then HTML 502 pages
    (``after`` requests get through first)."""
    many = 10**6
    fake.inject(FaultKind.REFUSED, times=many, until=start + 200, after=after)
    fake.inject(FaultKind.ENVELOPE, code=455, msg="maintenance", times=many, until=start + 400,
                after=after)  # fmt: skip
    fake.inject(FaultKind.HTML, status=502, times=many, until=start + 600, after=after)


@virtual_time
async def test_fast_policy_polls_fast() -> None:
    """Item 1: the user's fast policy polls within 0.3 s and then every <= 0.275 s."""
    fake = FakeKie(auto_create=False)
    fake.add_task("t", ready_after=3.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with simulated(fake, poll_policy=FAST, rate_limit=None) as client:
        result = await client.wait_for_4k("t")
    times = [t - start for t in fake.stats.times]
    assert times[0] == pytest.approx(0.0, abs=1e-6)
    assert times[1] <= 0.3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) <= 0.275 + 1e-6
    assert 3.0 <= result.elapsed <= 3.0 + 0.275 + 1e-6


@virtual_time
async def test_ten_minute_outage_inside_deadline_ends_with_result() -> None:
    """Item 2: refused, then 455s, then HTML 502s for 10 min; a 30-min wait gets its 4K."""
    fake = FakeKie(auto_create=False)
    fake.add_task("t", ready_after=300)
    events: list[veo4k.WaitEvent] = []
    loop = asyncio.get_running_loop()
    outage(fake, loop.time(), after=1)  # the submission goes through, then Kie goes dark
    async with simulated(fake) as client:
        result = await client.wait_for_4k("t", timeout=1800, on_update=events.append)
    assert 600 <= result.elapsed <= 600 + 31  # next retry within RetryPolicy.wait_max
    errors = {type(e.error) for e in events if e.state is veo4k.WaitState.RETRYING}
    assert {veo4k.TransportError, veo4k.ServiceUnavailableError} <= errors
    assert all(e.error is not None for e in events if e.state is veo4k.WaitState.RETRYING)
    assert fake.submissions("t") == 1


@virtual_time
async def test_same_outage_with_short_deadline_times_out_from_its_cause() -> None:
    """Item 2: with a 5-min deadline the wait ends at 5 min +/- 0.1 s, caused by the outage."""
    fake = FakeKie(auto_create=False)
    fake.add_task("t", ready_after=300)
    loop = asyncio.get_running_loop()
    start = loop.time()
    outage(fake, start, after=1)
    async with simulated(fake) as client:
        with pytest.raises(veo4k.WaitTimeoutError) as info:
            await client.wait_for_4k("t", timeout=300)
    assert loop.time() - start == pytest.approx(300, abs=0.1)
    cause = info.value.__cause__
    assert isinstance(cause, veo4k.TransportError | veo4k.ServiceUnavailableError)


@virtual_time
async def test_one_off_call_stays_bounded_by_retry_policy() -> None:
    """Item 2: request_4k still gives up after RetryPolicy.attempts during an outage."""
    fake = FakeKie(auto_create=False)
    fake.add_task("t")
    loop = asyncio.get_running_loop()
    outage(fake, loop.time())
    async with simulated(fake, retry_policy=veo4k.RetryPolicy(attempts=3)) as client:
        with pytest.raises(veo4k.TransportError) as info:
            await client.request_4k("t")
    assert info.value.attempts == 3
    assert loop.time() < 200


@virtual_time
async def test_retry_after_is_capped_and_never_passes_the_deadline() -> None:
    """Item 3: a 3,600 s Retry-After pauses at most max_retry_after; a deadline still holds."""
    fake = FakeKie(auto_create=False)
    fake.add_task("t", ready_after=0)
    fake.inject(FaultKind.ENVELOPE, code=429, status=429, msg="Too many requests",
                retry_after=3600, times=1)  # fmt: skip
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with simulated(fake) as client:
        assert (await client.request_4k("t")).ready
        assert loop.time() - start <= veo4k.RetryPolicy().max_retry_after + 1
        fake.add_task("u", ready_after=60)
        fake.inject(FaultKind.ENVELOPE, code=455, msg="maintenance", retry_after=3600,
                    times=10**6, after=1)  # fmt: skip
        begun = loop.time()
        with pytest.raises(veo4k.WaitTimeoutError):
            await client.wait_for_4k("u", timeout=20)
        assert loop.time() - begun == pytest.approx(20, abs=0.1)


@virtual_time
async def test_last_look_before_the_deadline() -> None:
    """Item 4: a 4K ready 20 s before a deadline in the middle of a long sleep is found."""
    fake = FakeKie(auto_create=False)
    fake.add_task("t", ready_after=100)
    slow = veo4k.PollPolicy(first_delay=90, wait_initial=300, wait_max=300, timeout=120)
    async with simulated(fake, poll_policy=slow) as client:
        result = await client.wait_for_4k("t")
    assert 119 - 0.1 <= result.elapsed < 120
    assert result.requests == 3  # submission, the 90 s poll, the last look


@virtual_time
async def test_last_look_keeps_the_deadline() -> None:
    """Item 4: without a result, the wait still ends at its deadline +/- 0.1 s."""
    fake = FakeKie(auto_create=False)
    fake.add_task("t", ready_after=10_000)
    slow = veo4k.PollPolicy(first_delay=900, wait_initial=900, wait_max=900, timeout=120)
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with simulated(fake, poll_policy=slow) as client:
        with pytest.raises(veo4k.WaitTimeoutError) as info:
            await client.wait_for_4k("t")
    assert loop.time() - start == pytest.approx(120, abs=0.1)
    assert info.value.attempts == 2
    assert info.value.__cause__ is None  # nothing failed: Kie just was not done


@virtual_time
async def test_hour_long_listener_does_not_move_the_deadline() -> None:
    """Item 5: an on_update that sleeps 1 h delays neither the result nor a deadline."""
    fake = FakeKie(auto_create=False)
    fake.add_task("t", ready_after=1.0)
    fake.add_task("never", ready_after=10_000)
    seen: list[veo4k.WaitState] = []

    async def sleepy(event: veo4k.WaitEvent) -> None:
        seen.append(event.state)
        await asyncio.sleep(3600)

    loop = asyncio.get_running_loop()
    start = loop.time()
    async with simulated(fake, poll_policy=FAST, rate_limit=None) as client:
        result = await client.wait_for_4k("t", on_update=sleepy)
        assert result.elapsed < 1.3
        with pytest.raises(veo4k.WaitTimeoutError):
            await client.wait_for_4k("never", timeout=5, on_update=sleepy)
        assert loop.time() - start == pytest.approx(result.elapsed + 5, abs=0.1)
    assert seen == [veo4k.WaitState.SUBMITTED]  # the rest queue behind it, in order


@virtual_time
async def test_hybrid_wait_honours_client_and_call_timeouts() -> None:
    """Item 6: with callbacks that never come, the client's timeout and the call's hold."""
    fake = FakeKie(auto_create=False, deliver_callbacks=False)
    fake.add_task("t", ready_after=10_000)
    receiver = veo4k.CallbackReceiver("hmac-key")
    server = veo4k.CallbackServer(receiver, public_url="http://callbacks.simulated/kie")
    policy = veo4k.PollPolicy(timeout=60)
    loop = asyncio.get_running_loop()
    async with simulated(fake, callbacks=server, poll_policy=policy) as client:
        start = loop.time()
        with pytest.raises(veo4k.WaitTimeoutError) as info:
            await client.wait_for_4k("t")
        assert info.value.timeout == 60
        assert loop.time() - start == pytest.approx(60, abs=0.1)
        start = loop.time()
        with pytest.raises(veo4k.WaitTimeoutError):
            await client.wait_for_4k("t", timeout=30)
        assert loop.time() - start == pytest.approx(30, abs=0.1)
    # the safety net (every 900 s) never polled within 60 s: only submissions and last looks
    assert fake.posts("t") == 4


@virtual_time
async def test_safety_net_interval_is_configurable() -> None:
    """Item 6: safety_net_interval spaces the polls of a callback wait."""
    fake = FakeKie(auto_create=False, deliver_callbacks=False)
    fake.add_task("t", ready_after=250)
    receiver = veo4k.CallbackReceiver("hmac-key")
    server = veo4k.CallbackServer(receiver, public_url="http://callbacks.simulated/kie")
    policy = veo4k.PollPolicy(first_delay=0, timeout=1000, safety_net_interval=100)
    async with simulated(fake, callbacks=server, poll_policy=policy) as client:
        result = await client.wait_for_4k("t")
    assert 300 <= result.elapsed <= 300 * 1.06
    assert result.requests == 4  # submission, then about 100, 200 and 300 s


CODES = [
    (402, "Insufficient credits", veo4k.InsufficientCreditsError, True),
    (408, "Upstream took longer than 10 minutes", veo4k.UpstreamTimeoutError, False),
    (429, "Too many requests", veo4k.RateLimitError, False),
    (429, "Daily quota exceeded", veo4k.QuotaExceededError, True),
    (433, "Sub-key usage limit exceeded", veo4k.SubKeyLimitError, True),
    (455, "Service under maintenance", veo4k.ServiceUnavailableError, False),
    (500, "Internal Error, Please try again later.", veo4k.ServerError, False),
    (501, "Generation failed", veo4k.GenerationFailedError, True),
    (505, "Feature disabled", veo4k.FeatureDisabledError, True),
]


@pytest.mark.parametrize(("code", "msg", "error", "final"), CODES, ids=lambda v: str(v)[:12])
def test_every_code_is_final_or_transient(
    code: int, msg: str, error: type[veo4k.APIError], final: bool
) -> None:
    """Item 7: a final code ends the wait at once; a transient one runs it to its deadline
    and becomes the timeout's cause."""

    @virtual_time
    async def run() -> None:
        fake = FakeKie(auto_create=False)
        fake.add_task("t", ready_after=5)
        fake.inject(FaultKind.ENVELOPE, code=code, msg=msg, status=code, times=10**6)
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with simulated(fake) as client:
            with pytest.raises(veo4k.Veo4kError) as info:
                await client.wait_for_4k("t", timeout=120)
        took = loop.time() - start
        if final:
            assert type(info.value) is error
            assert took < 0.01
            assert fake.stats.requests["/api/v1/veo/get-4k-video"] == 1
        else:
            assert isinstance(info.value, veo4k.WaitTimeoutError)
            assert type(info.value.__cause__) is error
            assert took == pytest.approx(120, abs=0.1)

    run()


@virtual_time
async def test_edge_block_and_user_agent_in_process() -> None:
    """Item 7: aiohttp's bare User-Agent is blocked at the fake's edge (final, typed);
    veo4k's own gets through."""
    fake = FakeKie(auto_create=False, require_user_agent=True)
    fake.add_task("t", ready_after=0)
    async with simulated(fake, user_agent="Python/3.11 aiohttp/3.9") as bare:
        with pytest.raises(veo4k.EdgeBlockedError):
            await bare.wait_for_4k("t", timeout=60)
    async with simulated(fake) as client:
        assert (await client.wait_for_4k("t", timeout=60)).video_url
    assert f"veo4k/{veo4k.__version__} (+python aiohttp)" in fake.user_agents


@virtual_time
async def test_record_quirks_and_4k_job_id_in_process() -> None:
    """Items 8 and 9: record-info variants parse; a differing 4K job id reaches the result
    and the events, and the wait does not depend on it."""
    fake = FakeKie(auto_create=False)
    fake.add_task("t", ready_after=400, record_quirks=True, fourk_task_id="job-4k")
    events: list[veo4k.WaitEvent] = []
    async with simulated(fake) as client:
        record = await client.get_record("t")
        result = await client.wait_for_4k("t", on_update=events.append)
    assert record.credits == 12.5
    assert record.full_result_urls
    assert result.fourk_task_id == "job-4k"
    assert {e.fourk_task_id for e in events} == {"job-4k"}


@virtual_time
async def test_retries_of_a_fast_policy_stay_fast() -> None:
    """Item 1/2: during an outage a fast policy retries no slower than its own wait_max."""
    fake = FakeKie(auto_create=False)
    fake.add_task("t", ready_after=0.5)
    fake.inject(FaultKind.HTML, status=502, times=40, after=1)
    events: list[veo4k.WaitEvent] = []
    async with simulated(fake, poll_policy=FAST, rate_limit=None) as client:
        result = await client.wait_for_4k("t", on_update=events.append)
    delays = [e.next_delay for e in events if e.state is veo4k.WaitState.RETRYING]
    assert len(delays) == 40
    assert max(d for d in delays if d is not None) <= 0.275
    assert result.elapsed < 40 * 0.275 + 0.3
