"""``CallbackServer``: a small aiohttp server that receives Kie's callbacks for a client.

It listens on the open internet, so it is bounded against slow and idle senders: aiohttp's
own protocol runs inside :class:`_Guard`, which caps concurrent connections and closes one
whose request headers have not all arrived within ``header_timeout`` (aiohttp has no header
timeout of its own, and its keep-alive default is about an hour).
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


class _Guard(asyncio.Protocol):
    """One connection: counted against the cap, and closed if headers are slow to arrive.

    The header clock starts when the connection opens, and again at the first byte after each
    answered request; it stops when the request reaches a handler (headers complete).
    """

    def __init__(self, owner: CallbackServer, inner: asyncio.Protocol) -> None:
        self._owner, self._inner = owner, inner
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._idle = True
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        owner = self._owner
        if len(owner._guards) >= owner.max_connections:
            self._refused = True
            owner.refused_connections += 1
            transport.abort()
            return
        owner._guards[transport] = self
        self._arm()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._idle and self._timer is None:
            self._arm()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._refused else self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._disarm()
        if self._transport is not None:
            self._owner._guards.pop(self._transport, None)
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
        """The request was answered; the next byte starts a new header clock."""
        self._idle = True

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._owner.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        self._owner.timed_out_connections += 1
        self.abort()

    def abort(self) -> None:
        """Drop the connection now."""
        if self._transport is not None:
            self._transport.abort()


class CallbackServer:
    """Listens for callbacks on ``host:port`` + ``path`` and feeds a :class:`CallbackReceiver`.

    ``url`` is what Kie is told to call: ``public_url`` if given (the address Kie can reach,
    e.g. behind a tunnel or proxy), else ``http://host:port/path``; both carry the receiver's
    ``token`` as a query parameter. Pass the server to ``Veo4kClient(callbacks=...)``. With a
    ``coordinator``, the callbacks it accepts reach the waits of every process sharing it.

    Limits (seconds unless said): a request's headers must arrive within ``header_timeout``
    (10) and its body within ``body_timeout`` (10, else 408); an idle keep-alive connection
    closes after ``keepalive_timeout`` (15, at most 75); at most ``max_connections`` (512) are
    open at once, more are closed at once; :meth:`close` returns within about
    ``close_timeout`` (5) even if a handler hangs (it is cancelled).
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
        self.refused_connections = 0
        """Connections closed at once because ``max_connections`` were open."""
        self.timed_out_connections = 0
        """Connections closed because their headers were not complete in time."""
        self._guards: dict[asyncio.BaseTransport, _Guard] = {}
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}{self.path}" if self._runner else "not started"
        return f"CallbackServer({where}, public_url={self._public_url!r})"

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._guards)

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
        )
        await runner.setup()
        protocols = runner.server
        assert protocols is not None
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            lambda: _Guard(self, protocols()), self.host, self.port
        )
        self._runner = runner
        self.port = int(self._listener.sockets[0].getsockname()[1])

    @web.middleware
    async def _track(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        guard = self._guards.get(request.transport) if request.transport else None
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
        for guard in list(self._guards.values()):
            guard.abort()
        await self.receiver.aclose(timeout=self.close_timeout / 4)
