"""The request path: pace, send, read a bounded body, parse the envelope, retry transients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import attrs

from ._config import RetryPolicy
from ._errors import (
    APIError,
    EdgeBlockedError,
    RateLimitError,
    ServiceUnavailableError,
    TransportError,
    Veo4kError,
)
from ._limiter import Limiter
from ._schedule import Ask, Lane
from ._secret import ApiKey, AuthHeaders
from ._wire import (
    MAX_BODY_BYTES,
    TRANSIENT_CODES,
    Envelope,
    edge_blocked,
    error_for,
    is_transient,
    parse_envelope,
)

__all__ = ["Api", "Counter", "RetryHook", "default_user_agent", "retry_delay"]

log = logging.getLogger("veo4k")

RetryHook = Callable[[Veo4kError, int, float], Awaitable[None]]
"""Called before a retry sleep with the error, the attempt that failed and the delay."""


@attrs.define
class Counter:
    """Counts HTTP requests sent on behalf of one wait or call."""

    requests: int = 0


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a numeric ``Retry-After`` header (HTTP dates are ignored), capped at 1 h."""
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if seconds != seconds or seconds < 0:  # NaN or negative
        return None
    return min(seconds, 3600.0)


def default_user_agent() -> str:
    """``veo4k/<version> (+python aiohttp)``: Kie's edge (Cloudflare) blocks anonymous clients."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("veo4k")
    except PackageNotFoundError:  # running from a source tree that was never installed
        ours = "0"
    return f"veo4k/{ours} (+python aiohttp)"


def retry_delay(retry: RetryPolicy, rng: random.Random, exc: Veo4kError, cap: float) -> float:
    """Full jitter under ``cap``, at least the server's ``Retry-After`` or the maintenance
    wait, each cut to ``retry.max_retry_after``."""
    delay = rng.uniform(0.0, cap)
    if isinstance(exc, RateLimitError) and exc.retry_after is not None:
        delay = max(delay, min(exc.retry_after, retry.max_retry_after))
    if isinstance(exc, ServiceUnavailableError):
        delay = max(delay, min(retry.maintenance_wait, retry.max_retry_after))
    return delay


async def read_capped(resp: aiohttp.ClientResponse, cap: int = MAX_BODY_BYTES) -> bytes:
    """Read at most ``cap`` bytes of a body; a longer one is a transport fault."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > cap:
            # Drop what was read before raising: it may echo the key, and a traceback shown
            # with its locals would print this frame's chunks.
            chunks.clear()
            chunk = b""
            raise TransportError(f"response body exceeds {cap} bytes", status=resp.status)
        chunks.append(chunk)
    return b"".join(chunks)


class Api:
    """Sends one logical request to Kie, with pacing and bounded retries."""

    def __init__(
        self,
        *,
        session: Callable[[], aiohttp.ClientSession],
        base_url: str,
        api_key: ApiKey,
        request_timeout: float,
        retry: RetryPolicy,
        pacer: Limiter,
        rng: random.Random,
        max_connections: int,
        user_agent: str | None = None,
    ) -> None:
        self._session = session
        self._user_agent = user_agent or default_user_agent()
        self._base_url = base_url
        self._key = api_key
        # A mapping, not a dict with the plain key: no frame local on the request path (ours or
        # aiohttp's) shows the key when a traceback is rendered with its locals.
        self._headers = AuthHeaders(
            # Kie's edge (Cloudflare) blocks clients without a descriptive User-Agent (1010)
            api_key,
            {"Accept": "application/json", "User-Agent": self._user_agent},
        )
        # request_timeout is enforced by one periodic sweep over the requests in flight rather
        # than by aiohttp's per-request timer: each of those leaves a cancelled handle in the
        # event loop for request_timeout seconds, tens of thousands under load (GC pauses).
        self._timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_read=None)
        self._request_timeout = request_timeout
        self._inflight: dict[asyncio.Timeout, float] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._retry = retry
        self._limiter = pacer
        self._rng = rng
        # The limiter grants at most max_connections slots whose request has not ended: a
        # request waits as an entry in its schedule, cheaply, before aiohttp builds it (10,000
        # waiters would otherwise park 10,000 half-built requests in the connector queue).
        pacer.schedule.max_in_flight = max_connections

    async def call(
        self,
        method: str,
        path: str,
        *,
        task_id: str | None,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        counter: Counter | None = None,
        on_retry: RetryHook | None = None,
        attempts: int | None = None,
        ask: Ask | None = None,
        lane: Lane = Lane.FOLLOW_UP,
    ) -> Envelope:
        """Return the envelope of a non-transient answer, or raise after bounded retries.

        A transient answer (transport fault, 408, 429, 455, 5xx other than 501/505 or "4K
        unavailable") is retried with full-jitter backoff, up to ``attempts`` tries (default:
        the RetryPolicy's; a wait passes 1 and retries on its own schedule up to its deadline);
        any other code is returned for the caller to classify. The first try uses the slot
        ``ask`` already holds, if any (a wait is granted its slot before its step starts);
        otherwise each try waits for a slot in ``lane``.
        """
        max_attempts = self._retry.attempts if attempts is None else attempts
        caps = self._retry.backoff_caps()
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            attempt += 1
            if ask is not None and ask.slot is not None:
                granted_at, ask.slot = ask.slot, None
            else:
                granted_at = await self._limiter.acquire(lane if ask is None else ask.lane)
            if counter is not None:
                counter.requests += 1
            try:
                try:
                    if granted_at > loop.time():  # a shared slot handed out ahead of its time
                        await asyncio.sleep(granted_at - loop.time())
                    env = await self._send(method, path, task_id=task_id, json=json, params=params)
                finally:
                    self._limiter.finished()
                if env.code in TRANSIENT_CODES:
                    raise error_for(env, task_id)
            except (TransportError, APIError) as exc:
                if isinstance(exc, RateLimitError):
                    self._limiter.on_rate_limited(granted_at, exc.retry_after, loop.time())
                if not is_transient(exc):
                    raise
                if attempt >= max_attempts:
                    if isinstance(exc, TransportError):
                        raise exc.replace(attempts=attempt) from exc
                    raise
                delay = self._delay(exc, next(caps))
                log.debug(
                    "retrying %s %s task=%s after %s in %.2f s (attempt %d/%d)",
                    method, path, task_id, type(exc).__name__, delay, attempt, max_attempts,
                )  # fmt: skip
                if on_retry is not None:
                    await on_retry(exc, attempt, delay)
                await asyncio.sleep(delay)
            else:
                return env

    @contextlib.asynccontextmanager
    async def _deadline(self, started: float) -> AsyncIterator[None]:
        """``request_timeout`` for one request, kept by the sweep (no timer of its own)."""
        async with asyncio.timeout(None) as timer:
            self._inflight[timer] = started + self._request_timeout
            if self._sweeper is None:
                self._arm_sweeper()
            try:
                yield
            finally:
                self._inflight.pop(timer, None)

    def _arm_sweeper(self) -> None:
        interval = min(1.0, self._request_timeout / 4)
        self._sweeper = asyncio.get_running_loop().call_later(interval, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = asyncio.get_running_loop().time()
        for timer, deadline in list(self._inflight.items()):
            if deadline <= now:
                del self._inflight[timer]
                timer.reschedule(now)  # fires at once: the request raises TimeoutError
        if self._inflight:
            self._arm_sweeper()

    def close(self) -> None:
        """Drop the sweep timer."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _delay(self, exc: Veo4kError, cap: float) -> float:
        return retry_delay(self._retry, self._rng, exc, cap)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        task_id: str | None,
        json: Mapping[str, Any] | None,
        params: Mapping[str, str] | None,
    ) -> Envelope:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with (
                self._deadline(started),
                self._session().request(
                    method,
                    self._base_url + path,
                    json=json,
                    params=params,
                    headers=self._headers,
                    allow_redirects=False,
                    timeout=self._timeout,
                ) as resp,
            ):
                status = resp.status
                if 300 <= status < 400:
                    raise TransportError(
                        "redirect refused (the API key is never sent to another URL)",
                        status=status,
                        task_id=task_id,
                        retryable=False,
                    )
                body = self._key.scrub_bytes(await read_capped(resp))  # a server echo
                retry_after = parse_retry_after(resp.headers)
                if retry_after is not None:  # one header must not pause the client for an hour
                    retry_after = min(retry_after, self._retry.max_retry_after)
        except TimeoutError:
            raise TransportError(
                f"no complete answer within request_timeout={self._request_timeout:g} s",
                task_id=task_id,
            ) from None
        except aiohttp.ClientError as exc:
            # Not chained: aiohttp errors can hold the request headers, and so the API key.
            raise TransportError(
                self._key.scrub(f"connection failed ({type(exc).__name__}: {exc})"),
                task_id=task_id,
            ) from None
        try:
            env = parse_envelope(body, http_status=status, retry_after=retry_after)
            if b"\\" in body:  # JSON escapes could spell the key: scrub the parsed strings too
                scrub = self._key
                env = attrs.evolve(env, msg=scrub.scrub(env.msg), data=scrub.scrub_value(env.data))
        except TransportError as exc:
            if edge_blocked(status, body):
                raise EdgeBlockedError(status=status, task_id=task_id) from None
            # A 4xx page that is not an envelope will not change on retry (wrong base_url...).
            retryable = not (400 <= status < 500 and status not in (408, 425, 429))
            raise exc.replace(task_id=task_id, retryable=retryable) from None
        log.debug(
            "%s %s task=%s -> HTTP %d code %d in %.1f ms",
            method, path, task_id, status, env.code, (loop.time() - started) * 1000,
        )  # fmt: skip
        return env
