"""``RedisCoordinator``: the coordinator interface shared by many processes through Redis."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from .._config import RateLimit
from .._coordination import Claim, Coordinator, OutcomeSink
from .._errors import ConfigurationError
from .._limiter import Limiter, Pacer
from .._models import CallbackEvent, FourKStatus
from .._secret import ApiKey
from . import _scripts
from ._budget import Budget
from ._fanout import Listener
from ._health import Health, RedisDown, keep_seeds, pool_limit
from ._leases import Leases
from ._limiter import RedisLimiter
from ._messages import (
    callback_field,
    decode,
    encode_event,
    encode_status,
    event_from,
    kept_callback,
    kept_outcomes,
    kept_result,
    nudge,
    status_from,
    text,
)
from ._scope import Scope
from ._url import connect

__all__ = ["RedisCoordinator"]

log = logging.getLogger("veo4k")

_MAX_KEPT_PER_TASK = 32  # callbacks kept per task (a task has few videos, Kie retries a few)
_CATCH_UP_BATCH = 200  # waits read per round trip after a resubscribe


class RedisCoordinator(Coordinator):
    """Rate budget, callbacks and single flight shared by every process of one namespace.

    Every client and receiver of the same ``namespace`` (in any process, on any machine) shares
    one rate schedule (GCRA in a Lua script, time from Redis ``TIME``; a 429 anywhere slows them
    all) with the account's priorities across processes: a follow-up of any process goes before
    a submission of any process, a poll still held back waits for anyone's submissions, and
    submissions keep a quarter of the slots (decided in the slot's own script from the demand
    each process publishes; a process that stops asking stops counting within about a second).
    It sees every verified callback and every ready result, and polls each task from one
    process only (a lease with a fencing token that expires ``lease_ttl`` seconds after its
    holder stops renewing). Ready results are kept ``result_ttl`` seconds (below the ~24 h life
    of Kie's URLs). Budget, results and leases belong to the account: their keys carry a salted
    fingerprint of the client's API key (never the key), so two keys in one namespace share
    none of them. Without ``namespace``, it derives from the first client's key.

    Every Redis call has a ``timeout``; while Redis (or a Redis Cluster) is unavailable each
    client falls back to its own pacer at ``fallback_share`` of its ``rate_limit``, going on
    from the last shared slot it saw (no burst: a blip shorter than one fallback interval sends
    nothing extra), polls for itself, and logs one warning; it rejoins when Redis answers again.
    N busy processes all cut off send ``N * fallback_share`` of the limit; one cut off alone
    adds its share to what the others still take (``headroom``): the limit holds while
    ``headroom * (1 + cut_off * fallback_share) <= 1`` and ``N * fallback_share <= 1``. Calls
    in flight follow the client's connection pool (the rest queue here; two places are kept for
    the rate budget).
    The pub/sub subscription is checked by a PING after ``health_check_interval`` seconds of
    silence; after every (re)subscribe the kept results and callbacks of the waits it serves are
    read again, and losing it alone never puts slots and leases in fallback.

    One coordinator serves one event loop and one API key; share it between the clients and the
    receiver of a process, and close it (``aclose`` or ``async with``) after them: a client
    never closes a coordinator it was given.
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
        health_check_interval: float = 5.0,
        _where: str | None = None,
        _secrets: tuple[str, ...] = (),
        _own_client: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(client, Redis | RedisCluster):
            raise ConfigurationError("client must be a redis.asyncio.Redis or RedisCluster")
        if not 0 < fallback_share <= 1 or not 0 < headroom <= 1:
            raise ConfigurationError("fallback_share and headroom must be within (0, 1]")
        times = (timeout, retry_interval, lease_ttl, result_ttl, callback_ttl)
        if not all(math.isfinite(t) and t > 0 for t in (*times, health_check_interval)):
            raise ConfigurationError("timeouts, intervals and TTLs must be finite and > 0")
        if result_ttl >= 24 * 3600:
            raise ConfigurationError("result_ttl must stay below 24 h (Kie's URLs expire)")
        self._scope = Scope(namespace)
        self._client = client
        self._own_client = _own_client
        self._where = _where or type(client).__name__
        self._share, self._headroom = fallback_share, headroom
        self._result_ms = int(result_ttl * 1000)
        self._callback_ms = int(callback_ttl * 1000)
        self._max_event_bytes = max_event_bytes
        self._check_interval = health_check_interval
        self._origin = secrets.token_hex(8)
        self.health = Health(
            timeout=timeout, retry_interval=retry_interval, where=self._where, secrets=_secrets,
            limit=pool_limit(client), reseed=keep_seeds(client),
        )  # fmt: skip
        # redis-py < 8 types register_script for Redis only (RedisCluster has it at run time)
        s = client.register_script  # type: ignore[misc, unused-ignore]
        self.budget = Budget(
            health=self.health, scope=self._scope, slot=s(_scripts.SLOT),
            rate_limited=s(_scripts.RATE_LIMITED),
        )  # fmt: skip
        self._claim, self._read_kept = s(_scripts.CLAIM), s(_scripts.READ_KEPT)
        self._pub_result = s(_scripts.PUBLISH_RESULT)
        self._pub_callback = s(_scripts.PUBLISH_CALLBACK)
        self._leases = Leases(
            health=self.health, scope=self._scope, renew=s(_scripts.RENEW),
            release=s(_scripts.RELEASE), lease_ms=int(lease_ttl * 1000),
            indexes_ms=self._result_ms,
        )  # fmt: skip
        self._listener: Listener | None = None
        # The waits this process serves, for the catch-up after a resubscribe.
        self._waits: dict[tuple[str, int], set[str]] = {}
        self._seen: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._caught_up = 0  # outcomes a catch-up read delivered (for tests)
        self._closed = False
        self._closing = asyncio.Event()

    @classmethod
    def from_url(
        cls, url: str, *, namespace: str | None = None, **options: Any
    ) -> RedisCoordinator:
        """Connect to ``redis://``/``rediss://``/``unix://`` (or ``redis+cluster://``).

        ``options`` are the keyword arguments of :class:`RedisCoordinator`.
        """
        client, where, hidden = connect(url, float(options.get("timeout", 0.5)))
        return cls(
            client, namespace=namespace, _where=where, _secrets=hidden, _own_client=True, **options
        )

    def __repr__(self) -> str:
        state = "up" if self.health.up else "unavailable (local fallback)"
        return f"RedisCoordinator({self._where}, namespace={self._scope.described}, redis {state})"

    @property
    def namespace(self) -> str:
        """The namespace (given, or derived from the first client's API key)."""
        return self._scope.namespace

    def bind_key(self, key: ApiKey) -> None:
        """A client with ``key`` uses this coordinator; another key is refused."""
        self._scope.bind(key)

    @property
    def _channel(self) -> str:
        return self._scope.key("events")

    def _kept_keys(self, task_id: str, index: int) -> list[str]:
        """A wait's result, its task's kept callbacks, and the indexes waited for."""
        return [
            self._scope.account_key("res", task_id, index),
            self._scope.key("cb", task_id),
            self._scope.key("idx", task_id),
        ]

    # -- rate --------------------------------------------------------------------------------

    def limiter(self, limit: RateLimit | None) -> Limiter:
        """A shared-budget limiter; without a configured limit, a local pacer only."""
        if limit is None:
            return Pacer(None)
        return RedisLimiter(self.budget, limit, share=self._share, headroom=self._headroom)

    # -- outcomes ----------------------------------------------------------------------------

    def add_sink(self, sink: OutcomeSink) -> None:
        """Deliver outcomes to ``sink``; the first sink starts the subscription."""
        super().add_sink(sink)
        self._listen()

    def _listen(self) -> Listener:
        if self._listener is None:
            self._listener = Listener(
                self._client, self._channel, self._on_message,
                on_subscribed=self._subscribed, commands_up=self._commands_up,
                retry_interval=self.health.retry_interval,
                timeout=self.health.timeout, health_check_interval=self._check_interval,
                where=self._where, scrub=self.health.scrub,
            )  # fmt: skip
            self._listener.start()
        return self._listener

    async def _commands_up(self) -> bool:
        """Whether commands reach Redis now (one PING)."""
        await self.health.quietly(self._client.ping)
        return self.health.up

    async def subscribed(self) -> None:
        """Listen to the namespace's outcomes now, and wait until that works (app startup)."""
        await self._listen().subscribed.wait()

    def deliver_callback(self, event: CallbackEvent) -> None:
        """A callback through Redis, once per task, index (or URLs) and outcome in this process
        however many workers received it. One the namespace could not match to an index only
        prompts the waits of its task to confirm by a poll."""
        self._deliver(event if event.index is not None else nudge(event), event)

    def _deliver(self, delivered: CallbackEvent, event: CallbackEvent) -> None:
        slot = f"i{event.index}" if event.index is not None else "u"
        key = (event.task_id, slot + callback_field(event))
        if key in self._seen:
            return
        self._seen[key] = None
        while len(self._seen) > 10_000:
            self._seen.popitem(last=False)
        super().deliver_callback(delivered)

    def _message(self, kind: str, value: dict[str, Any], **extra: Any) -> str:
        msg = {"o": self._origin, "k": kind, "v": value, **extra}
        return json.dumps(msg, separators=(",", ":"))

    def _on_message(self, raw: bytes | str) -> None:
        msg = decode(raw)
        if msg is None:
            return
        if msg.get("o") == self._origin:
            return  # delivered here already
        try:
            if msg.get("k") == "cb":
                index = msg.get("i")
                self.deliver_callback(event_from(msg["v"], None if index is None else int(index)))
            elif msg.get("k") == "res" and msg.get("a") == self._scope.account:
                self.deliver_result(status_from(msg["v"]))
        except (KeyError, TypeError, ValueError):
            log.warning("ignored an unreadable message on %s", self._channel)

    async def publish_callback(self, event: CallbackEvent) -> None:
        """Keep it for later waits (TTL, size bound), tell every process, this one included.

        Its index is decided in Redis from the waits of the namespace; without Redis it reaches
        this process's waits as it is.
        """
        value = json.dumps(encode_event(event), separators=(",", ":"))
        head = self._message("cb", encode_event(event))[:-1] + ',"i":'
        keys = [self._scope.key("cb", event.task_id), self._scope.key("idx", event.task_id)]
        args: list[str | int] = [
            "" if event.index is None else event.index,
            callback_field(event),
            value if len(value) <= self._max_event_bytes else "",
            self._callback_ms,
            self._channel,
            head,
            _MAX_KEPT_PER_TASK,
        ]
        try:
            index = await self.health.run(lambda: self._pub_callback(keys=keys, args=args))
        except RedisDown:
            self._deliver(event, event)  # this process only: its own waits decide, as alone
            return
        decided = text(index)
        self.deliver_callback(attrs.evolve(event, index=int(decided)) if decided else event)

    async def publish_result(self, status: FourKStatus, owner: str) -> None:
        """Tell this process's clients at once, keep the result ``result_ttl`` seconds, free the
        lease (if this owner's claim still holds it), tell the other processes.

        The round trip is the coordinator's: a wait cancelled meanwhile still keeps the result
        and frees the lease (its token is no longer here for ``release`` to free it)."""
        self.deliver_result(status)
        token = self._leases.drop((status.task_id, status.index, owner))
        value = encode_status(status)
        keys = [self._scope.account_key("res", status.task_id, status.index),
                self._leases.key(status.task_id, status.index)]  # fmt: skip
        args: list[str | int] = [
            self._message("res", value, a=self._scope.account),
            self._result_ms,
            self._channel,
            json.dumps(value),
            token,
        ]
        publish = functools.partial(self._pub_result, keys=keys, args=args)
        await asyncio.shield(self._leases.spawn(self._publish(publish)))

    async def _publish(self, publish: Callable[[], Awaitable[Any]]) -> None:
        try:
            await self.health.run(publish)
        except RedisDown:
            # The followers would wait for the lease to expire and then ask Kie again: keep
            # trying in the background until Redis takes the result (at most one lease TTL).
            self._leases.spawn(self._publish_later(publish))

    async def _publish_later(self, publish: Callable[[], Awaitable[Any]]) -> None:
        """Retry until Redis takes it, at most one lease TTL, or one last try at close."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._leases.lease_ms / 1000.0
        while loop.time() < give_up:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self.health.retry_interval, 1.0)):
                    await self._closing.wait()
            try:
                await self.health.run(publish)
            except RedisDown:
                if self._closing.is_set():
                    return
                continue
            return

    def _subscribed(self) -> None:
        """(Re)subscribed: read what was kept for our waits meanwhile (nothing waits a poll)."""
        if self._waits and not self._closed:
            self._leases.spawn(self._catch_up(list(self._waits)))

    async def _catch_up(self, waits: list[tuple[str, int]]) -> None:
        for start in range(0, len(waits), _CATCH_UP_BATCH):
            batch = waits[start : start + _CATCH_UP_BATCH]
            keys = [k for task_id, index in batch for k in self._kept_keys(task_id, index)]
            try:
                reply = await self.health.run(functools.partial(self._read_kept, keys=keys))
            except RedisDown:
                return  # the polls find them
            try:
                outcomes = list(kept_outcomes(batch, reply))
            except (TypeError, ValueError):  # not what READ_KEPT returns: the polls find them
                log.warning("ignored an unreadable catch-up reply from %s", self._where)
                return
            for outcome in outcomes:
                self._caught_up += 1
                if isinstance(outcome, FourKStatus):
                    self.deliver_result(outcome)
                else:
                    self.deliver_callback(outcome)

    # -- leases ------------------------------------------------------------------------------

    async def claim(self, task_id: str, index: int, owner: str) -> Claim:
        """One round trip: a kept result, or the lease (granted or held by another).

        A lease confirmed within half its TTL costs no round trip. Cancelled at any point, the
        claim frees whatever lease it took.
        """
        key = (task_id, index, owner)
        owners = self._waits.setdefault((task_id, index), set())
        again = owner in owners  # this wait recorded its index before: missing, it was lost
        owners.add(owner)
        if self._leases.fresh(key):
            return Claim(granted=True)  # ours, and recently confirmed: nobody else polls
        token = self._leases.token(key)
        lease = self._leases.key(task_id, index)
        result, callbacks, indexes = self._kept_keys(task_id, index)
        keys = [result, lease, callbacks, indexes]
        args: list[str | int] = [
            token, self._leases.lease_ms, index, self._result_ms, "1" if again else "",
        ]  # fmt: skip
        sent = asyncio.get_running_loop().time()
        call = functools.partial(self._claim, keys=keys, args=args)
        try:
            reply = await self._leases.claimed(self.health.run(call), key, token)
        except RedisDown:
            # Poll for ourselves. The script may still have run (a timeout is not a refusal):
            # count the lease as ours, unconfirmed, so the renewer, release and publish settle
            # it either way.
            self._leases.hold(key, token)
            return Claim(granted=True)
        kind = text(reply[0])
        if kind == "result":
            kept = kept_result(reply[1])  # unreadable: poll Kie
            return Claim(granted=kept is None, result=kept)
        early = kept_callback(reply[2], reply[1], index)
        if kind == "granted":
            self._leases.hold(key, token, confirmed=sent)
        else:
            self._leases.drop(key)  # taken over: the next claim asks with a new token
        return Claim(granted=kind == "granted", early=early)

    def release(self, task_id: str, index: int, owner: str) -> None:
        """The wait of ``owner`` ended: free its lease now if it holds one."""
        owners = self._waits.get((task_id, index))
        if owners is not None:
            owners.discard(owner)
            if not owners:
                del self._waits[(task_id, index)]
        if not self._closed:
            self._leases.release(task_id, index, owner)

    async def aclose(self) -> None:
        """Stop listening and renewing, free held leases, close a client we created."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        if self._listener is not None:
            await self._listener.aclose()
        await self._leases.aclose()
        if self._own_client:
            await self._client.aclose()
