"""The ``veo4k`` command line: options with units and defaults, exit codes, one-line errors."""

from __future__ import annotations

import argparse
import inspect
import math
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

from .._client import Veo4kClient
from ._batch import DEFAULT_DOWNLOADS

__all__ = ["EXIT_CODES", "OPT_INS", "UsageError", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED, EXIT_JOURNAL = 0, 1, 2, 3, 4
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143

EXIT_CODES = """exit codes:
  0    every task succeeded (or had in an earlier run)
  1    some tasks failed or were not submitted (the summary says which and why)
  2    bad command line, task list, --out or option, or no API key: nothing sent
  3    another veo4k run is using this journal (same --out): nothing sent
  4    the journal is corrupt, from a newer veo4k, or cannot be written
  130  stopped by Ctrl-C (SIGINT): rerun the same command to resume
  143  stopped by SIGTERM (docker stop, systemd, CI): rerun to resume"""

UPSCALE_EXAMPLES = f"""examples:
  veo4k upscale veo_task_abc veo_task_def:1 --out videos/
  veo4k upscale --from tasks.csv --out videos/ --json > events.jsonl
  veo4k upscale --from ids.txt --listen 0.0.0.0:8080 \\
      --callback-url https://me.example.com/kie/callback

Rerun the same command after a crash, Ctrl-C or failure: the journal
(OUT/veo4k-journal.sqlite) resumes it without paying twice. Tasks that failed
for a reason a rerun may fix (key, network, timeout, download) are tried again;
Kie's final answers (4K unavailable, source failed) are only listed, unless
--retry-failed. Needs KIE_API_KEY (KIE_BASE_URL to point elsewhere).

{EXIT_CODES}"""


CLIENT_OPTIONS = frozenset(inspect.signature(Veo4kClient).parameters)
OPT_INS = {
    "allow_http": "allow plain-http Kie and file URLs: the API key then crosses the network "
    "in clear text (default: https only; a loopback KIE_BASE_URL, e.g. a local fake, needs "
    "no flag)",
    "allow_private_hosts": "allow private and loopback hosts (default: public hosts only)",
}


class UsageError(Exception):
    """A problem with the command line: exit 2 with a one-line message."""


class Parser(argparse.ArgumentParser):
    """argparse that reports errors as :class:`UsageError` (one line, no usage dump)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _version() -> str:
    try:
        return version("veo4k")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def seconds(text: str) -> float:
    """A finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def whole(low: int, high: int) -> Any:
    """A whole number within [low, high]."""

    def number(text: str) -> int:
        if not text.strip().isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(
                f"expected a whole number from {low} to {high}, got {text!r}"
            )
        return int(text)

    return number


def build_parser() -> Parser:
    """Every subcommand, each option with its unit and default."""
    parser = Parser(
        prog="veo4k",
        description="Upscale Kie.ai Veo 3.1 videos to 4K.",
        epilog="examples:\n  veo4k demo\n  veo4k upscale veo_task_abc --out videos/\n"
        f"  veo4k status veo_task_abc\n\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"veo4k {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run a batch against the built-in fake Kie server (no key, no network)",
        description="Start a fake Kie server in this process and upscale a batch of tasks "
        "(quick, slow and failing ones) through the real client, with downloads into a "
        "temporary folder.",
        epilog="example: veo4k demo --tasks 20 --seed 7",
    )
    demo.add_argument("--tasks", type=whole(1, 1000), default=12, metavar="N",
                      help="number of tasks, 1 to 1000 (default: 12)")  # fmt: skip
    demo.add_argument("--seed", type=whole(0, 2**31), default=1, metavar="N",
                      help="random seed for timings and outcomes (default: 1)")  # fmt: skip

    up = sub.add_parser(
        "upscale",
        help="submit, wait for and download 4K videos",
        description="Submit 4K upscales, wait for them (polling, or callbacks with\n"
        "--listen), download each into OUT as <task_id>_<index>.mp4, print a summary.",
        epilog=UPSCALE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument("tasks", nargs="*", metavar="TASK_ID[:INDEX]",
                    help="tasks to upscale (INDEX: which video, default 0)")  # fmt: skip
    up.add_argument("--from", dest="from_file", metavar="FILE",
                    help="UTF-8 file: one TASK_ID[:INDEX] per line, or CSV task_id[,index] "
                    "with an optional header; # starts a comment")  # fmt: skip
    up.add_argument("--out", default=".", metavar="FOLDER",
                    help="download folder, created if missing; holds the journal "
                    "(default: the current folder)")  # fmt: skip
    up.add_argument("--journal", metavar="FILE",
                    help="journal file (default: OUT/veo4k-journal.sqlite)")  # fmt: skip
    up.add_argument("--no-download", action="store_true",
                    help="wait only and print the URLs (valid about 14 days)")  # fmt: skip
    up.add_argument(
        "--retry-failed",
        action="store_true",
        help="also retry tasks Kie answered with a final failure in an earlier run",
    )
    up.add_argument("--json", action="store_true",
                    help="NDJSON on stdout: one object per event as it happens (submitted, "
                    "progress, done, downloaded, failed ...), a batch object with the counts "
                    "and the ETA every few seconds, and a final summary (none on exit 4: "
                    "the journal could not be written, stderr says why)")  # fmt: skip
    up.add_argument("--timeout", type=seconds, metavar="SECONDS",
                    help="give up on a task this long after its wait starts (all start "
                    "together unless --concurrency); a task that could no longer finish in "
                    "time is not submitted (no credits spent) and a rerun sends it (default: "
                    "3600 from each task's submission)")  # fmt: skip
    up.add_argument("--concurrency", type=whole(1, 10_000), metavar="N",
                    help="wait on at most N tasks at once (default: no cap: every task is "
                    "handed to the account's scheduler, which sends polls of paid tasks "
                    "first and keeps the batch at the account's rate)")  # fmt: skip
    up.add_argument("--downloads", type=whole(1, 1000), default=DEFAULT_DOWNLOADS,
                    metavar="N", help="files downloaded at once "
                    f"(default: {DEFAULT_DOWNLOADS})")  # fmt: skip
    up.add_argument("--rate-limit", metavar="N/SECONDS", default="20/10",
                    help="at most N requests per SECONDS for the account, shared by all "
                    "tasks (default: 20/10, Kie's limit)")  # fmt: skip
    cb = up.add_argument_group("callbacks (optional: polling works without them)")
    cb.add_argument("--callback-url", metavar="URL",
                    help="public http(s) URL Kie calls when a 4K is ready; with --listen, "
                    "the built-in server answers on this URL's path")  # fmt: skip
    cb.add_argument("--listen", metavar="HOST:PORT",
                    help="run the built-in callback server on this address, e.g. "
                    "127.0.0.1:8080 behind a tunnel; a wildcard host (0.0.0.0, [::]) needs "
                    "--callback-url (default: no server)")  # fmt: skip
    for flag, what in OPT_INS.items():
        if flag in CLIENT_OPTIONS:  # a client that offers the opt-in gets the flag
            up.add_argument(f"--{flag.replace('_', '-')}", action="store_true", help=what)
    adv = up.add_argument_group("polling (advanced)")
    adv.add_argument("--first-poll", type=seconds, metavar="SECONDS",
                     help="wait before the first poll (default: 300)")  # fmt: skip
    adv.add_argument("--poll-every", type=seconds, metavar="SECONDS",
                     help="wait between polls (default: 30)")  # fmt: skip

    status = sub.add_parser(
        "status",
        help="show a task's record-info",
        description="Print Kie's record-info for a task: state, resolution, URLs, errors.",
        epilog="example: veo4k status veo_task_abc --json",
    )
    status.add_argument("task_id", metavar="TASK_ID")
    status.add_argument("--json", action="store_true", help="print one JSON object")

    sub.add_parser(
        "testing",
        help="serve the fake Kie server until stopped (see veo4k testing --help)",
        add_help=False,
    )
    return parser
