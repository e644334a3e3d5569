"""CPU time per request: veo4k's request path vs a bare aiohttp loop (goal: ratio <= 1.3).

Both make the same get-4k-video POSTs to a fake Kie in another process and parse the JSON
answer; CPU time is this process's only. Run: python benchmarks/overhead.py [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiohttp

import veo4k

from _common import fake_server, save, table

CONCURRENCY = 20


async def bare(base_url: str, key: str, n: int) -> float:
    url = base_url + "/api/v1/veo/get-4k-video"
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as session:

        async def worker(w: int) -> None:
            for i in range(w, n, CONCURRENCY):
                body = {"taskId": f"task{i % 500}", "index": 0}
                async with session.post(url, json=body, headers=headers) as resp:
                    payload = await resp.json(content_type=None)
                    assert payload["code"] in (200, 422)

        start = time.process_time()
        await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
        return time.process_time() - start


async def client(base_url: str, key: str, n: int) -> float:
    async with veo4k.Veo4kClient(key, base_url=base_url, rate_limit=None) as api:

        async def worker(w: int) -> None:
            for i in range(w, n, CONCURRENCY):
                status = await api.request_4k(f"task{i % 500}")
                assert not status.ready

        start = time.process_time()
        await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
        return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n = args.requests
    with fake_server("--ready-after", "100000") as (base_url, key):
        asyncio.run(bare(base_url, key, 500))  # warm up both sides
        asyncio.run(client(base_url, key, 500))
        bare_us, client_us = [], []
        for _ in range(args.rounds):  # interleaved, so drift affects both alike
            bare_us.append(asyncio.run(bare(base_url, key, n)) / n * 1e6)
            client_us.append(asyncio.run(client(base_url, key, n)) / n * 1e6)
    b, c = statistics.median(bare_us), statistics.median(client_us)
    rows = [
        ["bare aiohttp POST + json()", n, args.rounds, b],
        ["veo4k request_4k", n, args.rounds, c],
    ]
    print(table(["path", "requests/round", "rounds", "CPU us/request (median)"], rows))
    print(f"\nratio veo4k / bare = {c / b:.2f} (goal <= 1.3)")
    path = save(
        "overhead",
        {"requests": n, "rounds": args.rounds, "bare_us": bare_us, "client_us": client_us,
         "bare_median_us": b, "client_median_us": c, "ratio": c / b, "goal": 1.3},
    )  # fmt: skip
    print(f"saved {path}")


if __name__ == "__main__":
    main()
