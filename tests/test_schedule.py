"""Who gets the next slot (issue 17), in virtual time: lanes, urgency, hold-back, no starvation
either way, cancelling frees a place, and the admission rule."""

from __future__ import annotations

import asyncio
import math

import pytest

import veo4k
from veo4k._admission import Admission
from veo4k._limiter import Pacer
from veo4k._schedule import Lane
from veo4k.testing import FakeKie

from .virtual import simulated, virtual_time

ONE_PER_SECOND = veo4k.RateLimit(max_requests=1, period=1.0)  # 0.95 grants per second


class Recorder:
    """Acquires slots in a lane and notes who was granted when, in grant order."""

    def __init__(self, pacer: Pacer) -> None:
        self.pacer = pacer
        self.order: list[tuple[str, float]] = []
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, name: str, lane: Lane, latest: float | None = None) -> asyncio.Task[None]:
        async def take() -> None:
            granted = await self.pacer.acquire(lane, latest)
            self.order.append((name, granted))

        task = asyncio.get_running_loop().create_task(take())
        self.tasks.append(task)
        return task

    async def settle(self) -> None:
        await asyncio.sleep(0)  # let the tasks queue, in the order they were started

    async def submissions(self, count: int) -> None:
        """``count`` submissions in line (s0, s1, ...)."""
        for i in range(count):
            self.start(f"s{i}", Lane.SUBMIT)
        await self.settle()

    async def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@virtual_time
async def test_a_follow_up_queued_after_500_submissions_goes_next() -> None:
    """Urgent follow-ups never wait behind submissions: the confirmation asked for after 500
    submissions is granted at the very next slot."""
    pacer = Pacer(ONE_PER_SECOND)
    rec = Recorder(pacer)
    await rec.submissions(500)
    await asyncio.sleep(2.5)  # s0, s1, s2 went out
    rec.start("confirm", Lane.FOLLOW_UP)
    await asyncio.sleep(1.1)
    assert [name for name, _ in rec.order] == ["s0", "s1", "s2", "confirm"]
    await rec.cancel()


@virtual_time
async def test_submissions_go_earliest_deadline_first_then_in_arrival_order() -> None:
    """Among submissions the earliest deadline goes first; equal deadlines keep arrival order."""
    pacer = Pacer(ONE_PER_SECOND)
    rec = Recorder(pacer)
    rec.start("first", Lane.SUBMIT, latest=100.0)  # granted at once (nothing queued)
    for name, latest in [("late", 500.0), ("a", 200.0), ("b", 200.0), ("soon", 50.0)]:
        rec.start(name, Lane.SUBMIT, latest=latest)
    await asyncio.gather(*rec.tasks)
    assert [name for name, _ in rec.order] == ["first", "soon", "a", "b", "late"]


def poll(pacer: Pacer, due: float, latest: float = math.inf) -> asyncio.Future[float]:
    """A poll (a holdable follow-up) due at ``due``, as a wait offers it."""
    from veo4k._schedule import Ask

    class Poll(Ask):
        __slots__ = ("future",)

        def granted(self, at: float) -> bool:
            self.future.set_result(at)
            return True

    ask = Poll(Lane.FOLLOW_UP, urgent=False, due=due, latest=latest)
    ask.future = asyncio.get_running_loop().create_future()
    pacer.offer(ask)
    return ask.future


@virtual_time
async def test_a_due_poll_waits_for_submissions_at_most_the_hold_back() -> None:
    """While submissions wait, a due poll is held back, but only ``hold_back`` seconds: then
    it goes before the submissions still waiting (polls never starve)."""
    pacer = Pacer(ONE_PER_SECOND)
    pacer.schedule.hold_back = 20.0
    rec = Recorder(pacer)
    await rec.submissions(100)
    start = asyncio.get_running_loop().time()
    granted = await poll(pacer, due=start)
    assert 20.0 <= granted - start <= 20.0 + 1 / 0.95
    assert 15 <= len(rec.order) <= 22  # submissions had the slots meanwhile, and no more
    await rec.cancel()


@virtual_time
async def test_a_poll_is_not_held_past_its_deadline_nor_without_submissions() -> None:
    """A poll's hold ends at its deadline (``latest``); with no submission waiting it goes at
    once."""
    pacer = Pacer(ONE_PER_SECOND)
    rec = Recorder(pacer)
    await rec.submissions(100)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await poll(pacer, due=start, latest=start + 5.0) - start <= 5.0 + 1 / 0.95
    await rec.cancel()
    await asyncio.sleep(2)
    now = loop.time()
    assert await poll(pacer, due=now) == now  # the grid's slot is free: no hold


@virtual_time
async def test_submissions_keep_a_quarter_of_the_slots() -> None:
    """Polls past their hold go first, but submissions still get one slot in four (no
    starvation of new work either)."""
    pacer = Pacer(ONE_PER_SECOND)
    pacer.schedule.hold_back = 0.0
    rec = Recorder(pacer)
    await rec.submissions(40)
    now = asyncio.get_running_loop().time()
    polls = [poll(pacer, due=now) for _ in range(40)]
    done, _ = await asyncio.wait(polls, timeout=40.5)
    assert 29 <= len(done) <= 31  # three in four of ~42 slots
    assert 9 <= len(rec.order) <= 12
    await asyncio.gather(*rec.tasks)


@virtual_time
async def test_cancelling_a_queued_wait_frees_its_place_at_once() -> None:
    """A wait cancelled while it queues for a slot leaves the queue at once: 0 requests for
    it, and the next wait gets the slot it would have had."""
    fake = FakeKie(auto_create=False)
    for name in ("a", "b", "c"):
        fake.add_task(name, ready_after=0.0)
    async with simulated(fake, rate_limit=ONE_PER_SECOND) as client:
        first = asyncio.create_task(client.wait_for_4k("a"))
        second = asyncio.create_task(client.wait_for_4k("b"))
        third = asyncio.create_task(client.wait_for_4k("c"))
        await asyncio.sleep(0.1)  # a sent, b and c queue
        assert client.pacer.queued == 2
        second.cancel()
        await asyncio.sleep(0)
        assert client.pacer.queued == 1
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert (await third).requests == 1
        assert loop.time() - start < 1 / 0.95
        await first
        with pytest.raises(asyncio.CancelledError):
            await second
    assert fake.posts("b") == 0


def test_admission_rule() -> None:
    """Refused only when no waiter's deadline leaves room for an upscale any more. Exempt
    waiters (a default timeout, or a timeout shorter than an upscale when the call began: the
    caller's choice) give no deadlines at all (``Waiters._bounds``): always sent."""
    estimate = 600.0
    assert not Admission.refuses(1000.0, estimate, [])  # exempt: always of use
    assert not Admission.refuses(1000.0, estimate, [1601.0])
    assert Admission.refuses(1000.0, estimate, [1600.0])
    assert not Admission.refuses(1000.0, estimate, [1200.0, 2000.0])
    assert Admission.refuses(1000.0, estimate, [1200.0, 1500.0])
    assert Admission.refuse_at(estimate, [1200.0, 2000.0]) == 1400.0
    assert Admission.refuse_at(estimate, []) == math.inf


def test_upscale_estimate_configured_learned_or_conservative() -> None:
    """Configured wins; before 20 4Ks are seen, 2 x first poll + 2 intervals; then the 95th
    percentile of what was seen."""
    admission = Admission()
    policy = veo4k.PollPolicy()
    assert admission.estimate(policy) == 2 * 300 + 2 * 30
    assert admission.estimate(veo4k.PollPolicy(upscale_time=420)) == 420
    for seconds in range(1, 20):
        admission.observe(seconds * 10.0)
    assert admission.estimate(policy) == 660
    for seconds in range(20, 101):
        admission.observe(seconds * 10.0)
    assert admission.estimate(policy) == 950.0  # p95 of 10, 20, ..., 1000
    assert admission.estimate(veo4k.PollPolicy(upscale_time=420)) == 420
    with pytest.raises(veo4k.ConfigurationError):
        veo4k.PollPolicy(upscale_time=0)
    with pytest.raises(veo4k.ConfigurationError):
        veo4k.PollPolicy(queue_timeout=math.inf)


def test_demand_tells_the_rank_of_the_next_grant_and_what_is_left() -> None:
    """What a shared limiter asks for: the rank the next slot would go to, without taking it
    (urgent follow-ups first, a held poll after the submissions, nothing when empty), and
    which ranks still wait after that grant."""
    from veo4k._schedule import Ask, Demand, Rank, Schedule

    schedule = Schedule(hold_back=300.0)
    assert schedule.demand(0.0) == Demand(None, (False, False, False))
    submission = Ask(Lane.SUBMIT, urgent=False, due=0.0, latest=3600.0)
    held = Ask(Lane.FOLLOW_UP, urgent=False, due=0.0)
    schedule.push(submission)
    schedule.push(held)
    assert schedule.demand(10.0) == Demand(Rank.SUBMIT, (False, False, False))
    assert schedule.demand(300.0) == Demand(Rank.POLL, (False, False, True))  # hold over
    schedule.push(Ask(Lane.FOLLOW_UP, urgent=False, due=1.0))
    assert schedule.demand(301.0) == Demand(Rank.POLL, (False, True, True))  # two over
    schedule.remove(submission)
    assert schedule.demand(10.0) == Demand(Rank.SPARE, (False, False, False))  # spare polls
    schedule.push(submission)
    urgent = Ask(Lane.FOLLOW_UP, due=5.0)
    schedule.push(urgent)
    assert schedule.demand(10.0) == Demand(Rank.URGENT, (False, False, True))
    assert (schedule.waiting(Lane.FOLLOW_UP), schedule.waiting(Lane.SUBMIT)) == (3, 1)
    assert len(schedule) == 4  # nothing was taken
