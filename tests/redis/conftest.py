"""Fixtures for the coordinator tests: real Redis servers, unique namespaces, coordinators and
clients closed afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

import veo4k
from veo4k.redis import RedisCoordinator

from ._procs import LIMIT, Proc
from ._proxy import Proxy
from ._server import RedisServer

Factory = Callable[..., Any]


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


@pytest_asyncio.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[Proxy]:
    """A TCP proxy in front of the session's Redis (stall, cut off, black-hole pub/sub)."""
    made = Proxy(redis_server.port)
    await made.start()
    yield made
    await made.aclose()


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


@pytest.fixture(scope="session")
def cluster_redis() -> Iterator[RedisServer]:
    """A one-node Redis Cluster (cluster mode on, all slots on this node) for the session: a
    cluster node takes 2 s to start serving."""
    yield from _running(cluster=True)


@pytest.fixture
def own_cluster() -> Iterator[RedisServer]:
    """A one-node Redis Cluster of this test's own (it may be killed and restarted)."""
    yield from _running(cluster=True)


@pytest_asyncio.fixture
async def coordinators(
    redis_server: RedisServer, namespace: str
) -> AsyncIterator[Callable[..., RedisCoordinator]]:
    """Coordinators on the session's Redis, in this test's namespace (each stands for a
    process); ``url=`` picks another server."""
    made: list[RedisCoordinator] = []

    def make(url: str | None = None, **options: Any) -> RedisCoordinator:
        coord = RedisCoordinator.from_url(url or redis_server.url, namespace=namespace, **options)
        made.append(coord)
        return coord

    yield make
    for coord in made:
        await coord.aclose()


@pytest.fixture
def clients(make_client: Factory) -> Factory:
    """Clients of the in-process fake Kie (millisecond policies, closed afterwards), each on
    the coordinator given (none: in-process)."""

    def make(coordinator: RedisCoordinator | None = None, **options: Any) -> veo4k.Veo4kClient:
        client: veo4k.Veo4kClient = make_client(coordinator=coordinator, **options)
        return client

    return make
