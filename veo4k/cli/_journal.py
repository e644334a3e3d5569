"""The batch journal: every task's state in SQLite, each transition committed before the next.

States move queued -> submitted -> done -> downloaded, or to failed. A failure records its
``kind``: ``final`` (Kie's own answer about the task: replayed on a rerun) or ``retryable``
(auth, configuration, transport, interrupted, download: tried again on a rerun). A rerun reads
the states back: downloaded tasks whose file is intact are skipped, done ones only downloaded,
submitted ones waited on again (a repeat get-4k-video request reports progress and never
starts a second paid job).

One run per journal: :func:`lock` takes an OS lock on ``<journal>.lock`` that the kernel
releases when the process dies, even by ``kill -9``, so a stale lock cannot exist.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import attrs

from .. import _validate as check

try:  # POSIX; on Windows the journal is used without the one-run guard
    import fcntl
except ImportError:  # pragma: no cover - depends on the platform
    fcntl = None  # type: ignore[assignment]  # reason: optional platform module

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO planted there must not block the open

__all__ = [
    "SCHEMA_VERSION", "Entry", "Journal", "JournalError", "JournalLocked", "Kind", "State", "lock",
]  # fmt: skip

SCHEMA_VERSION = 2
"""1: states only (veo4k 0.1); 2: failures carry a kind (final or retryable)."""

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
    kind TEXT NOT NULL DEFAULT '',
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


class JournalError(Exception):
    """The journal cannot be used: corrupt, not a journal, from a newer veo4k, or unwritable."""


class JournalLocked(Exception):
    """Another veo4k run holds the journal."""


class State:
    """Journal states, in order."""

    QUEUED = "queued"
    SUBMITTED = "submitted"
    DONE = "done"
    DOWNLOADED = "downloaded"
    FAILED = "failed"


class Kind:
    """Why a task failed: Kie's final answer, or something a rerun may fix."""

    FINAL = "final"
    RETRYABLE = "retryable"


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
    kind: str = ""


@contextlib.contextmanager
def lock(journal: Path) -> Iterator[None]:
    """Hold an exclusive OS lock on ``<journal>.lock`` or raise :class:`JournalLocked` at once.

    ``flock`` (not a PID file) because the kernel drops it with the process: a crash or
    ``kill -9`` leaves no stale lock to clean up. The stdlib suffices, so no dependency.
    """
    path = journal.with_name(journal.name + ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _NONBLOCK, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise JournalLocked(str(journal)) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _own_file(path: Path) -> tuple[int, int]:
    """Open (or create) the journal ourselves first, never through a symlink, and refuse a
    symlink at SQLite's companion files (``-wal``, ``-shm``, ``-journal``): SQLite follows
    links. Returns the file's (device, inode) to compare with what SQLite opened."""
    for companion in ("-wal", "-shm", "-journal"):
        if os.path.islink(f"{path}{companion}"):
            raise JournalError(f"{path}{companion} is a symlink; refusing to write through it")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _NONBLOCK, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise JournalError(f"{path} is a symlink; refusing to write through it") from None
        raise JournalError(f"cannot open journal {path}: {exc.strerror or exc}") from None
    try:  # closed before SQLite opens it: closing a descriptor drops a process's POSIX locks
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        raise JournalError(f"{path} is not a regular file")
    return st.st_dev, st.st_ino


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


_STATES = frozenset({State.QUEUED, State.SUBMITTED, State.DONE, State.DOWNLOADED, State.FAILED})


def _entry(row: tuple[object, ...]) -> Entry | None:
    """A row as an Entry, or None if any cell is not what veo4k writes (a hand-edited or
    damaged file): the journal is then refused as a whole, never half-trusted."""
    task_id, index, state, urls, error, path, size, kind = row
    try:
        url_list = json.loads(urls) if isinstance(urls, str) else None
    except ValueError:
        return None
    if (
        not check.is_task_id(task_id)
        or isinstance(index, bool)
        or not isinstance(index, int)
        or state not in _STATES
        or not isinstance(url_list, list)
        or not all(isinstance(u, str) for u in url_list)
        or not all(isinstance(v, str) for v in (error, path, kind))
        or isinstance(size, bool)
        or not isinstance(size, int)
    ):
        return None
    assert isinstance(task_id, str)  # for mypy: checked just above
    return Entry(task_id, index, str(state), tuple(url_list), str(error), str(path), size,
                 str(kind))  # fmt: skip


class Journal:
    """A SQLite file (WAL mode) recording each task's transitions; safe across crashes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        made = _own_file(self.path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from None
        if _identity(self.path) != made:  # swapped between our open and SQLite's
            self._db.close()
            raise JournalError(f"{self.path} changed while it was opened; try again")
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise JournalError(
                f"{self.path} is not a usable veo4k journal ({exc}); move it away to start over"
            ) from None
        except JournalError:
            self._db.close()
            raise

    def _open(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"{self.path} was written by a newer veo4k (journal schema {version}, this "
                f"veo4k reads up to {SCHEMA_VERSION}); upgrade veo4k or use another --out"
            )
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        if tables and "tasks" not in tables:
            raise JournalError(f"{self.path} is not a veo4k journal; use another --journal")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(tasks)")}
        if "kind" not in columns:  # schema 1: old failures count as retryable
            self._db.execute("ALTER TABLE tasks ADD COLUMN kind TEXT NOT NULL DEFAULT ''")
        if version != SCHEMA_VERSION:
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

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
        try:
            rows = self._db.execute(
                "SELECT task_id, idx, state, urls, error, path, size, kind FROM tasks"
            ).fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read the journal {self.path}: {exc}") from None
        entries = {}
        for row in rows:
            entry = _entry(row)
            if entry is None:
                raise JournalError(
                    f"{self.path} has a corrupt row (task {str(row[0])[:80]!r}); move the "
                    "journal away to start over"
                )
            entries[(entry.task_id, entry.index)] = entry
        return entries

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
        kind: str = "",
        path: str = "",
        size: int = 0,
    ) -> None:
        """Move a task to ``state`` and log the transition, in one committed transaction."""
        now = time.time()
        url_list = list(urls)
        with self._tx():
            if url_list:
                self._db.execute(
                    "UPDATE tasks SET state=?, urls=?, error=?, kind=?, updated=? "
                    "WHERE task_id=? AND idx=?",
                    (state, json.dumps(url_list), error, kind, now, task_id, index),
                )
            else:
                self._db.execute(
                    "UPDATE tasks SET state=?, error=?, kind=?, "
                    "path=CASE WHEN ?='' THEN path ELSE ? END, "
                    "size=CASE WHEN ?=0 THEN size ELSE ? END, updated=? WHERE task_id=? AND idx=?",
                    (state, error, kind, path, path, size, size, now, task_id, index),
                )
            detail = error or path or (url_list[0] if url_list else "")
            self._db.execute(
                "INSERT INTO events (at, task_id, idx, state, detail) VALUES (?, ?, ?, ?, ?)",
                (now, task_id, index, state, detail),
            )

    def note(self, pairs: Iterable[tuple[str, int]], detail: str) -> None:
        """Log an event (e.g. ``interrupted``) for tasks without changing their state."""
        now = time.time()
        with self._tx():
            self._db.executemany(
                "INSERT INTO events (at, task_id, idx, state, detail) "
                "SELECT ?, task_id, idx, state, ? FROM tasks WHERE task_id=? AND idx=?",
                [(now, detail, t, i) for t, i in pairs],
            )

    def _tx(self) -> _Transaction:
        return _Transaction(self._db, self.path)


class _Transaction:
    """One committed transaction; a failed write (disk full, I/O) becomes a JournalError."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db, self._path = db, path

    def __enter__(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise JournalError(f"cannot write the journal {self._path}: {exc}") from None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._db.execute("ROLLBACK" if exc_type else "COMMIT")
        except sqlite3.Error as error:
            if exc_type is None:
                raise JournalError(f"cannot write the journal {self._path}: {error}") from None
        if isinstance(exc, sqlite3.Error):
            raise JournalError(f"cannot write the journal {self._path}: {exc}") from None
