"""Receive Kie's 4K callbacks: parse every documented shape, verify, deduplicate, dispatch.

:meth:`CallbackReceiver.handle` is framework-agnostic (bytes and headers in, event out);
:attr:`CallbackReceiver.aiohttp_handler` wraps it for aiohttp and answers at once, running the
handlers after the answer so a slow handler never makes Kie's sender (15 s timeout) give up.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import hmac
import inspect
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from aiohttp import web

from . import _validate as check
from ._errors import ConfigurationError, InvalidCallbackError, SignatureError
from ._models import CallbackEvent
from ._signature import verify_signature
from ._wire import url_list

if TYPE_CHECKING:
    from ._coordination import Coordinator

__all__ = ["CallbackEvent", "CallbackHandler", "CallbackReceiver", "parse_callback"]

log = logging.getLogger("veo4k")

CallbackHandler = Callable[["CallbackEvent"], object]
"""Called once per task and outcome; sync, or async (its awaitable is awaited)."""

_READ_TIMEOUT = 10.0  # seconds to receive a whole body: a trickling sender gets 408
_ACK = {"code": 200, "msg": "success"}
_STAMP = re.compile(r"[0-9]{1,12}")  # Unix seconds: ASCII digits, no sign, far from overflow
MAX_MSG_CHARS = 1000  # a callback's msg is cut here: stored events stay small
_ENTRY_OVERHEAD = 256  # bytes an entry costs beyond its strings (tuple, floats, dict slot)


def _task_id(payload: Mapping[str, Any]) -> str | None:
    data = payload.get("data")
    found: object = None
    if isinstance(data, dict):
        found = next((data[k] for k in ("taskId", "task_id") if data.get(k)), None)
    if found is None:
        found = payload.get("taskId") or None
    if found is None:
        return None
    if not check.is_task_id(found):
        raise InvalidCallbackError(f"callback task id breaks the rule ({check.TASK_ID_RULE})")
    return str(found)


def _urls(data: Mapping[str, Any], *keys: str) -> tuple[str, ...]:
    info = data.get("info")
    for source in (info if isinstance(info, dict) else {}, data):
        for key in keys:
            if source.get(key) is not None:
                return url_list(source[key])
    return ()


def parse_callback(body: bytes | str) -> tuple[CallbackEvent, Mapping[str, Any]]:
    """Parse a delivery into an event (and the payload); raise :class:`InvalidCallbackError`.

    Accepts the documented shapes A-D (URLs in ``data.info``, at the top of ``data``, or in
    snake_case), URL lists as JSON-encoded strings, and the failure shape.
    """
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidCallbackError("callback body is not JSON") from None
    if not isinstance(payload, dict):
        raise InvalidCallbackError("callback body is not a JSON object")
    task_id = _task_id(payload)
    if task_id is None:
        raise InvalidCallbackError("callback names no task id")
    code = payload.get("code")
    if isinstance(code, bool) or not isinstance(code, int | str):
        raise InvalidCallbackError("callback has no integer code")
    try:
        code = int(code)
    except ValueError:
        raise InvalidCallbackError("callback code is not an integer") from None
    msg = payload.get("msg")
    data = payload.get("data")
    data = data if isinstance(data, dict) else {}
    try:
        result_urls = _urls(data, "resultUrls", "result_urls")
        image_urls = _urls(data, "imageUrls", "image_urls")
    except ValueError as exc:
        raise InvalidCallbackError(f"callback URL list is malformed: {exc}") from None
    event = CallbackEvent(
        task_id=task_id,
        ok=code == 200 and bool(result_urls),
        code=code,
        msg=msg[:MAX_MSG_CHARS] if isinstance(msg, str) else "",
        result_urls=result_urls,
        image_urls=image_urls,
    )
    return event, payload


def _event_bytes(event: CallbackEvent) -> int:
    """What an event costs in memory, roughly: its strings plus a fixed overhead."""
    strings = (event.task_id, event.msg, *event.result_urls, *event.image_urls)
    return _ENTRY_OVERHEAD + sum(len(t) + 64 for t in strings)


def _dedupe_key(event: CallbackEvent) -> tuple[str, bool, int, bytes]:
    """Same task, outcome and URLs: a retried delivery. The URLs tell a task's video indexes
    apart (a callback names no index), so index 1's success is not a duplicate of index 0's."""
    digest = hashlib.sha256("\n".join(event.result_urls).encode()).digest()[:16]
    return (event.task_id, event.ok, event.code, digest)


class _Memory:
    """A bounded, expiring memory: insertion-ordered, oldest dropped first, capped by entry
    count and by the total bytes its entries are charged."""

    def __init__(self, maxlen: int, ttl: float, max_bytes: int) -> None:
        self._items: collections.OrderedDict[Any, tuple[float, Any, int]] = (
            collections.OrderedDict()
        )
        self._maxlen, self._ttl, self._max_bytes = maxlen, ttl, max_bytes
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def _expire(self, now: float) -> None:
        while self._items:
            key, (stamp, _, size) = next(iter(self._items.items()))
            full = len(self._items) > self._maxlen or self.bytes > self._max_bytes
            if now - stamp < self._ttl and not full:
                break
            del self._items[key]
            self.bytes -= size

    def get(self, key: Any) -> Any:
        now = time.monotonic()
        self._expire(now)
        found = self._items.get(key)
        return None if found is None else found[1]

    def put(self, key: Any, value: Any, size: int) -> None:
        now = time.monotonic()
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old[2]
        self._items[key] = (now, value, size)
        self.bytes += size
        self._expire(now)


class CallbackReceiver:
    """Verifies and routes Kie's 4K callbacks; one per webhook endpoint.

    ``hmac_key`` (or ``KIE_WEBHOOK_HMAC_KEY``) enables signature checks: the signature of
    ``taskId + "." + timestamp`` must match and the timestamp must be within ``tolerance``
    seconds of now. Without a key, deliveries must carry :attr:`token` (a query parameter of
    :attr:`CallbackServer.url`); it is ``token``, else ``VEO4K_CALLBACK_TOKEN``, else derived
    from the HMAC key, else random: give every worker of an app the same one. With a
    ``coordinator``, accepted callbacks reach the waits of every process. Duplicates (same
    task, outcome and URLs) are acknowledged but dispatched once; that memory holds
    ``dedupe_size`` entries for ``dedupe_ttl`` seconds. The dedupe memory and the
    early-callback store (:meth:`recent`) together hold at most ``max_store_bytes`` (default
    16 MiB; oldest entries go first), whatever senders send.
    """

    def __init__(
        self,
        hmac_key: str | bytes | None = None,
        *,
        tolerance: float = 300.0,
        max_body: int = 1_048_576,
        dedupe_size: int = 100_000,
        dedupe_ttl: float = 3600.0,
        token: str | None = None,
        max_store_bytes: int = 16 * 1024 * 1024,
        coordinator: Coordinator | None = None,
    ) -> None:
        key = hmac_key if hmac_key is not None else os.environ.get("KIE_WEBHOOK_HMAC_KEY")
        self._hmac_key = key or None
        self.tolerance = check.positive_seconds(tolerance, "tolerance", maximum=86_400)
        self.max_body = check.positive_int(max_body, "max_body", maximum=64 * 1024 * 1024)
        dedupe_size = check.positive_int(dedupe_size, "dedupe_size", maximum=10_000_000)
        dedupe_ttl = check.positive_seconds(dedupe_ttl, "dedupe_ttl", maximum=30 * 86_400)
        store = check.positive_int(max_store_bytes, "max_store_bytes", maximum=2**40)
        self.max_store_bytes = store
        self.token = token or os.environ.get("VEO4K_CALLBACK_TOKEN") or _derived_token(key)
        self.coordinator = coordinator
        """Where accepted callbacks are published (to the waits of every process)."""
        self._handlers: list[CallbackHandler] = []
        self._seen = _Memory(dedupe_size, dedupe_ttl, store // 4)
        self._recent = _Memory(min(dedupe_size, 10_000), 600.0, store - store // 4)
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned = False
        self.received = 0
        self.rejected = 0
        self.duplicates = 0

    def __repr__(self) -> str:
        signed = "hmac" if self._hmac_key else "token only"
        return f"CallbackReceiver({signed}, received={self.received}, rejected={self.rejected})"

    @property
    def signed(self) -> bool:
        """True when deliveries must carry a valid HMAC signature."""
        return self._hmac_key is not None

    def add_handler(self, fn: CallbackHandler) -> None:
        """Call ``fn(event)`` once per task and outcome, after the delivery was answered."""
        if not callable(fn):
            raise ConfigurationError("a callback handler must be callable")
        self._handlers.append(fn)

    def remove_handler(self, fn: CallbackHandler) -> None:
        """Stop calling ``fn`` (no-op if it was not added)."""
        if fn in self._handlers:
            self._handlers.remove(fn)

    def recent(self, task_id: str) -> CallbackEvent | None:
        """The last event for ``task_id`` seen in the past 10 minutes, if any."""
        event: CallbackEvent | None = self._recent.get(task_id)
        return event

    async def handle(
        self,
        body: bytes,
        headers: Mapping[str, str],
        *,
        token: str | None = None,
    ) -> CallbackEvent:
        """Verify one delivery and schedule its dispatch; return the event.

        Raises :class:`SignatureError` (answer 401) for a bad or missing signature, a stale
        timestamp or a wrong token, and :class:`InvalidCallbackError` (answer its ``status``,
        400 or 413) for a malformed or oversized body. Pass the URL's ``token`` query value
        when the receiver has no HMAC key (it is then required).
        """
        try:
            event = self._verify(body, headers, token)
        except (SignatureError, InvalidCallbackError):
            self.rejected += 1
            raise
        self.received += 1
        key = _dedupe_key(event)
        if self._seen.get(key) is not None:
            self.duplicates += 1
            return attrs.evolve(event, duplicate=True)
        self._seen.put(key, True, _ENTRY_OVERHEAD + len(event.task_id))
        self._recent.put(event.task_id, event, _event_bytes(event))
        self._dispatch(event)
        return event

    def _verify(self, body: bytes, headers: Mapping[str, str], token: str | None) -> CallbackEvent:
        if len(body) > self.max_body:
            raise InvalidCallbackError(f"callback body exceeds {self.max_body} bytes", status=413)
        lower = {k.lower(): v for k, v in headers.items()}
        token_checked = token is not None or self._hmac_key is None
        token_ok = token is not None and hmac.compare_digest(token.encode(), self.token.encode())
        if token_checked and not token_ok:
            raise SignatureError("callback token missing or wrong")
        event, _ = parse_callback(body)
        if self._hmac_key is None:
            if not self._warned:
                self._warned = True
                log.warning(
                    "callbacks are not signed (no hmac_key / KIE_WEBHOOK_HMAC_KEY): only the "
                    "URL token authenticates them"
                )
            return event
        stamp_text = lower.get("x-webhook-timestamp", "")
        signature = lower.get("x-webhook-signature", "")
        if not stamp_text or not signature:
            raise SignatureError("callback lacks X-Webhook-Timestamp or X-Webhook-Signature")
        if not _STAMP.fullmatch(stamp_text):
            raise SignatureError("X-Webhook-Timestamp is not a Unix time in seconds")
        stamp = int(stamp_text)
        if abs(time.time() - stamp) > self.tolerance:
            raise SignatureError(f"callback timestamp is outside +/-{self.tolerance:g} s")
        if not verify_signature(event.task_id, stamp_text, signature, self._hmac_key):
            raise SignatureError("callback signature does not match")
        return event

    def _dispatch(self, event: CallbackEvent) -> None:
        if not self._handlers and self.coordinator is None:
            return
        task = asyncio.get_running_loop().create_task(self._run_handlers(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_handlers(self, event: CallbackEvent) -> None:
        if self.coordinator is not None:
            try:
                await self.coordinator.publish_callback(event)
            except Exception:
                log.exception("publishing the callback for task %s failed", event.task_id)
        for handler in list(self._handlers):
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("callback handler raised for task %s", event.task_id)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Wait up to ``timeout`` seconds for handlers still running, then cancel the rest.

        Bounded even with a hung handler: a handler that ignores cancellation is left behind
        (and logged) after another ``timeout``.
        """
        limit = check.positive_seconds(timeout, "timeout")
        if not self._tasks:
            return
        _, pending = await asyncio.wait(list(self._tasks), timeout=limit)
        if pending:
            log.warning("%d callback handler(s) still running after %g s: cancelled",
                        len(pending), limit)  # fmt: skip
            for task in pending:
                task.cancel()
            _, stuck = await asyncio.wait(pending, timeout=limit)
            if stuck:
                log.error("%d callback handler(s) ignored cancellation", len(stuck))

    @property
    def aiohttp_handler(self) -> Callable[[web.Request], Any]:
        """An aiohttp.web handler: mount it with ``app.router.add_route("*", path, handler)``."""
        return self._aiohttp

    async def _aiohttp(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, body_timeout=_READ_TIMEOUT)

    async def _serve(self, request: web.Request, *, body_timeout: float) -> web.StreamResponse:
        """Answer one aiohttp request; the body must arrive within ``body_timeout`` (else
        408)."""
        if request.method != "POST":
            return _answer(405, "method not allowed")
        if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
            self.rejected += 1
            return _answer(415, "encoded bodies are not accepted")
        if request.content_length is not None and request.content_length > self.max_body:
            self.rejected += 1
            return _answer(413, "body too large")
        token = request.query.get("token", "")
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            self.rejected += 1  # before the body is read: a stranger costs no body memory
            return _answer(401, "unauthorized")
        try:
            async with asyncio.timeout(body_timeout):
                body = await _read_capped(request, self.max_body)
        except TimeoutError:
            self.rejected += 1
            return _answer(408, "body not received in time")
        if body is None:
            self.rejected += 1
            return _answer(413, "body too large")
        try:
            await self.handle(body, request.headers, token=request.query.get("token", ""))
        except SignatureError:
            return _answer(401, "unauthorized")
        except InvalidCallbackError as exc:
            return _answer(exc.status, str(exc))
        return web.json_response(_ACK)


def _derived_token(hmac_key: str | bytes | None) -> str:
    """Random per receiver; with an HMAC key, derived from it, so every worker that shares the
    key accepts the same callback URL (the key itself never appears in the URL)."""
    if not hmac_key:
        return secrets.token_urlsafe(24)
    raw = hmac_key.encode() if isinstance(hmac_key, str) else hmac_key
    digest = hmac.new(raw, b"veo4k callback token v1", "sha256").digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def _answer(status: int, msg: str) -> web.Response:
    """A refusal, and the connection closes after it: a sender that repeats wrong requests
    cannot keep a slot alive."""
    response = web.json_response({"code": status, "msg": msg}, status=status)
    response.force_close()
    return response


async def _read_capped(request: web.Request, cap: int) -> bytes | None:
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
