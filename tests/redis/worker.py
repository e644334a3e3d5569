"""One worker process for the multi-process tests: ``python -m tests.redis.worker ...``.

Prints ``READY <callback url or ->`` once it can take callbacks, ``DONE <task> <requests>
<error>`` per finished wait, and ``RESULT <json>`` at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import veo4k
from veo4k.redis import RedisCoordinator
from veo4k.testing import FAST_RETRY


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--redis", default="")
    p.add_argument("--namespace", default="test")
    p.add_argument("--tasks", default="")
    p.add_argument("--rate", default="20/1")
    p.add_argument("--poll", default="0.2", help="first poll and interval, seconds")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--serve-token", default="", help="run a CallbackServer with this token")
    p.add_argument("--callback-url", default=None)
    p.add_argument("--trust", action="store_true")
    p.add_argument("--hold", action="store_true", help="after the waits, stay until stdin closes")
    return p.parse_args()


async def main() -> None:
    args = _parse()
    count, period = args.rate.split("/")
    poll = float(args.poll)
    policy = veo4k.PollPolicy(
        first_delay=poll, first_delay_jitter=0.25, wait_initial=poll, wait_max=poll,
        wait_jitter=0.25, timeout=args.timeout,
    )  # fmt: skip
    coord = RedisCoordinator.from_url(args.redis, namespace=args.namespace) if args.redis else None
    server = None
    if args.serve_token:
        receiver = veo4k.CallbackReceiver(token=args.serve_token, coordinator=coord)
        server = veo4k.CallbackServer(receiver, coordinator=coord)
        await server.start()
    client = veo4k.Veo4kClient(
        args.api_key, base_url=args.base_url, poll_policy=policy, retry_policy=FAST_RETRY,
        rate_limit=veo4k.RateLimit(max_requests=int(count), period=float(period)),
        coordinator=coord, trust_callback_urls=args.trust,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcomes: list[dict[str, Any]] = []
    async with client:
        if coord is not None:
            await coord.subscribed()
        print("READY", server.url if server else "-", flush=True)
        tasks = [t for t in args.tasks.split(",") if t]
        async for out in client.as_completed(tasks, callback_url=args.callback_url):
            row = {
                "task": out.task_id,
                "requests": out.result.requests if out.result else None,
                "via_callback": out.result.via_callback if out.result else False,
                "error": type(out.error).__name__ if out.error else None,
                "at": loop.time() - started,
            }
            outcomes.append(row)
            print("DONE", out.task_id, row["requests"], row["error"], flush=True)
        if args.hold:
            await loop.run_in_executor(None, sys.stdin.read)
    if server is not None:
        await server.close()
    stats = None
    if coord is not None:
        stats = {"round_trips": coord.health.round_trips, "outages": coord.health.outages}
        await coord.aclose()
    print("RESULT", json.dumps({"outcomes": outcomes, "coordinator": stats}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
