"""Argument parsing and dispatch for the ``veo4k`` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from ._demo import run_demo

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="veo4k",
        description="Upscale Kie.ai Veo 3.1 videos to 4K.",
        epilog="Example: veo4k demo --tasks 12",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="run a batch against the built-in fake Kie server (no key, no network)",
        description="Start the fake Kie server in this process and upscale a batch of tasks "
        "(quick, slow and failing ones) through the real client.",
        epilog="Example: veo4k demo --tasks 20 --seed 7",
    )
    demo.add_argument("--tasks", type=_positive_int, default=12, help="batch size (default 12)")
    demo.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError("must be within [1, 10000]")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit code (0 ok, 1 some tasks failed, 2 usage)."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        outcomes = asyncio.run(run_demo(args.tasks, args.seed, sys.stdout))
        return EXIT_OK if outcomes else EXIT_FAILED
    return EXIT_USAGE
