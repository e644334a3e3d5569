"""Checked by mypy --strict, never run: how the public API reads to a type checker."""

from __future__ import annotations

import veo4k
import veo4k.testing
from veo4k.redis import RedisCoordinator
from veo4k.testing import FakeKie


async def typed_usage(kie: FakeKie) -> None:
    policy: veo4k.PollPolicy = veo4k.PollPolicy(timeout=600.0)
    async with veo4k.Veo4kClient(kie.api_key, base_url=kie.base_url, poll_policy=policy) as client:
        status: veo4k.FourKStatus = await client.request_4k("veo_task_1", 0, callback_url=None)
        ready: bool = status.ready
        result: veo4k.FourKResult = await client.wait_for_4k("veo_task_1", timeout=60.0)
        url: str = result.video_url
        record: veo4k.TaskRecord = await client.get_record("veo_task_1")
        async for outcome in client.as_completed(["a", ("b", 1)]):
            maybe: veo4k.FourKResult | None = outcome.result
            error: veo4k.Veo4kError | None = outcome.error
        results = await client.wait_for_4k_many(["a"], return_exceptions=True)
        first: veo4k.FourKResult | veo4k.Veo4kError = results[0]
        path = await client.download(result, "videos/", overwrite=False, timeout=600.0)
        counts: veo4k.ProgressCounts = veo4k.BatchProgress(total=1).counts()
    receiver = veo4k.CallbackReceiver(
        "hmac-key", tolerance=300.0, max_body=1_048_576, max_store_bytes=16 * 1024 * 1024
    )
    receiver.add_handler(lambda event: print(event.task_id, event.ok, event.result_urls))
    event: veo4k.CallbackEvent = await receiver.handle(b"{}", {}, token=receiver.token)
    server = veo4k.CallbackServer(
        receiver, port=0, public_url=None, header_timeout=10.0, keepalive_timeout=15.0,
        max_connections=512, close_timeout=5.0, max_connections_per_peer=256,
        max_header_bytes=32 * 1024,
    )  # fmt: skip
    cut_off: int = server.oversized_connections + server.refused_connections
    strict = veo4k.Veo4kClient("k", allow_http=False, allow_private_hosts=False)
    async with server, veo4k.Veo4kClient(callbacks=server, trust_callback_urls=False) as hybrid:
        await hybrid.wait_for_4k("veo_task_1")
    async with RedisCoordinator.from_url("redis://localhost:6379/0", namespace="app") as coord:
        shared = veo4k.CallbackReceiver(token="t", coordinator=coord)
        served = veo4k.CallbackServer(shared, coordinator=coord)
        async with veo4k.Veo4kClient(
            callbacks=shared, callback_url="https://me.example.com/cb", coordinator=coord
        ) as worker:
            await worker.wait_for_4k("veo_task_1")
        del served
    valid: bool = veo4k.verify_signature("veo_task_1", 1700000000, "c2ln", "hmac-key")
    one: veo4k.FourKResult = await veo4k.wait_for_4k("x", api_key="k")
    try:
        pass
    except veo4k.DownloadTimeoutError as timeout_error:
        dl: veo4k.DownloadError = timeout_error
        te: TimeoutError = timeout_error
        del dl, te
    except veo4k.APIError as exc:
        code: int = exc.code
        msg: str = exc.msg
        task: str | None = exc.task_id
    del strict, cut_off
    del ready, url, record, maybe, error, first, one, code, msg, task, path, counts, event, valid


async def issue_11_names() -> None:
    policy = veo4k.PollPolicy(first_delay_jitter=0.1, wait_jitter=0.05, safety_net_interval=900.0)
    net: veo4k.PollPolicy = policy.safety_net()
    retry = veo4k.RetryPolicy(max_retry_after=60.0)
    async with veo4k.Veo4kClient("k", user_agent="acme/1.0", retry_policy=retry) as client:
        result = await client.wait_for_4k("t", poll_policy=net)
        job: str | None = result.fourk_task_id
        record = await client.get_record("t")
        credits: float | None = record.credits
        full: tuple[str, ...] = record.full_result_urls
    final_errors: tuple[type[veo4k.Veo4kError], ...] = (
        veo4k.EdgeBlockedError,
        veo4k.FeatureDisabledError,
        veo4k.GenerationFailedError,
        veo4k.QuotaExceededError,
        veo4k.SubKeyLimitError,
    )
    transient: bool = veo4k.is_transient(veo4k.UpstreamTimeoutError(408, "slow"))
    fake = veo4k.testing.FakeKie(require_user_agent=True, hostile={veo4k.testing.Hostile.MARKUP})
    fake.hostile.add(veo4k.testing.Hostile.GZIP_BOMB)
    markup: str = veo4k.testing.MARKUP_TEXT
    session = veo4k.testing.InProcessSession(fake)
    base: str = veo4k.testing.SIMULATED_BASE_URL
    fake.inject(veo4k.testing.FaultKind.EDGE_BLOCK, until=60.0)
    del job, credits, full, final_errors, transient, session, base, markup


async def issue_17_names(client: veo4k.Veo4kClient) -> None:
    policy = veo4k.PollPolicy(queue_timeout=86_400.0, upscale_time=None)
    estimate: float | None = policy.upscale_time
    try:
        await client.wait_for_4k("t", timeout=900.0, poll_policy=policy)
    except veo4k.NotSubmittedError as exc:
        timed_out: veo4k.WaitTimeoutError = exc
        reason: str = exc.reason
        submitted: bool = exc.submitted
        del timed_out, reason, submitted
    queued: int = veo4k.BatchProgress(total=1).counts().queued
    state: veo4k.WaitState = veo4k.WaitState.QUEUED
    del estimate, queued, state
