"""The task leases a coordinator's clients hold: one token per claim, renewed in the background,
freed when their wait ends, checked again when a holder may have lost one.

A lease in Redis holds the token of the claim that took it (see ``_scripts``). A holder asks
Redis again before it polls when its lease was last confirmed more than half a lease ago (its
event loop stalled, or the renewer could not reach Redis): another process may hold it now.
A claim cancelled at any point frees what it may have taken, once its round trip has ended.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import attrs

from ._health import Health, RedisDown
from ._scope import Scope

__all__ = ["LeaseKey", "Leases"]

log = logging.getLogger("veo4k")

T = TypeVar("T")
LeaseKey = tuple[str, int, str]
"""(task id, video index, owner): one client's wait on one video."""


@attrs.define
class _Held:
    token: str
    confirmed: float  # loop time when Redis last said the lease is this token's


class Leases:
    """Leases of one coordinator: tokens, the renewer, releases."""

    def __init__(
        self,
        *,
        health: Health,
        scope: Scope,
        renew: Callable[..., Awaitable[Any]],
        release: Callable[..., Awaitable[Any]],
        lease_ms: int,
        indexes_ms: int,
    ) -> None:
        self._health = health
        self._scope = scope
        self._renew, self._release = renew, release
        self.lease_ms = lease_ms
        self._indexes_ms = indexes_ms  # TTL of a task's record of the indexes waited for
        self._held: dict[LeaseKey, _Held] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._failed = False
        self.closed = False

    def __contains__(self, key: LeaseKey) -> bool:
        return key in self._held

    def key(self, task_id: str, index: int) -> str:
        """The lease's Redis key."""
        return self._scope.account_key("lease", task_id, index)

    def fresh(self, key: LeaseKey) -> bool:
        """Held and confirmed within half a lease: poll without asking Redis again."""
        held = self._held.get(key)
        now = asyncio.get_running_loop().time()
        return held is not None and now - held.confirmed < self.lease_ms / 2000.0

    def token(self, key: LeaseKey) -> str:
        """The token of the lease held for ``key``, or a new one for a new claim."""
        held = self._held.get(key)
        return held.token if held is not None else f"{key[2]}.{secrets.token_hex(6)}"

    def hold(self, key: LeaseKey, token: str, confirmed: float = -math.inf) -> None:
        """``key`` holds the lease of ``token`` (confirmed by Redis at loop time ``confirmed``;
        not confirmed: polling for itself while Redis is away)."""
        self._held[key] = _Held(token, confirmed)
        if self._renewer is None and not self.closed:
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew_forever(), name="veo4k-redis-leases"
            )

    def drop(self, key: LeaseKey) -> str:
        """Forget ``key``'s lease here (the caller frees it in Redis); its token, or ``''``."""
        held = self._held.pop(key, None)
        return held.token if held is not None else ""

    async def claimed(self, call: Awaitable[T], key: LeaseKey, token: str) -> T:
        """Await a claim's round trip; if the claim is cancelled, the round trip still ends
        and then frees whatever lease it took (no wait is left to use or release it)."""
        round_trip = asyncio.ensure_future(call)
        try:
            return await asyncio.shield(round_trip)
        except asyncio.CancelledError:
            # first the free, then the bookkeeping: aclose and tests see no gap between them
            round_trip.add_done_callback(functools.partial(self._abandoned, key, token))
            self._tasks.add(round_trip)
            round_trip.add_done_callback(self._tasks.discard)
            raise

    def _abandoned(self, key: LeaseKey, token: str, round_trip: asyncio.Future[Any]) -> None:
        if not round_trip.cancelled():
            round_trip.exception()  # retrieved: RedisDown is no news here
        held = self._held.get(key)
        if held is not None and held.token == token:
            del self._held[key]
        self.free(key[0], key[1], token)

    def release(self, task_id: str, index: int, owner: str) -> None:
        """The wait of ``owner`` ended: free its lease now, if it holds one."""
        token = self.drop((task_id, index, owner))
        if token:
            self.free(task_id, index, token)

    def free(self, task_id: str, index: int, token: str) -> None:
        """Free the lease of ``token`` in Redis, in the background (a no-op if another's)."""
        if self.closed:
            return
        call = functools.partial(self._release, keys=[self.key(task_id, index)], args=[token])
        self.spawn(self._health.quietly(call))

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` in the background; :meth:`aclose` waits for it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _renew_forever(self) -> None:
        """Every third of a lease, extend those still held and record their indexes again (a
        record lost in a flush is rebuilt); never ends before :meth:`aclose`."""
        while True:
            await asyncio.sleep(self.lease_ms / 3000.0)
            try:
                await self._renew_once()
            except Exception:  # a bug must not end single flight for the life of the process
                if not self._failed:
                    self._failed = True
                    log.exception("veo4k Redis lease renewer failed; trying again")

    async def _renew_once(self) -> None:
        held = list(self._held.items())
        if not held:
            return
        keys = [self.key(t, i) for (t, i, _), _ in held]
        keys += [self._scope.key("idx", t) for (t, _, _), _ in held]  # recorded again
        args: list[Any] = [self.lease_ms, self._indexes_ms, *(h.token for _, h in held)]
        args += [i for (_, i, _), _ in held]
        sent = asyncio.get_running_loop().time()
        try:
            lost = await self._health.run(functools.partial(self._renew, keys=keys, args=args))
        except RedisDown:
            return
        gone = {int(position) - 1 for position in lost}
        for position, (key, entry) in enumerate(held):
            if self._held.get(key) is not entry:
                continue  # released or claimed afresh meanwhile
            if position in gone:
                del self._held[key]
            else:
                entry.confirmed = sent

    async def aclose(self) -> None:
        """Stop renewing, wait for background round trips, free every lease still held."""
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self.closed = True
        for (task_id, index, _), held in list(self._held.items()):
            call = functools.partial(
                self._release, keys=[self.key(task_id, index)], args=[held.token]
            )
            await self._health.quietly(call)
        self._held.clear()
