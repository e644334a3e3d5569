"""Every Redis call goes through here: a timeout, one warning per outage, and a rejoin.

While Redis is away, calls fail fast with :class:`RedisDown` (the caller falls back to local
behaviour) and one call per ``retry_interval`` probes whether it is back.

At most :data:`MAX_CONCURRENT_CALLS` calls of a process are in flight; the others queue here,
before their timeout starts. redis-py's pool refuses a connection beyond its size (100 by
default) with an error, and thousands of waits claiming at once would otherwise read as an
outage of a Redis that is merely busy with our own burst.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import RedisError

__all__ = ["Health", "RedisDown", "redact"]

log = logging.getLogger("veo4k")

T = TypeVar("T")

MAX_CONCURRENT_CALLS = 64
"""Redis calls in flight per coordinator (below redis-py's default pool of 100 connections)."""


class RedisDown(Exception):
    """Redis is unavailable right now: use the local fallback."""


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class Health:
    """Runs Redis calls with a timeout and tracks whether Redis is reachable."""

    def __init__(
        self, *, timeout: float, retry_interval: float, where: str, secret: str | None
    ) -> None:
        self.timeout = timeout
        self.retry_interval = retry_interval
        self._where = where
        self._secret = secret
        self._probe_at: float | None = None  # None: Redis is up
        self.round_trips = 0
        self.outages = 0
        self.fallbacks = 0
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_CALLS)

    @property
    def up(self) -> bool:
        """False during an outage."""
        return self._probe_at is None

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()`` within the timeout; raise :class:`RedisDown` if Redis fails."""
        loop = asyncio.get_running_loop()
        if self._probe_at is not None and loop.time() < self._probe_at:
            self.fallbacks += 1
            raise RedisDown
        async with self._slots:  # a local queue: not counted against Redis' timeout
            if self._probe_at is not None and loop.time() < self._probe_at:
                self.fallbacks += 1  # it went away while this call queued
                raise RedisDown
            try:
                async with asyncio.timeout(self.timeout):
                    result = await call()
            except (RedisError, OSError, TimeoutError) as exc:
                self.fallbacks += 1
                self.down(exc)
                raise RedisDown from None
        self.round_trips += 1
        self.up_again()
        return result

    def down(self, exc: BaseException) -> None:
        """Note a failure: warn once per outage, probe again after ``retry_interval``."""
        loop = asyncio.get_running_loop()
        if self._probe_at is None:
            self.outages += 1
            text = str(exc)
            if self._secret:
                text = text.replace(self._secret, "***")
            log.warning(
                "Redis at %s unavailable (%s: %s): using the local fallback until it is back "
                "(next try in %g s)",
                self._where, type(exc).__name__, text or "timeout", self.retry_interval,
            )  # fmt: skip
        self._probe_at = loop.time() + self.retry_interval

    def up_again(self) -> None:
        """Note a success: after an outage, say once that the processes share again."""
        if self._probe_at is not None:
            self._probe_at = None
            log.info("Redis at %s is back: sharing the rate budget and outcomes again", self._where)
