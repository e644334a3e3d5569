"""Serve the fake Kie server until stopped (``python -m veo4k.testing`` or ``veo4k testing``).

Prints READY <base_url> <api_key> once listening. No rate limit unless --rate-limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
from collections.abc import Sequence
from typing import NoReturn

from ._fake import FakeKie
from ._hostile import Hostile

_DESCRIPTION = """Serve the fake Kie server on 127.0.0.1 until stopped (Ctrl-C).
Prints READY <base_url> <api_key> once listening; no rate limit unless asked."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _range(text: str) -> float | tuple[float, float]:
    low, _, high = text.partition(":")
    if not high:
        return _seconds(low)
    bounds = _seconds(low), _seconds(high)
    if bounds[0] > bounds[1]:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH with LOW <= HIGH, got {text!r}")
    return bounds


def _limit(text: str) -> tuple[int, float]:
    count, _, period = text.partition("/")
    if not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"expected COUNT/SECONDS, e.g. 20/10, got {text!r}")
    seconds = _seconds(period) if period else math.nan
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected COUNT/SECONDS, e.g. 20/10, got {text!r}")
    return int(count), seconds


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return int(text)


def _rate(text: str) -> float:
    value = _seconds(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 to 1, got {text!r}")
    return value


async def _serve(args: argparse.Namespace) -> None:
    async with FakeKie(
        ready_after=args.ready_after,
        rate_limit=args.rate_limit,
        seed=args.seed,
        port=args.port,
        fault_rate=args.fault_rate,
        hostile=set(args.hostile),
    ) as kie:
        print(f"READY {kie.base_url} {kie.api_key}", flush=True)
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m veo4k.testing") -> int:
    """Parse arguments and serve until Ctrl-C; 2 for a bad option or a port in use."""
    parser = _Parser(prog=prog, description=_DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--port", type=_port, default=0,
                        help="TCP port on 127.0.0.1 (default: 0, any free port)")  # fmt: skip
    parser.add_argument("--ready-after", type=_range, default=2.0, metavar="SECONDS",
                        help="seconds until a 4K is ready, or LOW:HIGH (default: 2)")  # fmt: skip
    parser.add_argument("--rate-limit", type=_limit, default=None, metavar="COUNT/SECONDS",
                        help="answer 429 above COUNT requests per SECONDS, e.g. 20/10 "
                        "(default: no limit)")  # fmt: skip
    parser.add_argument(
        "--fault-rate",
        type=_rate,
        default=0.0,
        metavar="FRACTION",
        help="share of requests answered with a random fault (default: 0)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--hostile", type=Hostile, action="append", default=[],
                        choices=list(Hostile), metavar="MODE",
                        help="a hostile mode, repeatable: " + ", ".join(Hostile))  # fmt: skip
    args = parser.parse_args(argv)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args))
    except OSError as exc:
        print(f"{prog}: error: cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)  # fmt: skip
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
