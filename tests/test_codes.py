"""Issue 11 over the wire: every code of kie-api.md, the User-Agent, record-info variants, the
4K job id, and listeners that misbehave, each against FakeKie on a real socket."""

from __future__ import annotations

import asyncio
import logging

import pytest

import veo4k
from veo4k.testing import FAST_POLICY, FakeKie, FaultKind

from .conftest import ClientFactory

FOURK = "/api/v1/veo/get-4k-video"


@pytest.mark.parametrize(
    ("code", "msg", "error"),
    [
        (402, "Insufficient credits", veo4k.InsufficientCreditsError),
        (433, "Sub-key usage limit exceeded", veo4k.SubKeyLimitError),
        (501, "Generation failed", veo4k.GenerationFailedError),
        (505, "Feature disabled", veo4k.FeatureDisabledError),
        (429, "Daily quota exceeded for this key", veo4k.QuotaExceededError),
    ],
)
async def test_final_codes_end_a_wait_at_once(
    kie: FakeKie, client: veo4k.Veo4kClient, code: int, msg: str, error: type[veo4k.APIError]
) -> None:
    """402, 433, 501, 505 and a quota 429 end the wait with their typed error, one request."""
    kie.inject(FaultKind.ENVELOPE, code=code, msg=msg, status=code, times=100, path=FOURK)
    with pytest.raises(error) as info:
        await client.wait_for_4k("t", timeout=5)
    assert info.value.code == code
    assert kie.stats.requests[FOURK] == 1  # final: neither retried nor polled again


async def test_quota_429_is_not_retried_by_one_off_calls(
    kie: FakeKie, client: veo4k.Veo4kClient
) -> None:
    """A quota 429 is not retried in a storm, and does not slow the client's pacer."""
    kie.inject(FaultKind.ENVELOPE, code=429, status=429, msg="hourly quota reached", times=100)
    with pytest.raises(veo4k.QuotaExceededError):
        await client.request_4k("t")
    assert kie.stats.requests[FOURK] == 1
    assert client.pacer.rate_limited == 0


async def test_408_keeps_the_wait_going(kie: FakeKie, client: veo4k.Veo4kClient) -> None:
    """408 (upstream slower than 10 minutes) is transient: the wait goes on to its result."""
    kie.add_task("t", ready_after=0.1)
    kie.inject(FaultKind.ENVELOPE, code=408, msg="upstream timeout", times=8, after=1)
    events: list[veo4k.WaitEvent] = []
    result = await client.wait_for_4k("t", on_update=events.append)
    assert result.video_url
    retrying = [e for e in events if e.state is veo4k.WaitState.RETRYING]
    assert len(retrying) == 8
    assert all(isinstance(e.error, veo4k.UpstreamTimeoutError) for e in retrying)


async def test_edge_block_is_its_own_final_error(kie: FakeKie, client: veo4k.Veo4kClient) -> None:
    """HTTP 403 text/plain 'error code: 1010' is EdgeBlockedError, final, not an auth error."""
    kie.inject(FaultKind.EDGE_BLOCK, times=100)
    with pytest.raises(veo4k.EdgeBlockedError) as info:
        await client.wait_for_4k("t", timeout=5)
    assert not isinstance(info.value, veo4k.AuthenticationError)
    assert "Cloudflare 1010" in str(info.value)
    assert kie.stats.requests[FOURK] == 1


async def test_every_request_sends_a_veo4k_user_agent(make_client: ClientFactory) -> None:
    """The default User-Agent is veo4k/<version> (+python aiohttp); Kie's edge lets it in."""
    async with FakeKie(ready_after=0.05, require_user_agent=True) as fake:
        client = make_client(base_url=fake.base_url, api_key=fake.api_key)
        assert (await client.wait_for_4k("t")).video_url
        await client.get_record("t")
    agents = set(fake.user_agents)
    assert agents == {f"veo4k/{veo4k.__version__} (+python aiohttp)"}


async def test_user_agent_is_overridable(make_client: ClientFactory) -> None:
    """user_agent= replaces it; aiohttp's default one is blocked at the fake's edge."""
    async with FakeKie(ready_after=0.05, require_user_agent=True) as fake:
        mine = make_client(base_url=fake.base_url, api_key=fake.api_key, user_agent="acme/2.0")
        assert (await mine.request_4k("t")).task_id == "t"
        bare = make_client(base_url=fake.base_url, api_key=fake.api_key,
                           user_agent="Python/3.11 aiohttp/3.9")  # fmt: skip
        with pytest.raises(veo4k.EdgeBlockedError):
            await bare.request_4k("t")
    assert fake.user_agents["acme/2.0"] == 1


@pytest.mark.parametrize("agent", ["", "two\nlines", 5])
def test_bad_user_agent_is_refused(agent: object) -> None:
    """user_agent must be a non-empty one-line string."""
    with pytest.raises(veo4k.ConfigurationError, match="user_agent"):
        veo4k.Veo4kClient("k", user_agent=agent)  # type: ignore[arg-type]


async def test_record_info_quirks_parse_over_the_wire(
    kie: FakeKie, client: veo4k.Veo4kClient
) -> None:
    """A record-info answer with every sampled variant parses into a TaskRecord."""
    kie.add_task("t", record_quirks=True)
    record = await client.get_record("t")
    assert record.succeeded
    assert record.full_result_urls
    assert record.credits == 12.5
    assert record.error_code is None
    assert record.complete_time is not None


async def test_differing_4k_job_id_is_kept(kie: FakeKie, client: veo4k.Veo4kClient) -> None:
    """A data.taskId other than the source id reaches the result and the events."""
    kie.add_task("t", ready_after=0.1, fourk_task_id="job-4k-123")
    events: list[veo4k.WaitEvent] = []
    result = await client.wait_for_4k("t", on_update=events.append)
    assert result.task_id == "t"
    assert result.fourk_task_id == "job-4k-123"
    assert events[-1].fourk_task_id == "job-4k-123"


async def test_async_listener_error_is_logged(
    kie: FakeKie, client: veo4k.Veo4kClient, caplog: pytest.LogCaptureFixture
) -> None:
    """An async on_update that raises is logged and the wait completes."""
    raised = asyncio.Event()

    async def broken(event: veo4k.WaitEvent) -> None:
        raised.set()
        raise RuntimeError("progress bar bug")

    with caplog.at_level(logging.ERROR, logger="veo4k"):
        assert (await client.wait_for_4k("t", on_update=broken)).video_url
        await raised.wait()
        await asyncio.sleep(0)  # let the listener task log
    assert "on_update callback raised" in caplog.text


async def test_aclose_from_a_listener_closes_cleanly(kie: FakeKie) -> None:
    """A listener may close the client: the wait ends with ClientStateError, nothing hangs."""
    kie.add_task("t", ready_after=60)
    closed = asyncio.get_running_loop().create_future()
    client = veo4k.Veo4kClient(kie.api_key, base_url=kie.base_url, poll_policy=FAST_POLICY)

    async def closer(event: veo4k.WaitEvent) -> None:
        await client.aclose()
        closed.set_result(client.closed)

    with pytest.raises(veo4k.ClientStateError):
        await client.wait_for_4k("t", on_update=closer)
    assert await asyncio.wait_for(closed, 5)
