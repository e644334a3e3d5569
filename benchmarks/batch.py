"""Big batches on one account (issue 17): paid tasks first, deadlines from the submission.

Runs the real client (scheduler, pacer, request path, poll loops) against ``FakeKie`` answering
in process, on a looptime event loop (virtual time), at Kie's real limit (20 requests per 10 s,
enforced by the fake), with 4Ks ready U(300, 600) s after their submission. Rows: N tasks x
(polling, callbacks, trusted callbacks) x (default timeout, ``timeout=3600``), plus
``asyncio.gather`` of 5,000 single waits and a lone ``wait_for_4k(timeout=900)`` started while
a 3,000-task batch fills the queue. Then a sweep of the poll hold-back (polling, default
timeout). Writes results/batch.json and results/batch.png (detection delay p95 against N).

Columns: done; paid but lost (submitted, so paid for, and no result); not submitted (no
credits spent); requests per task; 429s; makespan against a bound no client can move,
max(2N / rate, N / rate + 600 s) at Kie's full rate of 2 requests/s; detection delay (4K ready
-> the wait returns; with callbacks delivered in process that is callback -> end of the wait).

Run: python benchmarks/batch.py [--sizes 100,1000,3000,10000] [--skip-extras] [--skip-sweep]
     python benchmarks/batch.py --label before   # store rows as the "before" series
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import looptime

import veo4k
from veo4k.testing import SIMULATED_BASE_URL as BASE
from veo4k.testing import FakeKie, InProcessSession

from _common import RESULTS, percentile, save, table

RATE = 2.0  # Kie's account limit, 20 requests per 10 s: the bound uses the full rate
HMAC = "simulated-hmac-key"
MODES = ("polling", "callbacks", "trusted callbacks")
TIMEOUTS: dict[str, float | None] = {"default": None, "3600 s": 3600.0}
SWEEP = (0.0, 60.0, 150.0, 300.0, 600.0)
NOT_SUBMITTED = getattr(veo4k, "NotSubmittedError", None)  # absent before issue 17


def bound(n: int) -> float:
    """Every task's submission and one request that finds it ready, and the last submission
    plus the slowest 4K: what no client can beat at the account's rate."""
    return max(2 * n / RATE, n / RATE + 600.0)


def ready_time(rng: random.Random) -> float:
    return rng.uniform(300, 600)


class Harness:
    """One fake Kie, one client over it, and the bookkeeping of when each wait ended."""

    def __init__(self, n: int, mode: str, seed: int, prefix: str = "veo_task") -> None:
        rng = random.Random(seed)
        self.receiver: veo4k.CallbackReceiver | None = None
        server = None
        if mode == "polling":
            self.fake = FakeKie(auto_create=False, rate_limit=(20, 10.0))
        else:
            receiver = veo4k.CallbackReceiver(HMAC)
            self.receiver = receiver
            server = veo4k.CallbackServer(receiver, public_url="http://callbacks.simulated/kie")

            async def sink(url: str, body: bytes, headers: dict[str, str]) -> None:
                await receiver.handle(body, headers, token=receiver.token)

            self.fake = FakeKie(
                auto_create=False, rate_limit=(20, 10.0), callback_sink=sink, hmac_key=HMAC
            )
        self.ids = [f"{prefix}_{i:05d}" for i in range(n)]
        for task_id in self.ids:
            self.fake.add_task(task_id, ready_after=ready_time(rng))
        self.session = InProcessSession(self.fake)
        self.client = veo4k.Veo4kClient(
            self.fake.api_key, base_url=BASE, session=self.session, callbacks=server,
            trust_callback_urls=mode == "trusted callbacks", rng=random.Random(seed + 1),
        )  # fmt: skip
        self.ended: dict[str, float] = {}
        self.errors: dict[str, BaseException] = {}

    def set_hold_back(self, seconds: float | None) -> None:
        """The scheduler's hold-back (a private knob, for the sweep)."""
        if seconds is not None:
            self.client._limiter.schedule.hold_back = seconds  # type: ignore[attr-defined]

    def record(self, task_id: str, error: BaseException | None) -> None:
        self.ended[task_id] = asyncio.get_running_loop().time()
        if error is not None:
            self.errors[task_id] = error

    async def close(self) -> None:
        await self.client.aclose()
        await self.session.close()
        await self.fake.close()

    def summary(self, ids: list[str], started: float) -> dict[str, Any]:
        done = paid_lost = not_submitted = 0
        delays: list[float] = []
        for task_id in ids:
            task = self.fake.tasks[task_id]
            paid = task.charges[0] > 0
            if task_id in self.ended and task_id not in self.errors:
                done += 1
                job = task.jobs[0]
                delays.append(self.ended[task_id] - (job.started + task.ready_after))
            elif paid:
                paid_lost += 1
            else:
                not_submitted += 1
        n = len(ids)
        makespan = max(self.ended.values(), default=started) - started
        return {
            "n": n,
            "done": done,
            "paid_lost": paid_lost,
            "not_submitted": not_submitted,
            "typed_not_submitted": sum(
                NOT_SUBMITTED is not None and isinstance(e, NOT_SUBMITTED)
                for e in self.errors.values()
            ),
            "error_kinds": sorted({type(e).__name__ for e in self.errors.values()}),
            "requests_per_task": sum(self.fake.stats.requests.values()) / n,
            "rate_limited": self.fake.stats.rate_limited,
            "rejected_after_10s": sum(t > started + 10 for t in self.fake.stats.rejected_times),
            "makespan": makespan,
            "bound": bound(n),
            "vs_bound": makespan / bound(n) if done == n else None,
            "delay_p50": percentile(delays, 50),
            "delay_p95": percentile(delays, 95),
            "delay_max": max(delays, default=float("nan")),
        }


async def batch(n: int, mode: str, timeout: float | None, seed: int,
                hold_back: float | None = None) -> dict[str, Any]:  # fmt: skip
    """``as_completed`` over N tasks."""
    h = Harness(n, mode, seed)
    h.set_hold_back(hold_back)
    start = asyncio.get_running_loop().time()
    async for outcome in h.client.as_completed(h.ids, timeout=timeout):
        h.record(outcome.task_id, outcome.error)
    await h.close()
    return h.summary(h.ids, start)


async def gathered(n: int, seed: int) -> dict[str, Any]:
    """``asyncio.gather`` of N single ``wait_for_4k`` calls with the defaults."""
    h = Harness(n, "polling", seed)
    start = asyncio.get_running_loop().time()

    async def one(task_id: str) -> None:
        try:
            await h.client.wait_for_4k(task_id)
        except veo4k.Veo4kError as exc:
            h.record(task_id, exc)
        else:
            h.record(task_id, None)

    await asyncio.gather(*(one(task_id) for task_id in h.ids))
    await h.close()
    return h.summary(h.ids, start)


async def lone(n: int, seed: int, after: float = 300.0) -> dict[str, Any]:
    """A lone ``wait_for_4k(timeout=900)`` started ``after`` s into an N-task batch."""
    h = Harness(n, "polling", seed)
    h.fake.add_task("interactive", ready_after=450.0)
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def drain() -> None:
        async for outcome in h.client.as_completed(h.ids):
            h.record(outcome.task_id, outcome.error)

    batch_task = asyncio.create_task(drain())
    await asyncio.sleep(after)
    began = loop.time()
    try:
        result = await h.client.wait_for_4k("interactive", timeout=900)
        outcome, elapsed = "result", result.elapsed
    except veo4k.Veo4kError as exc:
        outcome, elapsed = type(exc).__name__, loop.time() - began
    await batch_task
    await h.close()
    row = h.summary(h.ids, start)
    task = h.fake.tasks["interactive"]
    queued = task.jobs[0].started - began if task.jobs else None
    return {**row, "lone_outcome": outcome, "lone_elapsed": elapsed, "lone_queued": queued}


def run(coro: Callable[[], Awaitable[dict[str, Any]]]) -> tuple[dict[str, Any], float]:
    loop = looptime.new_event_loop()
    wall = time.perf_counter()
    try:
        return loop.run_until_complete(coro()), time.perf_counter() - wall  # type: ignore[arg-type]
    finally:
        loop.close()


HEADERS = ["row", "N", "done", "paid but lost", "not submitted", "req/task", "429s",
           "makespan s", "vs bound", "delay p50 s", "p95 s", "max s"]  # fmt: skip


def cells(name: str, r: dict[str, Any]) -> list[object]:
    ratio = f"{r['vs_bound']:.2f}x" if r["vs_bound"] is not None else "-"
    return [name, r["n"], r["done"], r["paid_lost"], r["not_submitted"], r["requests_per_task"],
            r["rate_limited"], r["makespan"], ratio, r["delay_p50"], r["delay_p95"],
            r["delay_max"]]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1000,3000,10000")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--label", default="after", help="after (default) or before")
    parser.add_argument("--skip-extras", action="store_true", help="no gather / lone rows")
    parser.add_argument("--skip-sweep", action="store_true", help="no hold-back sweep")
    parser.add_argument("--sweep-size", type=int, default=10_000)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows: list[dict[str, Any]] = []
    for n in sizes:
        for mode in MODES:
            for tname, timeout in TIMEOUTS.items():
                out, wall = run(lambda n=n, m=mode, t=timeout: batch(n, m, t, args.seed))
                rows.append({"row": f"{mode}, {tname}", "mode": mode, "timeout": tname,
                             **out, "wall_s": wall})  # fmt: skip
                print(table(HEADERS, [cells(rows[-1]["row"], out)]).splitlines()[-1],
                      f"({wall:.0f} s)", flush=True)  # fmt: skip
    if not args.skip_extras:
        out, wall = run(lambda: gathered(5000, args.seed))
        rows.append({"row": "gather of 5,000 wait_for_4k", "mode": "gather", "timeout":
                     "default", **out, "wall_s": wall})  # fmt: skip
        out, wall = run(lambda: lone(3000, args.seed))
        rows.append({"row": "3,000 batch + lone timeout=900", "mode": "lone", "timeout":
                     "default", **out, "wall_s": wall})  # fmt: skip
        print(f"lone wait: {out['lone_outcome']} after {out['lone_elapsed']:.0f} s "
              f"(submitted {out['lone_queued']} s after its call)")  # fmt: skip
    print(table(HEADERS, [cells(r["row"], r) for r in rows]))
    sweep: list[dict[str, Any]] = []
    if not args.skip_sweep and importlib.util.find_spec("veo4k._schedule") is not None:
        for hold in SWEEP:
            n = args.sweep_size
            out, wall = run(lambda h=hold, n=n: batch(n, "polling", None, args.seed, h))
            sweep.append({"hold_back": hold, **out, "wall_s": wall})
            print(f"hold-back {hold:g} s: {cells('', out)[1:]}", flush=True)
        print(table(["hold-back s", *HEADERS[1:]], [[s["hold_back"], *cells("", s)[1:]]
                                                    for s in sweep]))  # fmt: skip
    path = RESULTS / "batch.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    series = stored.get("series", {})
    series[args.label] = {"seed": args.seed, "rows": rows, "sweep": sweep}
    save("batch", {"series": series})
    plot(series)
    print(f"saved {path} and {RESULTS / 'batch.png'}")


def plot(series: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    styles = {"before": "--", "after": "-"}
    for label, data in series.items():
        for mode, marker in zip(MODES, "osd", strict=True):
            points = sorted((r["n"], r["delay_p95"]) for r in data["rows"]
                            if r["mode"] == mode and r["timeout"] == "default"
                            and r["delay_p95"] == r["delay_p95"])  # fmt: skip
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, styles.get(label, ":"), marker=marker, label=f"{mode} ({label})")
    ax.set_xscale("log")
    ax.set_xlabel("tasks in the batch (N)")
    ax.set_ylabel("detection delay p95 (s)")
    ax.set_title(
        "Detection delay p95 against batch size, default timeout\n"
        "(virtual time, 20 requests / 10 s, 4Ks ready 5-10 min)",
        fontsize=10,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    fig.savefig(RESULTS / "batch.png", dpi=110)


if __name__ == "__main__":
    main()
