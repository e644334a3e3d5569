"""Argument parsing and dispatch for the ``veo4k`` command."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import pathlib
import sys
import tempfile
from collections.abc import Sequence
from typing import Any, TextIO

from rich.console import Console

from .. import _validate as check
from .._callback_server import CallbackServer
from .._client import Veo4kClient
from .._config import PollPolicy, RateLimit
from .._errors import ConfigurationError, Veo4kError
from ._batch import BatchOptions, TaskReport, run_batch
from ._demo import run_demo
from ._display import JsonLines, PlainLines, RichProgress, summary_table
from ._journal import Journal

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

UPSCALE_EXAMPLES = """examples:
  veo4k upscale veo_task_abc veo_task_def:1 --out videos/
  veo4k upscale --from tasks.csv --out videos/ --json > results.jsonl
  veo4k upscale --from ids.txt --listen 0.0.0.0:8080 --callback-url https://me.example/kie
Rerun the same command after a crash or Ctrl-C: the journal resumes it without paying twice.
Needs KIE_API_KEY in the environment (KIE_BASE_URL to point elsewhere)."""


class UsageError(Exception):
    """A problem with the command line: exit 2 with a one-line message."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="veo4k",
        description="Upscale Kie.ai Veo 3.1 videos to 4K.",
        epilog="Examples: veo4k demo | veo4k upscale veo_task_abc --out videos/ | "
        "veo4k status veo_task_abc",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="run a batch against the built-in fake Kie server (no key, no network)",
        description="Start the fake Kie server in this process and upscale a batch of tasks "
        "(quick, slow and failing ones) through the real client, with downloads.",
        epilog="example: veo4k demo --tasks 20 --seed 7",
    )
    demo.add_argument("--tasks", type=_bounded_int(1, 1000), default=12, help="batch size (12)")
    demo.add_argument("--seed", type=int, default=1, help="random seed (1)")

    up = sub.add_parser(
        "upscale",
        help="submit, wait for and download 4K videos",
        description="Submit 4K upscales, wait for them (polling, or callbacks with --listen), "
        "download each into OUT as <task_id>_<index>.mp4 and print a summary.",
        epilog=UPSCALE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument("tasks", nargs="*", metavar="TASK_ID[:INDEX]")
    up.add_argument("--from", dest="from_file", metavar="FILE",
                    help="one task id per line, or CSV with task_id[,index]")  # fmt: skip
    up.add_argument("--out", default=".", help="download folder (current folder)")
    up.add_argument("--journal", help="journal file (OUT/veo4k-journal.sqlite)")
    up.add_argument("--callback-url", help="the public URL Kie should call back")
    up.add_argument("--listen", metavar="HOST:PORT", help="receive callbacks on this address")
    up.add_argument("--timeout", type=float, help="seconds to wait per task (3600)")
    up.add_argument("--concurrency", type=_bounded_int(1, 10_000), default=100,
                    help="tasks waited on at once (100)")  # fmt: skip
    up.add_argument("--no-download", action="store_true", help="only print the URLs")
    up.add_argument("--json", action="store_true", help="one JSON object per task on stdout")
    up.add_argument("--retry-failed", action="store_true",
                    help="try again tasks the journal records as failed")  # fmt: skip
    up.add_argument("--rate-limit", metavar="N/SECONDS", default="20/10",
                    help="requests per window for the account (20/10)")  # fmt: skip
    up.add_argument("--first-poll", type=float, metavar="SECONDS",
                    help="advanced: seconds before the first poll (300)")  # fmt: skip
    up.add_argument("--poll-every", type=float, metavar="SECONDS",
                    help="advanced: seconds between polls (30)")  # fmt: skip

    status = sub.add_parser(
        "status",
        help="show a task's record-info",
        description="Print Kie's record-info for a task.",
        epilog="example: veo4k status veo_task_abc --json",
    )
    status.add_argument("task_id")
    status.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _bounded_int(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be within [{low}, {high}]")
        return value

    return parse


def parse_task(text: str) -> tuple[str, int]:
    """``TASK_ID`` or ``TASK_ID:INDEX``."""
    task_id, sep, index = text.strip().rpartition(":")
    if not sep:
        task_id, index = index, "0"
    if not index.isdigit():
        raise UsageError(f"bad task {text!r}: the index after ':' must be a number")
    try:
        return check.task_id(task_id), check.index(int(index))
    except ConfigurationError as exc:
        raise UsageError(f"bad task {text!r}: {exc}") from None


def read_task_file(path: str) -> list[tuple[str, int]]:
    """One id (or id:index) per line, or CSV ``task_id[,index]`` with an optional header."""
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    pairs = []
    for row in csv.reader(text.splitlines()):
        cells = [c.strip() for c in row]
        if not cells or not cells[0] or cells[0].startswith("#"):
            continue
        if cells[0].lower() in ("task_id", "taskid"):
            continue
        spec = cells[0] if len(cells) == 1 or not cells[1] else f"{cells[0]}:{cells[1]}"
        pairs.append(parse_task(spec))
    return pairs


def _policy(args: argparse.Namespace) -> PollPolicy | None:
    if args.first_poll is None and args.poll_every is None:
        return None
    base = PollPolicy()
    every = args.poll_every if args.poll_every is not None else base.wait_initial
    first = args.first_poll if args.first_poll is not None else base.first_delay
    return PollPolicy(
        first_delay=first, first_delay_jitter=min(base.first_delay_jitter, first / 10),
        wait_initial=every, wait_max=every, wait_jitter=min(base.wait_jitter, every / 30),
        timeout=base.timeout,
    )  # fmt: skip


def _rate_limit(text: str) -> RateLimit:
    count, _, period = text.partition("/")
    try:
        return RateLimit(max_requests=int(count), period=float(period))
    except (ValueError, ConfigurationError):
        raise UsageError(f"bad --rate-limit {text!r}: expected N/SECONDS, e.g. 20/10") from None


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"bad --listen {text!r}: expected HOST:PORT")
    return host, int(port)


def _prepare(args: argparse.Namespace) -> tuple[list[tuple[str, int]], BatchOptions, pathlib.Path]:
    """Check the command line and make the output folder, before anything is sent."""
    pairs = [parse_task(t) for t in args.tasks]
    if args.from_file:
        pairs += read_task_file(args.from_file)
    if not pairs:
        raise UsageError("no tasks: give TASK_ID arguments or --from FILE")
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError("--timeout must be > 0")
    if args.callback_url is not None:
        check.callback_url(args.callback_url, "--callback-url")
    out_dir = pathlib.Path(args.out)
    if not args.no_download:
        out_dir.mkdir(parents=True, exist_ok=True)
    journal = pathlib.Path(args.journal) if args.journal else out_dir / "veo4k-journal.sqlite"
    if not journal.parent.is_dir():
        raise UsageError(f"journal folder {journal.parent} does not exist")
    options = BatchOptions(
        out_dir=out_dir, download=not args.no_download, concurrency=args.concurrency,
        timeout=args.timeout, callback_url=None if args.listen else args.callback_url,
        retry_failed=args.retry_failed,
    )  # fmt: skip
    return pairs, options, journal


async def _upscale(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    pairs, options, journal_path = _prepare(args)
    server = None
    if args.listen:
        host, port = _listen(args.listen)
        server = CallbackServer(host=host, port=port, public_url=args.callback_url)
    client = Veo4kClient(
        poll_policy=_policy(args), rate_limit=_rate_limit(args.rate_limit), callbacks=server
    )
    with Journal(journal_path) as journal:
        reports = await _run(client, server, pairs, journal, options, args.json, out, err)
    return EXIT_OK if all(r.ok for r in reports) else EXIT_FAILED


async def _run(
    client: Veo4kClient,
    server: CallbackServer | None,
    pairs: list[tuple[str, int]],
    journal: Journal,
    options: BatchOptions,
    as_json: bool,
    out: TextIO,
    err: TextIO,
) -> list[TaskReport]:
    console = Console(file=err if as_json else out)
    total = len(dict.fromkeys(pairs))
    sink: JsonLines | PlainLines | RichProgress
    if as_json:
        sink = JsonLines(out)
    elif console.is_terminal:
        sink = RichProgress(total, console)
    else:
        sink = PlainLines(out)
    if server is not None:
        await server.start()
    try:
        async with client:
            with sink:
                reports = await run_batch(client, pairs, journal, options, sink)
    finally:
        if server is not None:
            await server.close()
    if not as_json:
        console.print(summary_table(reports))
    return reports


async def _status(args: argparse.Namespace, out: TextIO) -> int:
    async with Veo4kClient() as client:
        record = await client.get_record(args.task_id)
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
    if args.json:
        print(json.dumps(fields), file=out)
    else:
        for key, value in fields.items():
            if value not in (None, [], ""):
                print(f"{key:>14}: {value}", file=out)
    return EXIT_OK


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the command; return its exit code (0 ok, 1 some tasks failed, 2 usage, 130 Ctrl-C)."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            with tempfile.TemporaryDirectory(prefix="veo4k-demo-") as tmp:
                reports = asyncio.run(run_demo(args.tasks, args.seed, pathlib.Path(tmp), out))
            return EXIT_OK if reports else EXIT_FAILED
        if args.command == "status":
            return asyncio.run(_status(args, out))
        return asyncio.run(_upscale(args, out, err))
    except UsageError as exc:
        print(f"veo4k: error: {exc}", file=err)
        return EXIT_USAGE
    except ConfigurationError as exc:
        message = str(exc)
        if "KIE_API_KEY" in message:
            message = "no API key: set the KIE_API_KEY environment variable"
        print(f"veo4k: error: {message}", file=err)
        return EXIT_USAGE
    except Veo4kError as exc:
        print(f"veo4k: error: {type(exc).__name__}: {exc}", file=err)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("veo4k: interrupted; the journal is consistent: rerun the same command to resume",
              file=err)  # fmt: skip
        return EXIT_INTERRUPTED
