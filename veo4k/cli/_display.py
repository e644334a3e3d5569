"""Progress output: a rich live display on a terminal, one line per event otherwise."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from types import TracebackType
from typing import Self, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .._models import WaitEvent, WaitState
from .._progress import BatchProgress
from ._batch import TaskReport

__all__ = ["JsonLines", "PlainLines", "RichProgress", "summary_table"]


class PlainLines:
    """One line per state change and per finished task: for logs and pipes."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._last: dict[tuple[str, int], WaitState] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def event(self, event: WaitEvent) -> None:
        key = (event.task_id, event.index)
        if self._last.get(key) is event.state or event.state in (WaitState.READY,):
            return
        self._last[key] = event.state
        print(f"{event.task_id}:{event.index} {event.state.value} ({event.elapsed:.0f} s, "
              f"{event.attempt} requests)", file=self._out, flush=True)  # fmt: skip

    def report(self, report: TaskReport) -> None:
        detail = report.path or report.error or (report.urls[0] if report.urls else "")
        print(f"{report.task_id}:{report.index} {report.status} {detail}", file=self._out,
              flush=True)  # fmt: skip


class JsonLines(PlainLines):
    """One JSON object per finished task on ``out``; nothing else there."""

    def event(self, event: WaitEvent) -> None:
        return None  # progress is not printed: stdout holds only the JSON lines

    def report(self, report: TaskReport) -> None:
        record = {
            "task_id": report.task_id, "index": report.index, "status": report.status,
            "result_urls": list(report.urls), "path": report.path or None,
            "size": report.size or None, "error": report.error or None,
            "requests": report.requests, "elapsed": round(report.elapsed, 3),
        }  # fmt: skip
        print(json.dumps(record), file=self._out, flush=True)


class RichProgress:
    """A live bar with submitted / processing / done / failed counts, elapsed time and ETA."""

    def __init__(self, total: int, console: Console) -> None:
        self.tally = BatchProgress(total)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
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
        return (
            f"submitted {c.submitted}  processing {c.processing}  "
            f"done {self._done}  failed {self._failed}"
        )

    def event(self, event: WaitEvent) -> None:
        self.tally(event)
        self._progress.update(self._bar, description=self._describe())

    def report(self, report: TaskReport) -> None:
        if report.ok:
            self._done += 1
        else:
            self._failed += 1
        self._progress.update(
            self._bar, completed=self._done + self._failed, description=self._describe()
        )


def summary_table(reports: Sequence[TaskReport]) -> Table:
    """The end-of-run table: one row per task and a totals caption."""
    table = Table(title="veo4k batch")
    for column in ("task", "status", "requests", "seconds", "file / error"):
        table.add_column(column, overflow="fold")
    for r in reports:
        style = "red" if r.status == "failed" else "green"
        if r.path:
            detail = f"{pathlib.Path(r.path).name} ({r.size / 1024:.0f} KiB)"
        else:
            detail = r.error if len(r.error) < 90 else r.error[:87] + "..."
        table.add_row(f"{r.task_id}:{r.index}", f"[{style}]{r.status}[/]", str(r.requests or ""),
                      f"{r.elapsed:.1f}" if r.elapsed else "", detail)  # fmt: skip
    ok = sum(r.ok for r in reports)
    requests = sum(r.requests for r in reports)
    table.caption = f"{ok} succeeded, {len(reports) - ok} failed, {requests} requests"
    return table
