"""Leaks: 1,000 waits cancelled mid-flight leave no task, socket or session behind."""

from __future__ import annotations

import asyncio
import gc
import os
import warnings

import pytest

import veo4k
from veo4k.testing import FakeKie

from ..conftest import ClientFactory, veo4k_tasks

pytestmark = pytest.mark.faults


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_cancel_1000_waits_mid_flight(make_client: ClientFactory) -> None:
    """Cancel 1,000 submitted waits: no veo4k task remains, the client closes every socket."""
    async with FakeKie(ready_after=600) as fake:
        fds_before = open_fds()
        client = make_client(base_url=fake.base_url, api_key=fake.api_key)
        submitted = asyncio.Event()
        seen: set[str] = set()

        def on_update(event: veo4k.WaitEvent) -> None:
            seen.add(event.task_id)
            if len(seen) == 1000:
                submitted.set()

        waits = [asyncio.create_task(client.wait_for_4k(f"t{i}", on_update=on_update))
                 for i in range(1000)]  # fmt: skip
        await submitted.wait()
        for w in waits:
            w.cancel()
        outcomes = await asyncio.gather(*waits, return_exceptions=True)
        assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
        assert veo4k_tasks() == []
        assert "waits=0" in repr(client)
        await client.aclose()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del client, waits, outcomes
            gc.collect()
        assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
        assert open_fds() <= fds_before


async def test_as_completed_cancelled_mid_batch(make_client: ClientFactory) -> None:
    """Cancelling the consumer of a 1,000-task as_completed leaves nothing running."""
    async with FakeKie(ready_after=600) as fake:
        client = make_client(base_url=fake.base_url, api_key=fake.api_key)
        progress = veo4k.BatchProgress(1000)
        all_in = asyncio.Event()

        def on_update(event: veo4k.WaitEvent) -> None:
            progress(event)
            if progress.counts().submitted == 1000:
                all_in.set()

        async def consume() -> None:
            async for _ in client.as_completed([f"t{i}" for i in range(1000)],
                                               on_update=on_update):  # fmt: skip
                pass

        consumer = asyncio.create_task(consume())
        await all_in.wait()
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        assert veo4k_tasks() == []
        await client.aclose()
