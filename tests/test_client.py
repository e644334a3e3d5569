"""Exact request/response handling of Veo4kClient, with aioresponses standing in for Kie."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aioresponses import CallbackResult, aioresponses
from yarl import URL

import veo4k
from veo4k.testing import FAST_POLICY, FAST_RETRY

from .compat import aioresponses_compat

BASE = "https://kie.test"
FOURK = f"{BASE}/api/v1/veo/get-4k-video"
RECORD = re.compile(r"^https://kie\.test/api/v1/veo/record-info\?.*$")
KEY = "sk-secret-do-not-leak-123"
MP4 = "https://tempfile.aiquickdraw.com/v/t_1.mp4"


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    """aioresponses, made to work with aiohttp 3.14 (see aioresponses_compat)."""
    aioresponses_compat(monkeypatch)
    with aioresponses() as m:
        yield m


@pytest_asyncio.fixture
async def api() -> AsyncIterator[veo4k.Veo4kClient]:
    fast = veo4k.RateLimit(max_requests=1000, period=1.0)  # a 429 slows it down for 2 ms only
    async with veo4k.Veo4kClient(
        KEY, base_url=BASE, poll_policy=FAST_POLICY, retry_policy=FAST_RETRY, rate_limit=fast
    ) as client:
        yield client


def calls(mocked: aioresponses, url: str = FOURK, method: str = "POST") -> list[Any]:
    return list(mocked.requests.get((method, URL(url)), []))


def body(code: int, msg: str, data: object = None) -> dict[str, Any]:
    return {"code": code, "msg": msg, "data": data}


async def test_request_4k_sends_documented_request(
    mocked: aioresponses, api: veo4k.Veo4kClient
) -> None:
    """POST /api/v1/veo/get-4k-video with Bearer key, taskId, index and callBackUrl."""
    mocked.post(FOURK, payload=body(200, "success", {"taskId": "t1", "resultUrls": None}))
    status = await api.request_4k("t1", 2, callback_url="https://me.example/cb")
    assert status == veo4k.FourKStatus(task_id="t1", index=2, ready=False, msg="success")
    (call,) = calls(mocked)
    assert call.kwargs["json"] == {
        "taskId": "t1",
        "index": 2,
        "callBackUrl": "https://me.example/cb",
    }
    assert call.kwargs["headers"]["Authorization"] == f"Bearer {KEY}"
    assert call.kwargs["allow_redirects"] is False


async def test_callback_url_omitted_when_none(mocked: aioresponses, api: veo4k.Veo4kClient) -> None:
    """No callBackUrl key is sent when there is none."""
    mocked.post(FOURK, payload=body(200, "success", {"taskId": "t1"}))
    await api.request_4k("t1")
    assert calls(mocked)[0].kwargs["json"] == {"taskId": "t1", "index": 0}


@pytest.mark.parametrize("http_status", [200, 422])
async def test_http_200_and_422_carrying_the_same_body_agree(
    mocked: aioresponses, api: veo4k.Veo4kClient, http_status: int
) -> None:
    """HTTP 200 with code 422 + URLs and HTTP 422 with the same body both mean ready."""
    data = {"taskId": "t1", "resultUrls": [MP4], "imageUrls": None}
    mocked.post(
        FOURK,
        status=http_status,
        payload=body(422, "The video has been generated successfully", data),
    )
    status = await api.request_4k("t1")
    assert status.ready
    assert status.result_urls == (MP4,)


@pytest.mark.parametrize("http_status", [200, 401])
async def test_bad_key_is_authentication_error_without_retry(
    mocked: aioresponses, api: veo4k.Veo4kClient, http_status: int
) -> None:
    """401 raises AuthenticationError at once: one request, no retry."""
    mocked.post(FOURK, status=http_status, payload=body(401, "You do not have access permissions"))
    with pytest.raises(veo4k.AuthenticationError) as info:
        await api.request_4k("t1")
    assert info.value.code == 401
    assert len(calls(mocked)) == 1


async def test_transient_codes_are_retried_then_succeed(
    mocked: aioresponses, api: veo4k.Veo4kClient
) -> None:
    """500, 455, 429 and an HTML 502 page are retried; the next good answer wins."""
    mocked.post(FOURK, payload=body(500, "Internal Error, Please try again later."))
    mocked.post(FOURK, payload=body(455, "maintenance"))
    mocked.post(FOURK, status=429, payload=body(429, "slow down"))
    mocked.post(FOURK, status=502, body="<html>bad gateway</html>", content_type="text/html")
    mocked.post(FOURK, payload=body(200, "success", {"taskId": "t1"}))
    status = await api.request_4k("t1")
    assert status.ready is False
    assert len(calls(mocked)) == 5


async def test_retries_are_bounded(mocked: aioresponses, api: veo4k.Veo4kClient) -> None:
    """After RetryPolicy.attempts failures the last typed error is raised."""
    for _ in range(FAST_RETRY.attempts):
        mocked.post(FOURK, payload=body(500, "Internal Error, Please try again later."))
    with pytest.raises(veo4k.ServerError):
        await api.request_4k("t1")
    assert len(calls(mocked)) == FAST_RETRY.attempts


async def test_garbled_answers_end_in_transport_error(
    mocked: aioresponses, api: veo4k.Veo4kClient
) -> None:
    """Persistent HTML pages end in TransportError with status, excerpt and attempts."""
    for _ in range(FAST_RETRY.attempts):
        mocked.post(FOURK, status=503, body="<html>Service Unavailable</html>")
    with pytest.raises(veo4k.TransportError) as info:
        await api.request_4k("t1")
    err = info.value
    assert err.status == 503
    assert err.attempts == FAST_RETRY.attempts
    assert "Service Unavailable" in err.excerpt
    assert err.task_id == "t1"


async def test_html_404_is_not_retried(mocked: aioresponses, api: veo4k.Veo4kClient) -> None:
    """A 4xx page that is no envelope (wrong base_url) fails at once."""
    mocked.post(FOURK, status=404, body="<html>Not Found</html>")
    with pytest.raises(veo4k.TransportError, match="HTTP 404"):
        await api.request_4k("t1")
    assert len(calls(mocked)) == 1


async def test_connection_errors_are_retried(mocked: aioresponses, api: veo4k.Veo4kClient) -> None:
    """A dropped connection is retried and its error is typed, not aiohttp's."""
    mocked.post(FOURK, exception=aiohttp.ServerDisconnectedError())
    mocked.post(FOURK, exception=aiohttp.ClientConnectionError("refused"))
    mocked.post(FOURK, payload=body(200, "success", {"taskId": "t1"}))
    assert (await api.request_4k("t1")).ready is False
    for _ in range(FAST_RETRY.attempts):
        mocked.post(FOURK, exception=aiohttp.ClientConnectionError("refused"))
    with pytest.raises(veo4k.TransportError, match="connection failed"):
        await api.request_4k("t1")


async def test_request_timeout_is_transport_error(mocked: aioresponses) -> None:
    """An answer slower than request_timeout is a TransportError naming the timeout."""
    for _ in range(2):
        mocked.post(FOURK, exception=TimeoutError())
    retry = veo4k.RetryPolicy(attempts=2, wait_initial=0.001, wait_max=0.001)
    async with veo4k.Veo4kClient(
        KEY, base_url=BASE, request_timeout=0.5, retry_policy=retry, rate_limit=None
    ) as client:
        with pytest.raises(veo4k.TransportError, match=r"request_timeout=0\.5"):
            await client.request_4k("t1")


async def test_retry_after_is_honoured(mocked: aioresponses) -> None:
    """A 429 with Retry-After waits at least that long before the retry."""
    mocked.post(FOURK, status=429, payload=body(429, "slow"), headers={"Retry-After": "0.2"})
    mocked.post(FOURK, payload=body(200, "success", {"taskId": "t1"}))
    fast = veo4k.RateLimit(max_requests=1000, period=1.0)
    async with veo4k.Veo4kClient(
        KEY, base_url=BASE, retry_policy=FAST_RETRY, rate_limit=fast
    ) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await client.request_4k("t1")
        assert loop.time() - start >= 0.2
        assert client.pacer.rate_limited == 1


async def test_redirect_is_not_followed(mocked: aioresponses, api: veo4k.Veo4kClient) -> None:
    """A redirect is refused: the key never goes to another URL."""
    mocked.post(FOURK, status=307, headers={"Location": "https://evil.example/steal"})
    with pytest.raises(veo4k.TransportError, match="redirect refused"):
        await api.request_4k("t1")
    assert len(mocked.requests) == 1


async def test_get_record(mocked: aioresponses, api: veo4k.Veo4kClient) -> None:
    """record-info is read with GET ?taskId= and parsed into a TaskRecord."""
    data = {"taskId": "t1", "successFlag": 0, "createTime": "2024-03-20T10:25:00Z"}
    mocked.get(RECORD, payload=body(200, "success", data))
    record = await api.get_record("t1")
    assert record.task_id == "t1"
    assert record.generating
    (((_, url), _),) = mocked.requests.items()
    assert url.query["taskId"] == "t1"


async def test_get_record_error_code(mocked: aioresponses, api: veo4k.Veo4kClient) -> None:
    """A non-200 record-info code raises the typed error."""
    mocked.get(RECORD, payload=body(404, "not found"))
    with pytest.raises(veo4k.NotFoundError):
        await api.get_record("t1")


async def test_wait_polls_until_urls(mocked: aioresponses, api: veo4k.Veo4kClient) -> None:
    """submit -> processing -> processing -> 422 with URLs: a result after 4 requests."""
    processing = "4k is processing. It should be ready in 5-10 minutes."
    mocked.post(FOURK, payload=body(200, "success", {"taskId": "t1", "resultUrls": None}))
    mocked.post(FOURK, payload=body(422, processing, {"taskId": "t1", "resultUrls": None}))
    mocked.post(FOURK, status=422, payload=body(422, processing, {"taskId": "t1"}))
    mocked.post(
        FOURK,
        payload=body(
            422, "The video has been generated successfully", {"taskId": "t1", "resultUrls": [MP4]}
        ),
    )
    result = await api.wait_for_4k("t1")
    assert result.video_url == MP4
    assert result.requests == 4
    assert len(calls(mocked)) == 4


async def test_source_not_ready_asks_record_info(
    mocked: aioresponses, api: veo4k.Veo4kClient
) -> None:
    """ "record status is not success" + successFlag 2 raises SourceTaskFailedError."""
    mocked.post(FOURK, payload=body(422, "record status is not success."))
    mocked.get(
        RECORD,
        payload=body(
            200,
            "success",
            {"taskId": "t1", "successFlag": 2, "errorCode": 400, "errorMessage": "policy"},
        ),
    )
    with pytest.raises(veo4k.SourceTaskFailedError) as info:
        await api.wait_for_4k("t1")
    assert info.value.success_flag == 2
    assert info.value.error_message == "policy"


async def test_source_generating_keeps_waiting(
    mocked: aioresponses, api: veo4k.Veo4kClient
) -> None:
    """successFlag 0 means the source is still generating: resubmit later, then succeed."""
    mocked.post(FOURK, payload=body(422, "record status is not success."))
    mocked.get(RECORD, payload=body(200, "success", {"taskId": "t1", "successFlag": 0}))
    mocked.post(FOURK, payload=body(200, "success", {"taskId": "t1"}))
    mocked.post(FOURK, payload=body(200, "success", {"taskId": "t1", "resultUrls": [MP4]}))
    events: list[veo4k.WaitState] = []
    result = await api.wait_for_4k("t1", on_update=lambda e: events.append(e.state))
    assert result.video_url == MP4
    assert events == [
        veo4k.WaitState.SOURCE_PENDING,
        veo4k.WaitState.SUBMITTED,
        veo4k.WaitState.READY,
    ]


async def test_key_never_logged_or_shown(
    mocked: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    """The API key is absent from DEBUG logs, reprs and exception strings."""
    caplog.set_level(logging.DEBUG, logger="veo4k")
    mocked.post(FOURK, payload=body(200, "success", {"taskId": "t1"}))
    for _ in range(FAST_RETRY.attempts):
        mocked.post(FOURK, payload=body(401, f"bad key {KEY[:3]}"))
    for _ in range(FAST_RETRY.attempts):
        mocked.post(FOURK, exception=aiohttp.ClientConnectionError("boom"))
    async with veo4k.Veo4kClient(
        KEY, base_url=BASE, retry_policy=FAST_RETRY, rate_limit=None
    ) as client:
        seen = [repr(client), str(client), repr(client._api.__dict__)]
        await client.request_4k("t1")
        for _ in range(2):
            try:
                await client.request_4k("t1")
            except veo4k.Veo4kError as exc:
                seen += [str(exc), repr(exc), repr(exc.__cause__), repr(exc.__context__)]
    assert "POST /api/v1/veo/get-4k-video task=t1 -> HTTP 200 code 200" in caplog.text
    text = "\n".join(seen) + caplog.text
    assert KEY not in text


def test_missing_key_is_configuration_error() -> None:
    """No api_key and no KIE_API_KEY: ConfigurationError telling what to set."""
    with pytest.raises(veo4k.ConfigurationError, match="KIE_API_KEY"):
        veo4k.Veo4kClient()


def test_key_and_base_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """KIE_API_KEY and KIE_BASE_URL are read when the arguments are None."""
    monkeypatch.setenv("KIE_API_KEY", "env-key")
    monkeypatch.setenv("KIE_BASE_URL", "http://127.0.0.1:9/")
    client = veo4k.Veo4kClient()
    assert client.base_url == "http://127.0.0.1:9"
    assert "env-key" not in repr(client)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"base_url": "ftp://x"}, "base_url"),
        ({"base_url": "https://u:p@kie.ai"}, "base_url"),
        ({"request_timeout": 0}, "request_timeout"),
        ({"request_timeout": float("nan")}, "request_timeout"),
        ({"poll_policy": {"timeout": 3}}, "poll_policy"),
        ({"rate_limit": 20}, "rate_limit"),
    ],
)
def test_bad_client_arguments(kwargs: dict[str, Any], name: str) -> None:
    """Every bad constructor argument raises ConfigurationError naming it."""
    with pytest.raises(veo4k.ConfigurationError, match=name):
        veo4k.Veo4kClient("k", **kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [
        (("",), {}, "task_id"),
        (("   ",), {}, "task_id"),
        ((None,), {}, "task_id"),
        (("a\nb",), {}, "task_id"),
        (("t", -1), {}, "index"),
        (("t", 1.5), {}, "index"),
        (("t", True), {}, "index"),
        (("t",), {"callback_url": "ftp://x/cb"}, "callback_url"),
        (("t",), {"callback_url": "not a url"}, "callback_url"),
        (("t",), {"timeout": 0}, "timeout"),
        (("t",), {"timeout": -1}, "timeout"),
        (("t",), {"on_update": 5}, "on_update"),
    ],
)
async def test_bad_wait_arguments_fail_before_any_request(
    mocked: aioresponses,
    api: veo4k.Veo4kClient,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    name: str,
) -> None:
    """Invalid waits raise ConfigurationError (a ValueError) naming the argument, send nothing."""
    with pytest.raises(ValueError, match=name):
        await api.wait_for_4k(*args, **kwargs)
    assert not mocked.requests


async def test_one_shot_helper(mocked: aioresponses) -> None:
    """veo4k.wait_for_4k builds, uses and closes its own client."""
    mocked.post(FOURK, payload=body(200, "ok", {"taskId": "t1", "resultUrls": [MP4]}))
    result = await veo4k.wait_for_4k("t1", api_key=KEY, base_url=BASE, rate_limit=None)
    assert result.video_url == MP4


async def test_one_shot_helper_rejects_client_and_options(api: veo4k.Veo4kClient) -> None:
    """Passing client= and client options together is ambiguous: ConfigurationError."""
    with pytest.raises(veo4k.ConfigurationError, match="either client"):
        await veo4k.wait_for_4k("t1", client=api, base_url=BASE)


async def test_callback_result_shape(mocked: aioresponses, api: veo4k.Veo4kClient) -> None:
    """CallbackResult-driven fakes see the body the client sends (smoke for aioresponses use)."""

    def answer(url: URL, **kwargs: Any) -> CallbackResult:
        assert kwargs["json"]["taskId"] == "t9"
        return CallbackResult(payload=body(200, "ok", {"resultUrls": [MP4]}))

    mocked.post(FOURK, callback=answer)
    assert (await api.request_4k("t9")).ready
