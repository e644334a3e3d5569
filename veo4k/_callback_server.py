"""``CallbackServer``: a small aiohttp server that receives Kie's callbacks for a client.

It listens on the open internet, so it is bounded against slow, idle, greedy and wrong
senders: aiohttp's own protocol runs inside a :class:`_gate.Guard` (connection caps in all and
per peer, a header timeout, a header byte cap), aiohttp's own header limits are set
explicitly (they vary by version), request bodies are never decoded (no gzip bomb), the token
is checked before a body is read, and every refusal closes its connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web

from . import _validate as check
from ._callbacks import CallbackReceiver
from ._errors import ClientStateError, ConfigurationError
from ._gate import Gate

if TYPE_CHECKING:
    from ._coordination import Coordinator

__all__ = ["CallbackServer", "with_token"]


def with_token(url: str, token: str) -> str:
    """``url`` with the receiver's ``token=`` added to its query, unless it is already there.

    Only a parameter named exactly ``token`` counts (``access_token=`` is the app's own). A
    ``token=`` with another value is a :class:`ConfigurationError`: the receiver reads the
    first one, so every callback would be refused."""
    parts = urlsplit(url)
    found = [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k == "token"]
    if found:
        if found != [token]:
            raise ConfigurationError(
                "the callback URL carries a token= parameter that is not the receiver's "
                "token (every callback would be refused); leave it out, veo4k adds it"
            )
        return url
    query = "&".join(q for q in (parts.query, urlencode({"token": token})) if q)
    return urlunsplit(parts._replace(query=query))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CallbackServer:
    """Listens for callbacks on ``host:port`` + ``path`` and feeds a :class:`CallbackReceiver`.

    ``url`` is what Kie is told to call: ``public_url`` if given (the address Kie can reach,
    e.g. behind a tunnel or proxy), else ``http://host:port/path``; both carry the receiver's
    ``token`` as a query parameter. Pass the server to ``Veo4kClient(callbacks=...)``. With a
    ``coordinator``, the callbacks it accepts reach the waits of every process sharing it.

    Limits (seconds unless said): a request's headers must arrive within ``header_timeout``
    (10) and be at most ``max_header_bytes`` (32 KiB; Kie's are under 2 KiB), its body within
    ``body_timeout`` (10, else 408); an idle keep-alive connection closes after
    ``keepalive_timeout`` (15, at most 75); at most ``max_connections`` (512) are open at
    once and ``max_connections_per_peer`` (256) from one address, more are closed at once;
    :meth:`close` returns within about ``close_timeout`` (5) even if a handler hangs (it is
    cancelled). So a header flood holds at most ``max_connections x max_header_bytes`` (16 MiB)
    of raw headers. The token is checked before the body is read; a refused request (wrong
    token, too big, too slow, encoded) is answered and its connection closed. A request sent
    ahead of the previous one's answer (pipelining) drops the connection, and so does an
    answer left unread longer than ``keepalive_timeout + header_timeout``.
    """

    def __init__(
        self,
        receiver: CallbackReceiver | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/veo4k/callback",
        public_url: str | None = None,
        header_timeout: float = 10.0,
        body_timeout: float = 10.0,
        keepalive_timeout: float = 15.0,
        max_connections: int = 512,
        close_timeout: float = 5.0,
        coordinator: Coordinator | None = None,
        max_connections_per_peer: int = 256,
        max_header_bytes: int = 32 * 1024,
    ) -> None:
        if receiver is not None and not isinstance(receiver, CallbackReceiver):
            raise ConfigurationError("receiver must be a veo4k.CallbackReceiver")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigurationError(f"path must start with '/', got {path!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigurationError(f"port must be an int within [0, 65535], got {port!r}")
        self.receiver = receiver or CallbackReceiver(coordinator=coordinator)
        if coordinator is not None:
            self.receiver.coordinator = coordinator
        self.host, self.port, self.path = host, port, path
        self._public_url = check.callback_url(public_url, "public_url")
        if self._public_url is not None:
            with_token(self._public_url, self.receiver.token)  # a foreign token= fails here
        self.header_timeout = check.positive_seconds(header_timeout, "header_timeout", maximum=300)
        self.body_timeout = check.positive_seconds(body_timeout, "body_timeout", maximum=300)
        self.keepalive_timeout = check.positive_seconds(
            keepalive_timeout, "keepalive_timeout", maximum=75
        )
        self.max_connections = check.positive_int(
            max_connections, "max_connections", maximum=100_000
        )
        self.close_timeout = check.positive_seconds(close_timeout, "close_timeout", maximum=300)
        self._gate = Gate(
            max_connections=self.max_connections,
            max_per_peer=check.positive_int(
                max_connections_per_peer, "max_connections_per_peer", maximum=100_000
            ),
            header_timeout=self.header_timeout,
            max_header_bytes=check.positive_int(
                max_header_bytes, "max_header_bytes", maximum=1024 * 1024
            ),
            keepalive_timeout=self.keepalive_timeout,
            max_body=self.receiver.max_body,
        )
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}{self.path}" if self._runner else "not started"
        return f"CallbackServer({where}, public_url={self._public_url!r})"

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._gate.guards)

    @property
    def refused_connections(self) -> int:
        """Connections closed at once: ``max_connections`` (or the peer's share) were open."""
        return self._gate.refused

    @property
    def timed_out_connections(self) -> int:
        """Connections closed because their headers were not complete in time."""
        return self._gate.timed_out

    @property
    def oversized_connections(self) -> int:
        """Connections closed because their headers passed ``max_header_bytes``."""
        return self._gate.oversized

    @property
    def pipelined_connections(self) -> int:
        """Connections closed because they sent a request ahead of an answer."""
        return self._gate.pipelined

    @property
    def url(self) -> str:
        """The callback URL to give Kie (with the receiver's token)."""
        if self._public_url is not None:
            base = self._public_url
        elif self._runner is not None:
            base = f"http://{self.host}:{self.port}{self.path}"
        else:
            raise ClientStateError("CallbackServer has no URL before it is started")
        return with_token(base, self.receiver.token)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Bind and serve."""
        if self._runner is not None:
            return
        app = web.Application(client_max_size=self.receiver.max_body, middlewares=[self._track])
        app.router.add_route("*", self.path, self._route)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self.close_timeout / 4,  # aiohttp may wait twice this
            keepalive_timeout=self.keepalive_timeout,
            # aiohttp's defaults vary by version (3.9: 32,768 header lines): set them here
            max_line_size=8190,
            max_field_size=8190,
            max_headers=64,
            auto_decompress=False,  # Kie posts plain JSON; an encoded body is refused (415)
            lingering_time=1.0,  # an unread body after a refusal is drained 1 s, not 10
        )
        await runner.setup()
        protocols = runner.server
        assert protocols is not None
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            lambda: self._gate.guard(protocols()), self.host, self.port
        )
        self._runner = runner
        self.port = int(self._listener.sockets[0].getsockname()[1])

    @web.middleware
    async def _track(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        guard = self._gate.guards.get(request.transport) if request.transport else None
        if guard is not None:
            guard.busy()
        try:
            return await handler(request)
        finally:
            if guard is not None:
                guard.idle()

    async def _route(self, request: web.Request) -> web.StreamResponse:
        return await self.receiver._serve(request, body_timeout=self.body_timeout)

    async def close(self) -> None:
        """Stop serving; give running handlers a bounded grace time, then cancel them.

        Returns within about ``close_timeout`` seconds. Idempotent.
        """
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        self._gate.close_all()
        await self.receiver.aclose(timeout=self.close_timeout / 4)
