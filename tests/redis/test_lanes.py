"""The account's priorities across real OS processes sharing one Redis (issue 17, behaviour 5).

Each process is ``tests/redis/slots_worker.py``: a real client's limiter with candidates of one
kind or another; it prints the wall time of every slot it is granted. Rate 20 per 1 s (one slot
per ~53 ms with the 95 % headroom).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

import veo4k
from veo4k._schedule import Lane, Rank
from veo4k._secret import ApiKey
from veo4k.redis import RedisCoordinator

from ._procs import Proc
from ._server import RedisServer
from ._util import eventually

Grants = list[tuple[str, float]]


class Slots:
    """One worker process: its grants (kind, wall time) and its closing stats."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.grants: Grants = []
        self.stats: dict[str, Any] = {}

    @classmethod
    async def start(cls, redis_url: str, namespace: str, ask: str, *extra: str) -> Slots:
        proc = await Proc.start(
            "-m", "tests.redis.slots_worker", "--redis", redis_url, "--namespace", namespace,
            "--ask", ask, *extra,
        )  # fmt: skip
        await proc.line("READY")
        return cls(proc)

    async def go(self) -> None:
        stdin = self.proc.proc.stdin
        assert stdin is not None
        stdin.write(b"go\n")
        await stdin.drain()

    async def next_grant(self, timeout: float = 20.0) -> tuple[str, float]:
        kind, at = (await self.proc.line("GRANT", timeout)).split()
        self.grants.append((kind, float(at)))
        return self.grants[-1]

    async def done(self, timeout: float = 30.0) -> Grants:
        async with asyncio.timeout(timeout):
            while True:
                text = await self.proc.line("", timeout)
                if text.startswith("GRANT"):
                    kind, at = text.split()[1:]
                    self.grants.append((kind, float(at)))
                elif text.startswith("DONE"):
                    self.stats = json.loads(text[4:])
                    await self.proc.proc.wait()
                    return self.grants


@contextlib.asynccontextmanager
async def workers(*made: Slots) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for w in made:
            await w.proc.stop()


def between(grants: Grants, start: float, end: float) -> int:
    return sum(start < at < end for _, at in grants)


async def test_follow_ups_of_one_process_go_before_submissions_of_another(
    redis_server: RedisServer, namespace: str
) -> None:
    """A process confirming callbacks gets the next slots though another process has 60
    submissions queued since before: the submitter gets at most the slots it had already
    reserved while the 10 follow-ups go, then all its submissions go (no starvation)."""
    submitter = await Slots.start(redis_server.url, namespace, "submit:60")
    follower = await Slots.start(redis_server.url, namespace, "urgent:10")
    async with workers(submitter, follower):
        await submitter.go()
        for _ in range(5):
            await submitter.next_grant()  # it has the budget to itself for a while
        await follower.go()
        follow_ups = await follower.done()
        submissions = await submitter.done()
    assert len(follow_ups) == 10
    assert len(submissions) == 60
    first, last = min(at for _, at in follow_ups), max(at for _, at in follow_ups)
    # taking turns slot by slot (no ranks), 9 submissions would go among them
    assert between(submissions, first, last) <= 1, (follow_ups, submissions)
    assert submitter.stats["refused"] >= 1
    assert follower.stats["refused"] == 0


async def test_spare_polls_of_one_process_wait_for_submissions_of_another(
    redis_server: RedisServer, namespace: str
) -> None:
    """The hold-back of due polls is account-wide: a process whose only candidates are polls
    still held back does not spend the budget while another process's submissions wait; its
    polls go once they are done."""
    submitter = await Slots.start(redis_server.url, namespace, "submit:30")
    poller = await Slots.start(redis_server.url, namespace, "spare:30")
    async with workers(submitter, poller):
        await asyncio.gather(submitter.go(), poller.go())
        polls, submissions = await asyncio.gather(poller.done(), submitter.done())
    assert len(polls) == 30
    assert len(submissions) == 30
    last_submission = max(at for _, at in submissions)
    # the poller may take a slot or two before the submitter's demand is published
    assert between(polls, 0.0, last_submission) <= 2, (polls, submissions)


async def test_submissions_keep_their_share_against_overdue_polls_elsewhere(
    redis_server: RedisServer, namespace: str
) -> None:
    """Polls past their hold go before another process's submissions, but at least one slot
    in four goes to the submissions: neither side starves."""
    submitter = await Slots.start(redis_server.url, namespace, "submit:20")
    poller = await Slots.start(redis_server.url, namespace, "poll:80")
    async with workers(submitter, poller):
        await poller.go()
        await poller.next_grant()
        await submitter.go()
        polls, submissions = await asyncio.gather(poller.done(), submitter.done())
    both = sorted([*polls, *submissions], key=lambda g: g[1])
    start, end = min(at for _, at in submissions), max(at for _, at in submissions)
    contested = [kind for kind, at in both if start <= at <= end]  # the polls wait throughout
    assert contested.count("poll") < len(polls) - 5  # (so polls were left after it)
    share = contested.count("submit") / len(contested)
    # taking turns (no ranks): 0.5; submissions after the polls (no share): 1
    assert 0.2 <= share <= 0.34, contested
    gaps = [b[1] - a[1] for a, b in itertools.pairwise(both)]
    assert sum(gaps) / len(gaps) < 1.3 / (20 * 0.95)  # the refusals cost (almost) no slots


async def test_demand_of_a_dead_process_expires(redis_server: RedisServer, namespace: str) -> None:
    """A process killed while its follow-ups wait stops counting within about a second (its
    demand is fresh until shortly after its next call was due); the keys have TTLs."""
    submitter = await Slots.start(redis_server.url, namespace, "submit:200")
    follower = await Slots.start(redis_server.url, namespace, "urgent:200")
    raw = aioredis.Redis.from_url(redis_server.url)
    coord = RedisCoordinator.from_url(redis_server.url, namespace=namespace)
    coord.bind_key(ApiKey("sk-the-shared-account"))
    want = coord.budget.keys()[2 + Rank.URGENT]
    try:
        async with workers(submitter, follower):
            await asyncio.gather(submitter.go(), follower.go())
            for _ in range(20):
                await follower.next_grant()
            assert await raw.zcard(want) == 1  # the follower's urgent demand
            assert 0 < await raw.pttl(want) <= 60_000
            await follower.proc.stop()  # SIGKILL: no goodbye
            killed = time.time()
            seconds, micros = await raw.time()
            killed_ms = seconds * 1000 + micros / 1000
            before = len(submitter.grants)
            while len(submitter.grants) < before + 3:
                await submitter.next_grant()
            resumed = submitter.grants[-3][1]
            # fresh until at most a second after the death, then it no longer counts
            late = await raw.zrangebyscore(want, killed_ms + 1000, "+inf")
    finally:
        await raw.aclose()
        await coord.aclose()
    assert resumed - killed < 1.0  # (the default timeout 0.5 s + one interval + a few slots)
    assert late == []


async def test_two_limiters_in_one_process_see_each_other(
    redis_server: RedisServer, namespace: str
) -> None:
    """Two clients of one process (one coordinator) are two processes to the shared schedule:
    one's follow-ups go before the other's submissions."""
    coord = RedisCoordinator.from_url(redis_server.url, namespace=namespace)
    coord.bind_key(ApiKey("sk-the-shared-account"))
    limit = veo4k.RateLimit(max_requests=20, period=1.0)
    submitting, following = coord.limiter(limit), coord.limiter(limit)
    order: list[str] = []

    async def take(limiter: Any, lane: Lane, name: str) -> None:
        await limiter.acquire(lane)
        order.append(name)

    backlog = [asyncio.ensure_future(take(submitting, Lane.SUBMIT, "s")) for _ in range(20)]
    await eventually(lambda: "s" in order)
    await asyncio.gather(*(take(following, Lane.FOLLOW_UP, "f") for _ in range(5)))
    await asyncio.gather(*backlog)
    submitting.close()
    following.close()
    await coord.aclose()
    assert "".join(order).find("fffff") >= 0, order
