"""Memory and bytes under attack (issue 18): a CallbackServer process flooded with headers,
and a download from a gzip-bombing file host.

    python benchmarks/hostile.py [--floods 0 100 300 500]

Flood: N connections each send a POST with ~1 MiB of headers (127 lines of 8,190 bytes,
within aiohttp 3.14's own limits) that never end, all within the header timeout; the server
runs in its own process and its RSS is read from /proc (peak reset after warm-up). Bomb: a
65 KB gzip stream that decodes to 64 MiB, served without a length.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import pathlib
import sys
import tempfile

import veo4k
from veo4k.testing import FakeKie, Hostile
from veo4k.testing._hostile import gzip_bomb

from _common import save, table

SERVER = """
import asyncio, sys, veo4k
async def main():
    server = veo4k.CallbackServer(veo4k.CallbackReceiver(token="t"), header_timeout=60)
    async with server:
        print(server.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        print(getattr(server, "oversized_connections", 0), server.refused_connections)
asyncio.run(main())
"""
HEAD = b"POST /veo4k/callback?token=t HTTP/1.1\r\nHost: x\r\n"
LINE = b"X-F: " + b"x" * 8190 + b"\r\n"


def rss(pid: int, field: str) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


class Flood:
    """``count`` senders of ~1 MiB of never-ending headers; ``sent`` is set once each wrote
    all of it or was cut off by the server, and they hold their connections until released."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count, self.ended = port, count, 0
        self.sent, self.release = asyncio.Event(), asyncio.Event()
        self.tasks = [asyncio.create_task(self._one()) for _ in range(count)]
        if not count:
            self.sent.set()

    async def _one(self) -> None:
        writer = None
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(HEAD)
            for _ in range(127):
                writer.write(LINE)
                await writer.drain()
        except OSError:
            pass  # cut off by the server
        self.ended += 1
        if self.ended == self.count:
            self.sent.set()
        await self.release.wait()
        if writer is not None:
            writer.close()


async def flood(count: int) -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    port = int(await proc.stdout.readline())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # warm up
    writer.write(HEAD + b"Content-Length: 2\r\n\r\n{}")
    await reader.readline()
    writer.close()
    idle = rss(proc.pid, "VmRSS")
    with contextlib.suppress(OSError):  # Linux: reset the peak to now
        pathlib.Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # noqa: ASYNC240  # /proc: no disk
    senders = Flood(port, count)
    await senders.sent.wait()
    peak = rss(proc.pid, "VmHWM")
    senders.release.set()
    await asyncio.gather(*senders.tasks)
    proc.stdin.write(b"stop\n")
    oversized, refused = map(int, (await proc.stdout.readline()).split())
    await proc.wait()
    mib = 1024**2
    return {"floods": count, "idle_mib": idle / mib, "peak_mib": peak / mib,
            "above_idle_mib": (peak - idle) / mib, "cut_at_header_cap": oversized,
            "refused_peer_cap": refused}  # fmt: skip


async def bomb() -> dict[str, float]:
    async with FakeKie(ready_after=0.0, hostile={Hostile.GZIP_BOMB}) as kie:
        client = veo4k.Veo4kClient(kie.api_key, base_url=kie.base_url, rate_limit=None)
        async with client:
            result = await client.wait_for_4k("veo_bomb")
            written = [0]
            outcome = "accepted"
            with tempfile.TemporaryDirectory() as folder:
                try:
                    await client.download(
                        result, folder + "/", on_progress=lambda d, t: written.__setitem__(0, d)
                    )
                except veo4k.DownloadError:
                    outcome = "DownloadError"  # fmt: skip
    return {"wire_bytes": len(gzip_bomb()), "decoded_bytes_written": written[0],
            "outcome": outcome}  # type: ignore[dict-item]  # fmt: skip


async def run(floods: list[int]) -> None:
    rows = [await flood(n) for n in floods]
    print(table(["floods", "idle MiB", "peak MiB", "above idle MiB", "cut at 32 KiB",
                 "refused"],
                [[r["floods"], r["idle_mib"], r["peak_mib"], r["above_idle_mib"],
                  r["cut_at_header_cap"], r["refused_peer_cap"]] for r in rows]))  # fmt: skip
    bombed = await bomb()
    print(
        table(
            ["gzip on the wire", "decoded bytes written", "outcome"],
            [[bombed["wire_bytes"], bombed["decoded_bytes_written"], bombed["outcome"]]],
        )
    )
    print(f"saved {save('hostile', {'floods': rows, 'gzip_bomb': bombed})}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--floods", type=int, nargs="+", default=[0, 100, 300, 500])
    asyncio.run(run(parser.parse_args().floods))


if __name__ == "__main__":
    main()
