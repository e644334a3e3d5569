"""No lost wake-ups (issue 17 item 7): a signal that reaches a poll loop at any point of its
step ends it or restarts it.

The deterministic test drives one loop through its states with a stub request whose end the
test controls, and delivers the signal after each event-loop turn in turn: before the slot is
granted, while the step is created, while the request runs, after it returned but before the
step's end callback ran (the window of the lost wake-up), and while the loop sleeps. The
real-time batches repeat a 1,000-wait batch with callbacks racing the polls.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

import veo4k
from veo4k._limiter import Pacer
from veo4k._models import FourKStatus
from veo4k._poll import SharedWait
from veo4k._schedule import Ask
from veo4k._subscriptions import Subscription
from veo4k._transport import Counter
from veo4k.testing import FAST_POLICY, FakeKie

from .virtual import simulated, virtual_time

SLEEPY = veo4k.PollPolicy(first_delay=1000, first_delay_jitter=0, wait_initial=1000,
                          wait_max=1000, timeout=5000)  # fmt: skip
TURNS = 12  # more event-loop turns than one step takes from grant to its end callback
READY = FourKStatus(task_id="t", index=0, ready=True, result_urls=("https://x.test/4k.mp4",))


class StubKie:
    """A request that takes ``turns`` event-loop turns; ready from the ``ready_at``-th on."""

    def __init__(self, limiter: Pacer, turns: int = 3, ready_at: int = 2) -> None:
        self.limiter = limiter
        self.turns = turns
        self.ready_at = ready_at
        self.requests = 0

    async def submit(self, task_id: str, index: int, counter: Counter, on_retry: object,
                     *, ask: Ask | None = None) -> FourKStatus:  # fmt: skip
        assert ask is not None
        assert ask.slot is not None
        ask.slot = None
        counter.requests += 1
        self.requests += 1
        try:
            for _ in range(self.turns):
                await asyncio.sleep(0)
        finally:
            self.limiter.finished()
        if self.requests >= self.ready_at:
            return READY
        return FourKStatus(task_id=task_id, index=index, ready=False, msg="processing")

    async def get_record(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("not called")


async def run_case(turns_before_signal: int, signal: Callable[[SharedWait], None]) -> None:
    loop = asyncio.get_running_loop()
    pacer = Pacer(None)
    kie = StubKie(pacer)
    ended: list[SharedWait] = []
    wait = SharedWait(
        "t", 0, SLEEPY, random.Random(0), now=loop.time(), submit=kie.submit,
        get_record=kie.get_record, on_end=ended.append, limiter=pacer,
    )  # fmt: skip
    result: asyncio.Future[veo4k.FourKResult] = loop.create_future()
    wait.subscribe(Subscription(result, timeout=5000, listener=None, since=loop.time()))
    for _ in range(turns_before_signal):
        await asyncio.sleep(0)
    start = loop.time()
    signal(wait)
    done = await asyncio.wait_for(result, timeout=60)  # without the fix: the 1000 s sleep
    assert done.video_url == READY.result_urls[0]
    assert loop.time() - start < 1.0
    assert ended == [wait]
    assert wait.done
    assert pacer.schedule.in_flight == 0
    assert not pacer.schedule
    assert kie.requests <= 2


@pytest.mark.parametrize("turns", range(TURNS))
@pytest.mark.parametrize("kind", ["ready", "poll"])
def test_a_signal_at_any_point_of_a_step_ends_or_restarts_the_loop(turns: int, kind: str) -> None:
    """A result, or a callback asking for a confirming poll, delivered after any number of
    event-loop turns (every interleaving with the step's end), ends the wait at once."""

    def send(wait: SharedWait) -> None:
        if kind == "ready":
            wait.signal(ready=READY)
        else:
            wait.signal()

    @virtual_time
    async def run() -> None:
        await run_case(turns, send)

    run()


@virtual_time
async def test_a_signal_before_anyone_subscribes_is_kept() -> None:
    """A callback that came before the first waiter (an early one) is acted on when it
    subscribes: no request, the trusted result at once."""
    loop = asyncio.get_running_loop()
    pacer = Pacer(None)
    kie = StubKie(pacer)
    wait = SharedWait(
        "t", 0, SLEEPY, random.Random(0), now=loop.time(), submit=kie.submit,
        get_record=kie.get_record, on_end=lambda w: None, limiter=pacer,
    )  # fmt: skip
    wait.signal(ready=READY)
    result: asyncio.Future[veo4k.FourKResult] = loop.create_future()
    wait.subscribe(Subscription(result, timeout=5000, listener=None, since=loop.time()))
    assert (await result).via_callback
    assert kie.requests == 0


async def one_batch(n: int, *, coordinator: object = None) -> tuple[int, list[str]]:
    """n waits, 4Ks ready 5-40 ms after submission, callbacks (confirmed) racing fast polls;
    real time. Returns how many ended with a result, and the errors of the others."""
    rng = random.Random(n)
    receiver = veo4k.CallbackReceiver("hmac-key")
    server = veo4k.CallbackServer(receiver, public_url="http://callbacks.simulated/kie")

    async def sink(url: str, body: bytes, headers: dict[str, str]) -> None:
        await receiver.handle(body, headers, token=receiver.token)

    fake = FakeKie(auto_create=False, callback_sink=sink, hmac_key="hmac-key")
    ids = [f"w{i}" for i in range(n)]
    for task_id in ids:
        fake.add_task(task_id, ready_after=rng.uniform(0.005, 0.04))
    options: dict[str, object] = {"coordinator": coordinator} if coordinator else {}
    async with simulated(
        fake, rate_limit=None, poll_policy=FAST_POLICY, callbacks=server,
        callback_poll_policy=FAST_POLICY, **options,
    ) as client:  # fmt: skip
        outcomes = [o async for o in client.as_completed(ids, timeout=30)]
    await fake.close()
    return sum(o.ok for o in outcomes), [repr(o.error) for o in outcomes if not o.ok]


async def test_a_thousand_wait_batch_twenty_times_leaves_no_wait_behind() -> None:
    """Real time, tiny delays: 20 runs of 1,000 waits whose callbacks race their polls; every
    wait ends with its 4K, long before its deadline."""
    loop = asyncio.get_running_loop()
    for run in range(20):
        start = loop.time()
        ok, errors = await one_batch(1000)
        assert (ok, errors) == (1000, []), f"run {run}"
        assert loop.time() - start < 20, f"run {run}"
