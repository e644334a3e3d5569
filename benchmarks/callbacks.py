"""Polling vs callbacks for the same batch, over real sockets, time scaled 1/100.

500 tasks whose 4K is ready 3-6 s after submission (5-10 minutes / 100) against the fake Kie
in this process; the default policy is scaled the same way. With callbacks the fake POSTs
signed deliveries to a CallbackServer on 127.0.0.1. Reports requests per task and detection
delay (ready -> wait returns). Run: python benchmarks/callbacks.py
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import veo4k
from veo4k.testing import FakeKie

from _common import percentile, save, table

KEY = "bench-hmac-key"
SCALE = 100.0


def scaled(policy: veo4k.PollPolicy) -> veo4k.PollPolicy:
    return veo4k.PollPolicy(
        first_delay=policy.first_delay / SCALE,
        first_delay_jitter=policy.first_delay_jitter,  # a fraction: scale-free
        wait_initial=policy.wait_initial / SCALE,
        wait_max=policy.wait_max / SCALE,
        wait_exp_base=policy.wait_exp_base,
        wait_jitter=policy.wait_jitter,  # a fraction: scale-free
        timeout=policy.timeout / SCALE,
        safety_net_interval=policy.safety_net_interval / SCALE,
    )


async def run(n: int, callbacks: bool) -> dict[str, Any]:
    async with FakeKie(ready_after=(3.0, 6.0), hmac_key=KEY, seed=5) as kie:
        server = veo4k.CallbackServer(veo4k.CallbackReceiver(KEY)) if callbacks else None
        if server is not None:
            await server.start()
        loop = asyncio.get_running_loop()
        returned: dict[str, float] = {}
        try:
            async with veo4k.Veo4kClient(
                kie.api_key, base_url=kie.base_url, rate_limit=None, callbacks=server,
                poll_policy=scaled(veo4k.PollPolicy()),
            ) as client:  # fmt: skip
                async for outcome in client.as_completed([f"cb_{i}" for i in range(n)]):
                    assert outcome.ok, outcome.error
                    returned[outcome.task_id] = loop.time()
        finally:
            if server is not None:
                await server.close()
        delays, requests = [], []
        for task_id, at in returned.items():
            task = kie.tasks[task_id]
            delays.append((at - task.jobs[0].started - task.ready_after) * 1000)
            requests.append(task.posts[0])
        return {
            "mode": "callbacks" if callbacks else "polling",
            "completed": len(returned),
            "requests_mean": sum(requests) / n,
            "delay_p50_ms": percentile(delays, 50),
            "delay_p95_ms": percentile(delays, 95),
            "delay_max_ms": max(delays),
            "callbacks_sent": kie.stats.callbacks_sent,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=500)
    args = parser.parse_args()
    runs = [asyncio.run(run(args.tasks, cb)) for cb in (False, True)]
    print(table(
        ["mode", "completed", "requests/task", "delay p50 ms", "delay p95 ms", "delay max ms"],
        [[r["mode"], f"{r['completed']}/{args.tasks}", r["requests_mean"], r["delay_p50_ms"],
          r["delay_p95_ms"], r["delay_max_ms"]] for r in runs],
    ))  # fmt: skip
    print("(delays are at 1/100 scale: multiply by 100 for real minutes-long jobs, except the "
          "callback path's network time, which does not scale)")  # fmt: skip
    print(f"saved {save('callbacks', {'tasks': args.tasks, 'scale': SCALE, 'runs': runs})}")


if __name__ == "__main__":
    main()
