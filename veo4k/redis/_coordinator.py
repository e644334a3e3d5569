"""``RedisCoordinator``: the coordinator interface shared by many processes through Redis."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import json
import logging
import os
import secrets
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from .._callbacks import CallbackEvent
from .._config import RateLimit
from .._coordination import Claim, Coordinator, OutcomeSink
from .._errors import ConfigurationError
from .._limiter import Limiter, Pacer
from .._models import FourKStatus
from . import _scripts
from ._fanout import Listener, decode, encode_event, encode_status, event_from, status_from
from ._health import Health, RedisDown, redact
from ._limiter import RedisLimiter

__all__ = ["RedisCoordinator"]

log = logging.getLogger("veo4k")

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def _namespace(value: str | None) -> str:
    if value is None:
        key = os.environ.get("KIE_API_KEY", "").strip()
        if not key:
            raise ConfigurationError(
                "RedisCoordinator needs namespace=... (or KIE_API_KEY, whose hash is the default)"
            )
        return "k" + hashlib.sha256(key.encode()).hexdigest()[:16]
    if not isinstance(value, str) or not value or len(value) > 100 or any(c in value for c in "{}"):
        raise ConfigurationError("namespace must be 1-100 characters without '{' or '}'")
    return value


class RedisCoordinator(Coordinator):
    """Rate budget, callbacks and single flight shared by every process of one namespace.

    Every client and receiver of the same ``namespace`` (in any process, on any machine) shares
    one rate schedule (GCRA in a Lua script, time from Redis ``TIME``; a 429 anywhere slows them
    all), sees every verified callback and every ready result, and polls each task from one
    process only (a lease that expires ``lease_ttl`` seconds after its holder stops renewing).
    Ready results are kept ``result_ttl`` seconds (below the ~24 h life of Kie's URLs).

    Every Redis call has a ``timeout``; while Redis is unavailable each client falls back to its
    own pacer at ``fallback_share`` of its ``rate_limit`` (1/4: safe for up to 4 busy
    processes), polls for itself, and logs one warning; it rejoins when Redis answers again.
    Nothing secret is stored: keys hold task ids, result URLs and lease owners (random ids).

    One coordinator serves one event loop; share it between the clients and the receiver of a
    process, and close it (``aclose`` or ``async with``) after them: a client never closes a
    coordinator it was given.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        namespace: str | None = None,
        timeout: float = 0.5,
        retry_interval: float = 1.0,
        fallback_share: float = 0.25,
        headroom: float = 0.95,
        lease_ttl: float = 10.0,
        result_ttl: float = 12 * 3600.0,
        callback_ttl: float = 600.0,
        max_event_bytes: int = 16_384,
        _where: str | None = None,
        _secret: str | None = None,
        _own_client: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(client, Redis | RedisCluster):
            raise ConfigurationError("client must be a redis.asyncio.Redis or RedisCluster")
        if not 0 < fallback_share <= 1 or not 0 < headroom <= 1:
            raise ConfigurationError("fallback_share and headroom must be within (0, 1]")
        if min(timeout, retry_interval, lease_ttl, result_ttl, callback_ttl) <= 0:
            raise ConfigurationError("timeouts and TTLs must be > 0")
        if result_ttl >= 24 * 3600:
            raise ConfigurationError("result_ttl must stay below 24 h (Kie's URLs expire)")
        self.namespace = _namespace(namespace)
        self._client = client
        self._own_client = _own_client
        self._where = _where or type(client).__name__
        self._share, self._headroom = fallback_share, headroom
        self._lease_ms = int(lease_ttl * 1000)
        self._result_ms = int(result_ttl * 1000)
        self._callback_ms = int(callback_ttl * 1000)
        self._max_event_bytes = max_event_bytes
        self._origin = secrets.token_hex(8)
        self.health = Health(
            timeout=timeout, retry_interval=retry_interval, where=self._where, secret=_secret
        )
        s = client.register_script
        self._slot, self._rate_limited = s(_scripts.SLOT), s(_scripts.RATE_LIMITED)
        self._claim, self._release = s(_scripts.CLAIM), s(_scripts.RELEASE)
        self._renew = s(_scripts.RENEW)
        self._pub_result = s(_scripts.PUBLISH_RESULT)
        self._pub_callback = s(_scripts.PUBLISH_CALLBACK)
        self._listener: Listener | None = None
        self._held: dict[tuple[str, int, str], None] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._seen: collections.OrderedDict[tuple[str, bool, int], None] = collections.OrderedDict()
        self._closed = False

    @classmethod
    def from_url(
        cls, url: str, *, namespace: str | None = None, **options: Any
    ) -> RedisCoordinator:
        """Connect to ``redis://``/``rediss://``/``unix://`` (or ``redis+cluster://``).

        ``options`` are the keyword arguments of :class:`RedisCoordinator`.
        """
        timeout = float(options.get("timeout", 0.5))
        scheme, sep, rest = url.partition("://")
        try:
            secret = urlsplit(url).password
            where = redact(url)
        except ValueError:
            raise ConfigurationError("not a valid Redis URL") from None
        client: Redis | RedisCluster
        if scheme in _CLUSTER_SCHEMES:
            client = RedisCluster.from_url(
                _CLUSTER_SCHEMES[scheme] + sep + rest,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
        else:
            client = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return cls(
            client, namespace=namespace, _where=where, _secret=secret, _own_client=True, **options
        )

    def __repr__(self) -> str:
        state = "up" if self.health.up else "unavailable (local fallback)"
        return f"RedisCoordinator({self._where}, namespace={self.namespace!r}, redis {state})"

    def _key(self, *parts: object) -> str:
        # One hash tag per namespace: every key of a script lands in one cluster slot.
        return ":".join(["veo4k", "{" + self.namespace + "}", *map(str, parts)])

    @property
    def _channel(self) -> str:
        return self._key("events")

    # -- rate --------------------------------------------------------------------------------

    def limiter(self, limit: RateLimit | None) -> Limiter:
        """A shared-budget limiter; without a configured limit, a local pacer only."""
        if limit is None:
            return Pacer(None)
        return RedisLimiter(self, limit, share=self._share, headroom=self._headroom)

    def _ttl_ms(self, period_ms: float) -> int:
        return int(max(60_000.0, 10 * period_ms))

    async def slot(
        self, interval_ms: float, period_ms: float, increase: float
    ) -> tuple[float, float]:
        """Reserve the next shared slot: ``(ms to wait, slot in Redis ms)``."""
        keys = [self._key("tat"), self._key("rate")]
        args = [interval_ms, self._ttl_ms(period_ms), period_ms, increase]
        wait, slot = await self.health.run(lambda: self._slot(keys=keys, args=args))
        return float(wait), float(slot)

    async def rate_limited(
        self, slot_ms: float, retry_after: float | None, limit: RateLimit
    ) -> None:
        """Report a 429 for the request granted at ``slot_ms`` (Redis time)."""
        period_ms = limit.period * 1000.0
        pause_ms = (retry_after or 0.0) * 1000.0
        keys = [self._key("tat"), self._key("rate")]
        args = [
            slot_ms, pause_ms, limit.decrease, limit.min_fraction, period_ms,
            self._ttl_ms(period_ms),
        ]  # fmt: skip
        await self._quiet(lambda: self._rate_limited(keys=keys, args=args))

    # -- outcomes ----------------------------------------------------------------------------

    def add_sink(self, sink: OutcomeSink) -> None:
        """Deliver outcomes to ``sink``; the first sink starts the subscription."""
        super().add_sink(sink)
        self._listen()

    def _listen(self) -> Listener:
        if self._listener is None:
            self._listener = Listener(
                self._client, self._channel, self._on_message,
                on_down=self.health.down, on_up=self.health.up_again,
                retry_interval=self.health.retry_interval,
            )  # fmt: skip
            self._listener.start()
        return self._listener

    async def subscribed(self) -> None:
        """Listen to the namespace's outcomes now, and wait until that works (app startup)."""
        await self._listen().subscribed.wait()

    def deliver_callback(self, event: CallbackEvent) -> None:
        """Once per task and outcome in this process, however many workers received it."""
        key = (event.task_id, event.ok, event.code)
        if key in self._seen:
            return
        self._seen[key] = None
        while len(self._seen) > 10_000:
            self._seen.popitem(last=False)
        super().deliver_callback(event)

    def _message(self, kind: str, value: dict[str, Any]) -> str:
        return json.dumps({"o": self._origin, "k": kind, "v": value}, separators=(",", ":"))

    def _on_message(self, raw: bytes | str) -> None:
        decoded = decode(raw)
        if decoded is None:
            return
        origin, kind, value = decoded
        if origin == self._origin:
            return  # delivered here already, before it was published
        try:
            if kind == "cb":
                self.deliver_callback(event_from(value))
            elif kind == "res":
                self.deliver_result(status_from(value))
        except (KeyError, TypeError, ValueError):
            log.warning("ignored an unreadable message on %s", self._channel)

    async def publish_callback(self, event: CallbackEvent) -> None:
        """Deliver here, keep it for later waits (TTL, size bound), tell the other processes."""
        self.deliver_callback(event)
        value = json.dumps(encode_event(event), separators=(",", ":"))
        kept = value if len(value) <= self._max_event_bytes else ""
        keys = [self._key("cb", event.task_id)]
        args: list[str | int] = [
            self._message("cb", encode_event(event)),
            self._callback_ms,
            self._channel,
            kept,
        ]
        await self._quiet(lambda: self._pub_callback(keys=keys, args=args))

    async def publish_result(self, status: FourKStatus, owner: str) -> None:
        """Keep a ready result ``result_ttl`` seconds, free the lease, tell the others."""
        self._held.pop((status.task_id, status.index, owner), None)
        value = encode_status(status)
        keys = [self._key("res", status.task_id, status.index),
                self._key("lease", status.task_id, status.index)]  # fmt: skip
        args: list[str | int] = [
            self._message("res", value),
            self._result_ms,
            self._channel,
            json.dumps(value),
        ]
        publish = functools.partial(self._pub_result, keys=keys, args=args)
        try:
            await self.health.run(publish)
        except RedisDown:
            # The followers would wait for the lease to expire and then ask Kie again: keep
            # trying in the background until Redis takes the result (at most one lease TTL).
            self._spawn(self._publish_later(publish))

    async def _publish_later(self, publish: Any) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._lease_ms / 1000.0
        while not self._closed and loop.time() < give_up:
            await asyncio.sleep(min(self.health.retry_interval, 1.0))
            try:
                await self.health.run(publish)
            except RedisDown:
                continue
            return

    # -- leases ------------------------------------------------------------------------------

    async def claim(self, task_id: str, index: int, owner: str) -> Claim:
        """One round trip: a kept result, or the lease (granted or held by another)."""
        if (task_id, index, owner) in self._held:
            # Ours (the renewer would have dropped it if lost): nobody else polls the task, so
            # no result can have been kept meanwhile. No round trip.
            return Claim(granted=True)
        keys = [self._key("res", task_id, index), self._key("lease", task_id, index),
                self._key("cb", task_id)]  # fmt: skip
        try:
            kind, value = await self.health.run(
                lambda: self._claim(keys=keys, args=[owner, self._lease_ms])
            )
        except RedisDown:
            # Poll for ourselves. The script may still have run (a timeout is not a refusal):
            # count the lease as ours so the renewer, release and publish settle it either way
            # (the renewer drops it if it is not).
            self._held[(task_id, index, owner)] = None
            self._start_renewer()
            return Claim(granted=True)
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        try:
            if kind == "result":
                return Claim(granted=False, result=status_from(json.loads(value)))
            early = event_from(json.loads(value)) if value else None
        except (KeyError, TypeError, ValueError):
            early = None
        if kind == "granted":
            self._held[(task_id, index, owner)] = None
            self._start_renewer()
        return Claim(granted=kind == "granted", early=early)

    def release(self, task_id: str, index: int, owner: str) -> None:
        """Free the lease now if ``owner`` holds it (a background round trip)."""
        if (task_id, index, owner) not in self._held or self._closed:
            return  # not ours (a follower, or already freed with its result): nothing to send
        del self._held[(task_id, index, owner)]
        key = self._key("lease", task_id, index)
        self._spawn(self._quiet(lambda: self._release(keys=[key], args=[owner])))

    async def _quiet(self, call: Any) -> None:
        """Best effort: without Redis the other processes fall back to polling."""
        with contextlib.suppress(RedisDown):
            await self.health.run(call)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_renewer(self) -> None:
        if self._renewer is None and not self._closed:
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew_forever(), name="veo4k-redis-leases"
            )

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000.0)
            held = list(self._held)
            if not held:
                continue
            keys = [self._key("lease", t, i) for t, i, _ in held]
            args: list[Any] = [self._lease_ms, *(o for _, _, o in held)]
            try:
                lost = await self.health.run(functools.partial(self._renew, keys=keys, args=args))
            except RedisDown:
                continue
            for position in lost:
                self._held.pop(held[int(position) - 1], None)

    async def aclose(self) -> None:
        """Stop listening and renewing, release held leases, close a client we created."""
        if self._closed:
            return
        self._closed = True
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        if self._listener is not None:
            await self._listener.aclose()
        for task_id, index, owner in list(self._held):
            key = self._key("lease", task_id, index)
            await self._quiet(functools.partial(self._release, keys=[key], args=[owner]))
        self._held.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._own_client:
            await self._client.aclose()
