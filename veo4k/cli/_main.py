"""Dispatch for the ``veo4k`` command, and the one place errors become messages and exit codes.

No traceback reaches a user for an input or environment problem: each becomes one line
``veo4k: error: ...`` (one per problem for a bad task list) and an exit code from the table in
``veo4k --help``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pathlib
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import TextIO

from .. import _validate as check
from .._client import Veo4kClient
from .._errors import ConfigurationError, Veo4kError
from ._args import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_JOURNAL,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    build_parser,
)
from ._demo import run_demo
from ._display import inert
from ._inputs import InputError
from ._journal import JournalError, JournalLocked
from ._reports import describe
from ._upscale import run_upscale

__all__ = ["main"]


async def _status(task_id: str, as_json: bool, out: TextIO) -> int:
    try:
        task_id = check.task_id(task_id, "the task id")
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    async with Veo4kClient() as client:
        record = await client.get_record(task_id)
    fields = {
        "task_id": record.task_id,
        "success_flag": record.success_flag,
        "state": "generating" if record.generating else "succeeded" if record.succeeded
        else "failed",
        "resolution": record.resolution,
        "result_urls": list(record.result_urls),
        "origin_urls": list(record.origin_urls),
        "error_code": record.error_code,
        "error_message": record.error_message or None,
        "create_time": record.create_time.isoformat() if record.create_time else None,
        "complete_time": record.complete_time.isoformat() if record.complete_time else None,
    }  # fmt: skip
    if as_json:
        print(json.dumps(fields), file=out)
    else:
        for key, value in fields.items():
            if value not in (None, [], ""):
                shown = ", ".join(value) if isinstance(value, list) else value
                print(f"{key:>14}: {inert(shown)}", file=out)
    return EXIT_OK


def _error(err: TextIO, message: str) -> None:
    """One line on stderr; whatever it quotes (a server's words, a path) shown inert."""
    print(f"veo4k: error: {inert(message)}", file=err)


class _CommandLines(logging.Handler):
    """The library's warnings as the command's own lines (``veo4k: warning: ...``), whatever
    they quote shown inert, an exception as its type and message (no traceback: the summary
    says which task it failed). Writes to ``err`` or, by default, to ``sys.stderr`` as it is
    at that moment, so that a live display that redirects it keeps its place on screen."""

    def __init__(self, err: TextIO | None) -> None:
        super().__init__(logging.WARNING)
        self._err = err

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            exc = record.exc_info[1] if record.exc_info else None
            if exc is not None:
                text = f"{text}: {type(exc).__name__}: {exc}"
            line = f"veo4k: {record.levelname.lower()}: {inert(text)}"
            print(line, file=self._err or sys.stderr, flush=True)
        except Exception:  # a closed pipe, a bad format: logging's own rule, never raise
            self.handleError(record)


@contextlib.contextmanager
def _warnings_to(err: TextIO | None) -> Iterator[None]:
    logger = logging.getLogger("veo4k")
    handler = _CommandLines(err)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _testing(argv: Sequence[str]) -> int:
    from ..testing.__main__ import main as serve

    return serve(list(argv), prog="veo4k testing")


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the command and return its exit code (the table is in ``veo4k --help``)."""
    own_err = err
    out = out or sys.stdout
    err = err or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    with _warnings_to(own_err):
        return _run(argv, out, err)


def _run(argv: list[str], out: TextIO, err: TextIO) -> int:
    try:
        if argv[:1] == ["testing"]:
            return _testing(argv[1:])
        args = build_parser().parse_args(argv)
        if args.command == "demo":
            with tempfile.TemporaryDirectory(prefix="veo4k-demo-") as tmp:
                reports = asyncio.run(run_demo(args.tasks, args.seed, pathlib.Path(tmp), out))
            return EXIT_OK if reports else EXIT_FAILED
        if args.command == "status":
            return asyncio.run(_status(args.task_id, args.json, out))
        return asyncio.run(run_upscale(args, out, err))
    except InputError as exc:
        for line in exc.lines:
            _error(err, line)
        if len(exc.lines) > 1:
            print(f"veo4k: {len(exc.lines)} problems; nothing was sent", file=err)
        return EXIT_USAGE
    except UsageError as exc:
        _error(err, str(exc))
        return EXIT_USAGE
    except JournalLocked as exc:
        _error(err, f"another veo4k run is using the journal {exc} (same --out); "
               "wait for it to finish or use another --out")  # fmt: skip
        return EXIT_LOCKED
    except JournalError as exc:
        _error(err, str(exc))
        return EXIT_JOURNAL
    except ConfigurationError as exc:
        message = str(exc)
        if "KIE_API_KEY" in message:
            message = "no API key: set the KIE_API_KEY environment variable"
        elif "base_url" in message:
            message = message.replace("base_url", "KIE_BASE_URL")
            message = message.replace("allow_http=True", "--allow-http")
        elif message.startswith("api_key"):
            message = "KIE_API_KEY" + message.removeprefix("api_key")
        _error(err, message)
        return EXIT_USAGE
    except Veo4kError as exc:
        _error(err, describe(exc))
        return EXIT_FAILED
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        _error(err, f"{exc.strerror or exc}{where}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("veo4k: interrupted; rerun the same command to resume", file=err)
        return EXIT_INTERRUPTED
