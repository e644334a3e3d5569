"""10,000 concurrent wait_for_4k in one process against a fake Kie in another.

Goals: all complete; added peak RSS <= 100 MB (<= 10 KB per waiter); event-loop lag p99 <= 50 ms,
measured by a ticker task that asks to wake every 10 ms. Two runs: CPython's default garbage
collector, and the same with ``gc.freeze()`` once the batch has started (an application-level
setting for processes holding large long-lived heaps). Run: python benchmarks/scale.py
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import time

import veo4k

from _common import fake_server, percentile, save, table


def rss_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


async def ticker(lags: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start = loop.time()
        await asyncio.sleep(0.01)
        lags.append(loop.time() - start - 0.01)


async def run(base_url: str, key: str, n: int, freeze: bool) -> dict[str, object]:
    policy = veo4k.PollPolicy(
        first_delay=1.5, first_delay_jitter=1.0, wait_initial=1.0, wait_max=2.0,
        wait_jitter=0.5, timeout=300.0,
    )  # fmt: skip
    async with veo4k.Veo4kClient(key, base_url=base_url, poll_policy=policy, rate_limit=None) as c:
        await c.request_4k("warmup")  # session and connector exist before the baseline
        gc.collect()
        base = rss_kib()
        lags: list[float] = []
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(lags, stop))
        start = time.perf_counter()
        cpu = time.process_time()
        gc_pauses: list[float] = []
        gc_started = [0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                gc_started[0] = time.perf_counter()
            elif info["generation"] == 2:
                gc_pauses.append(time.perf_counter() - gc_started[0])

        gc.callbacks.append(on_gc)
        batch = asyncio.ensure_future(
            c.wait_for_4k_many([f"scale_{i}_{freeze}" for i in range(n)], return_exceptions=True)
        )
        if freeze:
            await asyncio.wait([batch], timeout=1.0)  # the batch starts all its waits in ~0.3 s
            gc.freeze()
        results = await batch
        gc.callbacks.remove(on_gc)
        gc.unfreeze()
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu
        stop.set()
        await tick
        peak = rss_kib("VmHWM")
    ok = [r for r in results if isinstance(r, veo4k.FourKResult)]
    errors = [r for r in results if not isinstance(r, veo4k.FourKResult)]
    return {
        "gc": "gc.freeze() after start" if freeze else "default",
        "gen2_collections": len(gc_pauses),
        "gen2_max_ms": max(gc_pauses, default=0.0) * 1000,
        "waiters": n,
        "completed": len(ok),
        "errors": len(errors),
        "error_kinds": sorted({type(e).__name__ for e in errors}),
        "requests": sum(r.requests for r in ok),
        "wall_s": wall,
        "cpu_s": cpu,
        "baseline_rss_mib": base / 1024,
        "added_peak_rss_mib": (peak - base) / 1024,
        "kib_per_waiter": (peak - base) / n,
        "lag_p50_ms": percentile(lags, 50) * 1000,
        "lag_p99_ms": percentile(lags, 99) * 1000,
        "lag_max_ms": max(lags) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--waiters", type=int, default=10_000)
    parser.add_argument("--one", choices=["default", "freeze"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child run: its own process, so peak RSS is its own
        with fake_server("--ready-after", "2:6", "--seed", "3") as (base_url, key):
            out = asyncio.run(run(base_url, key, args.waiters, args.one == "freeze"))
        print(json.dumps(out))
        return
    runs = []
    for mode in ("default", "freeze"):
        child = subprocess.run(
            [sys.executable, __file__, "--one", mode, "--waiters", str(args.waiters)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
    measures = [
        ("waiters completed", lambda o: f"{o['completed']}/{o['waiters']}", "all"),
        ("requests sent", lambda o: o["requests"], ""),
        ("wall time (s)", lambda o: o["wall_s"], ""),
        ("client CPU (s)", lambda o: o["cpu_s"], ""),
        ("added peak RSS (MiB)", lambda o: o["added_peak_rss_mib"], "<= 100"),
        ("added RSS per waiter (KiB)", lambda o: o["kib_per_waiter"], "<= 10"),
        ("loop lag p50 (ms)", lambda o: o["lag_p50_ms"], ""),
        ("loop lag p99 (ms)", lambda o: o["lag_p99_ms"], "<= 50"),
        ("loop lag max (ms)", lambda o: o["lag_max_ms"], ""),
        ("gen2 GC passes", lambda o: o["gen2_collections"], ""),
        ("longest gen2 GC pass (ms)", lambda o: o["gen2_max_ms"], ""),
    ]
    rows = [[name, *(f(o) for o in runs), goal] for name, f, goal in measures]
    print(table(["measure", *(str(o["gc"]) for o in runs), "goal"], rows))
    print(f"saved {save('scale', {'runs': runs})}")


if __name__ == "__main__":
    main()
