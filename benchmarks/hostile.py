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
import tempfile

import veo4k
from veo4k.testing import FakeKie, Hostile
from veo4k.testing._flood import HEAD, HeaderFlood, serve_callbacks
from veo4k.testing._hostile import gzip_bomb

from _common import save, table


async def flood(count: int) -> dict[str, float]:
    async with serve_callbacks() as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # warm up
        writer.write(HEAD + b"Content-Length: 2\r\n\r\n{}")
        await reader.readline()
        writer.close()
        idle = server.memory("VmRSS")
        server.reset_peak()
        senders = HeaderFlood(server.port, count)
        await senders.sent.wait()
        peak = server.memory("VmHWM")
        await senders.release()
    mib = 1024**2
    return {"floods": count, "idle_mib": idle / mib, "peak_mib": peak / mib,
            "above_idle_mib": (peak - idle) / mib, "cut_at_header_cap": server.oversized,
            "refused_peer_cap": server.refused}  # fmt: skip


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
