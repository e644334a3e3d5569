"""An aiohttp session that hands every request to a :class:`FakeKie` in process.

No sockets: a whole batch runs on a virtual-time event loop (looptime) in seconds, injected
faults and outages included (``benchmarks/polling.py`` and the virtual-time tests use it).
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from ._fake import FakeKie

__all__ = ["SIMULATED_BASE_URL", "InProcessSession"]

SIMULATED_BASE_URL = "http://kie.simulated"


class _Content:
    def __init__(self, body: bytes) -> None:
        self._body = body

    async def iter_any(self) -> AsyncIterator[bytes]:
        yield self._body


class _Response:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers
        self.content = _Content(body)

    async def __aenter__(self) -> _Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class _Failing:
    def __init__(self, error: Exception) -> None:
        self._error = error

    async def __aenter__(self) -> _Response:
        raise self._error

    async def __aexit__(self, *exc: object) -> None:
        return None


with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # aiohttp discourages subclassing

    class InProcessSession(aiohttp.ClientSession):
        """Pass as ``Veo4kClient(session=..., base_url=SIMULATED_BASE_URL)``."""

        def __init__(self, fake: FakeKie) -> None:
            super().__init__()
            self._fake = fake

        def request(self, method: str, url: Any, **kwargs: Any) -> Any:
            try:
                status, body, headers = self._fake.respond(
                    method,
                    str(url).removeprefix(SIMULATED_BASE_URL),
                    json_body=kwargs.get("json"),
                    query=dict(kwargs.get("params") or {}),
                    headers=dict(kwargs.get("headers") or {}),
                )
            except ConnectionRefusedError as exc:
                return _Failing(aiohttp.ClientOSError(exc.errno, "Connection refused"))
            except ConnectionResetError as exc:
                return _Failing(aiohttp.ClientOSError(exc.errno, "Connection reset by peer"))
            return _Response(status, body, headers)
