"""Progress output: a live bar on a terminal, plain lines in a pipe, NDJSON with ``--json``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import pathlib
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .._models import FourKResult, WaitEvent, WaitState
from ._reports import TaskReport
from ._tally import BatchStatus, Tally

__all__ = [
    "JsonLines", "PlainLines", "RichProgress", "clock", "counts_line", "detach", "eta_text",
    "footer", "inert", "plural", "shown", "summary_table", "write",
]  # fmt: skip

STATUSES = (
    "downloaded", "done", "skipped", "failed", "not_submitted", "replayed", "interrupted",
)  # fmt: skip
STATUS_EVERY = 5.0
"""Seconds between batch lines in plain and JSON output."""
REDRAW_EVERY = 0.2
"""Seconds between redraws of the live board."""
_QUIET = frozenset({WaitState.QUEUED, WaitState.READY, WaitState.FAILED})
"""Per-task events not written as lines (the batch line counts queued tasks; the task's report
says how it ended)."""


def shown(status: str) -> str:
    """A report's status for people: ``not submitted``."""
    return status.replace("_", " ")


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


def clock(seconds: float) -> str:
    """``1:02:03``: hours, minutes, seconds."""
    total = round(seconds)
    return f"{total // 3600}:{total // 60 % 60:02d}:{total % 60:02d}"


def counts_line(s: BatchStatus, *, eta: bool = True) -> str:
    """``2 queued, 3 submitted, 1 processing, 1 done, 0 failed; ETA 0:05:31 at 1.9 req/s``:
    downloading and not submitted only when there are some."""
    parts = [f"{s.queued} queued", f"{s.submitted} submitted", f"{s.processing} processing"]
    if s.downloading:
        parts.append(f"{s.downloading} downloading")
    parts += [f"{s.done} done", f"{s.failed} failed"]
    if s.not_submitted:
        parts.append(f"{s.not_submitted} not submitted")
    return ", ".join(parts) + (f"; {eta_text(s)}" if eta else "")


def eta_text(s: BatchStatus) -> str:
    """``ETA 0:05:31 at 1.9 req/s`` (the account's current rate)."""
    rate = "" if math.isinf(s.rate) else f" at {s.rate:.3g} req/s"
    return f"ETA {clock(s.eta)}{rate}"


class _Every:
    """A sink's batch line: when the first task is accepted, then every ``STATUS_EVERY``
    seconds (a timer: also while nothing else happens), and once more at the end."""

    def __init__(self, tally: Tally, write: Callable[[BatchStatus], None]) -> None:
        self._tally = tally
        self._write = write
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Write the first line now and start the timer (once)."""
        if self._handle is None:
            self._tick()

    def _tick(self) -> None:
        self._write(self._tally.status())
        self._handle = asyncio.get_running_loop().call_later(STATUS_EVERY, self._tick)

    def stop(self, *, ok: bool) -> None:
        """Stop the timer; write the closing line if the batch ended normally."""
        if self._handle is not None:
            self._handle.cancel()
            if ok:
                self._write(self._tally.status())


class PlainLines:
    """One line per state change and per finished task, and a batch line every few seconds:
    for logs and pipes (no colour). Queued tasks are counted in the batch line only."""

    def __init__(self, out: TextIO, tally: Tally) -> None:
        self._out = out
        self._last: dict[tuple[str, int], WaitState] = {}
        self._every = _Every(tally, lambda status: self._line(counts_line(status)))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._every.stop(ok=exc_type is None)

    def _line(self, text: str) -> None:
        write(self._out, text)

    def event(self, event: WaitEvent) -> None:
        key = (event.task_id, event.index)
        if self._last.get(key) is event.state or event.state in _QUIET:
            return
        self._last[key] = event.state
        self._line(f"{event.task_id}:{event.index} {event.state.value} "
                   f"({event.elapsed:.0f} s, {plural(event.attempt, 'request')})")  # fmt: skip
        if event.state is WaitState.SUBMITTED:
            self._every.start()

    def done(self, result: FourKResult) -> None:
        return None  # the task's report follows at once

    def report(self, report: TaskReport) -> None:
        self._last.pop((report.task_id, report.index), None)
        name = f"{report.task_id}:{report.index} {shown(report.status)}"
        if report.path:
            self._line(f"{name} {pathlib.Path(report.path).name} ({_kib(report.size)})")
        elif report.status in ("failed", "replayed", "not_submitted"):  # why: in the summary
            self._line(f"{name} ({report.kind}; reason in the summary)")
        else:
            self._line(name)


class JsonLines:
    """NDJSON on ``out`` as things happen: submitted, progress, done, then downloaded, failed,
    not_submitted, skipped, replayed or interrupted per task; a ``batch`` object with the
    counts and the ETA when the first task is accepted, then every few seconds and at the end;
    a final ``summary`` object. Nothing else."""

    def __init__(self, out: TextIO, tally: Tally) -> None:
        self._out = out
        self._submitted: set[tuple[str, int]] = set()
        self._every = _Every(tally, lambda status: self._emit(status.as_json()))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._every.stop(ok=exc_type is None)

    def _emit(self, record: dict[str, Any]) -> None:
        write(self._out, json.dumps(record))

    def event(self, event: WaitEvent) -> None:
        key = (event.task_id, event.index)
        if event.state in _QUIET:
            return  # the done / failed objects carry these; queued: the batch object
        name = "progress"
        if key not in self._submitted and event.state in (
            WaitState.SUBMITTED, WaitState.PROCESSING,
        ):  # fmt: skip
            self._submitted.add(key)
            name = "submitted"
        self._emit({"event": name, "task_id": event.task_id, "index": event.index,
                    "state": event.state.value, "requests": event.attempt,
                    "elapsed": round(event.elapsed, 3)})  # fmt: skip
        if name == "submitted":
            self._every.start()

    def done(self, result: FourKResult) -> None:
        self._emit({"event": "done", "task_id": result.task_id, "index": result.index,
                    "result_urls": list(result.result_urls), "requests": result.requests,
                    "elapsed": round(result.elapsed, 3)})  # fmt: skip

    def report(self, report: TaskReport) -> None:
        if report.status != "done":  # else already announced by done()
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
    """A live board: the counts, then a bar of finished tasks with the elapsed time and the
    ETA. Redrawn from the event loop (no thread reads the tally while the batch writes it)."""

    def __init__(self, tally: Tally, console: Console) -> None:
        self._tally = tally
        self._live = Live(console=console, get_renderable=self._render, auto_refresh=False)
        self._handle: asyncio.TimerHandle | None = None

    def __enter__(self) -> Self:
        self._live.start()
        self._tick()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._live.refresh()
        self._live.stop()

    def _tick(self) -> None:
        self._live.refresh()
        self._handle = asyncio.get_running_loop().call_later(REDRAW_EVERY, self._tick)

    def _render(self) -> RenderableType:
        s = self._tally.status()
        bar = Table.grid(expand=True, padding=(0, 1))
        bar.add_column(ratio=1)
        bar.add_column(no_wrap=True)
        bar.add_row(ProgressBar(total=max(s.total, 1), completed=s.finished),
                    f"{s.finished}/{s.total} {clock(s.elapsed)} {eta_text(s)}")  # fmt: skip
        return Group(Text(counts_line(s, eta=False)), bar)

    def event(self, event: WaitEvent) -> None:
        return None  # the tally has it; the next redraw shows it

    def done(self, result: FourKResult) -> None:
        return None

    def report(self, report: TaskReport) -> None:
        return None


def footer(reports: Sequence[TaskReport]) -> str:
    """``3 downloaded, 1 failed; 14 requests``: the same counts as the table's rows."""
    parts = [f"{sum(r.status == s for r in reports)} {shown(s)}" for s in STATUSES]
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
        unsent = r.status in ("interrupted", "not_submitted")
        style = "green" if r.ok else "yellow" if unsent else "red"
        if r.path:
            detail = f"{pathlib.Path(r.path).name} ({_kib(r.size)})"
        elif r.error:
            detail = inert(r.error)
            detail = detail if len(detail) <= 120 else detail[:117] + "..."
        else:
            detail = r.urls[0] if r.urls else ""
        table.add_row(Text(inert(f"{r.task_id}:{r.index}")), Text(shown(r.status), style=style),
                      str(r.requests or ""), Text(inert(detail)))  # fmt: skip
    return table
