"""Outcomes published and subscribed: one pub/sub channel per namespace.

Measured choice: pub/sub delivers a message to every subscribed process in one hop (under a
millisecond on loopback), needs no per-reader cursor, and a missed message costs little
because the outcome is also kept under its own key (with a TTL): every claim reads it, and
after every (re)subscribe the coordinator reads it again for the waits it serves.

The subscription is checked: after ``health_check_interval`` seconds of silence the listener
sends a PING and expects its answer within ``timeout``, so a connection that a NAT or a load
balancer dropped without a word is replaced within seconds. A lost subscription is the
listener's own trouble: commands (slots, leases) go on, the waits hear of other processes'
results at their next poll until it is back.

On Redis Cluster the listener subscribes on a plain connection to the node that serves the
namespace's slot (classic PUBLISH reaches every node of a cluster): it works with every
redis-py from 5.0.1, where ``RedisCluster.pubsub()`` exists only from 8.0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster

from ._health import REDIS_FAILURES

__all__ = ["Listener", "PubSubSilent"]

log = logging.getLogger("veo4k")


class PubSubSilent(Exception):
    """The pub/sub connection did not answer a PING in time (half-open, dropped)."""


class Listener:
    """Subscribes to the namespace channel in the background; resubscribes after any failure."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        channel: str,
        on_message: Callable[[bytes | str], None],
        *,
        on_subscribed: Callable[[], None],
        commands_up: Callable[[], Awaitable[bool]],
        retry_interval: float,
        timeout: float,
        health_check_interval: float,
        where: str,
        scrub: Callable[[str], str],
    ) -> None:
        self._client = client
        self._channel = channel
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._commands_up = commands_up
        self._retry = retry_interval
        self._timeout = timeout
        self._interval = health_check_interval
        self._where = where
        self._scrub = scrub
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        self.subscriptions = 0
        self.drops = 0
        self._warned = False
        self._unexpected: set[type[BaseException]] = set()

    def start(self) -> None:
        """Start listening (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="veo4k-redis-listener"
            )

    async def _run(self) -> None:
        while True:
            try:
                async with self._pubsub() as pubsub:
                    async with asyncio.timeout(self._timeout):
                        await pubsub.subscribe(self._channel)
                    self.subscriptions += 1
                    self.subscribed.set()
                    if self._warned:
                        self._warned = False
                        log.info("Redis pub/sub at %s is back: outcomes shared again", self._where)
                    self._on_subscribed()
                    await self._read(pubsub)
            except Exception as exc:  # never ends: any failure, ours or the driver's
                self.subscribed.clear()
                await self._dropped(exc)
                await asyncio.sleep(self._retry)

    @contextlib.asynccontextmanager
    async def _pubsub(self) -> AsyncIterator[PubSub]:
        node: Redis | None = None
        if isinstance(self._client, RedisCluster):
            async with asyncio.timeout(self._timeout * 4):
                await self._client.initialize()  # the slot map: which node serves the channel
            where = self._client.get_node_from_key(self._channel)
            if where is None:
                raise PubSubSilent("no node serves the channel's slot yet")
            pool = ConnectionPool(
                connection_class=where.connection_class,
                **{**where.connection_kwargs, "max_connections": 2},
            )
            node = Redis(connection_pool=pool)
            pubsub = node.pubsub()
        else:
            pubsub = self._client.pubsub()
        try:
            yield pubsub
        finally:
            self.subscribed.clear()
            await asyncio.shield(_close(pubsub, node))

    async def _read(self, pubsub: PubSub) -> None:
        """Deliver messages; PING after a silence, and fail if the answer does not come."""
        loop = asyncio.get_running_loop()
        tick = min(1.0, self._timeout, self._interval)
        heard, pinged = loop.time(), None
        while True:
            msg: dict[str, Any] | None = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=tick
            )
            now = loop.time()
            if msg is not None:
                heard, pinged = now, None
                if msg.get("type") == "message":
                    self._on_message(msg["data"])
            elif pinged is not None and now - pinged > self._timeout:
                raise PubSubSilent(f"no answer to a PING within {self._timeout:g} s")
            elif pinged is None and now - heard >= self._interval:
                async with asyncio.timeout(self._timeout):
                    await pubsub.ping()
                pinged = now

    async def _dropped(self, exc: BaseException) -> None:
        """Count and report a lost subscription: if Redis itself is away, its one outage
        warning says it all; if only pub/sub is, one warning of its own."""
        self.drops += 1
        if not isinstance(exc, (*REDIS_FAILURES, PubSubSilent)) and type(exc) not in (
            self._unexpected
        ):
            self._unexpected.add(type(exc))
            log.error(
                "unexpected %s in the veo4k Redis listener (resubscribing): %s",
                type(exc).__name__, self._scrub(str(exc)),
            )  # fmt: skip
        if self._warned or not await self._commands_up():
            return
        self._warned = True
        log.warning(
            "Redis pub/sub at %s lost (%s: %s): waits hear of other processes' outcomes at "
            "their next poll until it is back (next try in %g s)",
            self._where, type(exc).__name__, self._scrub(str(exc)) or "timeout", self._retry,
        )  # fmt: skip

    async def aclose(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


async def _close(pubsub: PubSub, node: Redis | None) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py
    if node is not None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await node.aclose(close_connection_pool=True)
