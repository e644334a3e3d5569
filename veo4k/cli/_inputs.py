"""Task lists from the command line and ``--from`` files, checked in full before any request.

Every problem is reported as ``file:line: reason`` (or ``argument N``), all at once; duplicates
are reported and kept once.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import re
from collections.abc import Iterable

from .. import _validate as check
from .._errors import APIError, ConfigurationError

__all__ = [
    "InputError", "TaskList", "case_clashes", "parse_task", "read_task_file", "read_tasks",
]  # fmt: skip

_LINE_END = re.compile(r"\r\n|\r|\n")
MAX_INPUT_BYTES = 64 * 1024**2


class InputError(Exception):
    """Bad tasks or an unreadable ``--from`` file; ``lines`` holds every problem found."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class TaskList:
    """The tasks to run, in order and unique, and notes about duplicates."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, int]] = []
        self.notes: list[str] = []
        self.errors: list[str] = []
        self._seen: dict[tuple[str, int], str] = {}
        self._files: dict[str, tuple[str, int]] = {}

    def add(self, spec: str, where: str) -> None:
        try:
            pair = parse_task(spec)
        except ValueError as exc:
            self.errors.append(f"{where}: {exc}")
            return
        if pair in self._seen:
            self.notes.append(f"{where}: {pair[0]}:{pair[1]} repeats {self._seen[pair]}; "
                              "it is sent once")  # fmt: skip
            return
        self._seen[pair] = where
        self.pairs.append(pair)
        other = self._files.setdefault(file_key(pair), pair)
        if other != pair:
            self.errors.append(
                f"{where}: {pair[0]}:{pair[1]} and {other[0]}:{other[1]} ({self._seen[other]}) "
                f"differ only in case: {CASE_CLASH}"
            )


CASE_CLASH = (
    "they would share one file on a case-insensitive file system (macOS, Windows); "
    "run them with different --out folders"
)


def file_key(pair: tuple[str, int]) -> str:
    """The download file name as a case-insensitive file system compares it."""
    return check.result_file_name(*pair).casefold()


def case_clashes(pairs: list[tuple[str, int]], known: Iterable[tuple[str, int]]) -> list[str]:
    """Tasks of this run whose file name differs only in case from one already in the
    journal (an earlier run into the same folder): one problem line each."""
    earlier = {file_key(pair): pair for pair in known}
    return [
        f"{t}:{i} and {earlier[key][0]}:{earlier[key][1]} (in the journal) differ only in "
        f"case: {CASE_CLASH}"
        for t, i in pairs
        if (key := file_key((t, i))) in earlier and earlier[key] != (t, i)
    ]


def parse_task(text: str) -> tuple[str, int]:
    """``TASK_ID`` or ``TASK_ID:INDEX``; ValueError with a readable reason otherwise."""
    task_id, sep, index = text.strip().rpartition(":")
    if not sep:
        task_id, index = index, "0"
    if not (index.isascii() and index.isdigit()):  # not "²" nor Arabic-Indic digits
        raise ValueError(f"bad task {text!r}: the index after ':' must be a whole number")
    try:
        return check.task_id(task_id, "the task id"), check.index(int(index), "the index")
    except APIError as exc:  # issue 13 may report id rules as a ValidationError
        raise ValueError(f"bad task {text!r}: {exc.msg}") from None
    except ConfigurationError as exc:
        raise ValueError(f"bad task {text!r}: {exc}") from None


def _decode(path: str, data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise InputError([f"{path}: not valid UTF-16 text"]) from None
    if b"\0" in data[:8192]:
        raise InputError([f"{path}: a binary file, not a list of task ids"])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError([f"{path}:{line}: not UTF-8 text (save the file as UTF-8)"]) from None


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise InputError([f"cannot read {path}: {exc.strerror or exc}"]) from None
    if len(data) > MAX_INPUT_BYTES:
        raise InputError([f"{path}: larger than {MAX_INPUT_BYTES // 1024**2} MiB"])
    # Lines end at \n, \r\n or \r only: str.splitlines() also breaks at \x0b, \x0c,
    # \x1c-\x1e, \x85, U+2028/9, which would turn one bad line into two "valid" paid tasks
    lines = _LINE_END.split(_decode(path, data))
    return lines[:-1] if lines and not lines[-1] else lines


def read_task_file(path: str, tasks: TaskList | None = None) -> list[tuple[str, int]]:
    """One id (or id:index) per line, or CSV ``task_id[,index]`` with an optional header.

    Blank lines and ``#`` comments are skipped. Raises :class:`InputError` listing every bad
    line; returns the unique pairs (into ``tasks`` when given).
    """
    tasks = tasks if tasks is not None else TaskList()
    try:
        lines = _read_lines(path)
    except InputError as exc:
        tasks.errors.extend(exc.lines)
        raise InputError(tasks.errors) from None
    reader = csv.reader(lines, strict=True)
    errors_before = len(tasks.errors)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            tasks.errors.append(f"{path}:{reader.line_num}: not valid CSV ({exc})")
            continue
        where = f"{path}:{reader.line_num}"
        cells = [c.strip() for c in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if reader.line_num == 1 and cells[0].lower() in ("task_id", "taskid", "task"):
            continue
        if len(cells) > 2:
            tasks.errors.append(f"{where}: expected task_id[,index], got {len(cells)} columns")
            continue
        if len(cells) == 2 and ":" in cells[0] and cells[1]:
            tasks.errors.append(f"{where}: the index is given twice")
            continue
        spec = cells[0] if len(cells) == 1 or not cells[1] else f"{cells[0]}:{cells[1]}"
        tasks.add(spec, where)
    if len(tasks.errors) > errors_before:
        raise InputError(tasks.errors)
    return tasks.pairs


def read_tasks(args: list[str], from_file: str | None) -> TaskList:
    """Every task of the command line and ``--from``; InputError listing all problems."""
    tasks = TaskList()
    for number, spec in enumerate(args, 1):
        tasks.add(spec, f"argument {number}")
    if from_file is not None:
        with contextlib.suppress(InputError):  # its errors are in tasks.errors
            read_task_file(from_file, tasks)
    if tasks.errors:
        raise InputError(tasks.errors)
    if not tasks.pairs:
        raise InputError(["no tasks: give TASK_ID arguments or --from FILE"])
    return tasks
