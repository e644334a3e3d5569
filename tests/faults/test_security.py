"""Security: the key stays secret everywhere; callbacks reject abuse."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pathlib
import sys
import time

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
