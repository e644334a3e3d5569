"""Run a batch of upscales with a journal: wait, download, record; resume after a crash.

Every task to wait for is handed to the client at once (``Veo4kClient.as_completed``): the
account's scheduler sends follow-ups of paid tasks first and submissions by deadline, and
refuses a submission that cannot finish in time, so a list of 10,000 runs at the account's
rate with no task object per wait. ``--concurrency N`` waits on N at a time instead. Results
queue for ``--downloads`` fetchers. The journal moves each task queued -> submitted (the moment
Kie accepts it) -> done (with its URLs) -> downloaded (with its size), each step committed
before the next, so a rerun after ``kill -9`` never pays twice."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import pathlib
import stat
from collections.abc import Awaitable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import attrs

from .._client import Veo4kClient
from .._errors import NotSubmittedError, Veo4kError
from .._models import FourKResult, WaitEvent, WaitState
from ._journal import Entry, Journal, JournalError, Kind, State
from ._reports import TaskReport, classify, describe
from ._tally import Phase, Tally

__all__ = [
    "DEFAULT_DOWNLOADS", "BatchOptions", "Sink", "TaskReport", "classify", "describe", "run_batch",
]  # fmt: skip

DEFAULT_DOWNLOADS = 8
"""Files fetched at once by default: a 4K file takes seconds to fetch and a batch at Kie's
rate finishes about one task a second, so a few keep up; thousands at once would not."""

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_T = TypeVar("_T")


@attrs.frozen(kw_only=True)
class BatchOptions:
    """What ``veo4k upscale`` and ``veo4k demo`` were asked to do."""

    out_dir: pathlib.Path
    download: bool = True
    concurrency: int | None = None
    """Waits at once; None hands every task to the client at once (the account's scheduler
    then keeps the batch at the account's rate)."""
    downloads: int = DEFAULT_DOWNLOADS
    """Files fetched at once."""
    timeout: float | None = None
    callback_url: str | None = None
    retry_failed: bool = False


class Sink(Protocol):
    """Where progress goes: a rich display, plain lines, JSON lines, or nothing."""

    def event(self, event: WaitEvent) -> None: ...
    def done(self, result: FourKResult) -> None: ...
    def report(self, report: TaskReport) -> None: ...


async def run_batch(
    client: Veo4kClient,
    pairs: Sequence[tuple[str, int]],
    journal: Journal,
    options: BatchOptions,
    sink: Sink,
    tally: Tally | None = None,
) -> list[TaskReport]:
    """Wait for and download every task, journaling each step; return reports in input order.

    Every task to wait for is handed to the client at once (``as_completed``): the account's
    scheduler sends follow-ups of paid tasks first and submissions by deadline, so the batch
    runs at the account's rate; ``options.concurrency`` caps the waits at once instead. At most
    ``options.downloads`` files are fetched at once. ``tally`` (one is made if not given) is
    kept up to date for the displays.

    Cancelled (SIGINT/SIGTERM), it cancels every wait and returns what finished plus an
    ``interrupted`` report for the rest; every journal transition is already committed.
    """
    unique = list(dict.fromkeys(pairs))
    journal.enqueue(unique)
    if tally is None:
        tally = Tally(policy=client.poll_policy, rate=lambda: client.pacer.rate,
                      cap=options.concurrency)  # fmt: skip
    run = _Run(client, journal, options, sink, tally)
    try:
        await run.all(unique, journal.entries())
    except asyncio.CancelledError:
        pass  # the caller knows why; the reports say what finished
    except ExceptionGroup as group_error:
        # the journal cannot be written (disk full, I/O): stop, say so, no traceback
        broken = [e for e in group_error.exceptions if isinstance(e, JournalError)]
        if broken:
            raise broken[0] from None
        raise
    unfinished = [pair for pair in unique if pair not in run.reports]
    if unfinished:  # their state stays as it was (a rerun resumes them); the log says why
        journal.note(unfinished, "interrupted")
    stopped = functools.partial(TaskReport, status="interrupted")
    return [
        run.reports.get(pair)
        or stopped(task_id=pair[0], index=pair[1], requests=run.requests.get(pair, 0))
        for pair in unique
    ]


@attrs.frozen
class _Fetch:
    """A download to make: a 4K just waited for, or one whose URLs were journaled earlier."""

    result: FourKResult
    journaled: bool


class _Run:
    """State shared by the waits and downloads of one batch."""

    def __init__(
        self, client: Veo4kClient, journal: Journal, options: BatchOptions, sink: Sink,
        tally: Tally,
    ) -> None:  # fmt: skip
        self.client, self.journal, self.options, self.sink = client, journal, options, sink
        self.tally = tally
        self.reports: dict[tuple[str, int], TaskReport] = {}
        self.requests: dict[tuple[str, int], int] = {}
        self._known: dict[tuple[str, int], Entry] = {}
        self._accepted: set[tuple[str, int]] = set()
        self._fetches: asyncio.Queue[_Fetch | None] = asyncio.Queue()
        self._fetchers = 0
        self._open = 0
        self._group: asyncio.TaskGroup | None = None
        self._waiting: set[asyncio.Task[Any]] = set()
        self.disk_full: str = ""
        """Set by the first ENOSPC: later downloads are not started, waits go on."""
        self.broken: JournalError | None = None
        """Set when a journal write made inside a wait failed: the waits stop with it."""

    # -- the batch ---------------------------------------------------------------------------

    async def all(
        self, unique: Sequence[tuple[str, int]], known: dict[tuple[str, int], Entry]
    ) -> None:
        """Settle what the journal already knows, then wait and download the rest."""
        self._known = known
        self._open = len(unique)
        waits: list[tuple[str, int]] = []
        fetches: list[_Fetch] = []
        for pair in unique:
            entry = known[pair]
            report = self._settled(entry)
            if report is not None:
                self.tally.add([pair], Phase.QUEUED)
                self._report(report)
            elif entry.state in (State.DONE, State.DOWNLOADED) and entry.urls:
                # the URLs may have expired: download() refreshes them through Kie's API
                result = FourKResult(task_id=entry.task_id, index=entry.index,
                                     result_urls=entry.urls)  # fmt: skip
                fetches.append(_Fetch(result, journaled=True))
                self.tally.add([pair], Phase.DOWNLOADING)
            else:
                waits.append(pair)
                self.tally.add([pair], Phase.QUEUED)
        if not waits and not fetches:
            return
        # paid in an earlier run first: asking again costs nothing, and in arrival order they
        # would queue behind this run's new submissions (the scheduler cannot tell them apart)
        waits.sort(key=lambda pair: known[pair].state != State.SUBMITTED)
        if self.options.download:
            self._fetchers = min(self.options.downloads, len(waits) + len(fetches))
        async with asyncio.TaskGroup() as group:
            self._group = group
            for fetch in fetches:
                self._fetches.put_nowait(fetch)
            for _ in range(self._fetchers):
                group.create_task(self._fetcher())
            if waits:
                group.create_task(self._wait_all(waits))

    def _settled(self, entry: Entry) -> TaskReport | None:
        """The report of a task an earlier run finished, or None if there is work left."""
        report = functools.partial(TaskReport, task_id=entry.task_id, index=entry.index)
        dest = self.options.out_dir / f"{entry.task_id}_{entry.index}.mp4"
        if entry.state == State.DOWNLOADED and _intact(dest, entry.size):
            return report(status="skipped", urls=entry.urls, path=str(dest), size=entry.size)
        if entry.state == State.DONE and not self.options.download:
            return report(status="skipped", urls=entry.urls)
        if entry.state == State.DOWNLOADED and entry.urls and not self.options.download:
            return report(status="done", urls=entry.urls)  # its file is gone; none wanted
        final = entry.state == State.FAILED and entry.kind == Kind.FINAL
        if final and not self.options.retry_failed:
            return report(status="replayed", error=entry.error, kind=Kind.FINAL)
        return None

    def _report(self, report: TaskReport) -> None:
        pair = (report.task_id, report.index)
        self.reports[pair] = report
        self.tally.ended(pair, report.status)
        self.sink.report(report)
        self._open -= 1
        if self._open == 0:  # nothing more can come: let the downloaders go
            for _ in range(self._fetchers):
                self._fetches.put_nowait(None)

    # -- waits -------------------------------------------------------------------------------

    async def _wait_all(self, pairs: list[tuple[str, int]]) -> None:
        """Every wait at once through the client (or ``concurrency`` at a time)."""
        try:
            if self.options.concurrency is None:
                await self._stoppable(self._as_completed(pairs))
            else:
                todo = iter(pairs)
                async with asyncio.TaskGroup() as group:
                    for _ in range(min(self.options.concurrency, len(pairs))):
                        group.create_task(self._stoppable(self._one_at_a_time(todo)))
        except ExceptionGroup as group_error:
            raise group_error.exceptions[0] from None  # a JournalError: run_batch says so
        except JournalError:
            raise
        except Exception as exc:  # a bug in the client ended the stream: its waits fail
            for pair in pairs:
                if self.tally.phase(pair) in (Phase.QUEUED, Phase.PROCESSING):
                    self._report(self._failed(pair, exc, None))

    async def _as_completed(self, pairs: list[tuple[str, int]]) -> None:
        stream = self.client.as_completed(
            pairs, timeout=self.options.timeout, callback_url=self.options.callback_url,
            on_update=self._on_update,
        )  # fmt: skip
        async with contextlib.aclosing(stream):
            async for outcome in stream:
                if outcome.result is not None:
                    self._ready(outcome.result)
                else:
                    assert outcome.error is not None
                    pair = (outcome.task_id, outcome.index)
                    self._report(self._failed(pair, outcome.error, None))

    async def _one_at_a_time(self, todo: Iterator[tuple[str, int]]) -> None:
        for task_id, index in todo:
            try:
                result = await self._wait(task_id, index)
            except JournalError:
                raise
            except Exception as exc:  # a Veo4kError, or a bug failing only this task
                self._report(self._failed((task_id, index), exc, None))
            else:
                self._ready(result)

    async def _wait(self, task_id: str, index: int) -> FourKResult:
        return await self.client.wait_for_4k(
            task_id, index, timeout=self.options.timeout, callback_url=self.options.callback_url,
            on_update=self._on_update,
        )  # fmt: skip

    async def _stoppable(self, waiting: Awaitable[_T]) -> _T:
        """Await ``waiting`` in this task; a journal write failing inside a wait (where the
        client would only log it) cancels it, and it raises that JournalError instead."""
        me = asyncio.current_task()
        assert me is not None
        self._waiting.add(me)
        try:
            return await waiting
        except asyncio.CancelledError:
            if self.broken is None:
                raise
            raise self.broken from None  # the batch stops with exit 4, as documented
        finally:
            self._waiting.discard(me)

    def _on_update(self, event: WaitEvent) -> None:
        pair = (event.task_id, event.index)
        self.requests[pair] = event.attempt
        self.tally.event(event)
        if event.state in (WaitState.SUBMITTED, WaitState.PROCESSING) and (
            pair not in self._accepted
        ):
            self._accepted.add(pair)
            try:  # Kie accepted it: journaled before anything else happens to it
                self.journal.record(event.task_id, event.index, State.SUBMITTED)
            except JournalError as exc:
                self.broken = self.broken or exc
                for task in self._waiting:
                    task.cancel()
                return
        self.sink.event(event)

    def _ready(self, result: FourKResult) -> None:
        """A 4K is ready: journal its URLs, then download it (or report it done)."""
        self.journal.record(result.task_id, result.index, State.DONE, urls=result.result_urls)
        self.sink.done(result)
        if not self.options.download:
            self._report(TaskReport(task_id=result.task_id, index=result.index, status="done",
                                    urls=result.result_urls, requests=result.requests,
                                    elapsed=result.elapsed))  # fmt: skip
            return
        self.tally.move((result.task_id, result.index), Phase.DOWNLOADING)
        self._fetches.put_nowait(_Fetch(result, journaled=False))

    def _failed(
        self, pair: tuple[str, int], exc: BaseException, result: FourKResult | None
    ) -> TaskReport:
        task_id, index = pair
        if isinstance(exc, NotSubmittedError) and result is None:
            return self._not_submitted(pair, exc)
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
        requests = result.requests if result else self.requests.get(pair, 0)
        return TaskReport(task_id=task_id, index=index, status="failed", error=reason, kind=kind,
                          urls=result.result_urls if result else (), requests=requests,
                          elapsed=result.elapsed if result else 0.0)  # fmt: skip

    def _not_submitted(self, pair: tuple[str, int], exc: NotSubmittedError) -> TaskReport:
        """Refused before it was sent: nothing to pay, nothing learned. The journal keeps the
        task's state (queued: a rerun submits it) and logs why."""
        entry = self._known.get(pair)
        if entry is not None and entry.state == State.SUBMITTED:
            reason = ("not asked again (no new credits spent; submitted in an earlier run): "
                      f"{exc.reason}")  # fmt: skip
        else:
            reason = f"not submitted (no credits spent): {exc.reason}"
        self.journal.note([pair], reason)
        return TaskReport(task_id=pair[0], index=pair[1], status="not_submitted", error=reason,
                          kind=Kind.RETRYABLE)  # fmt: skip

    # -- downloads ---------------------------------------------------------------------------

    async def _fetcher(self) -> None:
        """One of ``downloads`` workers: fetch, journal, report, until the batch is over."""
        while (fetch := await self._fetches.get()) is not None:
            report = await self._fetch(fetch)
            if report is not None:
                self._report(report)

    async def _fetch(self, fetch: _Fetch) -> TaskReport | None:
        result = fetch.result
        pair = (result.task_id, result.index)
        dest = self.options.out_dir / f"{result.task_id}_{result.index}.mp4"
        try:
            path, size = await self._download(result, dest)
        except (Veo4kError, OSError) as exc:
            if fetch.journaled and isinstance(exc, Veo4kError):
                # Kie would not refresh an old link: ask for the finished 4K again (a repeat
                # request answers with its URLs and never starts a second paid job), without
                # holding a download place while it queues
                assert self._group is not None
                self._group.create_task(self._again(result))
                return None
            return self._failed(pair, exc, result)
        except JournalError:
            raise  # the batch stops: nothing more could be recorded
        except Exception as exc:  # a bug fails its task, summarised with its type; not the batch
            return self._failed(pair, exc, result)
        self.journal.record(result.task_id, result.index, State.DOWNLOADED, path=str(path),
                            size=size)  # fmt: skip
        return TaskReport(task_id=result.task_id, index=result.index, status="downloaded",
                          urls=result.result_urls, path=str(path), size=size,
                          requests=result.requests, elapsed=result.elapsed)  # fmt: skip

    async def _again(self, old: FourKResult) -> None:
        """Wait for a journaled 4K again (its old link is refused), then queue its download."""
        pair = (old.task_id, old.index)
        try:
            result = await self._stoppable(self._wait(old.task_id, old.index))
        except JournalError:
            raise
        except Exception as exc:  # a Veo4kError, or a bug failing only this task
            self._report(self._failed(pair, exc, old))
            return
        self._ready(result)

    async def _download(self, result: FourKResult, dest: pathlib.Path) -> tuple[pathlib.Path, int]:
        if self.disk_full:
            raise OSError(errno.ENOSPC, "not started: the disk is full", str(dest))
        # a file already there (a run killed between rename and journal, or truncated by
        # someone) is fetched again: the size of a good one is not known until the host says.
        # The folder is given, not the file: a folder in the way of the file is then an
        # error (EISDIR), not a place to write into.
        path = await self.client.download(result, f"{dest.parent}{os.sep}", overwrite=True)
        return path, path.stat().st_size


def _intact(path: pathlib.Path, size: int | None) -> bool:
    """The file is there, non-empty, and as long as journaled (when known)."""
    try:
        st = path.stat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size > 0 and (size is None or st.st_size == size)
