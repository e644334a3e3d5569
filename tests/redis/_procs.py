"""Child processes for the multi-process tests: workers, the fake Kie, uvicorn."""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys
from typing import Any

import aiohttp

__all__ = ["LIMIT", "ROOT", "Proc", "fake_stats"]

ROOT = pathlib.Path(__file__).resolve().parents[2]
LIMIT = 20  # requests per second, the fake's and the clients'


class Proc:
    """A child process whose stdout lines are read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(cls, *args: str) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(proc)

    async def line(self, prefix: str, timeout: float = 20.0) -> str:
        """The next line starting with ``prefix`` (earlier other lines are kept)."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"process ended before {prefix!r}: {self.lines[-5:]}")
                text = raw.decode().strip()
                self.lines.append(text)
                if text.startswith(prefix):
                    return text[len(prefix) :].strip()

    async def result(self, timeout: float = 30.0) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(await self.line("RESULT", timeout))
        await self.proc.wait()
        return data

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def fake_stats(base_url: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base_url}/_fake/stats", params={"period": "1"}) as resp,
    ):
        data: dict[str, Any] = await resp.json()
        return data
