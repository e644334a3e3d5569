"""A header flood against a callback server in a process of its own, and that process's
memory: the measuring tools of ``tests/faults/test_callback_limits.py`` and
``benchmarks/hostile.py`` (Linux: memory is read from ``/proc``)."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import sys
from collections.abc import AsyncIterator

__all__ = ["HeaderFlood", "ServerProcess", "serve_callbacks"]

SERVER = """
import asyncio, sys, veo4k

async def main():
    server = veo4k.CallbackServer(veo4k.CallbackReceiver(token="t"), header_timeout=60)
    async with server:
        print(server.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        print(getattr(server, "oversized_connections", 0), server.refused_connections, flush=True)

asyncio.run(main())
"""
HEAD = b"POST /veo4k/callback?token=t HTTP/1.1\r\nHost: x\r\n"
LINES = 127  # with Host, aiohttp 3.14's own default allows 128 header lines of 8190 bytes
VALUE = b"x" * 8190


class ServerProcess:
    """A CallbackServer (receiver token ``t``) running in a child process."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc, self.port = proc, port
        self.url = f"http://127.0.0.1:{port}/veo4k/callback?token=t"
        self.oversized = self.refused = 0

    def memory(self, field: str) -> int:
        """``VmRSS`` or ``VmHWM`` (the peak) of the server process, in bytes."""
        status = pathlib.Path(f"/proc/{self.proc.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise LookupError(field)

    def reset_peak(self) -> None:
        """Make ``VmHWM`` the current RSS (Linux ``clear_refs`` 5); no-op where refused."""
        with contextlib.suppress(OSError):
            pathlib.Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")


@contextlib.asynccontextmanager
async def serve_callbacks() -> AsyncIterator[ServerProcess]:
    """Start the server process; on exit stop it and read its counters (cut off at the header
    cap, refused at the connection caps) into the yielded object."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        server = ServerProcess(proc, int(await proc.stdout.readline()))
        yield server
        proc.stdin.write(b"stop\n")
        server.oversized, server.refused = map(int, (await proc.stdout.readline()).split())
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


class HeaderFlood:
    """``count`` senders, each a POST whose ~1 MiB of headers never end, held open until
    :meth:`release`; :attr:`sent` is set once every sender wrote all or was cut off."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count, self.finished = port, count, 0
        self.sent, self._release = asyncio.Event(), asyncio.Event()
        self.tasks = [asyncio.create_task(self._one()) for _ in range(count)]
        if not count:
            self.sent.set()

    async def _one(self) -> None:
        writer = None
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(HEAD)
            for i in range(LINES):
                writer.write(b"X-F%03d: " % i + VALUE + b"\r\n")
                await writer.drain()
        except OSError:
            pass  # cut off by the server: what a guarded server does
        self.finished += 1
        if self.finished == self.count:
            self.sent.set()
        await self._release.wait()
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def release(self) -> None:
        """Close every sender's connection."""
        self._release.set()
        await asyncio.gather(*self.tasks)
