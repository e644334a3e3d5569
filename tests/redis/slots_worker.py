"""A process asking the shared schedule for slots: ``python -m tests.redis.slots_worker ...``.

Its limiter is a real client's (``RedisCoordinator.limiter``); its candidates are asks of the
kinds given (``--ask urgent:10,submit:5``): ``urgent`` follow-ups (a callback's confirmation),
``poll`` (a due poll past its hold), ``spare`` (a due poll still held back), ``submit``. It
prints ``READY``, starts them when a line comes on stdin, prints ``GRANT <kind> <wall time of
the slot>`` per slot granted, and ``DONE <json>`` when all are granted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import veo4k
from veo4k._schedule import HOLD_BACK, Ask, Lane
from veo4k._secret import ApiKey
from veo4k.redis import RedisCoordinator
from veo4k.redis._limiter import RedisLimiter


class _Candidate(Ask):
    """One request waiting for a slot; it ends (``finished``) as soon as it has one."""

    def __init__(self, kind: str, limiter: RedisLimiter, now: float) -> None:
        lane = Lane.SUBMIT if kind == "submit" else Lane.FOLLOW_UP
        due = now - 2 * HOLD_BACK if kind == "poll" else now
        super().__init__(lane, urgent=kind == "urgent", due=due)
        self.kind = kind
        self._limiter = limiter
        self.done = asyncio.get_running_loop().create_future()

    def granted(self, at: float) -> bool:
        loop = asyncio.get_running_loop()
        print("GRANT", self.kind, f"{time.time() + at - loop.time():.4f}", flush=True)
        self._limiter.finished()  # the request "ends" at once: connections are not the point
        self.done.set_result(None)
        return True


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--redis", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--ask", required=True, help="kind:count,... (urgent, poll, spare, submit)")
    p.add_argument("--rate", default="20/1")
    p.add_argument("--timeout", type=float, default=0.5)
    p.add_argument("--retry-interval", type=float, default=1.0)
    args = p.parse_args()
    count, period = args.rate.split("/")
    coord = RedisCoordinator.from_url(
        args.redis, namespace=args.namespace, timeout=args.timeout,
        retry_interval=args.retry_interval,
    )  # fmt: skip
    coord.bind_key(ApiKey("sk-the-shared-account"))
    limiter = coord.limiter(veo4k.RateLimit(max_requests=int(count), period=float(period)))
    assert isinstance(limiter, RedisLimiter)
    loop = asyncio.get_running_loop()
    print("READY", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    now = loop.time()
    asks = [
        _Candidate(kind, limiter, now)
        for part in args.ask.split(",")
        for kind, n in [part.split(":")]
        for _ in range(int(n))
    ]
    for ask in asks:
        limiter.offer(ask)
    await asyncio.gather(*(ask.done for ask in asks))
    health = coord.health
    stats = {"refused": limiter.refused, "outages": health.outages, "fallbacks": health.fallbacks}
    print("DONE", json.dumps(stats), flush=True)
    limiter.close()
    await coord.aclose()


if __name__ == "__main__":
    asyncio.run(main())
