"""Real OS processes sharing one account through a real Redis, against the fake Kie over HTTP.

Time is scaled: the fake allows 20 requests per 1 s (Kie: 20 per 10 s) and 4Ks are ready
within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from ._procs import LIMIT, Proc, fake_stats
from ._server import RedisServer


def worker(fake: tuple[str, str], redis_url: str, namespace: str, *extra: str) -> list[str]:
    base_url, api_key = fake
    args = ["-m", "tests.redis.worker", "--base-url", base_url, "--api-key", api_key]
    if redis_url:
        args += ["--redis", redis_url, "--namespace", namespace]
    return [*args, *extra]


@contextlib.asynccontextmanager
async def processes(*argvs: list[str]) -> AsyncIterator[list[Proc]]:
    procs = [await Proc.start(*argv) for argv in argvs]
    try:
        yield procs
    finally:
        for p in procs:
            await p.stop()


def tasks(prefix: str, n: int) -> str:
    return ",".join(f"{prefix}{i}" for i in range(n))


async def test_shared_budget_holds_across_processes(
    http_fake: tuple[str, str], redis_server: RedisServer, namespace: str
) -> None:
    argvs = [
        worker(http_fake, redis_server.url, namespace, "--tasks", tasks(f"w{k}-", 8))
        for k in range(3)
    ]
    async with processes(*argvs) as procs:
        results = await asyncio.gather(*(p.result() for p in procs))
    outcomes = [o for r in results for o in r["outcomes"]]
    assert len(outcomes) == 24
    assert all(o["error"] is None for o in outcomes)
    stats = await fake_stats(http_fake[0])
    assert stats["rate_limited"] == 0
    assert stats["max_in_window"] <= LIMIT
    assert stats["max_submissions_per_task"] == 1


async def test_callback_delivered_to_one_worker_ends_the_waits_in_all(
    http_fake: tuple[str, str], redis_server: RedisServer, namespace: str
) -> None:
    slow = ["--poll", "30", "--trust"]  # after the submission only a callback can end a wait
    receiving = worker(http_fake, redis_server.url, namespace, "--serve-token", "tok", "--hold")
    async with processes(receiving) as (server,):
        url = await server.line("READY")
        waiting = [
            worker(
                http_fake,
                redis_server.url,
                namespace,
                "--tasks",
                tasks(f"c{k}-", 3),
                "--callback-url",
                url,
                *slow,
            )
            for k in range(2)
        ]
        async with processes(*waiting) as procs:
            results = await asyncio.gather(*(p.result(timeout=15) for p in procs))
    outcomes = [o for r in results for o in r["outcomes"]]
    assert len(outcomes) == 6
    assert all(o["via_callback"] and o["requests"] == 1 for o in outcomes), outcomes
    assert max(o["at"] for o in outcomes) < 5  # not the 30 s poll


async def test_same_task_in_two_processes_is_one_request_stream(
    http_fake: tuple[str, str], redis_server: RedisServer, namespace: str
) -> None:
    same = tasks("s", 5)
    argvs = [worker(http_fake, redis_server.url, namespace, "--tasks", same) for _ in range(2)]
    async with processes(*argvs) as procs:
        results = await asyncio.gather(*(p.result() for p in procs))
    stats = await fake_stats(http_fake[0])
    assert stats["max_submissions_per_task"] == 1
    by_task: dict[str, list[int]] = {}
    for r in results:
        for o in r["outcomes"]:
            assert o["error"] is None
            by_task.setdefault(o["task"], []).append(o["requests"])
    assert len(by_task) == 5
    # one process polled each task, the other followed its outcome with no request
    assert all(min(counts) == 0 for counts in by_task.values()), by_task
    assert stats["by_path"]["/api/v1/veo/get-4k-video"] == sum(map(sum, by_task.values()))


async def test_redis_killed_mid_batch_and_restarted(
    http_fake: tuple[str, str], own_redis: RedisServer, namespace: str
) -> None:
    argvs = [
        worker(http_fake, own_redis.url, namespace, "--tasks", tasks(f"k{k}-", 12))
        for k in range(2)
    ]
    async with processes(*argvs) as procs:
        await procs[0].line("DONE")
        own_redis.stop()
        await procs[1].line("DONE")  # the batch goes on without Redis
        own_redis.start()
        results = await asyncio.gather(*(p.result() for p in procs))
    outcomes = [o for r in results for o in r["outcomes"]]
    assert len(outcomes) == 24
    assert all(o["error"] is None for o in outcomes), outcomes
    assert all(r["coordinator"]["outages"] >= 1 for r in results)
    stats = await fake_stats(http_fake[0])
    assert stats["max_submissions_per_task"] == 1


async def test_redis_flushed_mid_batch(
    http_fake: tuple[str, str], redis_server: RedisServer, namespace: str
) -> None:
    same = tasks("f", 10)  # the same tasks in both: leases and kept results are flushed too
    argvs = [worker(http_fake, redis_server.url, namespace, "--tasks", same) for _ in range(2)]
    async with processes(*argvs) as procs:
        await procs[0].line("DONE")
        raw = aioredis.Redis.from_url(redis_server.url)
        await raw.flushall()
        await raw.aclose()
        results = await asyncio.gather(*(p.result() for p in procs))
    outcomes = [o for r in results for o in r["outcomes"]]
    assert len(outcomes) == 20
    assert all(o["error"] is None for o in outcomes), outcomes
    stats = await fake_stats(http_fake[0])
    assert stats["max_submissions_per_task"] == 1
    assert stats["rate_limited"] <= 0.01 * stats["requests"] + 1
