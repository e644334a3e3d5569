"""``CallbackServer``: a small aiohttp server that receives Kie's callbacks for a client."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Self
from urllib.parse import urlencode, urlsplit, urlunsplit

from aiohttp import web

from . import _validate as check
from ._callbacks import CallbackReceiver
from ._errors import ClientStateError, ConfigurationError

if TYPE_CHECKING:
    from ._coordination import Coordinator

__all__ = ["CallbackServer", "with_token"]


def with_token(url: str, token: str) -> str:
    """``url`` with ``token=`` added to its query (unless it already has one)."""
    parts = urlsplit(url)
    if "token=" in parts.query:
        return url
    query = "&".join(q for q in (parts.query, urlencode({"token": token})) if q)
    return urlunsplit(parts._replace(query=query))


class CallbackServer:
    """Listens for callbacks on ``host:port`` + ``path`` and feeds a :class:`CallbackReceiver`.

    ``url`` is what Kie is told to call: ``public_url`` if given (the address Kie can reach,
    e.g. behind a tunnel or proxy), else ``http://host:port/path``; both carry the receiver's
    ``token`` as a query parameter. Pass the server to ``Veo4kClient(callbacks=...)``. With a
    ``coordinator``, the callbacks it accepts reach the waits of every process sharing it.
    """

    def __init__(
        self,
        receiver: CallbackReceiver | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/veo4k/callback",
        public_url: str | None = None,
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
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}{self.path}" if self._runner else "not started"
        return f"CallbackServer({where}, public_url={self._public_url!r})"

    @property
    def url(self) -> str:
        """The callback URL to give Kie (with the receiver's token)."""
        if self._public_url is not None:
            base = self._public_url
        elif self._runner is not None:
            base = f"http://{self.host}:{self.port}{self.path}"
        else:
            raise ClientStateError("CallbackServer has no URL before it is started")
        parts = urlsplit(base)
        query = "&".join(q for q in (parts.query, urlencode({"token": self.receiver.token})) if q)
        return urlunsplit(parts._replace(query=query))

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
        app = web.Application(client_max_size=self.receiver.max_body)
        app.router.add_route("*", self.path, self.receiver.aiohttp_handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def close(self) -> None:
        """Stop serving and let running handlers finish. Idempotent."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        await self.receiver.aclose()
