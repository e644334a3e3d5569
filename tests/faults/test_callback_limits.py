"""The callback server's memory under a header flood, measured on a real server process
(issue 18): 300 senders each trickling ~1 MiB of headers cost at most 150 MiB above idle."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import sys

import aiohttp
import pytest

import veo4k

pytestmark = pytest.mark.faults

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
FLOODS = 300
LINES = 127  # with Host, aiohttp's newest default allows 128 header lines of 8190 bytes
VALUE = b"x" * 8190
CALLBACK = {"code": 200, "msg": "ok", "data": {"taskId": "veo_1", "info": {"resultUrls": [
    "https://f/veo_1.mp4"]}}}  # fmt: skip


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    fields = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


class Flood:
    """``FLOODS`` senders, each a POST whose ~1 MiB of headers never end, held open until
    :meth:`release`; :attr:`sent` is set once every sender wrote all or was cut off."""

    def __init__(self, port: int) -> None:
        self.port, self.finished = port, 0
        self.sent, self._release = asyncio.Event(), asyncio.Event()
        self.tasks = [asyncio.create_task(self._one()) for _ in range(FLOODS)]

    async def _one(self) -> None:
        writer = None
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(b"POST /veo4k/callback?token=t HTTP/1.1\r\nHost: x\r\n")
            for i in range(LINES):
                writer.write(b"X-F%03d: " % i + VALUE + b"\r\n")
                await writer.drain()
        except OSError:
            pass  # cut off by the server: what a guarded server does
        self.finished += 1
        if self.finished == FLOODS:
            self.sent.set()
        await self._release.wait()
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def release(self) -> None:
        self._release.set()
        await asyncio.gather(*self.tasks)


async def test_a_header_flood_costs_at_most_150_mib() -> None:
    """300 connections each sending ~1 MiB of headers within the header timeout (main: from
    ~40 to ~800 MiB) raise the server's peak RSS by at most 150 MiB, and a real callback is
    still answered 200 afterwards."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        port = int(await proc.stdout.readline())
        url = f"http://127.0.0.1:{port}/veo4k/callback?token=t"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=json.dumps(CALLBACK)) as resp:
                assert resp.status == 200  # warmed up: every import done
            idle = memory(proc.pid)["VmRSS"]
            with contextlib.suppress(OSError):  # Linux: reset the peak to now ("5")
                pathlib.Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
            flood = Flood(port)
            async with asyncio.timeout(50):
                await flood.sent.wait()
            peak = memory(proc.pid)["VmHWM"]
            await flood.release()
            async with session.post(url, data=json.dumps(CALLBACK)) as resp:
                assert resp.status == 200
        proc.stdin.write(b"stop\n")
        oversized, refused = map(int, (await proc.stdout.readline()).split())
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    grown = peak - idle
    print(f"idle {idle / 1024**2:.0f} MiB, peak {peak / 1024**2:.0f} MiB under {FLOODS} floods "
          f"({oversized} cut off at the header cap, {refused} refused)")  # fmt: skip
    assert grown <= 150 * 1024**2, f"{grown / 1024**2:.0f} MiB above idle"
    assert oversized + refused == FLOODS  # each cut off by the byte cap or the peer cap


async def _answer_and_close(port: int, head: bytes) -> tuple[bytes, bool]:
    """Send ``head`` on a raw connection; the status line, and whether the server closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        async with asyncio.timeout(2):
            status = await reader.readline()
            while await reader.read(65536):
                pass  # the rest of the answer, then EOF: closed by the server
        return status, True
    finally:
        writer.close()


async def test_the_token_is_checked_before_the_body_and_refusals_close() -> None:
    """A wrong token is answered 401 at once, before any of its announced 1 MB body is read,
    and the connection is closed (a sender repeating wrong requests holds no slot); an
    encoded body is refused with 415 the same way."""
    async with veo4k.CallbackServer(veo4k.CallbackReceiver(token="t"), body_timeout=30) as srv:
        wrong = (b"POST /veo4k/callback?token=nope HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Length: 1000000\r\n\r\n")  # fmt: skip
        status, closed = await _answer_and_close(srv.port, wrong)
        assert b" 401 " in status
        assert closed
        gzipped = (b"POST /veo4k/callback?token=t HTTP/1.1\r\nHost: x\r\n"
                   b"Content-Encoding: gzip\r\nContent-Length: 10\r\n\r\n0123456789")  # fmt: skip
        status, closed = await _answer_and_close(srv.port, gzipped)
        assert b" 415 " in status
        assert closed
        assert srv.receiver.rejected == 2
        assert srv.connections == 0


async def test_one_peer_cannot_take_every_connection() -> None:
    """``max_connections_per_peer`` connections from one address: the next from it is closed
    at once, while the server still has room for others."""
    server = veo4k.CallbackServer(max_connections=10, max_connections_per_peer=3)
    async with server:
        conns = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        async with asyncio.timeout(2):
            assert await reader.read(1) == b""  # closed at once
        assert server.refused_connections == 1
        assert server.connections == 3
        for _, w in [*conns, (reader, writer)]:
            w.close()
