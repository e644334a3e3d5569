"""1,000 tasks against a fake Kie that enforces 20 requests per window, time scaled 50x.

Kie allows 20 generation requests per 10 s; here the window is 0.2 s (100 requests/s) so the
run takes seconds. Goals for veo4k with its configured limit: zero 429s at steady state, and the
achieved request rate >= 90 % of the allowed rate while requests are queued. For comparison:
veo4k with no configured limit (only its 429 back-off), and a bare loop paced by aiolimiter
configured literally (AsyncLimiter(20, 0.2)). Run: python benchmarks/ratelimit.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.request
from typing import Any

import aiohttp

import veo4k

from _common import fake_server, save, table

COUNT, PERIOD = 20, 0.2
ALLOWED = COUNT / PERIOD


def fake_stats(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url}/_fake/stats?period={PERIOD}&times=1") as resp:
        return json.load(resp)  # type: ignore[no-any-return]


async def run_client(
    base_url: str, key: str, n: int, limit: veo4k.RateLimit | None
) -> dict[str, Any]:
    policy = veo4k.PollPolicy(
        first_delay=2.0, first_delay_jitter=1.0, wait_initial=1.0, wait_max=2.0,
        wait_jitter=0.5, timeout=600.0,
    )  # fmt: skip
    retry = veo4k.RetryPolicy(attempts=20, wait_initial=0.05, wait_max=2.0)
    queued: list[tuple[float, int]] = []
    async with veo4k.Veo4kClient(
        key, base_url=base_url, poll_policy=policy, retry_policy=retry, rate_limit=limit
    ) as client:
        loop = asyncio.get_running_loop()

        async def sample() -> None:
            while True:
                queued.append((loop.time(), client.pacer.queued))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        start = time.perf_counter()
        results = await client.wait_for_4k_many(
            [f"rl_{i}" for i in range(n)], return_exceptions=True
        )
        wall = time.perf_counter() - start
        sampler.cancel()
    ok = sum(isinstance(r, veo4k.FourKResult) for r in results)
    return {"completed": ok, "wall_s": wall, "queued": queued}


async def run_aiolimiter(base_url: str, key: str, n: int) -> dict[str, Any]:
    from aiolimiter import AsyncLimiter

    limiter = AsyncLimiter(COUNT, PERIOD)
    headers = {"Authorization": f"Bearer {key}"}
    start = time.perf_counter()
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            async with limiter:
                body = {"taskId": f"al_{i}", "index": 0}
                async with session.post(
                    base_url + "/api/v1/veo/get-4k-video", json=body, headers=headers
                ) as resp:
                    await resp.read()

        await asyncio.gather(*(one(i) for i in range(n)))
    return {"completed": n, "wall_s": time.perf_counter() - start, "queued": []}


def busy_rate(times: list[float], queued: list[tuple[float, int]]) -> float:
    """Requests per second over the 1 s windows during which the client's queue never emptied."""
    rates = []
    if not queued:
        return float("nan")
    t, end = queued[0][0], queued[-1][0]
    while t + 1.0 <= end:
        inside = [q for ts, q in queued if t <= ts <= t + 1.0]
        if inside and min(inside) > 0:
            rates.append(sum(1 for x in times if t <= x < t + 1.0))
        t += 1.0
    return sum(rates) / len(rates) if rates else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    args = parser.parse_args()
    n = args.tasks
    runs: dict[str, dict[str, Any]] = {}
    setups = {
        "veo4k, RateLimit(20, 0.2)": lambda b, k: run_client(
            b, k, n, veo4k.RateLimit(max_requests=COUNT, period=PERIOD)
        ),
        "veo4k, no configured limit": lambda b, k: run_client(b, k, n, None),
        "bare loop + aiolimiter(20, 0.2)": lambda b, k: run_aiolimiter(b, k, n),
    }
    for name, setup in setups.items():
        with fake_server("--ready-after", "1:4", "--rate-limit", f"{COUNT}/{PERIOD}") as (b, k):
            out = asyncio.run(setup(b, k))
            stats = fake_stats(b)
        times = stats.pop("times")
        first = times[0] if times else 0.0
        steady = [t for t in stats.get("rejected_times", []) if t > first + 2.0]
        out.update(
            requests=stats["requests"],
            rate_limited=stats["rate_limited"],
            max_in_window=stats["max_in_window"],
            overall_rate=(len(times) - 1) / (times[-1] - first) if len(times) > 1 else 0.0,
            busy_rate=busy_rate(times, out.pop("queued")),
            steady_429=len(steady),
        )
        runs[name] = out
    rows = [
        [name, f"{o['completed']}/{n}", o["requests"], o["rate_limited"], o["steady_429"],
         o["max_in_window"],
         o["overall_rate"] / ALLOWED * 100, o["busy_rate"] / ALLOWED * 100, o["wall_s"]]
        for name, o in runs.items()
    ]  # fmt: skip
    print(f"allowed: {COUNT} requests per {PERIOD} s = {ALLOWED:.0f}/s\n")
    headers = ["setup", "completed", "requests", "429s", "429s after 2 s", "max per window",
               "rate % (overall)",
               "rate % (while queued)", "wall s"]  # fmt: skip
    print(table(headers, rows))
    print(f"saved {save('ratelimit', {'count': COUNT, 'period': PERIOD, 'runs': runs})}")


if __name__ == "__main__":
    main()
