"""``python -m veo4k.testing``: run the fake Kie server until interrupted (for benchmarks)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from ._fake import FakeKie


def _range(text: str) -> float | tuple[float, float]:
    low, _, high = text.partition(":")
    return (float(low), float(high)) if high else float(low)


def _limit(text: str) -> tuple[int, float]:
    count, _, period = text.partition("/")
    return int(count), float(period)


async def _serve(args: argparse.Namespace) -> None:
    async with FakeKie(
        ready_after=args.ready_after,
        rate_limit=args.rate_limit,
        seed=args.seed,
        port=args.port,
        fault_rate=args.fault_rate,
    ) as kie:
        print(f"READY {kie.base_url} {kie.api_key}", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    """Parse arguments and serve forever."""
    parser = argparse.ArgumentParser(prog="python -m veo4k.testing", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-after", type=_range, default=2.0, help="seconds or LOW:HIGH")
    parser.add_argument("--rate-limit", type=_limit, default=None, help="COUNT/PERIOD, e.g. 20/10")
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args()))
    sys.exit(0)


if __name__ == "__main__":
    main()
