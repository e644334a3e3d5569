"""Progress output: a live bar on a terminal, plain lines in a pipe, NDJSON with ``--json``."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from .._models import FourKResult, WaitEvent, WaitState
from .._progress import BatchProgress
from ._batch import TaskReport

__all__ = [
    "JsonLines", "PlainLines", "RichProgress", "detach", "footer", "inert", "plural",
    "summary_table", "write",
]  # fmt: skip

STATUSES = ("downloaded", "done", "skipped", "failed", "replayed", "interrupted")


def write(out: TextIO, line: str) -> None:
    """Print a line; a reader that went away (``| head``) must not stop the batch."""
    try:
        print(line, file=out, flush=True)
    except BrokenPipeError:
        detach(out)


def detach(out: TextIO) -> None:
    """Send the rest of a closed stdout to /dev/null (no 'Exception ignored' at exit)."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())


def inert(text: object) -> str:
    """``text`` safe for a terminal: every character that is not printable (C0 and C1
    controls such as ESC, bidi overrides and other format characters, line and paragraph
    separators) is shown as its Python escape (``\\x1b``, ``\\u202e``). Server text goes
    through this before any display; Rich renders it as :class:`~rich.text.Text`, never as
    markup. The journal and ``--json`` keep it raw (JSON escapes it itself)."""
    value = str(text)
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)


def plural(count: int, word: str) -> str:
    """``1 request``, ``2 requests``."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def _kib(size: int) -> str:
    return f"{size / 1024:.0f} KiB" if size < 10 * 1024**2 else f"{size / 1024**2:.0f} MiB"


class PlainLines:
    """One line per state change and per finished task: for logs and pipes (no colour)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._last: dict[tuple[str, int], WaitState] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _line(self, text: str) -> None:
        write(self._out, text)

    def event(self, event: WaitEvent) -> None:
        key = (event.task_id, event.index)
        if self._last.get(key) is event.state or event.state in (
            WaitState.READY, WaitState.FAILED,
        ):  # fmt: skip
            return
        self._last[key] = event.state
        self._line(f"{event.task_id}:{event.index} {event.state.value} "
                   f"({event.elapsed:.0f} s, {plural(event.attempt, 'request')})")  # fmt: skip

    def done(self, result: FourKResult) -> None:
        return None  # the task's report follows at once

    def report(self, report: TaskReport) -> None:
        name = f"{report.task_id}:{report.index} {report.status}"
        if report.path:
            self._line(f"{name} {pathlib.Path(report.path).name} ({_kib(report.size)})")
        elif report.status in ("failed", "replayed"):  # the reason is in the summary
            self._line(f"{name} ({report.kind}; reason in the summary)")
        else:
            self._line(name)


class JsonLines:
    """NDJSON on ``out`` as things happen: submitted, progress, done, then downloaded, failed,
    skipped, replayed or interrupted per task; a final ``summary`` object. Nothing else."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._submitted: set[tuple[str, int]] = set()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _emit(self, record: dict[str, Any]) -> None:
        write(self._out, json.dumps(record))

    def event(self, event: WaitEvent) -> None:
        key = (event.task_id, event.index)
        if event.state in (WaitState.READY, WaitState.FAILED):
            return  # the done / failed objects carry these
        name = "progress"
        if key not in self._submitted and event.state in (
            WaitState.SUBMITTED, WaitState.PROCESSING,
        ):  # fmt: skip
            self._submitted.add(key)
            name = "submitted"
        self._emit({"event": name, "task_id": event.task_id, "index": event.index,
                    "state": event.state.value, "requests": event.attempt,
                    "elapsed": round(event.elapsed, 3)})  # fmt: skip

    def done(self, result: FourKResult) -> None:
        self._emit({"event": "done", "task_id": result.task_id, "index": result.index,
                    "result_urls": list(result.result_urls), "requests": result.requests,
                    "elapsed": round(result.elapsed, 3)})  # fmt: skip

    def report(self, report: TaskReport) -> None:
        if report.status == "done":
            return  # already announced by done()
        self._emit({"event": report.status, **task_record(report)})

    def summary(self, reports: Sequence[TaskReport], exit_code: int) -> None:
        """The last line: counts, total requests and every task's record."""
        counts = {s: sum(r.status == s for r in reports) for s in STATUSES}
        self._emit({"event": "summary", "exit_code": exit_code, "counts": counts,
                    "requests": sum(r.requests for r in reports),
                    "tasks": [task_record(r) for r in reports]})  # fmt: skip


def task_record(r: TaskReport) -> dict[str, Any]:
    """One task as JSON: status, URLs, file, error and its kind, requests, seconds."""
    return {
        "task_id": r.task_id, "index": r.index, "status": r.status,
        "result_urls": list(r.urls), "path": r.path or None, "size": r.size or None,
        "error": r.error or None, "error_kind": r.kind or None,
        "requests": r.requests, "elapsed": round(r.elapsed, 3),
    }  # fmt: skip


class RichProgress:
    """A live bar with submitted / processing / done / failed counts, elapsed time and ETA."""

    def __init__(self, total: int, console: Console) -> None:
        self.tally = BatchProgress(total)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=None),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            expand=True,
        )
        self._done = self._failed = 0
        self._bar = self._progress.add_task(self._describe(), total=total)

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def _describe(self) -> str:
        c = self.tally.counts()
        return f"sent {c.submitted} waiting {c.processing} ok {self._done} failed {self._failed}"

    def event(self, event: WaitEvent) -> None:
        self.tally(event)
        self._progress.update(self._bar, description=self._describe())

    def done(self, result: FourKResult) -> None:
        return None

    def report(self, report: TaskReport) -> None:
        if report.ok:
            self._done += 1
        else:
            self._failed += 1
        self._progress.update(
            self._bar, completed=self._done + self._failed, description=self._describe()
        )


def footer(reports: Sequence[TaskReport]) -> str:
    """``3 downloaded, 1 failed; 14 requests``: the same counts as the table's rows."""
    parts = [f"{sum(r.status == s for r in reports)} {s}" for s in STATUSES]
    parts = [p for p in parts if not p.startswith("0 ")]
    requests = plural(sum(r.requests for r in reports), "request")
    return f"{plural(len(reports), 'task')}: {', '.join(parts)}; {requests}"


def summary_table(reports: Sequence[TaskReport]) -> Table:
    """The end-of-run table: one row per task, each failure's reason once, a totals caption."""
    table = Table(title="veo4k batch", caption=footer(reports), expand=False)
    table.add_column("task", overflow="fold", ratio=3)
    table.add_column("status", no_wrap=True)
    table.add_column("req", justify="right", no_wrap=True)
    table.add_column("file / error", overflow="fold", ratio=4)
    for r in reports:
        style = "green" if r.ok else "red" if r.status != "interrupted" else "yellow"
        if r.path:
            detail = f"{pathlib.Path(r.path).name} ({_kib(r.size)})"
        elif r.error:
            detail = inert(r.error)
            detail = detail if len(detail) <= 120 else detail[:117] + "..."
        else:
            detail = r.urls[0] if r.urls else ""
        table.add_row(Text(inert(f"{r.task_id}:{r.index}")), Text(r.status, style=style),
                      str(r.requests or ""), Text(inert(detail)))  # fmt: skip
    return table
