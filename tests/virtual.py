"""Run a test coroutine on a looptime event loop: sleeps take no real time; and a client
whose requests a fake Kie answers in process (no sockets), for such tests."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import looptime

import veo4k
from veo4k.testing import SIMULATED_BASE_URL, FakeKie, InProcessSession


def virtual_time(fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Decorate an ``async def test_...()``: it runs in virtual time on its own closed loop."""

    @functools.wraps(fn)
    def run() -> None:
        loop = looptime.new_event_loop()
        try:
            loop.run_until_complete(fn())
        finally:
            loop.close()

    return run


@contextlib.asynccontextmanager
async def simulated(fake: FakeKie, **options: Any) -> AsyncIterator[veo4k.Veo4kClient]:
    """A client whose every request is answered by ``fake`` in process."""
    session = InProcessSession(fake)
    try:
        async with veo4k.Veo4kClient(
            fake.api_key, base_url=SIMULATED_BASE_URL, session=session, **options
        ) as client:
            yield client
    finally:
        await session.close()
