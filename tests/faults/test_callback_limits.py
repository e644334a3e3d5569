"""The callback server's memory under a header flood, measured on a real server process
(issue 18): 300 senders each trickling ~1 MiB of headers cost at most 150 MiB above idle."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

import veo4k
from veo4k.testing._flood import HeaderFlood, serve_callbacks

pytestmark = pytest.mark.faults

FLOODS = 300
CALLBACK = {"code": 200, "msg": "ok", "data": {"taskId": "veo_1", "info": {"resultUrls": [
    "https://f/veo_1.mp4"]}}}  # fmt: skip


async def test_a_header_flood_costs_at_most_150_mib() -> None:
    """300 connections each sending ~1 MiB of headers within the header timeout (main: from
    ~40 to ~380 MiB) raise the server's peak RSS by at most 150 MiB, and a real callback is
    still answered 200 afterwards."""
    async with serve_callbacks() as server, aiohttp.ClientSession() as session:
        async with session.post(server.url, data=json.dumps(CALLBACK)) as resp:
            assert resp.status == 200  # warmed up: every import done
        idle = server.memory("VmRSS")
        server.reset_peak()
        flood = HeaderFlood(server.port, FLOODS)
        async with asyncio.timeout(50):
            await flood.sent.wait()
        peak = server.memory("VmHWM")
        await flood.release()
        async with session.post(server.url, data=json.dumps(CALLBACK)) as resp:
            assert resp.status == 200
    grown = peak - idle
    print(f"idle {idle / 1024**2:.0f} MiB, peak {peak / 1024**2:.0f} MiB under {FLOODS} floods "
          f"({server.oversized} cut off at the header cap, {server.refused} refused)")  # fmt: skip
    assert grown <= 150 * 1024**2, f"{grown / 1024**2:.0f} MiB above idle"
    assert server.oversized + server.refused == FLOODS  # each cut by the byte or peer cap


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
