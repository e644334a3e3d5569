"""The API key (issue 13): held in an object with redacted repr/str, never a plain str local on
the request path, scrubbed from anything a server echoes; tracebacks rendered with locals (rich,
pytest --showlocals, Sentry) show no key."""

from __future__ import annotations

import io
import json
import types
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
import rich.console
import rich.traceback
from aiohttp import web

import veo4k
from veo4k._secret import ApiKey, AuthHeaders
from veo4k.testing import FakeKie

SECRET = "kie-live-SECRET-0a1b2c3d4e5f"
ONE_TRY = veo4k.RetryPolicy(attempts=1)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo += [item.__cause__, item.__context__]
    return seen


def _frames(exc: BaseException) -> list[types.FrameType]:
    frames = []
    for item in _chain(exc):
        tb = item.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame)
            tb = tb.tb_next
    return frames


def assert_no_key(exc: BaseException) -> None:
    """The rich rendering with locals, every frame local's repr, and the texts are key-free."""
    out = io.StringIO()
    console = rich.console.Console(file=out, width=300, color_system=None)
    console.print(rich.traceback.Traceback.from_exception(
        type(exc), exc, exc.__traceback__, show_locals=True, locals_max_string=10_000,
        locals_max_length=10_000))  # fmt: skip
    rendered = out.getvalue()
    assert "locals" in rendered.lower() or "─" in rendered
    assert SECRET not in rendered
    frames = _frames(exc)
    assert frames
    for frame in frames:
        for name, value in frame.f_locals.items():
            try:
                text = repr(value)
            except Exception:  # a half-built object's repr can fail: it then shows nothing
                text = ""
            assert SECRET not in text, (frame.f_code.co_name, name)
            assert not (type(value) is str and SECRET in value), (frame.f_code.co_name, name)
    for item in _chain(exc):
        assert SECRET not in f"{item} {item!r} {vars(item)!r}"


Echo = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest_asyncio.fixture
async def echo_server() -> AsyncIterator[Callable[[Echo], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Echo) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


def _echoed_key(request: web.Request) -> str:
    return request.headers["Authorization"].removeprefix("Bearer ")


async def test_key_object_and_headers_are_redacted() -> None:
    """ApiKey and AuthHeaders show no key in repr/str; the header still carries it."""
    key = ApiKey(SECRET)
    headers = AuthHeaders(key, {"Accept": "application/json"})
    for text in (repr(key), str(key), repr(headers), repr(dict(headers)), str(dict(headers))):
        assert SECRET not in text
    assert f"{headers['Authorization']}" == f"Bearer {SECRET}"
    assert key.scrub(f"x {SECRET} y") == "x <redacted> y"


async def test_failed_auth_traceback_with_locals_shows_no_key() -> None:
    """A 401 from Kie: rendered with locals, no frame shows the key."""
    async with FakeKie(api_key="the-right-key") as kie:
        client = veo4k.Veo4kClient(SECRET, base_url=kie.base_url, rate_limit=None)
        async with client:
            with pytest.raises(veo4k.AuthenticationError) as info:
                await client.request_4k("veo_task_1")
    assert_no_key(info.value)


async def test_connection_failure_traceback_shows_no_key(echo_server: object) -> None:
    """A connection refused deep inside aiohttp: no frame in the whole chain shows the key."""
    async with veo4k.Veo4kClient(
        SECRET, base_url="http://127.0.0.1:9", rate_limit=None, retry_policy=ONE_TRY
    ) as client:
        with pytest.raises(veo4k.TransportError) as info:
            await client.get_record("veo_task_1")
    assert_no_key(info.value)


@pytest.mark.parametrize("echo", [False, True], ids=["plain", "echoing-the-key"])
async def test_oversized_answer_traceback_shows_no_key(
    echo_server: Callable[[Echo], Awaitable[str]], echo: bool
) -> None:
    """An error raised while the request frame is live (body too large) shows no key; when the
    body echoes the key, the bytes read so far are dropped before the error is raised, so no
    frame local (the chunk list, the last chunk) holds them."""

    async def huge(request: web.Request) -> web.StreamResponse:
        if echo:
            return web.Response(body=f"key {_echoed_key(request)} ".encode() * 100_000)
        return web.Response(body=b"x" * 2_000_000)

    base = await echo_server(huge)
    async with veo4k.Veo4kClient(
        SECRET, base_url=base, rate_limit=None, retry_policy=ONE_TRY
    ) as client:
        with pytest.raises(veo4k.TransportError, match="exceeds") as info:
            await client.request_4k("veo_task_1")
    assert_no_key(info.value)


@pytest.mark.parametrize("kind", ["msg", "escaped", "record", "not-json"])
async def test_server_echo_of_the_key_is_scrubbed(
    echo_server: Callable[[Echo], Awaitable[str]], kind: str
) -> None:
    """A server echoing the key (in msg, in record data, in a non-JSON page) never carries it
    into an exception's text or attributes."""

    async def echo(request: web.Request) -> web.StreamResponse:
        key = _echoed_key(request)
        if kind == "msg":
            return web.json_response({"code": 401, "msg": f"key {key} is not valid"})
        if kind == "escaped":  # the key spelled with a JSON escape: only parsing reveals it
            spelled = f"\\u{ord(key[0]):04x}{key[1:]}"
            return web.Response(text=f'{{"code": 401, "msg": "key {spelled}"}}')
        if kind == "record":
            data = {"taskId": "veo_task_1", "successFlag": 2, "errorCode": 500,
                    "errorMessage": f"upstream rejected {key}"}  # fmt: skip
            return web.json_response({"code": 200, "msg": "success", "data": data})
        return web.Response(status=400, text=f"<html>bad key {key}</html>")

    base = await echo_server(echo)
    async with veo4k.Veo4kClient(
        SECRET, base_url=base, rate_limit=None, retry_policy=ONE_TRY
    ) as client:
        if kind == "record":
            record = await client.get_record("veo_task_1")
            assert record.error_message == "upstream rejected <redacted>"
            assert SECRET not in repr(record)
            return
        with pytest.raises(veo4k.Veo4kError) as info:
            await client.request_4k("veo_task_1")
    assert "<redacted>" in json.dumps([str(info.value), vars(info.value)], default=str)
    assert_no_key(info.value)


async def test_bad_key_construction_shows_no_key() -> None:
    """A key refused at construction (whitespace) leaves no frame local holding it."""
    with pytest.raises(veo4k.ConfigurationError, match="whitespace") as info:
        veo4k.Veo4kClient(f"{SECRET} x")
    assert_no_key(info.value)
