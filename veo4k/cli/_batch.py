"""Run a batch of upscales with a journal: wait, download, record; resume after a crash."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Sequence
from typing import Protocol

import attrs

from .._client import Veo4kClient
from .._errors import Veo4kError
from .._models import FourKResult, WaitEvent, WaitState
from ._journal import Entry, Journal, State

__all__ = ["BatchOptions", "Sink", "TaskReport", "run_batch"]


@attrs.frozen(kw_only=True)
class TaskReport:
    """How one task of a batch ended."""

    task_id: str
    index: int
    status: str
    """downloaded, done (not downloaded), skipped (finished in an earlier run) or failed."""
    urls: tuple[str, ...] = ()
    path: str = ""
    size: int = 0
    error: str = ""
    requests: int = 0
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        """Anything but failed."""
        return self.status != "failed"


@attrs.frozen(kw_only=True)
class BatchOptions:
    """What ``veo4k upscale`` and ``veo4k demo`` were asked to do."""

    out_dir: pathlib.Path
    download: bool = True
    concurrency: int = 100
    timeout: float | None = None
    callback_url: str | None = None
    retry_failed: bool = False


class Sink(Protocol):
    """Where progress goes: a rich display, plain lines, or nothing."""

    def event(self, event: WaitEvent) -> None: ...
    def report(self, report: TaskReport) -> None: ...


async def run_batch(
    client: Veo4kClient,
    pairs: Sequence[tuple[str, int]],
    journal: Journal,
    options: BatchOptions,
    sink: Sink,
) -> list[TaskReport]:
    """Wait for and download every task, journaling each step; return reports in input order."""
    journal.enqueue(pairs)
    known = journal.entries()
    limit = asyncio.Semaphore(options.concurrency)
    reports: dict[tuple[str, int], TaskReport] = {}

    async def one(task_id: str, index: int) -> None:
        async with limit:
            report = await _one(client, journal, options, sink, known[(task_id, index)])
        reports[(task_id, index)] = report
        sink.report(report)

    unique = list(dict.fromkeys(pairs))
    async with asyncio.TaskGroup() as group:
        for task_id, index in unique:
            group.create_task(one(task_id, index))
    return [reports[pair] for pair in unique]


async def _one(
    client: Veo4kClient, journal: Journal, options: BatchOptions, sink: Sink, entry: Entry
) -> TaskReport:
    task_id, index = entry.task_id, entry.index
    dest = options.out_dir / f"{task_id}_{index}.mp4"
    if entry.state == State.DOWNLOADED and dest.exists() and dest.stat().st_size == entry.size:
        return TaskReport(task_id=task_id, index=index, status="skipped", urls=entry.urls,
                          path=str(dest), size=entry.size)  # fmt: skip
    if entry.state == State.FAILED and not options.retry_failed:
        return TaskReport(task_id=task_id, index=index, status="failed", error=entry.error)
    try:
        if entry.state in (State.DONE, State.DOWNLOADED) and entry.urls:
            result = FourKResult(task_id=task_id, index=index, result_urls=entry.urls)
        else:
            result = await _wait(client, journal, options, sink, task_id, index)
        if not options.download:
            return TaskReport(task_id=task_id, index=index, status="done", urls=result.result_urls,
                              requests=result.requests, elapsed=result.elapsed)  # fmt: skip
        if dest.exists() and not dest.with_name(dest.name + ".part").exists():
            path = dest  # renamed into place by a run that died before journaling it
        else:
            path = await client.download(result, dest, overwrite=True)
        size = path.stat().st_size
        journal.record(task_id, index, State.DOWNLOADED, path=str(path), size=size)
        return TaskReport(task_id=task_id, index=index, status="downloaded",
                          urls=result.result_urls, path=str(path), size=size,
                          requests=result.requests, elapsed=result.elapsed)  # fmt: skip
    except Veo4kError as exc:
        reason = f"{type(exc).__name__}: {exc}"
        journal.record(task_id, index, State.FAILED, error=reason)
        return TaskReport(task_id=task_id, index=index, status="failed", error=reason)


async def _wait(
    client: Veo4kClient,
    journal: Journal,
    options: BatchOptions,
    sink: Sink,
    task_id: str,
    index: int,
) -> FourKResult:
    submitted = False

    def on_update(event: WaitEvent) -> None:
        nonlocal submitted
        if not submitted and event.state in (WaitState.SUBMITTED, WaitState.PROCESSING):
            submitted = True
            journal.record(task_id, index, State.SUBMITTED)
        sink.event(event)

    result = await client.wait_for_4k(
        task_id, index, timeout=options.timeout, callback_url=options.callback_url,
        on_update=on_update,
    )  # fmt: skip
    journal.record(task_id, index, State.DONE, urls=result.result_urls)
    return result
