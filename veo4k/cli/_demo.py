"""``veo4k demo``: a batch through the real client against the built-in fake Kie server."""

from __future__ import annotations

import random
import sys
from typing import TextIO

import attrs

from .._client import Veo4kClient
from .._config import PollPolicy, RateLimit, RetryPolicy
from .._models import Outcome
from ..testing import FakeKie, TaskOutcome

__all__ = ["DEMO_POLICY", "demo_tasks", "run_demo"]

DEMO_POLICY = PollPolicy(
    first_delay=0.5, first_delay_jitter=0.3, wait_initial=0.5, wait_max=1.0, wait_jitter=0.2,
    timeout=30.0,
)  # fmt: skip
"""The default policy scaled from minutes to seconds, so the demo ends in a few seconds."""


@attrs.frozen
class DemoTask:
    """One task of the demo batch and how the fake will treat it."""

    task_id: str
    ready_after: float
    outcome: TaskOutcome


def demo_tasks(count: int, seed: int) -> list[DemoTask]:
    """A mix of quick, slow and failing tasks (about one in six fails)."""
    rng = random.Random(seed)
    failures = [TaskOutcome.UNAVAILABLE, TaskOutcome.SOURCE_FAILED, TaskOutcome.EXPIRED]
    tasks = []
    for i in range(count):
        outcome = failures[i // 6 % len(failures)] if i % 6 == 5 else TaskOutcome.OK
        ready = rng.uniform(0.5, 1.5) if i % 3 else rng.uniform(2.0, 4.0)
        tasks.append(DemoTask(f"veo_task_demo{i:03d}", round(ready, 2), outcome))
    return tasks


async def run_demo(count: int, seed: int, out: TextIO = sys.stdout) -> list[Outcome]:
    """Run the demo batch and print one line per outcome and a summary; return the outcomes."""
    tasks = demo_tasks(count, seed)
    outcomes: list[Outcome] = []
    async with FakeKie(seed=seed) as kie:
        for task in tasks:
            kie.add_task(task.task_id, ready_after=task.ready_after, outcome=task.outcome)
        print(f"fake Kie server at {kie.base_url}; upscaling {count} tasks", file=out)
        retry = RetryPolicy(wait_initial=0.1, wait_max=1.0, maintenance_wait=0.5)
        async with Veo4kClient(
            kie.api_key,
            base_url=kie.base_url,
            poll_policy=DEMO_POLICY,
            retry_policy=retry,
            rate_limit=RateLimit(max_requests=50, period=1.0),
            rng=random.Random(seed),
        ) as client:
            async for outcome in client.as_completed(t.task_id for t in tasks):
                outcomes.append(outcome)
                print(format_outcome(outcome), file=out)
    done = sum(o.ok for o in outcomes)
    requests = sum(o.result.requests for o in outcomes if o.result)
    print(
        f"summary: {done} done, {len(outcomes) - done} failed, {requests} requests "
        f"for the finished ones",
        file=out,
    )
    return outcomes


def format_outcome(outcome: Outcome) -> str:
    """One readable line for an outcome."""
    if outcome.result is not None:
        r = outcome.result
        return f"  done    {r.task_id}  {r.elapsed:5.1f} s  {r.requests:2d} requests  {r.video_url}"
    return f"  failed  {outcome.task_id}  {type(outcome.error).__name__}: {outcome.error}"
