"""Run a batch of upscales with a journal: wait, download, record; resume after a crash."""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import pathlib
import re
import stat
from collections.abc import Sequence
from typing import Protocol

import attrs

from .._client import Veo4kClient
from .._errors import (
    APIError,
    BadRequestError,
    FourKUnavailableError,
    MediaFetchError,
    NotFoundError,
    SourceNotReadyError,
    SourceTaskFailedError,
    ValidationError,
    Veo4kError,
)
from .._models import FourKResult, WaitEvent, WaitState
from ._journal import Entry, Journal, JournalError, Kind, State

__all__ = ["BatchOptions", "Sink", "TaskReport", "classify", "describe", "run_batch"]

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception): ")
"""``ClientConnectorError: `` inside a library message: a class name, not a reason."""


@attrs.frozen(kw_only=True)
class TaskReport:
    """How one task of a batch ended."""

    task_id: str
    index: int
    status: str
    """downloaded, done (not downloaded), skipped (finished in an earlier run), failed,
    replayed (failed for good in an earlier run) or interrupted."""
    urls: tuple[str, ...] = ()
    path: str = ""
    size: int = 0
    error: str = ""
    kind: str = ""
    """For failures: ``final`` (Kie's answer about the task) or ``retryable``."""
    requests: int = 0
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        """Finished well, in this run or an earlier one."""
        return self.status in ("downloaded", "done", "skipped")


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
    """Where progress goes: a rich display, plain lines, JSON lines, or nothing."""

    def event(self, event: WaitEvent) -> None: ...
    def done(self, result: FourKResult) -> None: ...
    def report(self, report: TaskReport) -> None: ...


def classify(exc: BaseException) -> str:
    """``final`` for Kie's own verdict on a task, ``retryable`` for anything a rerun may fix.

    Final: the 4K is unavailable, the source generation failed, or Kie refused the task itself
    (400, 404, 422, 451). Auth, credits, rate limits, maintenance, server errors, transport,
    timeouts, configuration, downloads and file-system errors are retryable.
    """
    if isinstance(exc, FourKUnavailableError | SourceTaskFailedError):
        return Kind.FINAL
    if isinstance(exc, SourceNotReadyError):
        return Kind.RETRYABLE
    if isinstance(exc, BadRequestError | NotFoundError | ValidationError | MediaFetchError):
        return Kind.FINAL
    return Kind.RETRYABLE


def describe(exc: BaseException) -> str:
    """A one-line reason for a report: what happened, in words, with Kie's message."""
    if isinstance(exc, FourKUnavailableError):
        return f"4K unavailable: {exc.msg}"
    if isinstance(exc, SourceTaskFailedError):
        return f"source video failed: {exc}"
    if isinstance(exc, APIError):
        return f"Kie refused ({exc.code}): {exc.msg}"
    if isinstance(exc, OSError) and not isinstance(exc, Veo4kError | TimeoutError):
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot write{where}: {exc.strerror or exc}"
    if not isinstance(exc, Veo4kError | OSError):
        return f"unexpected {type(exc).__name__}: {exc} (a bug: please report it)"[:500]
    return _CLASS_NAME.sub("", str(exc)).replace("\n", " ")


async def run_batch(
    client: Veo4kClient,
    pairs: Sequence[tuple[str, int]],
    journal: Journal,
    options: BatchOptions,
    sink: Sink,
) -> list[TaskReport]:
    """Wait for and download every task, journaling each step; return reports in input order.

    Cancelled (SIGINT/SIGTERM), it cancels every wait and returns what finished plus an
    ``interrupted`` report for the rest; every journal transition is already committed.
    """
    unique = list(dict.fromkeys(pairs))
    journal.enqueue(unique)
    known = journal.entries()
    run = _Run(client, journal, options, sink)
    reports: dict[tuple[str, int], TaskReport] = {}

    async def one(task_id: str, index: int) -> None:
        async with run.limit:
            report = await run.one(known[(task_id, index)])
        reports[(task_id, index)] = report
        sink.report(report)

    try:
        try:
            async with asyncio.TaskGroup() as group:
                for task_id, index in unique:
                    group.create_task(one(task_id, index))
        except ExceptionGroup as group_error:
            # the journal cannot be written (disk full, I/O): stop, say so, no traceback
            broken = [e for e in group_error.exceptions if isinstance(e, JournalError)]
            if broken:
                raise broken[0] from None
            raise
    except asyncio.CancelledError:
        pass  # the caller knows why; the reports say what finished
    unfinished = [pair for pair in unique if pair not in reports]
    if unfinished:  # their state stays as it was (a rerun resumes them); the log says why
        journal.note(unfinished, "interrupted")
    stopped = {
        pair: TaskReport(
            task_id=pair[0], index=pair[1], status="interrupted", requests=run.requests.get(pair, 0)
        )
        for pair in unique
        if pair not in reports
    }
    return [reports.get(pair) or stopped[pair] for pair in unique]


class _Run:
    """State shared by the tasks of one batch."""

    def __init__(
        self, client: Veo4kClient, journal: Journal, options: BatchOptions, sink: Sink
    ) -> None:
        self.client, self.journal, self.options, self.sink = client, journal, options, sink
        self.limit = asyncio.Semaphore(options.concurrency)
        self.requests: dict[tuple[str, int], int] = {}
        self.disk_full: str = ""
        """Set by the first ENOSPC: later downloads are not started, waits go on."""
        self.broken: JournalError | None = None
        """Set when a journal write made inside a wait failed: that wait stops with it."""

    async def one(self, entry: Entry) -> TaskReport:
        task_id, index = entry.task_id, entry.index
        dest = self.options.out_dir / f"{task_id}_{index}.mp4"
        report = functools.partial(TaskReport, task_id=task_id, index=index)
        if entry.state == State.DOWNLOADED and _intact(dest, entry.size):
            return report(status="skipped", urls=entry.urls, path=str(dest),
                              size=entry.size)  # fmt: skip
        if entry.state == State.DONE and not self.options.download:
            return report(status="skipped", urls=entry.urls)
        final = entry.state == State.FAILED and entry.kind == Kind.FINAL
        if final and not self.options.retry_failed:
            return report(status="replayed", error=entry.error, kind=Kind.FINAL)
        result: FourKResult | None = None
        journaled = entry.state in (State.DONE, State.DOWNLOADED) and bool(entry.urls)
        try:
            if journaled:
                # the URLs may have expired: download() refreshes them through Kie's API
                result = FourKResult(task_id=task_id, index=index, result_urls=entry.urls)
            else:
                result = await self._wait(task_id, index)
            if not self.options.download:
                return report(status="done", urls=result.result_urls,
                                  requests=result.requests, elapsed=result.elapsed)  # fmt: skip
            try:
                path, size = await self._download(result, dest)
            except Veo4kError:
                if not journaled:
                    raise
                # Kie would not refresh an old link: ask for the finished 4K again (a repeat
                # request answers with its URLs and never starts a second paid job)
                result = await self._wait(task_id, index)
                path, size = await self._download(result, dest)
        except (Veo4kError, OSError) as exc:
            return self._failed(task_id, index, exc, result)
        except JournalError:
            raise  # the batch stops: nothing more could be recorded
        except Exception as exc:  # a bug fails its task, summarised with its type; not the batch
            return self._failed(task_id, index, exc, result)
        self.journal.record(task_id, index, State.DOWNLOADED, path=str(path), size=size)
        return report(status="downloaded", urls=result.result_urls, path=str(path),
                          size=size, requests=result.requests, elapsed=result.elapsed)  # fmt: skip

    def _failed(
        self, task_id: str, index: int, exc: BaseException, result: FourKResult | None
    ) -> TaskReport:
        # a task whose 4K is known failed only its download: a rerun may fix that
        kind = classify(exc) if result is None else Kind.RETRYABLE
        reason = describe(exc)
        cause = exc if isinstance(exc, OSError) else exc.__cause__  # download(): the cause
        if isinstance(cause, OSError) and cause.errno in _NO_SPACE and not self.disk_full:
            self.disk_full = reason
        if result is None:
            self.journal.record(task_id, index, State.FAILED, error=reason, kind=kind)
        else:  # the task stays done with its URLs journaled: a rerun only downloads it
            self.journal.record(task_id, index, State.DONE, error=reason, kind=Kind.RETRYABLE)
        requests = result.requests if result else self.requests.get((task_id, index), 0)
        return TaskReport(task_id=task_id, index=index, status="failed", error=reason, kind=kind,
                          urls=result.result_urls if result else (), requests=requests,
                          elapsed=result.elapsed if result else 0.0)  # fmt: skip

    async def _download(self, result: FourKResult, dest: pathlib.Path) -> tuple[pathlib.Path, int]:
        if self.disk_full:
            raise OSError(errno.ENOSPC, "not started: the disk is full", str(dest))
        # a file already there (a run killed between rename and journal, or truncated by
        # someone) is fetched again: the size of a good one is not known until the host says.
        # The folder is given, not the file: a folder in the way of the file is then an
        # error (EISDIR), not a place to write into.
        path = await self.client.download(result, f"{dest.parent}{os.sep}", overwrite=True)
        return path, path.stat().st_size

    async def _wait(self, task_id: str, index: int) -> FourKResult:
        submitted = False
        me = asyncio.current_task()

        def on_update(event: WaitEvent) -> None:
            nonlocal submitted
            self.requests[(task_id, index)] = event.attempt
            if not submitted and event.state in (WaitState.SUBMITTED, WaitState.PROCESSING):
                submitted = True
                try:
                    self.journal.record(task_id, index, State.SUBMITTED)
                except JournalError as exc:  # the client would only log it: stop this wait
                    self.broken = self.broken or exc
                    if me is not None:
                        me.cancel()
                    return
            self.sink.event(event)

        try:
            result = await self.client.wait_for_4k(
                task_id, index, timeout=self.options.timeout,
                callback_url=self.options.callback_url, on_update=on_update,
            )  # fmt: skip
        except asyncio.CancelledError:
            if self.broken is None or me is None or not me.cancelling():
                raise
            me.uncancel()
            raise self.broken from None  # the batch stops with exit 4, as documented
        self.journal.record(task_id, index, State.DONE, urls=result.result_urls)
        self.sink.done(result)
        return result


def _intact(path: pathlib.Path, size: int | None) -> bool:
    """The file is there, non-empty, and as long as journaled (when known)."""
    try:
        st = path.stat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size > 0 and (size is None or st.st_size == size)
