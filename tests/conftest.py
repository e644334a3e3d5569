"""Shared fixtures: a fast fake Kie server and clients pointed at it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

import veo4k
from veo4k.testing import FAST_POLICY, FAST_RETRY, FakeKie

ClientFactory = Callable[..., veo4k.Veo4kClient]


def veo4k_tasks() -> list[asyncio.Task[object]]:
    """Poll loops still alive in this event loop (their tasks are named veo4k-wait-...)."""
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("veo4k")]


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a developer's real key or base URL."""
    for name in ("KIE_API_KEY", "KIE_BASE_URL", "KIE_WEBHOOK_HMAC_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest_asyncio.fixture
async def kie() -> AsyncIterator[FakeKie]:
    """A fake Kie whose 4K jobs finish after 50 ms."""
    async with FakeKie(ready_after=0.05) as fake:
        yield fake


@pytest_asyncio.fixture
async def make_client(kie: FakeKie) -> AsyncIterator[ClientFactory]:
    """Build clients for ``kie`` with millisecond policies; closed afterwards."""
    made: list[veo4k.Veo4kClient] = []

    def factory(**overrides: Any) -> veo4k.Veo4kClient:
        options: dict[str, Any] = {
            "base_url": kie.base_url,
            "poll_policy": FAST_POLICY,
            "retry_policy": FAST_RETRY,
            # High enough never to queue, and a 429 only slows the client for milliseconds.
            "rate_limit": veo4k.RateLimit(max_requests=10_000, period=1.0),
        }
        options.update(overrides)
        client = veo4k.Veo4kClient(options.pop("api_key", kie.api_key), **options)
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.aclose()


@pytest_asyncio.fixture
async def client(make_client: ClientFactory) -> veo4k.Veo4kClient:
    """A client for the fake with default test settings."""
    return make_client()
