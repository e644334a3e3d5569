"""Every Redis command goes through here: a timeout, one warning per outage, and a rejoin.

While Redis is away, calls fail fast with :class:`RedisDown` (the caller falls back to local
behaviour) and one call per ``retry_interval`` probes whether it is back. Any exception a call
raises counts as a failure of Redis: redis-py's cluster client raises ``RedisClusterException``
(a plain ``Exception``) and, while its node table is empty, sometimes ``IndexError`` or
``KeyError``; none of them may reach a wait.

At most ``limit`` calls of a process are in flight (the client's own pool size, see
:func:`pool_limit`); the others queue here, before their timeout starts, so thousands of waits
claiming at once read as a queue, never as an outage. A full pool shared with other users of
the client is queueing too: that call falls back alone, Redis is not declared down. Calls of
the rate budget (slots, 429 reports) have ``RATE_CALLS`` of those places to themselves: a burst
of 2,000 claims on a pool of 20 held a slot back 260 ms (10,000 claims: 1.3 s, 25 slots at
20/s), and a slot reserved late is a slot lost.

A cluster client of redis-py before 8 drops a startup node at each connection error and, once
every node failed at the same time, never connects again ("Please provide at least one reachable
node: None", redis-py #3221 and #3693): :func:`keep_seeds` puts its startup nodes back after
each failure, so a cluster that restarts is joined again on every supported redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

__all__ = ["REDIS_FAILURES", "Health", "RedisDown", "keep_seeds", "pool_limit"]

log = logging.getLogger("veo4k")

T = TypeVar("T")

REDIS_FAILURES: tuple[type[BaseException], ...] = (
    RedisError,
    RedisClusterException,
    OSError,
    TimeoutError,
)
"""What redis-py raises when Redis or Redis Cluster fails (anything else: a bug, logged)."""

RATE_CALLS = 2
"""Places in flight kept for the rate budget's calls (one reservation per limiter at a time, and
a 429 report), when the pool has more than that."""

UNBOUNDED_POOL = 100
"""Calls in flight when the client's pool has no real bound (redis-py 5's default of 2**31
connections): redis-py 6 and later default to this pool size."""


class RedisDown(Exception):
    """Redis is unavailable right now: use the local fallback."""


def pool_limit(client: Redis | RedisCluster) -> int:
    """Calls this client can have in flight without waiting for a pooled connection."""
    size: Any
    if isinstance(client, RedisCluster):
        # Per node; every key of a namespace lives on one node. Pub/sub uses its own connection.
        size = client.nodes_manager.connection_kwargs.get("max_connections")
        reserved = 0
    else:
        size = getattr(client.connection_pool, "max_connections", None)
        reserved = 1  # the pub/sub listener holds one of the pool's connections
    if not isinstance(size, int) or size >= 2**31 - 1:
        return UNBOUNDED_POOL
    return max(1, size - reserved)


def keep_seeds(client: Redis | RedisCluster) -> Callable[[], None]:
    """A call that gives a cluster client back the startup nodes it had when this was called
    (nothing to do for a single Redis, nor on redis-py 8, which keeps them itself)."""
    if not isinstance(client, RedisCluster):
        return lambda: None
    nodes = client.nodes_manager.startup_nodes
    seeds = dict(nodes)

    def restore() -> None:
        for name, node in seeds.items():
            nodes.setdefault(name, node)

    return restore


def _pool_full(exc: BaseException) -> bool:
    """redis-py's pool refused a connection (``MaxConnectionsError`` from redis-py 6 on)."""
    return isinstance(exc, RedisConnectionError) and (
        type(exc).__name__ == "MaxConnectionsError" or "Too many connections" in str(exc)
    )


class Health:
    """Runs Redis calls with a timeout and tracks whether Redis is reachable."""

    def __init__(
        self,
        *,
        timeout: float,
        retry_interval: float,
        where: str,
        secrets: Iterable[str] = (),
        limit: int = UNBOUNDED_POOL,
        reseed: Callable[[], None] = lambda: None,
    ) -> None:
        self.timeout = timeout
        self._reseed = reseed  # see keep_seeds
        self.retry_interval = retry_interval
        self.limit = limit
        self._where = where
        self._secrets = list(secrets)
        self._probe_at: float | None = None  # None: Redis is up
        self._unexpected: set[type[BaseException]] = set()
        self.round_trips = 0
        self.outages = 0
        self.fallbacks = 0
        self.pool_full = 0
        reserved = RATE_CALLS if limit > RATE_CALLS else 0
        self._slots = asyncio.Semaphore(limit - reserved)
        self._rate_calls = asyncio.Semaphore(reserved) if reserved else self._slots

    @property
    def up(self) -> bool:
        """False during an outage."""
        return self._probe_at is None

    def scrub(self, text: str) -> str:
        """``text`` with the URL's credentials replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def retry_in(self, now: float) -> float:
        """Seconds until calls reach Redis again (0 while it is up)."""
        return 0.0 if self._probe_at is None else max(0.0, self._probe_at - now)

    async def run(self, call: Callable[[], Awaitable[T]], *, rate: bool = False) -> T:
        """``await call()`` within the timeout; raise :class:`RedisDown` if Redis fails.

        ``rate``: a call of the rate budget (a slot, a 429 report).
        """
        loop = asyncio.get_running_loop()
        if self._probe_at is not None and loop.time() < self._probe_at:
            self.fallbacks += 1
            raise RedisDown
        async with self._rate_calls if rate else self._slots:  # a local queue, before the timeout
            if self._probe_at is not None and loop.time() < self._probe_at:
                self.fallbacks += 1  # it went away while this call queued
                raise RedisDown
            full = False
            try:
                async with asyncio.timeout(self.timeout):
                    while True:
                        try:
                            result = await call()
                            break
                        except RedisConnectionError as exc:
                            if not _pool_full(exc):
                                raise
                            full = True  # others use the shared pool: queue, do not fail
                            await asyncio.sleep(0.005)
            except Exception as exc:
                self.fallbacks += 1
                if full and isinstance(exc, TimeoutError):
                    self.pool_full += 1
                    raise RedisDown from None
                self.down(exc)
                raise RedisDown from None
        self.round_trips += 1
        self.up_again()
        return result

    async def quietly(self, call: Callable[[], Awaitable[object]], *, rate: bool = False) -> None:
        """Best effort: without Redis, the other processes fall back (leases expire, polls)."""
        with contextlib.suppress(RedisDown):
            await self.run(call, rate=rate)

    def down(self, exc: BaseException) -> None:
        """Note a failure: warn once per outage, probe again after ``retry_interval``."""
        self._reseed()
        loop = asyncio.get_running_loop()
        if self._probe_at is None:
            self.outages += 1
            log.warning(
                "Redis at %s unavailable (%s: %s): using the local fallback until it is back "
                "(next try in %g s)",
                self._where, type(exc).__name__, self.scrub(str(exc)) or "timeout",
                self.retry_interval,
            )  # fmt: skip
        self._note_unexpected(exc)
        self._probe_at = loop.time() + self.retry_interval

    def _note_unexpected(self, exc: BaseException) -> None:
        """An exception that is not a Redis failure is likely a bug: show it once, in full."""
        kind = type(exc)
        if isinstance(exc, REDIS_FAILURES) or kind in self._unexpected:
            return
        self._unexpected.add(kind)
        log.error(
            "unexpected %s from a Redis call (handled as an outage): %s",
            kind.__name__, self.scrub(str(exc)),
        )  # fmt: skip

    def up_again(self) -> None:
        """Note a success: after an outage, say once that the processes share again."""
        if self._probe_at is not None:
            self._probe_at = None
            log.info("Redis at %s is back: sharing the rate budget and outcomes again", self._where)
