"""A TCP proxy in front of Redis that can black-hole its established pub/sub connections:
the sockets stay open, every byte in both directions vanishes (a NAT or load balancer that
dropped the flow without a word). Connections made afterwards pass normally.

It can also stall every connection for a while (bytes held, then delivered: a slow network),
or cut this one client off (every connection black-holed, new ones too) until it is restored
(the black-holed connections are then closed, as a NAT would reset them)."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Proxy"]


class _Flow:
    def __init__(self, *writers: asyncio.StreamWriter) -> None:
        self.pubsub = False
        self.blackholed = False
        self.writers = writers


class Proxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target``."""

    def __init__(self, target: int) -> None:
        self._target = target
        self._server: asyncio.Server | None = None
        self._flows: list[_Flow] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._open = asyncio.Event()
        self._open.set()
        self._cut = False
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def blackhole_pubsub(self) -> int:
        """Black-hole every established connection that subscribed; how many there were."""
        hit = [flow for flow in self._flows if flow.pubsub and not flow.blackholed]
        for flow in hit:
            flow.blackholed = True
        return len(hit)

    async def stall(self, seconds: float) -> None:
        """Hold every byte for ``seconds``, then deliver it all."""
        self._open.clear()
        await asyncio.sleep(seconds)
        self._open.set()

    def cut(self) -> None:
        """Black-hole every connection, and every one made until :meth:`restore`."""
        self._cut = True
        for flow in self._flows:
            flow.blackholed = True

    def restore(self) -> None:
        """Close the black-holed connections; new ones pass again."""
        self._cut = False
        for flow in self._flows:
            if flow.blackholed:
                for w in flow.writers:
                    w.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        flow = _Flow(writer, up_writer)
        flow.blackholed = self._cut
        self._flows.append(flow)
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer, flow, sniff=True)),
            asyncio.ensure_future(self._pump(up_reader, writer, flow, sniff=False)),
        ]
        for task in pumps:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (writer, up_writer):
            w.close()

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, flow: _Flow, *, sniff: bool
    ) -> None:
        while data := await src.read(65536):
            if sniff and b"SUBSCRIBE" in data.upper():
                flow.pubsub = True
            await self._open.wait()
            if flow.blackholed:
                continue  # swallowed: the peer never hears of it
            dst.write(data)
            await dst.drain()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
