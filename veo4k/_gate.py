"""The connections of a server on the open internet, each bounded before aiohttp sees a byte.

aiohttp has no header timeout, a keep-alive default of about an hour, and header limits that
vary by version (aiohttp 3.9 accepts 32,768 header lines of 8 KiB per request). So every
connection of a :class:`CallbackServer` runs inside a :class:`Guard`: it is counted (in all
and per peer address), closed if its request headers are not complete within
``header_timeout``, and closed once they pass ``max_header_bytes``. Raw header bytes held at
once are then at most ``max_connections x max_header_bytes`` (512 x 32 KiB = 16 MiB), however
many senders flood it.

Two more holes close here. Pipelining: after a request's head, only its body may follow
(``Content-Length`` bytes, or ``max_body`` for a chunked one) until it is answered; a byte
more is a second request sent ahead (aiohttp would parse and queue up to 32 of them, each up
to 512 KiB of headers, outside every count), and the connection is dropped. Kie sends one
request and waits. Readers that never read: an answer aiohttp cannot write keeps a request
in progress for ever, past every aiohttp timeout; so once a request is answered the next head
must be complete within ``keepalive_timeout + header_timeout``, else the connection is dropped.
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
        keepalive_timeout: float = 15.0,
        max_body: int = 1_048_576,
    ) -> None:
        self.max_connections, self.max_per_peer = max_connections, max_per_peer
        self.header_timeout, self.max_header_bytes = header_timeout, max_header_bytes
        self.keepalive_timeout, self.max_body = keepalive_timeout, max_body
        self.guards: dict[asyncio.BaseTransport, Guard] = {}
        self.peers: collections.Counter[str] = collections.Counter()
        self.refused = 0
        """Connections closed at once: ``max_connections`` (or the peer's share) were open."""
        self.timed_out = 0
        """Connections closed because their headers were not complete in time."""
        self.oversized = 0
        """Connections closed because their headers passed ``max_header_bytes``."""
        self.pipelined = 0
        """Connections closed because bytes came after a request's body before its answer."""

    def guard(self, inner: asyncio.Protocol) -> Guard:
        """A protocol for one new connection, wrapping aiohttp's."""
        return Guard(self, inner)

    def close_all(self) -> None:
        for guard in list(self.guards.values()):
            guard.abort()


class Guard(asyncio.Protocol):
    """One connection: counted against the caps, and closed if its headers are slow or big,
    if it sends a request ahead, or if it leaves an answer unread.

    The header clock and byte count start when the connection opens, and again at the first
    byte after each answered request (at the latest ``keepalive_timeout`` after the answer);
    they stop at the blank line that ends the headers. Then only the body may come.
    """

    def __init__(self, gate: Gate, inner: asyncio.Protocol) -> None:
        self._gate, self._inner = gate, inner
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._headers_done = False
        self._header_bytes = 0
        self._head = bytearray()  # this request's head (at most max_header_bytes)
        self._body_left = 0  # bytes that may still come before the answer
        self._between = False  # answered; the timer is the keep-alive one until a byte comes

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
        rest = data
        if not self._headers_done:
            if self._between:  # a new head begins: its own header clock starts now
                self._between = False
                self._disarm()
            if self._timer is None:
                self._arm()
            rest = self._count(data)
            if self._header_bytes > self._gate.max_header_bytes:
                self._gate.oversized += 1
                self.abort()
                return
        if rest:
            self._body_left -= len(rest)
            if self._body_left < 0:  # a request sent ahead of the answer: not Kie
                self._gate.pipelined += 1
                self.abort()
                return
        self._inner.data_received(data)

    def _count(self, data: bytes) -> bytes:
        """Count header bytes up to the blank line that ends them; return what follows it."""
        before = len(self._head)
        self._head += data[: self._gate.max_header_bytes + 1 - before]  # the cap, and 1 more
        end = self._head.find(_END, max(0, before - 3))
        if end < 0:
            self._header_bytes += len(data)
            return b""
        head = end + len(_END)
        self._header_bytes = head
        self._headers_done = True
        self._body_left = self._body_allowance(bytes(self._head[:head]))
        return data[head - before :]

    def _body_allowance(self, head: bytes) -> int:
        """How many bytes may follow this head before it is answered: its Content-Length,
        ``max_body`` (and chunk framing) for a chunked body, else none. Body bytes go to
        aiohttp's stream, which stops reading while they wait: only heads are parsed ahead."""
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            digits = value.strip()
            if name == b"content-length" and digits.isdigit():  # int() refuses 4,300+ digits
                length = max(length, int(digits) if len(digits) <= 18 else 10**18)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                return self._gate.max_body + 65_536
        return length  # a body past max_body is refused (413), read with back-pressure

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
        """A request reached a handler: its headers are complete (if aiohttp took a head
        this count did not see end, e.g. bare LF lines, its body is bounded by ``max_body``)."""
        if not self._headers_done:
            self._headers_done, self._body_left = True, self._gate.max_body + 65_536
        self._disarm()

    def idle(self) -> None:
        """The request was answered (its answer may still be unwritten): the next request's
        head must be complete within ``keepalive_timeout + header_timeout``, and its first
        byte starts a new header count."""
        self._headers_done, self._header_bytes, self._body_left = False, 0, 0
        self._head.clear()
        self._disarm()
        self._arm(self._gate.keepalive_timeout + self._gate.header_timeout)
        self._between = True

    def _arm(self, after: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        delay = self._gate.header_timeout if after is None else after
        self._timer = loop.call_later(delay, self._expired)

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
