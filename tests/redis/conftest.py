"""Fixtures for the coordinator tests: a real Redis server, and unique namespaces."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ._server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis for the session (tests isolate themselves by namespace)."""
    try:
        server = RedisServer()
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    server.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own (it may be killed and restarted)."""
    try:
        server = RedisServer()
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    server.close()


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses."""
    return "t" + uuid.uuid4().hex[:12]
