"""Answering in process: :class:`FakeKie`'s ``answer``/``respond``, and an aiohttp session
that hands every request to them.

No sockets: a whole batch runs on a virtual-time event loop (looptime) in seconds, injected
faults and outages included (``benchmarks/polling.py`` and the virtual-time tests use it).
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from ._faults import Fault, FaultKind, fault_answer
from ._model import FOURK, RECORD

__all__ = ["SIMULATED_BASE_URL", "InProcessMixin", "InProcessSession"]


class _Fake(Protocol):
    """What the mixin needs of FakeKie."""

    def _count(self, path: str) -> float: ...
    def _take_fault(self, path: str, task_id: str | None) -> Fault | None: ...
    def _refusal_of(
        self, authorization: str | None, now: float, user_agent: str | None = None
    ) -> web.Response | None: ...
    def _fourk_answer(self, body: Any) -> web.Response: ...
    def _record_answer(self, task_id: str | None) -> web.Response: ...
    def _envelope(self, code: int, msg: str, data: Any = None) -> web.Response: ...
    def _answer(
        self,
        method: str,
        path: str,
        json_body: Any,
        query: dict[str, str] | None,
        authorization: str | None,
        user_agent: str | None,
        now: float,
    ) -> tuple[int, bytes, dict[str, str]]: ...


class InProcessMixin:
    """FakeKie's answers without sockets, for simulations in virtual time."""

    def answer(
        self: _Fake,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        query: dict[str, str] | None = None,
        authorization: str | None = None,
    ) -> tuple[int, bytes]:
        """Answer one API request in process, without sockets: ``(HTTP status, body)``.

        The same documented behaviour as over the wire (auth, rate limit, task states), minus
        injected faults; for simulations in virtual time (``benchmarks/polling.py``).
        :meth:`respond` applies the injected faults too.
        """
        status, body, _ = self._answer(
            method, path, json_body, query, authorization, None, self._count(path)
        )
        return status, body

    def respond(
        self: _Fake,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        """Like :meth:`answer`, injected faults included, with the response headers.

        A fault about the connection raises :class:`ConnectionRefusedError` (``REFUSED``) or
        :class:`ConnectionResetError` (``RESET_*``; a ``RESET_AFTER`` submission still counts);
        ``SLOW`` is answered at once (in process there is no wire to be slow on).
        """
        headers = headers or {}
        body = json_body if isinstance(json_body, dict) else {}
        task_id = body.get("taskId") if path == FOURK else (query or {}).get("taskId")
        now = self._count(path)
        fault = self._take_fault(path, task_id if isinstance(task_id, str) else None)
        if fault is not None and fault.acts_first:
            if fault.kind is FaultKind.REFUSED:
                raise ConnectionRefusedError(111, "Connection refused (injected)")
            canned = fault_answer(fault)
            if canned is None:
                raise ConnectionResetError(104, "Connection reset by peer (injected)")
            return canned
        answer = self._answer(
            method, path, json_body, query, headers.get("Authorization"),
            headers.get("User-Agent"), now,
        )  # fmt: skip
        if fault is not None and fault.kind is FaultKind.RESET_AFTER:
            raise ConnectionResetError(104, "Connection reset by peer (injected)")
        return answer

    def _answer(
        self: _Fake,
        method: str,
        path: str,
        json_body: Any,
        query: dict[str, str] | None,
        authorization: str | None,
        user_agent: str | None,
        now: float,
    ) -> tuple[int, bytes, dict[str, str]]:
        refusal = self._refusal_of(authorization, now, user_agent)
        if refusal is not None:
            resp = refusal
        elif (method, path) == ("POST", FOURK):
            resp = self._fourk_answer(json_body)
        elif (method, path) == ("GET", RECORD):
            resp = self._record_answer((query or {}).get("taskId"))
        else:
            resp = self._envelope(404, "Not found")
        assert isinstance(resp.body, bytes)
        return resp.status, resp.body, dict(resp.headers)


class _Responder(Protocol):
    """What :class:`InProcessSession` needs of a fake (FakeKie): no import of it, no cycle."""

    file_base_url: str

    def respond(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, dict[str, str]]: ...


SIMULATED_BASE_URL = "http://127.0.0.1:9"
"""Loopback (the discard port, where nothing answers): a client sends its key over plain http
only to loopback, and an InProcessSession never opens a socket for it anyway."""
SIMULATED_FILE_BASE_URL = "http://files.kie.simulated"


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

        def __init__(self, fake: _Responder) -> None:
            super().__init__()
            self._fake = fake
            if not fake.file_base_url:  # not serving: result URLs still need a host to pass checks
                fake.file_base_url = SIMULATED_FILE_BASE_URL

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
