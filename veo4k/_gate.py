"""The connections of a server on the open internet, each bounded before aiohttp sees a byte.

aiohttp has no header timeout, a keep-alive default of about an hour, and header limits that
vary by version (aiohttp 3.9 accepts 32,768 header lines of 8 KiB per request). So every
connection of a :class:`CallbackServer` runs inside a :class:`Guard`: it is counted (in all
and per peer address), closed if its request headers are not complete within
``header_timeout``, and closed once they pass ``max_header_bytes``. Raw header bytes held at
once are then at most ``max_connections x max_header_bytes`` (512 x 32 KiB = 16 MiB), however
many senders flood it.
"""

from __future__ import annotations

import asyncio
import collections

__all__ = ["Gate", "Guard"]

_END = b"\r\n\r\n"


class Gate:
    """The limits and counters shared by the connections of one server."""

    def __init__(
        self,
        *,
        max_connections: int,
        max_per_peer: int,
        header_timeout: float,
        max_header_bytes: int,
    ) -> None:
        self.max_connections, self.max_per_peer = max_connections, max_per_peer
        self.header_timeout, self.max_header_bytes = header_timeout, max_header_bytes
        self.guards: dict[asyncio.BaseTransport, Guard] = {}
        self.peers: collections.Counter[str] = collections.Counter()
        self.refused = 0
        """Connections closed at once: ``max_connections`` (or the peer's share) were open."""
        self.timed_out = 0
        """Connections closed because their headers were not complete in time."""
        self.oversized = 0
        """Connections closed because their headers passed ``max_header_bytes``."""

    def guard(self, inner: asyncio.Protocol) -> Guard:
        """A protocol for one new connection, wrapping aiohttp's."""
        return Guard(self, inner)

    def close_all(self) -> None:
        for guard in list(self.guards.values()):
            guard.abort()


class Guard(asyncio.Protocol):
    """One connection: counted against the caps, and closed if its headers are slow or big.

    The header clock and byte count start when the connection opens, and again at the first
    byte after each answered request; they stop at the blank line that ends the headers.
    """

    def __init__(self, gate: Gate, inner: asyncio.Protocol) -> None:
        self._gate, self._inner = gate, inner
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._timer: asyncio.TimerHandle | None = None
        self._idle = True
        self._refused = False
        self._headers_done = False
        self._header_bytes = 0
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        gate = self._gate
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if len(gate.guards) >= gate.max_connections or (
            gate.peers[self._peer] >= gate.max_per_peer
        ):
            self._refused = True
            gate.refused += 1
            transport.abort()
            return
        gate.guards[transport] = self
        gate.peers[self._peer] += 1
        self._arm()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._idle and not self._headers_done:
            if self._timer is None:
                self._arm()
            if not self._count(data):
                self._gate.oversized += 1
                self.abort()
                return
        self._inner.data_received(data)

    def _count(self, data: bytes) -> bool:
        """Count header bytes up to the blank line that ends them; False past the cap."""
        window = self._tail + data
        end = window.find(_END)
        if end < 0:
            self._header_bytes += len(data)
            self._tail = window[-3:]
        else:
            self._header_bytes += end + len(_END) - len(self._tail)
            self._headers_done = True
        return self._header_bytes <= self._gate.max_header_bytes

    def eof_received(self) -> bool | None:
        return None if self._refused else self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._disarm()
        if self._transport is not None and self._gate.guards.pop(self._transport, None) is not None:
            self._gate.peers[self._peer] -= 1
            if self._gate.peers[self._peer] <= 0:
                del self._gate.peers[self._peer]
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def busy(self) -> None:
        """A request reached a handler: its headers are complete."""
        self._idle = False
        self._disarm()

    def idle(self) -> None:
        """The request was answered; the next byte starts a new header clock and count."""
        self._idle = True
        self._headers_done, self._header_bytes, self._tail = False, 0, b""

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._gate.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        self._gate.timed_out += 1
        self.abort()

    def abort(self) -> None:
        """Drop the connection now."""
        if self._transport is not None:
            self._transport.abort()
