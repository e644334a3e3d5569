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


async def _dropped(reader: asyncio.StreamReader) -> bool:
    """Read until the server hangs up (EOF or reset); True when it did."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass
    return True


async def test_requests_sent_ahead_of_an_answer_drop_the_connection() -> None:
    """Pipelining: 2,000 tiny requests in one write, answers never read (aiohttp would queue
    32 parsed requests per connection outside every header count, ~31 MiB each with big
    heads). The connection is dropped at the second head; a real callback still gets 200."""
    async with veo4k.CallbackServer(veo4k.CallbackReceiver(token="t")) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n" * 2000)
        async with asyncio.timeout(5):
            assert await _dropped(reader)
        writer.close()
        assert server.pipelined_connections == 1
        assert server.connections == 0
        async with aiohttp.ClientSession() as session:  # keep-alive, one request at a time
            for _ in range(3):
                async with session.post(server.url, data=json.dumps(CALLBACK)) as resp:
                    assert resp.status == 200
        assert server.pipelined_connections == 1


async def test_pipelining_readers_cannot_hold_every_slot() -> None:
    """Eight connections (the cap) from two addresses each pipeline 1.8 MB of requests and
    never read an answer: each is dropped within the header timeout, none is left open, and
    a real callback is answered 200 afterwards (before: all 8 held their slot for good)."""
    server = veo4k.CallbackServer(
        veo4k.CallbackReceiver(token="t"), header_timeout=0.5, keepalive_timeout=1.0,
        body_timeout=1.0, max_connections=8, max_connections_per_peer=4,
    )  # fmt: skip
    async with server:
        hogs = []
        for source in ["127.0.0.2"] * 4 + ["127.0.0.3"] * 4:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, local_addr=(source, 0)
            )
            writer.write(b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n" * 60_000)
            hogs.append((reader, writer))
        async with asyncio.timeout(5):
            for reader, _ in hogs:
                assert await _dropped(reader)
        assert server.connections == 0
        async with (
            aiohttp.ClientSession() as session,
            session.post(server.url, data=json.dumps(CALLBACK)) as resp,
        ):
            assert resp.status == 200
        for _, writer in hogs:
            writer.close()


async def test_a_content_length_of_5000_digits_is_a_400_not_a_crash() -> None:
    """Python's int() refuses 4,300+ digits: the connection guard reading the head must not
    raise on it (aiohttp answers 400), and the server goes on."""
    async with veo4k.CallbackServer(veo4k.CallbackReceiver(token="t")) as server:
        head = (b"POST /veo4k/callback?token=t HTTP/1.1\r\nHost: x\r\nContent-Length: "
                + b"9" * 5000 + b"\r\n\r\n")  # fmt: skip
        status, closed = await _answer_and_close(server.port, head)
        assert b" 400 " in status
        assert closed
        async with (
            aiohttp.ClientSession() as session,
            session.post(server.url, data=json.dumps(CALLBACK)) as resp,
        ):
            assert resp.status == 200
