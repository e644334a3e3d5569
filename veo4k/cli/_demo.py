"""``veo4k demo``: a batch through the real client against the built-in fake Kie server."""

from __future__ import annotations

import pathlib
import random
from typing import TextIO

import attrs
from rich.console import Console

from .._client import Veo4kClient
from .._config import PollPolicy, RateLimit, RetryPolicy
from ..testing import FakeKie, TaskOutcome
from ._batch import BatchOptions, TaskReport, run_batch
from ._display import PlainLines, RichProgress, plural, summary_table
from ._journal import Journal
from ._tally import Tally

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


async def run_demo(count: int, seed: int, out_dir: pathlib.Path, out: TextIO) -> list[TaskReport]:
    """Run the demo batch with live progress, download into ``out_dir``, print a summary."""
    tasks = demo_tasks(count, seed)
    console = Console(file=out, highlight=False)
    async with FakeKie(seed=seed, file_size=256 * 1024) as kie:
        for task in tasks:
            kie.add_task(task.task_id, ready_after=task.ready_after, outcome=task.outcome)
        console.print(f"fake Kie server at {kie.base_url}; upscaling {plural(count, 'task')} "
                      f"into {out_dir}")  # fmt: skip
        retry = RetryPolicy(wait_initial=0.1, wait_max=1.0, maintenance_wait=0.5)
        client = Veo4kClient(
            kie.api_key,
            base_url=kie.base_url,
            poll_policy=DEMO_POLICY,
            retry_policy=retry,
            rate_limit=RateLimit(max_requests=50, period=1.0),
            rng=random.Random(seed),
        )
        tally = Tally(policy=DEMO_POLICY, rate=lambda: client.pacer.rate)
        sink = RichProgress(tally, console) if console.is_terminal else PlainLines(out, tally)
        with Journal(out_dir / "veo4k-journal.sqlite") as journal:
            async with client:
                with sink:
                    reports = await run_batch(
                        client, [(t.task_id, 0) for t in tasks], journal,
                        BatchOptions(out_dir=out_dir), sink, tally,
                    )  # fmt: skip
        console.print(summary_table(reports))
        console.print(f"files were downloaded to {out_dir} (a temporary folder, now removed)")
    return reports
