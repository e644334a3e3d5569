"""Which poll schedule spends the fewest requests for a given detection delay? (issue 6)

Runs the real ``Veo4kClient.wait_for_4k`` (pacer, request path, parsing, poll loop) against
``veo4k.testing.FakeKie`` answering in process, on a looptime event loop: virtual time, so
1,000 tasks of 5-30 simulated minutes take seconds. For each policy and scenario it reports
requests per task, detection delay (ready -> wait_for_4k returns) and the most polls (not
counting the first submissions) that any 1-second window carried for the batch of 1,000
submitted together. Writes results/polling.json and results/polling.png.

Run: python benchmarks/polling.py [--tasks 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import backoff
import looptime

import veo4k
from veo4k.testing import SIMULATED_BASE_URL as BASE
from veo4k.testing import FakeKie, InProcessSession

from _common import RESULTS, percentile, save, table

# -- policies ------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class FullJitterExpo(veo4k.PollPolicy):
    """Naive exponential backoff: sleep U(0, min(60, 2**n)) seconds (1 s doubling to 60 s)."""

    def delays(self, rng: random.Random, phase: float | None = None) -> Iterator[float]:
        caps = backoff.expo(base=2, factor=1, max_value=60)
        next(caps)
        for cap in caps:
            yield rng.uniform(0, cap)


CALLBACKS = "veo4k default + callbacks"
FIXED_30 = veo4k.PollPolicy(
    first_delay=30, first_delay_jitter=0, wait_initial=30, wait_max=30, wait_jitter=0
)
POLICIES: dict[str, veo4k.PollPolicy | str] = {
    "fixed 30 s": FIXED_30,
    "expo 1 s x2 to 60 s, full jitter": FullJitterExpo(),
    "veo4k default": veo4k.PollPolicy(),
    CALLBACKS: CALLBACKS,
}
CANDIDATES: dict[str, veo4k.PollPolicy | str] = {
    f"first {first:g}+U(0,{jit:g}), then {interval:g}+U(0,{wj:g})": veo4k.PollPolicy(
        first_delay=first,
        first_delay_jitter=jit / first,  # jitter is a fraction of the delay it stretches
        wait_initial=interval,
        wait_max=interval,
        wait_jitter=wj / interval,
    )
    for first, jit, interval, wj in [
        (240, 60, 30, 1),
        (270, 30, 30, 1),
        (300, 30, 30, 1),
        (300, 30, 30, 5),
        (300, 60, 30, 1),
        (330, 30, 30, 1),
    ]
}


# -- scenarios -----------------------------------------------------------------------------------


def uniform_5_10(rng: random.Random) -> float:
    return rng.uniform(300, 600)


def load_spike(rng: random.Random) -> float:
    return rng.uniform(300, 600) if rng.random() < 0.8 else rng.uniform(600, 1800)


def finished(rng: random.Random) -> float:
    return 0.0


SCENARIOS: dict[str, Callable[[random.Random], float]] = {
    "a: uniform 5-10 min": uniform_5_10,
    "b: 80% 5-10, 20% 10-30 min": load_spike,
    "c: already finished": finished,
}


# -- one simulated batch -------------------------------------------------------------------------


async def simulate(
    policy: veo4k.PollPolicy | str, ready: Callable[[random.Random], float], n: int, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    server = None
    if policy == CALLBACKS:  # Kie calls back into the receiver in process, no sockets
        receiver = veo4k.CallbackReceiver("simulated-hmac-key")
        server = veo4k.CallbackServer(receiver, public_url="http://callbacks.simulated/kie")

        async def sink(url: str, body: bytes, headers: dict[str, str]) -> None:
            await receiver.handle(body, headers, token=receiver.token)

        fake = FakeKie(auto_create=False, callback_sink=sink, hmac_key="simulated-hmac-key")
    else:
        fake = FakeKie(auto_create=False)
    ids = [f"veo_task_{i:05d}" for i in range(n)]
    for task_id in ids:
        fake.add_task(task_id, ready_after=ready(rng))
    loop = asyncio.get_running_loop()
    returned: dict[str, float] = {}
    timeouts = 0
    session = InProcessSession(fake)
    async with veo4k.Veo4kClient(
        fake.api_key, base_url=BASE, rate_limit=None, session=session, callbacks=server,
        poll_policy=policy if isinstance(policy, veo4k.PollPolicy) else None,
        rng=random.Random(seed + 1),
    ) as client:  # fmt: skip
        async for outcome in client.as_completed(ids):
            if outcome.ok:
                returned[outcome.task_id] = loop.time()
            elif isinstance(outcome.error, veo4k.WaitTimeoutError):
                timeouts += 1
    await session.close()
    await fake.close()  # ends callback deliveries still scheduled
    delays, requests, first_posts = [], [], []
    for task_id in ids:
        task = fake.tasks[task_id]
        job = task.jobs[0]
        first_posts.append(job.started)
        requests.append(task.posts[0])
        if task_id in returned:
            delays.append(returned[task_id] - (job.started + task.ready_after))
    polls = sorted(fake.stats.times)
    for t in first_posts:  # drop each task's first request: the submission
        del polls[bisect.bisect_left(polls, t)]
    return {
        "requests_mean": sum(requests) / n,
        "requests_p95": percentile(requests, 95),
        "delay_p50": percentile(delays, 50),
        "delay_p95": percentile(delays, 95),
        "delay_max": max(delays, default=float("nan")),
        "max_polls_1s": max_in_window(polls, 1.0),
        "timeouts": timeouts,
    }


def max_in_window(times: list[float], width: float) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def run_all(
    policies: dict[str, veo4k.PollPolicy | str] | dict[str, veo4k.PollPolicy], n: int, seed: int
) -> list[dict[str, Any]]:
    rows = []
    for name, policy in policies.items():
        for scenario, ready in SCENARIOS.items():
            loop = looptime.new_event_loop()
            try:
                out = loop.run_until_complete(simulate(policy, ready, n, seed))
            finally:
                loop.close()
            rows.append({"policy": name, "scenario": scenario, **out})
    return rows


def render(rows: list[dict[str, Any]], n: int) -> str:
    return table(
        ["policy", "scenario", "req/task mean", "req/task p95", "delay p50 s", "delay p95 s",
         "delay max s", "max polls in 1 s", "timeouts"],
        [[r["policy"], r["scenario"], r["requests_mean"], r["requests_p95"], r["delay_p50"],
          r["delay_p95"], r["delay_max"], f"{r['max_polls_1s']} ({r['max_polls_1s'] / n:.1%})",
          r["timeouts"]] for r in rows],
    )  # fmt: skip


def plot(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(10, 6))
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    colors = dict(zip(policies, plt.get_cmap("tab10").colors, strict=False))
    markers = dict(zip(SCENARIOS, ["o", "s", "^"], strict=True))
    for row in rows:
        ax.scatter(row["requests_mean"], row["delay_p95"], s=90, alpha=0.85,
                   color=colors[row["policy"]], marker=markers[row["scenario"]])  # fmt: skip
    handles = [Line2D([], [], marker="o", linestyle="", color=colors[p], label=p) for p in policies]
    handles += [Line2D([], [], marker=m, linestyle="", color="grey", label=s)
                for s, m in markers.items()]  # fmt: skip
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_xlabel("requests per task (mean)")
    ax.set_ylabel("detection delay p95 (s)")
    ax.set_title("Poll policies: cost vs. detection delay (1,000 tasks, virtual time)\n"
                 "lower left is better; scenario c costs 1 request with no delay for every "
                 "policy", fontsize=10)  # fmt: skip
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    fig.savefig(RESULTS / "polling.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-candidates", action="store_true", help="skip the tuning sweep")
    args = parser.parse_args()
    start = time.perf_counter()
    main_rows = run_all(POLICIES, args.tasks, args.seed)
    print(render(main_rows, args.tasks))
    sweep_rows = []
    if not args.no_candidates:
        sweep_rows = run_all(CANDIDATES, args.tasks, args.seed)
        print("\ncandidates for the default (same batch and seed):\n")
        print(render(sweep_rows, args.tasks))
    path = save("polling", {"tasks": args.tasks, "seed": args.seed, "policies": main_rows,
                            "candidates": sweep_rows})  # fmt: skip
    plot(main_rows)
    print(f"\nsaved {path} and {RESULTS / 'polling.png'} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
