"""``veo4k upscale --from list.txt`` with default options against the library's own batch
(issue 17, item 6): makespan, requests per task, 429s and peak RSS of the command.

Time is scaled 1:10, as in ``benchmarks/multiprocess.py`` but for the 4Ks too: the fake
allows 20 requests per 1 s (Kie: 20 per 10 s), 4Ks are ready U(30, 60) s after submission
(Kie: 5-10 min), the CLI polls first after 30 s and then every 3 s (``--first-poll 30
--poll-every 3``, the defaults / 10). For the same list, on a fresh fake with the same seed:

- ``veo4k upscale --from list --out DIR --json`` with default options (downloads included),
  as a subprocess; its peak RSS from ``wait4``;
- the library: ``client.as_completed(list)`` with the same policy and rate limit, in a
  subprocess too (start-up counted the same way), no downloads.

The bound no client can beat: ``max(2 N / 20, N / 20 + 60)`` seconds (a submission and one
poll per task at the account's rate; the last submission plus the slowest 4K).

    python benchmarks/cli.py                          # 2,000 tasks, ~8 minutes
    python benchmarks/cli.py --tasks 10000 --no-library   # peak RSS at 10,000 (~18 min)
    python benchmarks/cli.py --source /tmp/veo4k-main --label before   # another checkout

``--source`` runs the CLI (and the library) of another source tree (``git archive main``
unpacked there): how the "before" rows were taken. Rows accumulate in
``results/cli.json`` keyed by label and task count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

from _common import RESULTS, fake_server, machine, table

RATE = 20  # requests per 1 s (Kie's 20 per 10 s, x10)
READY = "30:60"  # seconds (Kie's 5-10 min, /10)
FIRST_POLL, POLL_EVERY = 30.0, 3.0
SLOWEST = 60.0


def bound(n: int) -> float:
    """The makespan no client can beat at the account's rate."""
    return max(2 * n / RATE, n / RATE + SLOWEST)


def _env(source: str | None, base_url: str, key: str) -> dict[str, str]:
    env = {**os.environ, "KIE_API_KEY": key, "KIE_BASE_URL": base_url, "COLUMNS": "120"}
    if source:
        env["PYTHONPATH"] = source
    return env


def _timed(argv: list[str], env: dict[str, str], stdout: Any) -> tuple[float, int, int]:
    """Run to the end: (seconds, exit code, peak RSS in KiB of that process alone)."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=stdout, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{argv[:4]} exited {proc.returncode}: {err[-2000:]}")
    return elapsed, proc.returncode, usage.ru_maxrss


def _stats(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url}/_fake/stats?period=1") as resp:
        data: dict[str, Any] = json.load(resp)
    return data


def _eta_check(lines: list[dict[str, Any]], makespan: float) -> dict[str, Any]:
    """The ETA the command showed a quarter and half way through, against what was left."""
    batch = [e for e in lines if e.get("event") == "batch" and e.get("eta") is not None]
    out: dict[str, Any] = {"batch_lines": len(batch)}
    if not batch:
        return out
    end = batch[-1]["elapsed"]
    for share in (0.25, 0.5):
        at = next((e for e in batch if e["elapsed"] >= share * end), batch[-1])
        out[f"eta_at_{int(share * 100)}pct"] = at["eta"]
        out[f"left_at_{int(share * 100)}pct"] = end - at["elapsed"]
    return out


def run_cli(n: int, source: str | None, seed: int, extra: list[str]) -> dict[str, Any]:
    with (
        fake_server("--rate-limit", f"{RATE}/1", "--ready-after", READY, "--seed", str(seed)) as (
            base_url,
            key,
        ),
        tempfile.TemporaryDirectory(prefix="veo4k-bench-cli-") as tmp,
    ):
        listing = pathlib.Path(tmp) / "big.txt"
        listing.write_text("".join(f"veo_task_bench{i:05d}\n" for i in range(n)))
        argv = [sys.executable, "-m", "veo4k", "upscale", "--from", str(listing), "--out",
                f"{tmp}/out", "--first-poll", str(FIRST_POLL), "--poll-every", str(POLL_EVERY),
                "--rate-limit", f"{RATE}/1", "--json", *extra]  # fmt: skip
        events = pathlib.Path(tmp) / "events.jsonl"
        with events.open("w") as sink:
            makespan, code, rss = _timed(argv, _env(source, base_url, key), sink)
        stats = _stats(base_url)
        lines = [json.loads(line) for line in events.read_text().splitlines()]
    summary = lines[-1]
    return {
        "makespan": makespan,
        "exit_code": code,
        "counts": summary["counts"],
        "requests": stats["requests"],
        "requests_per_task": stats["requests"] / n,
        "rate_limited": stats["rate_limited"],
        "max_submissions_per_task": stats["max_submissions_per_task"],
        "peak_rss_mib": rss / 1024,
        **_eta_check(lines, makespan),
    }


def run_library(n: int, source: str | None, seed: int) -> dict[str, Any]:
    with fake_server("--rate-limit", f"{RATE}/1", "--ready-after", READY, "--seed", str(seed)) as (
        base_url,
        key,
    ):
        argv = [sys.executable, __file__, "--library-worker", "--tasks", str(n)]
        with tempfile.TemporaryFile() as out:
            makespan, _, rss = _timed(argv, _env(source, base_url, key), out)
            out.seek(0)
            result = json.loads(out.read().decode().splitlines()[-1])
        stats = _stats(base_url)
    return {
        "makespan": makespan,
        "ok": result["ok"],
        "requests_per_task": stats["requests"] / n,
        "rate_limited": stats["rate_limited"],
        "peak_rss_mib": rss / 1024,
    }


async def library_worker(n: int) -> None:
    """The library's batch: what the command should come close to."""
    import veo4k

    policy = veo4k.PollPolicy(
        first_delay=FIRST_POLL, first_delay_jitter=0.1, wait_initial=POLL_EVERY,
        wait_max=POLL_EVERY, wait_jitter=0.05,
    )  # fmt: skip
    ok = 0
    async with veo4k.Veo4kClient(
        poll_policy=policy, rate_limit=veo4k.RateLimit(max_requests=RATE, period=1.0)
    ) as client:
        async for outcome in client.as_completed(f"veo_task_bench{i:05d}" for i in range(n)):
            ok += outcome.ok
    print(json.dumps({"ok": ok}), flush=True)


def _load() -> dict[str, Any]:
    path = RESULTS / "cli.json"
    if path.exists():
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    return {"rows": []}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--label", default="after")
    p.add_argument("--source", default=None, help="run veo4k from this source tree")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-library", action="store_true", help="skip the library's run")
    p.add_argument("--library-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("cli_args", nargs="*", help="extra options for veo4k upscale (after --)")
    args = p.parse_args()
    if args.library_worker:
        asyncio.run(library_worker(args.tasks))
        return
    row: dict[str, Any] = {"label": args.label, "tasks": args.tasks, "bound": bound(args.tasks),
                           "cli_args": args.cli_args}  # fmt: skip
    row["cli"] = run_cli(args.tasks, args.source, args.seed, args.cli_args)
    print(json.dumps(row["cli"]), flush=True)
    if not args.no_library:
        row["library"] = run_library(args.tasks, args.source, args.seed)
        print(json.dumps(row["library"]), flush=True)
        row["ratio"] = row["cli"]["makespan"] / row["library"]["makespan"]
    data = _load()
    key = (args.label, args.tasks, tuple(args.cli_args))
    rows = [r for r in data["rows"] if (r["label"], r["tasks"], tuple(r["cli_args"])) != key]
    rows.append(row)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cli.json").write_text(
        json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n"
    )
    headers = ["run", "tasks", "CLI makespan s", "library s", "ratio", "bound s", "req/task",
               "429s", "peak RSS MiB", "ETA at 25 % / left"]  # fmt: skip
    body = []
    for r in sorted(rows, key=lambda r: (r["tasks"], r["label"])):
        cli, lib = r["cli"], r.get("library")
        eta = (f"{cli['eta_at_25pct']:.0f} / {cli['left_at_25pct']:.0f}"
               if "eta_at_25pct" in cli else "-")  # fmt: skip
        body.append([
            " ".join([r["label"], *r["cli_args"]]), r["tasks"], cli["makespan"],
            lib["makespan"] if lib else "-", r.get("ratio", "-"), r["bound"],
            cli["requests_per_task"], cli["rate_limited"], cli["peak_rss_mib"], eta,
        ])  # fmt: skip
    print(table(headers, body))


if __name__ == "__main__":
    main()
