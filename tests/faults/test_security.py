"""Security: the key stays secret everywhere; callbacks reject abuse."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pathlib
import sys
import time
from collections.abc import Callable

import aiohttp
import pytest

import veo4k
from veo4k.testing import FakeKie, FaultKind, TaskOutcome

from ..conftest import ClientFactory

pytestmark = pytest.mark.faults

SECRET = "kie-live-SECRET-9f8e7d6c5b4a"


async def test_key_absent_from_debug_logs_reprs_errors_and_journal(
    caplog: pytest.LogCaptureFixture, tmp_path: pathlib.Path
) -> None:
    """Through successes, faults, every error type and the CLI journal, the key never shows."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    async with FakeKie(api_key=SECRET, ready_after=0.05, fault_rate=0.3, seed=3) as kie:
        kie.add_task("gone", outcome=TaskOutcome.UNAVAILABLE)
        kie.add_task("failed", outcome=TaskOutcome.SOURCE_FAILED)
        retry = veo4k.RetryPolicy(
            attempts=2, wait_initial=0.01, wait_max=0.01, maintenance_wait=0.01
        )
        async with veo4k.Veo4kClient(
            SECRET, base_url=kie.base_url, retry_policy=retry, rate_limit=None,
            poll_policy=veo4k.testing.FAST_POLICY,
        ) as client:  # fmt: skip
            texts += [repr(client), str(client), repr(client._api.__dict__), repr(vars(client))]
            for task in ["ok1", "ok2", "gone", "failed", "ok3"]:
                try:
                    result = await client.wait_for_4k(task)
                    texts.append(repr(result))
                except veo4k.Veo4kError as exc:
                    chain: BaseException | None = exc
                    while chain is not None:
                        texts += [str(chain), repr(chain), repr(vars(chain))]
                        chain = chain.__cause__ or chain.__context__
        kie.fault_rate = 0.0
        env = {**os.environ, "KIE_API_KEY": SECRET, "KIE_BASE_URL": kie.base_url}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "veo4k", "upscale", "ok1", "ok9", "--out", str(tmp_path),
            "--rate-limit", "1000/1", "--first-poll", "0.05", "--poll-every", "0.05",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()
        texts += [stdout.decode(), stderr.decode()]
    everything = "\n".join(texts) + caplog.text
    assert "POST /api/v1/veo/get-4k-video" in caplog.text  # DEBUG logging was really on
    assert SECRET not in everything
    for path in tmp_path.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path


async def test_no_authorization_to_other_hosts(kie: FakeKie, make_client: ClientFactory,
                                               tmp_path: pathlib.Path) -> None:  # fmt: skip
    """Neither redirects from the API nor downloads from the file host carry the key."""
    client = make_client()
    kie.inject(FaultKind.REDIRECT, times=1)
    with pytest.raises(veo4k.TransportError, match="redirect"):
        await client.wait_for_4k("t1")
    result = await client.wait_for_4k("t2")
    kie.expired_files.add("t2_0.mp4")
    await client.download(result, tmp_path)
    assert kie.stats.file_auth_violations == []


async def test_replayed_delivery_is_not_dispatched_again() -> None:
    """A captured valid delivery replayed within the window is acknowledged, not re-handled;
    replayed after the window it is refused."""
    receiver = veo4k.CallbackReceiver("k", tolerance=300)
    seen: list[str] = []
    receiver.add_handler(lambda e: seen.append(e.task_id))
    body = json.dumps({"code": 200, "msg": "ok", "data": {
        "taskId": "veo_1", "info": {"resultUrls": ["https://f/1.mp4"]}}}).encode()  # fmt: skip
    now = int(time.time())
    headers = {"X-Webhook-Timestamp": str(now),
               "X-Webhook-Signature": veo4k._signature.sign("veo_1", now, "k")}  # fmt: skip
    first = await receiver.handle(body, headers)
    again = await receiver.handle(body, headers)
    await receiver.aclose()
    assert (first.duplicate, again.duplicate) == (False, True)
    assert seen == ["veo_1"]
    old = now - 3600
    stale = {"X-Webhook-Timestamp": str(old),
             "X-Webhook-Signature": veo4k._signature.sign("veo_1", old, "k")}  # fmt: skip
    with pytest.raises(veo4k.SignatureError, match="timestamp"):
        await receiver.handle(body, stale)


async def test_hostile_bodies_cannot_crash_the_server() -> None:
    """Deeply nested JSON, huge numbers, binary junk and oversized bodies get 4xx, never 5xx."""
    async with veo4k.CallbackServer(veo4k.CallbackReceiver("k", max_body=100_000)) as srv:
        bodies = [
            b"[" * 50_000 + b"]" * 50_000,
            b'{"code": 1' + b"0" * 5000 + b', "data": {"taskId": "x"}}',
            bytes(range(256)) * 10,
            b'{"code": 200, "data": {"taskId": "x", "info": {"resultUrls": "[[[[["}}',
            b"x" * 200_000,
        ]
        async with aiohttp.ClientSession() as session:
            for body in bodies:
                async with session.post(srv.url, data=body) as resp:
                    assert 400 <= resp.status < 500, body[:40]


# -- issue 13: bounded callback server, sane timestamps, bounded stores, trust model ----------

LOOPBACK = "127.0.0.1"


def success_body(task_id: str, urls: list[str] | None = None, code: int = 200) -> bytes:
    data = {"taskId": task_id, "info": {"resultUrls": urls or [f"https://f/{task_id}.mp4"]}}
    return json.dumps({"code": code, "msg": "ok", "data": data}).encode()


async def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers or {}) as resp,
    ):
        return resp.status


async def _closed_within(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         drip: bytes, limit: int) -> bool:  # fmt: skip
    """Trickle ``drip`` every 20 ms (at most ``limit`` times); True once the server hangs up."""
    for _ in range(limit):
        try:
            writer.write(drip)
            await writer.drain()
            async with asyncio.timeout(0.02):
                if await reader.read(1) == b"":
                    return True
        except TimeoutError:
            continue
        except ConnectionError:
            return True
    return False


async def _until(predicate: Callable[[], bool], limit: int = 200) -> bool:
    for _ in range(limit):  # bounded: at most limit event-loop turns of 5 ms
        if predicate():
            return True
        await asyncio.sleep(0.005)
    return predicate()


async def test_slowloris_headers_are_cut_off() -> None:
    """20 senders trickling header bytes are disconnected after header_timeout; a real
    delivery still gets through."""
    server = veo4k.CallbackServer(veo4k.CallbackReceiver(), header_timeout=0.2)
    async with server:
        conns = [await asyncio.open_connection(LOOPBACK, server.port) for _ in range(20)]
        for _, writer in conns:
            writer.write(b"POST /veo4k/callback HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed = await asyncio.gather(*(_closed_within(r, w, b"X-A: b\r\n", 50) for r, w in conns))
        assert all(closed)
        assert time.monotonic() - started < 0.8
        assert server.timed_out_connections == 20
        assert await _post(server.url, success_body("veo_1")) == 200
        for _, writer in conns:
            writer.close()


async def test_header_clock_restarts_on_a_kept_alive_connection() -> None:
    """After one answered request, a second request trickled on the same connection is cut
    off by header_timeout too (keep-alive is no way around it)."""
    async with veo4k.CallbackServer(header_timeout=0.2, keepalive_timeout=30) as server:
        reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
        path = server.url.split(f":{server.port}", 1)[1]
        body = success_body("veo_1")
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
                     .encode() + body)  # fmt: skip
        assert b" 200 " in await reader.readline()
        async with asyncio.timeout(1):
            while await reader.readline() not in (b"\r\n", b""):
                pass  # the answer's headers
        writer.write(b"POST / HTTP/1.1\r\n")
        assert await _closed_within(reader, writer, b"X-A: b\r\n", 50)
        assert server.timed_out_connections == 1
        writer.close()


async def test_slow_body_gets_408() -> None:
    """Headers complete, body trickled: body_timeout answers 408 and frees the connection."""
    async with veo4k.CallbackServer(body_timeout=0.2, close_timeout=0.4) as server:
        reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
        path = server.url.split(f":{server.port}", 1)[1]
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode())
        status = b""
        for _ in range(50):
            writer.write(b"x")
            try:
                async with asyncio.timeout(0.02):
                    status = await reader.readline()
                    break
            except TimeoutError:
                continue
        assert b" 408 " in status
        writer.close()


async def test_connection_cap_refuses_the_excess() -> None:
    """With max_connections idle sockets open, the next one is closed at once; when one
    leaves, deliveries get through again."""
    async with veo4k.CallbackServer(max_connections=5, header_timeout=30) as server:
        conns = [await asyncio.open_connection(LOOPBACK, server.port) for _ in range(5)]
        assert await _until(lambda: server.connections == 5)
        reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
        assert await _closed_within(reader, writer, b"", 50)
        assert server.refused_connections == 1
        conns[0][1].close()
        assert await _until(lambda: server.connections == 4)
        assert await _post(server.url, success_body("veo_1")) == 200
        for _, w in [*conns[1:], (reader, writer)]:
            w.close()


async def test_keepalive_is_bounded() -> None:
    """Keep-alive defaults to 15 s, may not exceed 75 s, and idle connections really close."""
    assert veo4k.CallbackServer().keepalive_timeout == 15
    with pytest.raises(veo4k.ConfigurationError, match="keepalive_timeout"):
        veo4k.CallbackServer(keepalive_timeout=3630)
    async with (
        veo4k.CallbackServer(keepalive_timeout=0.3) as server,
        aiohttp.ClientSession() as session,  # stays open: its connection is kept alive
    ):
        async with session.post(server.url, data=success_body("veo_1")) as resp:
            assert resp.status == 200
        assert server.connections == 1
        assert await _until(lambda: server.connections == 0)


async def test_close_is_bounded_with_hung_handlers_and_requests() -> None:
    """A handler that never returns and a request whose body never comes: close() still
    returns within close_timeout, and the handler is cancelled."""
    cancelled = asyncio.Event()

    async def hung(event: veo4k.CallbackEvent) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = veo4k.CallbackServer(close_timeout=0.4, body_timeout=60)
    await server.start()
    server.receiver.add_handler(hung)
    assert await _post(server.url, success_body("veo_1")) == 200
    _, writer = await asyncio.open_connection(LOOPBACK, server.port)
    path = server.url.split(f":{server.port}", 1)[1]
    writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode())
    await writer.drain()
    started = time.monotonic()
    await server.close()
    assert time.monotonic() - started < 1.0
    assert cancelled.is_set()
    writer.close()


@pytest.mark.parametrize(
    "stamp",
    ["1" + "0" * 400, "9" * 20, "1e10", "-5", "+1700000000", " 1700000000", "1_700_000_000",
     "\u0661\u0667" + "\u0660" * 8, "0x10", "nan", "inf"],
)  # fmt: skip
async def test_insane_timestamps_get_401_never_500(stamp: str) -> None:
    """Anything but plain ASCII digits (and far from overflow) is a 401, never an
    OverflowError / 500."""
    async with veo4k.CallbackServer(veo4k.CallbackReceiver("k")) as server:
        headers = {"X-Webhook-Timestamp": stamp, "X-Webhook-Signature": "Zm9yZ2Vk"}
        assert await _post(server.url, success_body("veo_1"), headers) == 401
        assert server.receiver.rejected == 1


async def test_stores_are_bounded_by_bytes_and_count() -> None:
    """200 deliveries of ~80 KB of URLs each (16 MB in all): the charged bytes stay under
    max_store_bytes and memory stops growing (the second 100 add less than the cap)."""
    import tracemalloc

    cap = 256 * 1024
    receiver = veo4k.CallbackReceiver(max_store_bytes=cap, dedupe_size=1000)
    url = "https://f/" + "a" * 4000

    async def deliver(numbers: range) -> None:
        for i in numbers:
            body = success_body(f"veo_{i}", [f"{url}{j}" for j in range(20)])
            await receiver.handle(body, {}, token=receiver.token)

    tracemalloc.start()
    try:
        await deliver(range(100))
        half = tracemalloc.get_traced_memory()[0]
        await deliver(range(100, 200))
        grown = tracemalloc.get_traced_memory()[0] - half
    finally:
        tracemalloc.stop()
    assert receiver._seen.bytes + receiver._recent.bytes <= cap
    assert grown < cap
    assert receiver.received == 200
    assert len(receiver._recent) < 200  # the oldest were dropped


async def test_dedupe_tells_indexes_and_outcomes_apart() -> None:
    """Index 1's success (other URLs) is not a duplicate of index 0's; a failure is not a
    duplicate of a success; a true replay is."""
    receiver = veo4k.CallbackReceiver()
    seen: list[tuple[str, ...]] = []
    receiver.add_handler(lambda e: seen.append(e.result_urls))
    tok = receiver.token
    first = await receiver.handle(success_body("veo_1", ["https://f/0.mp4"]), {}, token=tok)
    second = await receiver.handle(success_body("veo_1", ["https://f/1.mp4"]), {}, token=tok)
    replay = await receiver.handle(success_body("veo_1", ["https://f/1.mp4"]), {}, token=tok)
    failure = json.dumps({"code": 500, "msg": "The 4K version is unavailable",
                          "data": {"taskId": "veo_1"}}).encode()  # fmt: skip
    failed = await receiver.handle(failure, {}, token=tok)
    await receiver.aclose()
    assert [first.duplicate, second.duplicate, replay.duplicate, failed.duplicate] == [
        False, False, True, False]  # fmt: skip
    assert seen == [("https://f/0.mp4",), ("https://f/1.mp4",), ()]


async def test_unsigned_unsolicited_callback_never_becomes_a_result(
    make_client: ClientFactory,
) -> None:
    """Trust off (the default): a forged callback for a task the account never submitted ends
    no wait with its URLs (Kie says "record is null"), and for a real task the URLs come from
    Kie's answer, never from the callback."""
    async with FakeKie(ready_after=0.2, auto_create=False) as kie, veo4k.CallbackServer() as srv:
        kie.add_task("veo_real")
        client = make_client(base_url=kie.base_url, api_key=kie.api_key, callbacks=srv,
                             callback_poll_policy=veo4k.testing.FAST_POLICY)  # fmt: skip
        await client.__aenter__()
        evil = ["https://evil.example/x.mp4"]
        for task in ("veo_forged", "veo_real"):  # before anyone waits
            assert await _post(srv.url, success_body(task, evil)) == 200
        with pytest.raises(veo4k.APIError):
            await client.wait_for_4k("veo_forged")
        result = await client.wait_for_4k("veo_real")
        assert result.video_url == kie.result_url("veo_real")
        assert kie.submissions("veo_forged") == 0


async def test_trusting_an_unsigned_receiver_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """trust_callback_urls=True is the opt-in that lets callback URLs end waits; with an
    unsigned receiver the client says at once what that means."""
    server = veo4k.CallbackServer(veo4k.CallbackReceiver())
    async with veo4k.Veo4kClient("k", callbacks=server, trust_callback_urls=True):
        pass
    assert "unsigned receiver" in caplog.text
    caplog.clear()
    signed = veo4k.CallbackServer(veo4k.CallbackReceiver("hmac"))
    async with veo4k.Veo4kClient("k", callbacks=signed, trust_callback_urls=True):
        pass
    assert "unsigned receiver" not in caplog.text
