"""``veo4k upscale``: check everything, take the journal's lock, run, summarise; stop cleanly
on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import ipaddress
import os
import pathlib
import signal
import tempfile
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

import attrs
from rich.console import Console

from .. import _validate as check
from .._callback_server import CallbackServer
from .._client import Veo4kClient
from .._config import PollPolicy, RateLimit
from .._errors import ConfigurationError
from ._args import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    OPT_INS,
    UsageError,
)
from ._batch import BatchOptions, TaskReport, run_batch
from ._display import (
    JsonLines,
    PlainLines,
    RichProgress,
    detach,
    inert,
    plural,
    summary_table,
)
from ._inputs import InputError, case_clashes, read_tasks
from ._journal import Journal, lock
from ._tally import Tally

__all__ = ["prepare_out", "run_upscale"]

DEFAULT_JOURNAL = "veo4k-journal.sqlite"
_WILDCARDS = ("0.0.0.0", "::", "[::]", "", "*")


def _policy(args: argparse.Namespace) -> PollPolicy | None:
    if args.first_poll is None and args.poll_every is None:
        return None
    base = PollPolicy()
    every = args.poll_every if args.poll_every is not None else base.wait_initial
    first = args.first_poll if args.first_poll is not None else base.first_delay
    return PollPolicy(
        first_delay=first, first_delay_jitter=min(base.first_delay_jitter, first / 10),
        wait_initial=every, wait_max=every, wait_jitter=min(base.wait_jitter, every / 30),
        timeout=max(base.timeout, args.timeout or 0),
    )  # fmt: skip


def _rate_limit(text: str) -> RateLimit:
    count, _, period = text.partition("/")
    try:
        return RateLimit(max_requests=int(count), period=float(period))
    except (ValueError, ConfigurationError):
        raise UsageError(
            f"bad --rate-limit {text!r}: expected N/SECONDS with N >= 1, e.g. 20/10"
        ) from None


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    inner = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if (
        not port.isdigit()
        or not 0 <= int(port) <= 65535
        or (not host and ":" not in text)
        or "[" in inner
        or "]" in inner
        or (":" in inner and not _is_ipv6(inner))
        or any(not c.isprintable() or c.isspace() for c in inner)
    ):
        raise UsageError(
            f"bad --listen {text!r}: expected HOST:PORT with PORT 0-65535 ([IPv6]:PORT)"
        )
    return inner, int(port)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _callback_server(args: argparse.Namespace) -> CallbackServer | None:
    if args.callback_url is not None:
        url = args.callback_url.strip()
        try:
            check.callback_url(url, "--callback-url")
        except ConfigurationError as exc:
            detail = (
                str(exc).partition("--callback-url: ")[2] or "expected an http(s) URL with a host"
            )
            raise UsageError(f"bad --callback-url {url!r}: {detail}") from None
    if not args.listen:
        return None
    host, port = _listen(args.listen)
    if host in _WILDCARDS and args.callback_url is None:
        raise UsageError(
            f"--listen {args.listen} listens on every address, so Kie needs the public URL "
            "that reaches it: add --callback-url https://your.host/path"
        )
    path = (urlsplit(args.callback_url).path or "/") if args.callback_url else "/veo4k/callback"
    try:
        return CallbackServer(host=host, port=port, path=path, public_url=args.callback_url)
    except ConfigurationError as exc:
        raise UsageError(f"bad callback options: {exc}") from None


def prepare_out(out: pathlib.Path) -> None:
    """Create ``--out`` or say in one line why it cannot be used."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create --out {out}: {exc.strerror or exc}") from None


def _hold(stack: contextlib.AsyncExitStack, journal: pathlib.Path) -> None:
    """Take the lock beside ``journal`` for the rest of the run, or explain in one line."""
    try:
        stack.enter_context(lock(journal))
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink planted there
            raise UsageError(f"{exc.filename} is a symlink; refusing to write through it") from None
        raise UsageError(f"cannot write in {journal.parent}: {exc.strerror or exc}") from None


def _probe(folder: pathlib.Path) -> None:
    """Create and remove a file: a read-only folder is refused before anything is sent.

    ``mkstemp`` makes a new name with ``O_CREAT | O_EXCL | O_NOFOLLOW``: a symlink planted in
    the folder is never followed, and no file of anyone else is truncated."""
    try:
        fd, name = tempfile.mkstemp(prefix=".veo4k-write-test-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise UsageError(f"cannot write in {folder}: {exc.strerror or exc}") from None


@attrs.define
class _Stop:
    signal: int = 0


async def run_upscale(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Everything is checked before the lock, nothing is written before it is held."""
    tasks = read_tasks(args.tasks, args.from_file)
    for note in tasks.notes:
        print(f"veo4k: note: {inert(note)}", file=err)
    server = _callback_server(args)
    # the URL opt-ins exist only on clients that offer them (flags are added the same way)
    opt_ins: dict[str, Any] = {name: True for name in OPT_INS if getattr(args, name, False)}
    client = Veo4kClient(
        poll_policy=_policy(args),
        rate_limit=_rate_limit(args.rate_limit),
        callbacks=server,
        **opt_ins,
    )
    out_dir = pathlib.Path(args.out)
    journal_path = pathlib.Path(args.journal) if args.journal else out_dir / DEFAULT_JOURNAL
    if journal_path.is_dir():
        raise UsageError(f"--journal {journal_path} is a folder, not a file")
    prepare_out(out_dir)
    if not journal_path.parent.is_dir():
        raise UsageError(f"journal folder {journal_path.parent} does not exist")
    options = BatchOptions(
        out_dir=out_dir, download=not args.no_download, concurrency=args.concurrency,
        downloads=args.downloads, timeout=args.timeout,
        callback_url=None if server else args.callback_url, retry_failed=args.retry_failed,
    )  # fmt: skip
    async with contextlib.AsyncExitStack() as stack:
        _hold(stack, journal_path)
        if options.download:
            # with --journal elsewhere, the download folder gets its own lock: two runs must
            # not write the same files either
            if journal_path.resolve() != (out_dir / DEFAULT_JOURNAL).resolve():
                _hold(stack, out_dir / DEFAULT_JOURNAL)
            _probe(out_dir)
        if server is not None:  # before the journal: a port in use leaves nothing behind
            try:
                await server.start()
            except OSError as exc:
                raise UsageError(f"cannot listen on {server.host}:{server.port}: "
                                 f"{exc.strerror or exc}") from None  # fmt: skip
            stack.push_async_callback(server.close)
        with Journal(journal_path) as journal:
            clashes = case_clashes(tasks.pairs, journal.entries())
            if clashes:
                raise InputError(clashes)
            return await _run(client, server, tasks.pairs, journal, options, args.json, out, err)


async def _run(
    client: Veo4kClient,
    server: CallbackServer | None,
    pairs: Sequence[tuple[str, int]],
    journal: Journal,
    options: BatchOptions,
    as_json: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    console = Console(file=err if as_json else out, highlight=False)
    tally = Tally(policy=client.poll_policy, rate=lambda: client.pacer.rate,
                  cap=options.concurrency)  # fmt: skip
    sink: JsonLines | PlainLines | RichProgress
    if as_json:
        sink = JsonLines(out, tally)
    elif console.is_terminal:
        sink = RichProgress(tally, console)
    else:
        sink = PlainLines(out, tally)
    stop = _Stop()
    async with client:
        with sink:
            reports = await _batch(client, pairs, journal, options, sink, tally, stop)
    if server is not None:
        await server.close()  # idempotent; stops taking callbacks before the summary
    code = _exit_code(reports, stop)
    try:
        if isinstance(sink, JsonLines):
            sink.summary(reports, code)
        else:
            console.print(summary_table(reports))
        _notes(reports, options, stop, err if as_json else out)
    except BrokenPipeError:
        detach(out)
    return code


def _exit_code(reports: Sequence[TaskReport], stop: _Stop) -> int:
    if stop.signal == signal.SIGTERM:
        return EXIT_TERMINATED
    if stop.signal:
        return EXIT_INTERRUPTED
    return EXIT_OK if all(r.ok for r in reports) else EXIT_FAILED


async def _batch(
    client: Veo4kClient,
    pairs: Sequence[tuple[str, int]],
    journal: Journal,
    options: BatchOptions,
    sink: JsonLines | PlainLines | RichProgress,
    tally: Tally,
    stop: _Stop,
) -> list[TaskReport]:
    """Run the batch as its own task; the first SIGINT/SIGTERM cancels it (it then returns
    what finished and marks the rest interrupted), a second one gets the default action."""
    loop = asyncio.get_running_loop()
    batch = asyncio.create_task(run_batch(client, pairs, journal, options, sink, tally))

    def on_signal(signum: int) -> None:
        stop.signal = signum
        for s in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(s)
        batch.cancel()

    for s in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(s, on_signal, s)
    try:
        return await batch
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not stop.signal or (current is not None and current.cancelling()):
            raise
        return [TaskReport(task_id=t, index=i, status="interrupted") for t, i in pairs]
    finally:
        for s in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(s)


def _notes(reports: Sequence[TaskReport], options: BatchOptions, stop: _Stop, out: TextIO) -> None:
    replayed = [f"{r.task_id}:{r.index}" for r in reports if r.status == "replayed"]
    if replayed:
        shown = ", ".join(replayed[:5]) + (", ..." if len(replayed) > 5 else "")
        print(f"{plural(len(replayed), 'task')} failed for good in an earlier run (Kie's final "
              f"answer) and {'was' if len(replayed) == 1 else 'were'} not sent again: {shown}; "
              "add --retry-failed to try again.", file=out)  # fmt: skip
    unsent = sum(r.status == "not_submitted" for r in reports)
    if unsent:
        print(f"{plural(unsent, 'task')} {'was' if unsent == 1 else 'were'} not submitted (no "
              "credits spent): --timeout could not fit them at the account's rate; run the "
              "same command again to send them.", file=out)  # fmt: skip
    retry = sum(r.status == "failed" and r.kind != "final" for r in reports)
    if retry:
        print(f"{plural(retry, 'failure')} may pass on a rerun: run the same command again.",
              file=out)  # fmt: skip
    if stop.signal:
        name = signal.Signals(stop.signal).name
        unfinished = sum(r.status == "interrupted" for r in reports)
        print(f"stopped by {name}: {plural(unfinished, 'task')} unfinished; the journal is "
              "saved: run the same command to resume.", file=out)  # fmt: skip
