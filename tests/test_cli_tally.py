"""The CLI's tally (issue 17.6): one phase per task, the counts every display shows, and an
ETA from the account's rate, in virtual time."""

from __future__ import annotations

import asyncio

import pytest

import veo4k
from veo4k.cli._tally import Phase, Tally

from .virtual import virtual_time

POLICY = veo4k.PollPolicy()  # the policy's guess of an upscale: 2 * 300 + 30 = 630 s


def event(task: str, state: veo4k.WaitState) -> veo4k.WaitEvent:
    return veo4k.WaitEvent(task_id=task, index=0, state=state, attempt=1, elapsed=0.0)


@virtual_time
async def test_each_task_is_counted_in_one_phase() -> None:
    """queued -> processing when Kie accepts it -> downloading -> done; a refused task is
    not submitted; an interrupted one stays where it was; submitted only grows."""
    tally = Tally(policy=POLICY, rate=lambda: 1.9)
    tally.add([("a", 0), ("b", 0), ("c", 0), ("d", 0)])
    tally.event(event("a", veo4k.WaitState.QUEUED))
    tally.event(event("a", veo4k.WaitState.SUBMITTED))
    tally.event(event("a", veo4k.WaitState.PROCESSING))
    tally.event(event("b", veo4k.WaitState.RETRYING))  # not accepted yet: still queued
    s = tally.status()
    assert (s.total, s.queued, s.submitted, s.processing) == (4, 3, 1, 1)
    tally.event(event("a", veo4k.WaitState.READY))
    tally.move(("a", 0), Phase.DOWNLOADING)
    tally.ended(("b", 0), "not_submitted")
    tally.ended(("c", 0), "interrupted")
    s = tally.status()
    assert (s.queued, s.processing, s.downloading, s.not_submitted) == (2, 0, 1, 1)
    tally.ended(("a", 0), "downloaded")
    tally.ended(("d", 0), "replayed")
    s = tally.status()
    assert (s.queued, s.submitted, s.done, s.failed, s.finished) == (1, 1, 1, 1, 3)


@virtual_time
async def test_eta_is_the_rate_bound_of_what_is_left() -> None:
    """1,000 queued at 1.9 requests/s: max(2 requests each, the last submission plus an
    upscale); under --concurrency 100 the places bound it instead; once all are submitted,
    the last submission's upscale or one poll each, whichever is later."""
    pairs = [(f"t{i}", 0) for i in range(1000)]
    tally = Tally(policy=POLICY, rate=lambda: 1.9)
    tally.add(pairs)
    assert tally.status().eta == pytest.approx(max(2000 / 1.9, 1000 / 1.9 + 630))
    capped = Tally(policy=POLICY, rate=lambda: 1.9, cap=100)
    capped.add(pairs)
    assert capped.status().eta == pytest.approx(1000 / 100 * 630 + 630)
    for task, _ in pairs:
        tally.event(event(task, veo4k.WaitState.SUBMITTED))
    assert tally.status().eta == pytest.approx(630)  # 1,000 polls take 526 s: less
    await asyncio.sleep(200)
    assert tally.status().eta == pytest.approx(1000 / 1.9)
    for task, _ in pairs:
        tally.ended((task, 0), "downloaded")
    assert tally.status().eta == 0.0


@virtual_time
async def test_eta_learns_upscales_longer_than_the_policy_guess() -> None:
    """Tasks still processing 900 s after their submission lengthen the upscale the ETA
    counts on (after 10 of them); tasks ready sooner never shorten the policy's guess."""
    tally = Tally(policy=POLICY, rate=lambda: 1.9)
    quick = [(f"q{i}", 0) for i in range(10)]
    slow = [(f"s{i}", 0) for i in range(10)]
    tally.add([*quick, *slow, ("last", 0)])
    for task, _ in [*quick, *slow]:
        tally.event(event(task, veo4k.WaitState.SUBMITTED))
    await asyncio.sleep(100)
    for task, _ in quick:
        tally.event(event(task, veo4k.WaitState.PROCESSING))
        tally.event(event(task, veo4k.WaitState.READY))
    assert tally.upscale_time() == 630
    await asyncio.sleep(800)
    for task, _ in slow:
        tally.event(event(task, veo4k.WaitState.PROCESSING))
        tally.event(event(task, veo4k.WaitState.READY))
    assert tally.upscale_time() == pytest.approx(900)
    assert tally.status().eta == pytest.approx(1 / 1.9 + 900)  # "last" is still queued
