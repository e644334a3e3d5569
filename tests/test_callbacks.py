"""Callbacks over real sockets: verification, every shape, dedupe, hybrid waits."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import attrs
import pytest
import pytest_asyncio

import veo4k
from veo4k._callbacks import parse_callback
from veo4k.testing import CallbackShape, FakeKie, TaskOutcome

from .conftest import ClientFactory

KEY = "webhook-hmac-key"
SLOW = veo4k.PollPolicy(first_delay=30, wait_initial=30, wait_max=30, timeout=10)


def sign(task_id: str, ts: int, key: str = KEY) -> str:
    digest = hmac.new(key.encode(), f"{task_id}.{ts}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signed(task_id: str, ts: int | None = None, key: str = KEY) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    return {"X-Webhook-Timestamp": str(ts), "X-Webhook-Signature": sign(task_id, ts, key)}


def success(task_id: str = "veo_task_1") -> bytes:
    return json.dumps(
        {"code": 200, "msg": "4K Video generated successfully.",
         "data": {"taskId": task_id, "info": {"resultUrls": ["https://f/v.mp4"]}}}
    ).encode()  # fmt: skip


@pytest_asyncio.fixture
async def server() -> AsyncIterator[veo4k.CallbackServer]:
    async with veo4k.CallbackServer(veo4k.CallbackReceiver(KEY)) as srv:
        yield srv


async def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers or {}) as resp,
    ):
        await resp.read()
        return resp.status


# -- verification -----------------------------------------------------------------------------


def test_verify_signature_known_vector() -> None:
    """base64(HMAC-SHA256(key, taskId + "." + timestamp)) with standard padding."""
    sig = sign("veo_task_abc", 1700000000)
    assert veo4k.verify_signature("veo_task_abc", 1700000000, sig, KEY)
    assert veo4k.verify_signature("veo_task_abc", "1700000000", sig, KEY.encode())
    assert not veo4k.verify_signature("veo_task_abd", 1700000000, sig, KEY)
    assert not veo4k.verify_signature("veo_task_abc", 1700000001, sig, KEY)
    assert not veo4k.verify_signature("veo_task_abc", 1700000000, sig, "other")
    assert not veo4k.verify_signature("veo_task_abc", 1700000000, sig + " ", KEY)
    assert not veo4k.verify_signature("veo_task_abc", 1700000000, "ünïcode", KEY)
    assert not veo4k.verify_signature("veo_task_abc", 1700000000, sig, "")


async def test_valid_delivery_is_acknowledged(server: veo4k.CallbackServer) -> None:
    """A signed delivery with the token gets 200 and the documented ack body."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.url, data=success(), headers=signed("veo_task_1")) as resp,
    ):
        assert resp.status == 200
        assert await resp.json() == {"code": 200, "msg": "success"}
    assert server.receiver.received == 1


def _bad_headers(why: str) -> dict[str, str]:
    now = int(time.time())
    return {
        "missing headers": {},
        "missing signature": {"X-Webhook-Timestamp": str(now)},
        "missing timestamp": {"X-Webhook-Signature": sign("veo_task_1", now)},
        "wrong key": signed("veo_task_1", key="wrong-key"),
        "signature of another task": signed("veo_task_2"),
        "stale timestamp": signed("veo_task_1", now - 301),
        "future timestamp": signed("veo_task_1", now + 301),
        "non-integer timestamp": {"X-Webhook-Timestamp": "soon", "X-Webhook-Signature": "x"},
        "forged": {"X-Webhook-Timestamp": str(now), "X-Webhook-Signature": "Zm9yZ2Vk"},
    }[why]


@pytest.mark.parametrize(
    "why",
    [
        "missing headers",
        "missing signature",
        "missing timestamp",
        "wrong key",
        "signature of another task",
        "stale timestamp",
        "future timestamp",
        "non-integer timestamp",
        "forged",
    ],
)
async def test_bad_signatures_get_401(server: veo4k.CallbackServer, why: str) -> None:
    """Forged, replayed-late, future-dated or unsigned deliveries are refused with 401."""
    assert await post(server.url, success(), _bad_headers(why)) == 401
    assert server.receiver.received == 0
    assert server.receiver.rejected == 1


async def test_token_is_required(server: veo4k.CallbackServer) -> None:
    """Even a signed delivery without the URL token is refused (both checks apply)."""
    bare = server.url.split("?")[0]
    assert await post(bare, success(), signed("veo_task_1")) == 401
    assert await post(bare + "?token=guess", success(), signed("veo_task_1")) == 401


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (json.dumps({"code": 200, "msg": "x", "data": {"info": {}}}).encode(), 400),
        (json.dumps({"code": 500, "msg": "x", "data": None}).encode(), 400),
        (json.dumps({"code": "x", "data": {"taskId": "veo_task_1"}}).encode(), 400),
        (json.dumps({"code": 200, "data": {"taskId": "veo_task_1", "resultUrls": {}}}).encode(),
         400),
    ],
)  # fmt: skip
async def test_malformed_bodies_get_400(
    server: veo4k.CallbackServer, body: bytes, status: int
) -> None:
    """Bodies that are not JSON objects or name no task id are 400, never a crash."""
    assert await post(server.url, body, signed("veo_task_1")) == status


async def test_oversized_body_gets_413() -> None:
    """A body over max_body is refused with 413 before it is parsed."""
    receiver = veo4k.CallbackReceiver(KEY, max_body=1000)
    async with veo4k.CallbackServer(receiver) as srv:
        big = b'{"code": 200, "data": {"taskId": "veo_task_1"}, "pad": "' + b"x" * 5000 + b'"}'
        assert await post(srv.url, big, signed("veo_task_1")) == 413


async def test_wrong_method_gets_405(server: veo4k.CallbackServer) -> None:
    """GET on the callback path is 405."""
    async with aiohttp.ClientSession() as session, session.get(server.url) as resp:
        assert resp.status == 405


async def test_unsigned_receiver_warns_once_and_needs_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without an HMAC key the token authenticates; a warning is logged once."""
    async with veo4k.CallbackServer() as srv:
        assert not srv.receiver.signed
        assert await post(srv.url, success("veo_task_1")) == 200
        assert await post(srv.url, success("veo_task_2")) == 200
        assert await post(srv.url.split("?")[0], success("veo_task_3")) == 401
    assert caplog.text.count("callbacks are not signed") == 1


def test_hmac_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """KIE_WEBHOOK_HMAC_KEY is used when hmac_key is None."""
    monkeypatch.setenv("KIE_WEBHOOK_HMAC_KEY", "from-env")
    receiver = veo4k.CallbackReceiver()
    assert receiver.signed
    assert "from-env" not in repr(receiver)


# -- shapes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [s for s in CallbackShape if s is not CallbackShape.ROTATE])
def test_every_documented_shape_parses(shape: CallbackShape) -> None:
    """Shapes A, B, B (flat, URLs as a JSON string), C and D all give the same event."""
    fake = FakeKie()
    fake.file_base_url = "https://files"
    task = fake.add_task("veo_task_9")
    event, _ = parse_callback(json.dumps(fake.callback_payload(task, 0, shape)))
    assert event.task_id == "veo_task_9"
    assert event.ok
    assert event.result_urls == ("https://files/files/veo_task_9_0.mp4",)
    assert event.code == 200


def test_failure_shape_parses() -> None:
    """The documented failure is ok=False and flagged unavailable."""
    body = {"code": 500, "msg": "The 4K version of this video is unavailable. Please try a "
            "different video.", "data": {"taskId": "veo_task_1"}}  # fmt: skip
    event, _ = parse_callback(json.dumps(body))
    assert not event.ok
    assert event.unavailable


def test_top_level_task_id() -> None:
    """The task id may come from a top-level taskId."""
    event, _ = parse_callback(b'{"code": 200, "taskId": "veo_task_5", "data": {}}')
    assert event.task_id == "veo_task_5"
    assert not event.ok  # no URLs


# -- dispatch ---------------------------------------------------------------------------------


async def test_duplicates_are_acknowledged_but_dispatched_once(
    server: veo4k.CallbackServer,
) -> None:
    """Kie retries: the same task and outcome is answered 200 each time, handled once."""
    seen: list[veo4k.CallbackEvent] = []
    server.receiver.add_handler(seen.append)
    for _ in range(3):
        assert await post(server.url, success(), signed("veo_task_1")) == 200
    await server.receiver.aclose()
    assert len(seen) == 1
    assert server.receiver.duplicates == 2


async def test_handlers_run_after_the_answer(server: veo4k.CallbackServer) -> None:
    """A handler that blocks does not delay the 200 to Kie."""
    release = asyncio.Event()
    done: list[str] = []

    async def slow(event: veo4k.CallbackEvent) -> None:
        await release.wait()
        done.append(event.task_id)

    server.receiver.add_handler(slow)
    assert await post(server.url, success(), signed("veo_task_1")) == 200
    assert done == []
    release.set()
    await server.receiver.aclose()
    assert done == ["veo_task_1"]


async def test_handler_errors_are_logged(
    server: veo4k.CallbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A raising handler does not break the receiver or the other handlers."""
    seen: list[str] = []

    def broken(event: veo4k.CallbackEvent) -> None:
        raise RuntimeError("boom")

    server.receiver.add_handler(broken)
    server.receiver.add_handler(lambda e: seen.append(e.task_id))
    assert await post(server.url, success(), signed("veo_task_1")) == 200
    await server.receiver.aclose()
    assert seen == ["veo_task_1"]
    assert "callback handler raised" in caplog.text


async def test_thousand_concurrent_callbacks_none_lost(server: veo4k.CallbackServer) -> None:
    """1,000 deliveries at once: every one answered 200 and dispatched exactly once."""
    seen: set[str] = set()
    server.receiver.add_handler(lambda e: seen.add(e.task_id))
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> int:
            tid = f"veo_task_{i}"
            async with session.post(server.url, data=success(tid), headers=signed(tid)) as r:
                return r.status

        statuses = await asyncio.gather(*(one(i) for i in range(1000)))
    await server.receiver.aclose()
    assert statuses == [200] * 1000
    assert len(seen) == 1000


async def test_framework_agnostic_handle() -> None:
    """handle() works on bytes and a plain header dict (any case), as a Starlette route would."""
    receiver = veo4k.CallbackReceiver(KEY)
    headers = {k.lower(): v for k, v in signed("veo_task_1").items()}
    event = await receiver.handle(success(), headers)
    assert event.task_id == "veo_task_1"
    with pytest.raises(veo4k.SignatureError):
        await receiver.handle(success(), {})
    with pytest.raises(veo4k.InvalidCallbackError):
        await receiver.handle(b"nope", headers)


# -- hybrid waits -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["A", "B", "B_flat", "C", "D"])
async def test_wait_ends_on_callback(
    make_client: ClientFactory, server: veo4k.CallbackServer, shape: str
) -> None:
    """With callbacks the wait ends right after Kie calls back, confirmed by one request."""
    async with FakeKie(ready_after=0.2, hmac_key=KEY, callback_shape=CallbackShape(shape)) as kie:
        client = make_client(base_url=kie.base_url, api_key=kie.api_key, callbacks=server,
                             callback_poll_policy=SLOW)  # fmt: skip
        result = await client.wait_for_4k("veo_task_1")
        assert result.via_callback
        assert result.requests == 2  # the submission and one confirmation
        assert 0.2 <= result.elapsed < 1.0
        assert kie.submissions("veo_task_1") == 1


async def test_trusted_callback_needs_no_confirmation(
    make_client: ClientFactory, server: veo4k.CallbackServer
) -> None:
    """trust_callback_urls=True takes the URLs from the callback: one request per task."""
    async with FakeKie(ready_after=0.1, hmac_key=KEY) as kie:
        client = make_client(base_url=kie.base_url, api_key=kie.api_key, callbacks=server,
                             callback_poll_policy=SLOW, trust_callback_urls=True)  # fmt: skip
        result = await client.wait_for_4k("veo_task_1")
        assert result.requests == 1
        assert result.video_url == kie.result_url("veo_task_1")


async def test_unavailable_callback_raises(
    make_client: ClientFactory, server: veo4k.CallbackServer
) -> None:
    """A failure callback ends the wait with FourKUnavailableError."""
    async with FakeKie(ready_after=0.1, hmac_key=KEY) as kie:
        kie.add_task("veo_task_1", outcome=TaskOutcome.UNAVAILABLE)
        client = make_client(base_url=kie.base_url, api_key=kie.api_key, callbacks=server,
                             callback_poll_policy=SLOW)  # fmt: skip
        with pytest.raises(veo4k.FourKUnavailableError):
            await client.wait_for_4k("veo_task_1")


async def test_lost_callback_recovered_by_safety_poll(
    make_client: ClientFactory, server: veo4k.CallbackServer
) -> None:
    """No callback ever comes: the slow safety-net poll still finds the result."""
    async with FakeKie(ready_after=0.1, hmac_key=KEY, deliver_callbacks=False) as kie:
        safety = attrs.evolve(
            SLOW, first_delay=0.3, first_delay_jitter=0, wait_initial=0.3, wait_max=0.3
        )
        client = make_client(base_url=kie.base_url, api_key=kie.api_key, callbacks=server,
                             callback_poll_policy=safety)  # fmt: skip
        result = await client.wait_for_4k("veo_task_1")
        assert not result.via_callback
        assert result.requests == 2


async def test_callback_before_the_wait_resolves_at_once(
    make_client: ClientFactory, server: veo4k.CallbackServer
) -> None:
    """A callback that arrives before anyone waits is kept; the wait then ends at once."""
    async with FakeKie(ready_after=0.0, hmac_key=KEY) as kie:
        client = make_client(base_url=kie.base_url, api_key=kie.api_key, callbacks=server,
                             callback_poll_policy=SLOW, trust_callback_urls=True)  # fmt: skip
        await client.__aenter__()  # registers the client's handler
        task = kie.add_task("veo_task_1")
        body = json.dumps(kie.callback_payload(task, 0)).encode()
        assert await post(server.url, body, signed("veo_task_1")) == 200
        await server.receiver.aclose()
        result = await client.wait_for_4k("veo_task_1")
        assert result.via_callback
        assert result.requests == 0
        assert kie.posts("veo_task_1") == 0


async def test_a_kept_callback_that_ended_another_index_is_not_trusted_again(
    make_client: ClientFactory, server: veo4k.CallbackServer
) -> None:
    """Trusted callbacks, one process, index 1 then index 0 of a task (never at once): the
    kept callback that ended index 1's wait (Kie names no index) does not end index 0's with
    index 1's video; index 0 is ordered once and returns its own."""
    async with FakeKie(ready_after=0.1, hmac_key=KEY) as kie:
        client = make_client(base_url=kie.base_url, api_key=kie.api_key, callbacks=server,
                             callback_poll_policy=SLOW, trust_callback_urls=True)  # fmt: skip
        kie.add_task("veo_task_1", indices=2)
        first = await client.wait_for_4k("veo_task_1", index=1)
        assert first.video_url == kie.result_url("veo_task_1", 1)
        second = await client.wait_for_4k("veo_task_1", index=0)
        assert second.video_url == kie.result_url("veo_task_1", 0)
        assert (kie.submissions("veo_task_1", 0), kie.submissions("veo_task_1", 1)) == (1, 1)


async def test_callback_mid_request_is_not_lost(
    make_client: ClientFactory, server: veo4k.CallbackServer
) -> None:
    """A callback arriving while a request is in flight is applied at the next turn."""
    async with FakeKie(ready_after=0.0, hmac_key=KEY, callback_delay=0.0) as kie:
        client = make_client(base_url=kie.base_url, api_key=kie.api_key, callbacks=server,
                             callback_poll_policy=SLOW)  # fmt: skip
        kie.add_task("veo_task_1", ready_after=0.05)
        result = await client.wait_for_4k("veo_task_1")
        assert result.video_url


async def test_callback_server_arguments() -> None:
    """Bad server arguments raise ConfigurationError; the URL needs a start or public_url."""
    with pytest.raises(veo4k.ConfigurationError, match="path"):
        veo4k.CallbackServer(path="cb")
    with pytest.raises(veo4k.ConfigurationError, match="public_url"):
        veo4k.CallbackServer(public_url="ftp://x")
    with pytest.raises(veo4k.ClientStateError):
        _ = veo4k.CallbackServer().url
    srv = veo4k.CallbackServer(public_url="https://hooks.example.com/kie?x=1")
    assert srv.url.startswith("https://hooks.example.com/kie?x=1&token=")


async def test_many_waits_with_callbacks(
    make_client: ClientFactory, server: veo4k.CallbackServer
) -> None:
    """200 waits on callbacks: all resolve via callback, about 2 requests each."""
    async with FakeKie(ready_after=(0.1, 0.4), hmac_key=KEY, callback_duplicates=1) as kie:
        client = make_client(base_url=kie.base_url, api_key=kie.api_key, callbacks=server,
                             callback_poll_policy=SLOW)  # fmt: skip
        results = await client.wait_for_4k_many([f"veo_task_{i}" for i in range(200)])
        assert all(isinstance(r, veo4k.FourKResult) and r.via_callback for r in results)
        assert sum(r.requests for r in results if isinstance(r, veo4k.FourKResult)) == 400
        assert server.receiver.duplicates == 200


async def test_callback_ahead_of_status_is_confirmed_soon(
    make_client: ClientFactory, server: veo4k.CallbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the status endpoint still says "processing" when the callback arrives, the wait
    re-checks on the short confirm backoff instead of falling back to the slow policy."""
    monkeypatch.setattr("veo4k._poll.CONFIRM_BACKOFF", (0.1, 0.1, 0.1))
    async with FakeKie(ready_after=0.3, hmac_key=KEY, callback_delay=-0.25) as kie:
        client = make_client(base_url=kie.base_url, api_key=kie.api_key, callbacks=server,
                             callback_poll_policy=SLOW)  # fmt: skip
        result = await client.wait_for_4k("veo_task_1")
        assert result.via_callback
        assert 0.3 <= result.elapsed < 0.8
        assert result.requests >= 3
