"""Deadlines that mean the upscale, and credits only for what can finish (issue 17), in virtual
time: a default timeout counts from the submission, an explicit one bounds the whole call,
queueing has its own bound and a visible state, admission never pays for a lost cause."""

from __future__ import annotations

import asyncio
import logging

import pytest

import veo4k
from veo4k.testing import FakeKie

from .virtual import simulated, virtual_time

SLOW_RATE = veo4k.RateLimit(max_requests=1, period=60.0)  # one slot every 63.2 s
SLOT = 60.0 / 0.95
QUICK = veo4k.PollPolicy(first_delay=20, first_delay_jitter=0, wait_initial=10, wait_max=10,
                         timeout=100)  # fmt: skip


def fake_with(*names: str, ready_after: float = 10.0) -> FakeKie:
    fake = FakeKie(auto_create=False)
    for name in names:
        fake.add_task(name, ready_after=ready_after)
    return fake


async def queued_behind_two(
    fake: FakeKie, policy: veo4k.PollPolicy, **wait: float
) -> tuple[veo4k.WaitTimeoutError, float]:
    """Wait for "c" while "a" and "b" hold the next two slots of SLOW_RATE: its error and
    how long after the call it came."""
    loop = asyncio.get_running_loop()
    async with simulated(fake, rate_limit=SLOW_RATE, poll_policy=policy) as client:
        others = [asyncio.create_task(client.wait_for_4k(n)) for n in "ab"]
        await asyncio.sleep(0)
        start = loop.time()
        with pytest.raises(veo4k.WaitTimeoutError) as info:
            await client.wait_for_4k("c", **wait)
        took = loop.time() - start
        await asyncio.gather(*others)
    return info.value, took


@virtual_time
async def test_default_timeout_counts_from_the_submission() -> None:
    """Four waits behind a slow budget: the last one queues ~190 s, more than its 100 s
    policy timeout, and still ends with its 4K (the timeout started at its submission)."""
    fake = fake_with("a", "b", "c", "d")
    async with simulated(fake, rate_limit=SLOW_RATE, poll_policy=QUICK) as client:
        results = await asyncio.gather(*(client.wait_for_4k(n) for n in "abcd"))
    last = results[-1]
    submitted = fake.tasks["d"].jobs[0].started
    assert submitted >= 3 * SLOT - 0.01  # queued three slots, longer than the timeout
    assert last.elapsed > QUICK.timeout
    assert all(r.video_url for r in results)


@virtual_time
async def test_explicit_timeout_is_a_hard_bound_on_the_whole_call() -> None:
    """timeout= bounds the call, queueing included: a wait that queues past it ends at its
    deadline, to the tick, with NotSubmittedError (a WaitTimeoutError), and 0 requests. (50 s
    is less than the 60 s an upscale takes here, so admission leaves it to its deadline.)"""
    fake = fake_with("a", "b", "c")
    error, took = await queued_behind_two(fake, QUICK, timeout=50)
    assert took == pytest.approx(50)
    assert isinstance(error, veo4k.NotSubmittedError)
    assert isinstance(error, TimeoutError)
    assert (error.submitted, error.attempts, error.timeout) == (False, 0, 50)
    assert "no credits spent" in str(error)
    assert fake.posts("c") == 0


@virtual_time
async def test_explicit_timeout_counts_queueing_after_the_submission_too() -> None:
    """A wait that queued a slot (10.5 s) before its submission still ends at the call's
    deadline (80 s), not 80 s after the submission. (At one slot a minute admission would
    not send it: no slot would be left to poll it before its deadline.)"""
    fake = fake_with("a", "b", ready_after=1000.0)
    policy = veo4k.PollPolicy(first_delay=20, wait_initial=10, wait_max=10, upscale_time=5)
    loop = asyncio.get_running_loop()
    rate = veo4k.RateLimit(max_requests=1, period=10.0)
    async with simulated(fake, rate_limit=rate, poll_policy=policy) as client:
        first = asyncio.create_task(client.wait_for_4k("a"))
        await asyncio.sleep(0)
        start = loop.time()
        with pytest.raises(veo4k.WaitTimeoutError) as info:
            await client.wait_for_4k("b", timeout=80)
        assert loop.time() - start == pytest.approx(80)
        first.cancel()
    assert info.value.submitted
    assert not isinstance(info.value, veo4k.NotSubmittedError)
    assert fake.submissions("b") == 1


@virtual_time
async def test_queueing_is_bounded_by_queue_timeout() -> None:
    """A default wait does not queue forever: past the policy's queue_timeout it ends with
    NotSubmittedError, saying so."""
    fake = fake_with("a", "b", "c")
    policy = veo4k.PollPolicy(first_delay=20, wait_initial=10, wait_max=10, queue_timeout=100)
    error, took = await queued_behind_two(fake, policy)
    assert took == pytest.approx(100)
    assert isinstance(error, veo4k.NotSubmittedError)
    assert "queue_timeout=100" in str(error)
    assert error.timeout == policy.timeout
    assert fake.posts("c") == 0


@virtual_time
async def test_a_wait_that_can_no_longer_finish_is_not_submitted() -> None:
    """Admission: with a 150 s upscale, a wait given 200 s that queues past 50 s ends then,
    unsubmitted (0 requests, no credits), saying why. (The upscale, not the budget, binds
    here: a poll of the paid wait and its own need 126 s of slots.)"""
    fake = fake_with("a", "b", "c")
    policy = veo4k.PollPolicy(first_delay=20, wait_initial=10, wait_max=10, upscale_time=150)
    error, took = await queued_behind_two(fake, policy, timeout=200)
    assert took == pytest.approx(50)
    assert isinstance(error, veo4k.NotSubmittedError)
    assert "cannot fit an upscale" in str(error)
    assert error.attempts == 0
    assert fake.posts("c") == 0


@virtual_time
async def test_a_timeout_shorter_than_an_upscale_is_the_callers_choice() -> None:
    """A wait whose timeout never fitted an upscale (the 4K may be done already) is sent: a
    finished task returns its URLs within a 5 s timeout, queued or not."""
    fake = fake_with("a", "done", ready_after=0.0)
    async with simulated(fake, rate_limit=veo4k.RateLimit(max_requests=1, period=2.0)) as client:
        first = asyncio.create_task(client.wait_for_4k("a"))
        await asyncio.sleep(0)
        result = await client.wait_for_4k("done", timeout=5)  # waits ~2 s for its slot
        await first
    assert result.video_url
    assert result.requests == 1


@virtual_time
async def test_a_callback_wait_is_judged_by_the_polling_policy() -> None:
    """Admission estimates a callback wait's upscale from the client's polling policy
    (2 x 300 + 2 x 30 = 660 s), not from its 900 s safety net: a wait given 700 s that
    queued more than 40 s is not submitted."""
    fake = FakeKie(auto_create=False, deliver_callbacks=False)
    for name in "abc":
        fake.add_task(name, ready_after=10.0)
    receiver = veo4k.CallbackReceiver("hmac-key")
    server = veo4k.CallbackServer(receiver, public_url="http://callbacks.simulated/kie")
    loop = asyncio.get_running_loop()
    async with simulated(fake, rate_limit=SLOW_RATE, callbacks=server) as client:
        others = [asyncio.create_task(client.wait_for_4k(n, timeout=3600)) for n in "ab"]
        await asyncio.sleep(0)
        start = loop.time()
        with pytest.raises(veo4k.NotSubmittedError):
            await client.wait_for_4k("c", timeout=700)
        assert loop.time() - start == pytest.approx(40)
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
    assert fake.posts("c") == 0


@virtual_time
async def test_queued_waits_say_so_and_progress_counts_them() -> None:
    """A wait in line for the budget emits QUEUED (nothing sent yet); BatchProgress counts it
    as queued, apart from submitted, until its submission."""
    names = [f"t{i}" for i in range(6)]
    fake = fake_with(*names)
    policy = veo4k.PollPolicy(first_delay=20, wait_initial=10, wait_max=10)  # polls held
    progress = veo4k.BatchProgress(total=len(names))
    events: list[veo4k.WaitEvent] = []

    def listen(event: veo4k.WaitEvent) -> None:
        events.append(event)
        progress(event)

    snapshots = []
    async with simulated(fake, rate_limit=SLOW_RATE, poll_policy=policy) as client:
        batch = asyncio.create_task(client.wait_for_4k_many(names, on_update=listen))
        await asyncio.sleep(1)
        snapshots.append(progress.counts())
        await asyncio.sleep(2 * SLOT)
        snapshots.append(progress.counts())
        await batch
    first, later = snapshots
    assert (first.queued, first.submitted) == (4, 1)  # t0 sent, t1 next in line, 4 behind
    assert (later.queued, later.submitted) == (3, 3)
    assert progress.counts().queued == 0
    assert progress.counts().done == 6
    queued = [e for e in events if e.state is veo4k.WaitState.QUEUED]
    assert {e.task_id for e in queued} == {"t2", "t3", "t4", "t5"}
    assert all(e.attempt == 0 for e in queued)
    for event in queued:  # QUEUED comes before anything else of that task
        assert next(e for e in events if e.task_id == event.task_id) is event


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@virtual_time
async def test_a_batch_that_cannot_fit_warns_once() -> None:
    """Twenty tasks given 100 s at one slot a minute: the few that fit are done, the rest
    end unsubmitted, and the batch logs one warning, not one per task."""
    names = [f"t{i}" for i in range(20)]
    fake = fake_with(*names)
    policy = veo4k.PollPolicy(first_delay=20, wait_initial=10, wait_max=10, upscale_time=40)
    handler = Records()
    logging.getLogger("veo4k").addHandler(handler)
    try:
        async with simulated(fake, rate_limit=SLOW_RATE, poll_policy=policy) as client:
            outcomes = [o async for o in client.as_completed(names, timeout=100)]
    finally:
        logging.getLogger("veo4k").removeHandler(handler)
    refused = [o for o in outcomes if isinstance(o.error, veo4k.NotSubmittedError)]
    assert len(refused) >= 17
    assert all(fake.posts(o.task_id) == 0 for o in refused)
    assert sum(1 for o in outcomes if o.ok) >= 1
    warnings = handler.records
    assert len(warnings) == 1
    assert "cannot fit them all" in warnings[0].getMessage()


@virtual_time
async def test_a_waiter_joining_a_sleeping_wait_gets_its_last_check() -> None:
    """B joins A's wait while it sleeps to its first poll (300 s): the loop's next request
    moves to B's last check, 1 s before B's deadline, which finds the 4K ready since t=5."""
    fake = fake_with("t", ready_after=5.0)
    loop = asyncio.get_running_loop()
    async with simulated(fake) as client:
        first = asyncio.create_task(client.wait_for_4k("t"))
        await asyncio.sleep(10)
        start = loop.time()
        result = await client.wait_for_4k("t", timeout=60)
        assert loop.time() - start == pytest.approx(59, abs=0.01)
        assert (await first).video_url == result.video_url
    assert fake.posts("t") == 2  # the submission, and B's last check


@virtual_time
async def test_a_waiter_joining_a_held_poll_releases_it_for_its_deadline() -> None:
    """A's poll is due (20 s) but held back while submissions wait; B joins with 60 s: the
    poll is released for B's deadline and goes at the next slot (63.2 s), not after the
    300 s hold."""
    fake = fake_with("a", *(f"s{i}" for i in range(10)))
    loop = asyncio.get_running_loop()
    policy = veo4k.PollPolicy(first_delay=20, first_delay_jitter=0, wait_initial=10, wait_max=10)
    async with simulated(fake, rate_limit=SLOW_RATE, poll_policy=policy) as client:
        first = asyncio.create_task(client.wait_for_4k("a"))
        await asyncio.sleep(0)
        batch = asyncio.create_task(
            client.wait_for_4k_many([f"s{i}" for i in range(10)], return_exceptions=True)
        )
        await asyncio.sleep(25)
        result = await client.wait_for_4k("a", timeout=60)
        assert loop.time() == pytest.approx(SLOT, abs=0.01)
        assert result.requests == 2
        await first
        batch.cancel()
        await asyncio.gather(batch, return_exceptions=True)


@virtual_time
async def test_a_submission_answered_429_is_not_submitted() -> None:
    """Kie rejects with 429 and does not queue: the wait stays unsubmitted, so admission
    still judges it. Given 1,000 s with a 600 s upscale and 429s until t=500, it ends
    NotSubmittedError (cause: the 429) near t=400, and no job was ever paid for."""
    fake = fake_with("t", ready_after=550.0)
    fake.inject("envelope", code=429, msg="Too many requests", task_id="t", times=10**6,
                until=500.0)  # fmt: skip
    policy = veo4k.PollPolicy(upscale_time=600)
    loop = asyncio.get_running_loop()
    async with simulated(fake, poll_policy=policy) as client:
        with pytest.raises(veo4k.NotSubmittedError) as info:
            await client.wait_for_4k("t", timeout=1000)
    assert 400 <= loop.time() < 500
    assert fake.submissions("t") == 0
    assert isinstance(info.value.__cause__, veo4k.RateLimitError)
    assert info.value.attempts == fake.stats.requests["/api/v1/veo/get-4k-video"] > 10


@virtual_time
async def test_admission_judges_a_timeout_once_when_the_call_began() -> None:
    """A 200 s timeout fits the 60 s estimate when the call begins; while it queues, the
    client learns that upscales take 250 s: the wait is refused (0 requests), not sent as if
    its timeout had been short from the start."""
    fake = fake_with("a", "b", "c", ready_after=240.0)
    async with simulated(fake, rate_limit=SLOW_RATE, poll_policy=QUICK) as client:
        others = [asyncio.create_task(client.wait_for_4k(n, timeout=3600)) for n in "ab"]
        await asyncio.sleep(0)
        late = asyncio.create_task(client.wait_for_4k("c", timeout=200))
        await asyncio.sleep(1)
        admission = client._limiter.schedule.admission
        for _ in range(20):  # what 20 finished 4Ks would have taught it
            admission.observe(250.0)
        with pytest.raises(veo4k.NotSubmittedError):
            await late
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
    assert fake.posts("c") == 0


@virtual_time
async def test_a_waiter_that_left_no_longer_moves_the_submission_up() -> None:
    """An interactive call on "y" (60 s) is abandoned at once: y's other waiter has a later
    deadline than the three queued tasks, so y is submitted after them, not before."""
    fake = fake_with("a", "b", "c", "d", "y")
    loop = asyncio.get_running_loop()
    async with simulated(fake, rate_limit=SLOW_RATE, poll_policy=QUICK) as client:
        first = asyncio.create_task(client.wait_for_4k("a"))
        await asyncio.sleep(0)
        queued = [asyncio.create_task(client.wait_for_4k(n, timeout=3000)) for n in "bcd"]
        await asyncio.sleep(0)
        y = asyncio.create_task(client.wait_for_4k("y", timeout=3500))
        quick = asyncio.create_task(client.wait_for_4k("y", timeout=60))
        await asyncio.sleep(0.01)
        quick.cancel()
        await asyncio.gather(quick, return_exceptions=True)
        await asyncio.gather(first, y, *queued)
    started = {n: fake.tasks[n].jobs[0].started for n in "abcdy"}
    assert started["y"] > max(started[n] for n in "bcd")
    assert loop.time() > started["y"]


@virtual_time
async def test_one_deadline_for_a_batch_pays_only_for_what_it_can_poll() -> None:
    """60 tasks sharing an 8 s deadline at 10 requests/s, 4Ks ready in 0.9 s: the budget
    holds ~76 requests, not 60 submissions and their polls. Admission leaves room in the
    budget for the polls that paid tasks still owe, and polls are released early enough for
    all of them: most paid tasks end in their 4K (before: 44 of 60 were paid and never
    polled again)."""
    names = [f"t{i:02d}" for i in range(60)]
    fake = fake_with(*names, ready_after=0.9)
    policy = veo4k.PollPolicy(first_delay=0.5, first_delay_jitter=0, wait_initial=0.25,
                              wait_max=0.25, wait_jitter=0)  # fmt: skip
    rate = veo4k.RateLimit(max_requests=10, period=1.0)
    async with simulated(fake, rate_limit=rate, poll_policy=policy) as client:
        outcomes = [o async for o in client.as_completed(names, timeout=8)]
    paid = [o for o in outcomes if fake.submissions(o.task_id)]
    lost = [o for o in paid if not o.ok]
    refused = [o for o in outcomes if isinstance(o.error, veo4k.NotSubmittedError)]
    assert len(paid) + len(refused) == len(names)
    assert len(paid) >= 25
    assert len(lost) <= len(paid) // 5, (len(paid), len(lost))
