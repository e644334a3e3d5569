"""The batch journal: every task's state in SQLite, each transition committed before the next.

States move queued -> submitted -> done -> downloaded, or to failed. A rerun reads them back:
downloaded tasks are skipped, done ones only downloaded, submitted ones waited on again (a
repeat get-4k-video request reports progress and never starts a second paid job).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Self

import attrs

__all__ = ["Entry", "Journal", "State"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    state TEXT NOT NULL,
    urls TEXT NOT NULL DEFAULT '[]',
    error TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL,
    PRIMARY KEY (task_id, idx)
);
CREATE TABLE IF NOT EXISTS events (
    at REAL NOT NULL,
    task_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""


class State:
    """Journal states, in order."""

    QUEUED = "queued"
    SUBMITTED = "submitted"
    DONE = "done"
    DOWNLOADED = "downloaded"
    FAILED = "failed"


@attrs.frozen
class Entry:
    """One task's last known state."""

    task_id: str
    index: int
    state: str
    urls: tuple[str, ...] = ()
    error: str = ""
    path: str = ""
    size: int = 0


class Journal:
    """A SQLite file (WAL mode) recording each task's transitions; safe across crashes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database (everything is already committed)."""
        self._db.close()

    def entries(self) -> dict[tuple[str, int], Entry]:
        """Every task's last state."""
        rows = self._db.execute(
            "SELECT task_id, idx, state, urls, error, path, size FROM tasks"
        ).fetchall()
        return {
            (r[0], r[1]): Entry(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4], r[5], r[6])
            for r in rows
        }

    def enqueue(self, pairs: Iterable[tuple[str, int]]) -> None:
        """Record new tasks as queued; tasks already known keep their state."""
        now = time.time()
        with self._tx():
            self._db.executemany(
                "INSERT OR IGNORE INTO tasks (task_id, idx, state, updated) VALUES (?, ?, ?, ?)",
                [(t, i, State.QUEUED, now) for t, i in pairs],
            )

    def record(
        self,
        task_id: str,
        index: int,
        state: str,
        *,
        urls: Iterable[str] = (),
        error: str = "",
        path: str = "",
        size: int = 0,
    ) -> None:
        """Move a task to ``state`` and log the transition, in one committed transaction."""
        now = time.time()
        url_list = list(urls)
        with self._tx():
            if url_list:
                self._db.execute(
                    "UPDATE tasks SET state=?, urls=?, error=?, updated=? "
                    "WHERE task_id=? AND idx=?",
                    (state, json.dumps(url_list), error, now, task_id, index),
                )
            else:
                self._db.execute(
                    "UPDATE tasks SET state=?, error=?, path=CASE WHEN ?='' THEN path ELSE ? END, "
                    "size=CASE WHEN ?=0 THEN size ELSE ? END, updated=? WHERE task_id=? AND idx=?",
                    (state, error, path, path, size, size, now, task_id, index),
                )
            detail = error or path or (url_list[0] if url_list else "")
            self._db.execute(
                "INSERT INTO events (at, task_id, idx, state, detail) VALUES (?, ?, ?, ?, ?)",
                (now, task_id, index, state, detail),
            )

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
