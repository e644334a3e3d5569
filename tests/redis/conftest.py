"""Fixtures for the coordinator tests: a real Redis server, and unique namespaces."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from ._procs import LIMIT, Proc
from ._server import RedisServer


def _running(**options: bool) -> Iterator[RedisServer]:
    """A started server, closed afterwards; no binary or no start fails the test, never skips."""
    server = RedisServer(**options)
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis for the session (tests isolate themselves by namespace)."""
    yield from _running()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own (it may be killed and restarted)."""
    yield from _running()


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses."""
    return "t" + uuid.uuid4().hex[:12]


@pytest_asyncio.fixture
async def http_fake() -> AsyncIterator[tuple[str, str]]:
    """The fake Kie in its own process: ``(base_url, api_key)``; 20 requests per 1 s."""
    fake = await Proc.start(
        "-m", "veo4k.testing", "--rate-limit", f"{LIMIT}/1", "--ready-after", "0.3:0.6"
    )
    try:
        base_url, api_key = (await fake.line("READY")).split()
        yield base_url, api_key
    finally:
        await fake.stop()


@pytest.fixture
def cluster_redis() -> Iterator[RedisServer]:
    """A one-node Redis Cluster (cluster mode on, all slots on this node)."""
    yield from _running(cluster=True)
