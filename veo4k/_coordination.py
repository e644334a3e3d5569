"""What a wait needs from outside its own process, behind one small interface.

Three things: a rate slot (and news of a 429), a task's outcome (published by whoever learns
it: a poll or a callback), and the right to be the one that polls a task (a lease). The client,
the poll loops and the callback receiver hold a :class:`Coordinator` and never ask what is
behind it. :class:`LocalCoordinator` is the in-process one (today's :class:`Pacer`; the registry
already makes one request stream per task, so its lease is always granted);
``veo4k.redis.RedisCoordinator`` is the same interface shared by many processes.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

import attrs

from ._config import RateLimit
from ._limiter import Limiter, Pacer
from ._models import CallbackEvent, CallbackStatus, FourKStatus

if TYPE_CHECKING:
    from ._schedule import Ask
    from ._secret import ApiKey
    from ._transport import Counter, RetryHook

__all__ = ["Claim", "ClaimedSubmit", "Coordinator", "Limiter", "LocalCoordinator", "OutcomeSink"]


class OutcomeSink(Protocol):
    """Where a coordinator delivers outcomes: a client's wait registry."""

    def on_callback(self, event: CallbackEvent) -> None:
        """A verified callback for a task (from any process)."""

    def on_result(self, status: FourKStatus) -> None:
        """A ready 4K that a poll (in any process) has seen: trusted, it ends the wait."""


@attrs.frozen
class Claim:
    """The answer to "may I poll this task now?"."""

    granted: bool
    """True: this owner holds the task's lease and polls; False: another owner does."""
    result: FourKStatus | None = None
    """A finished result already known: no request needed."""
    early: CallbackEvent | None = None
    """A callback for this task and index that arrived before this wait (in any process)."""


class Coordinator(abc.ABC):
    """Rate slots, outcomes and leases for the clients (and receivers) that share it.

    Closing a client never closes a coordinator it did not create; close yours with
    :meth:`aclose` (or ``async with``) after the clients using it.
    """

    def __init__(self) -> None:
        self._sinks: list[OutcomeSink] = []

    def bind_key(self, key: ApiKey) -> None:  # noqa: B027
        """A client with this API key uses the coordinator (called before :meth:`limiter`).

        A coordinator shared across processes scopes what it keeps to the key's account.
        """

    @abc.abstractmethod
    def limiter(self, limit: RateLimit | None) -> Limiter:
        """A limiter for one client with this ``rate_limit``."""

    def add_sink(self, sink: OutcomeSink) -> None:
        """Deliver outcomes to ``sink`` (a client does this when first used)."""
        if sink not in self._sinks:
            self._sinks.append(sink)

    def remove_sink(self, sink: OutcomeSink) -> None:
        """Stop delivering to ``sink`` (no-op if absent)."""
        if sink in self._sinks:
            self._sinks.remove(sink)

    def deliver_callback(self, event: CallbackEvent) -> None:
        """Hand a callback to every sink in this process."""
        for sink in list(self._sinks):
            sink.on_callback(event)

    def deliver_result(self, status: FourKStatus) -> None:
        """Hand a ready result to every sink in this process."""
        for sink in list(self._sinks):
            sink.on_result(status)

    async def publish_callback(self, event: CallbackEvent) -> None:
        """A receiver accepted ``event``: tell every wait for its task, here and elsewhere."""
        self.deliver_callback(event)

    async def publish_result(self, status: FourKStatus, owner: str) -> None:  # noqa: B027
        """A poll by ``owner`` saw ``status`` ready: tell the other processes (default: none)."""

    async def claim(self, task_id: str, index: int, owner: str) -> Claim:
        """May ``owner`` poll ``(task_id, index)`` now? Also returns what is already known."""
        return Claim(granted=True)

    def release(self, task_id: str, index: int, owner: str) -> None:  # noqa: B027
        """``owner`` stopped waiting on the task: let another process take over at once."""

    def submitter(
        self, request: Callable[..., Awaitable[FourKStatus]], *, owner: str, trust: bool
    ) -> Callable[..., Awaitable[FourKStatus]]:
        """A wait's request as this coordinator runs it: claimed first (see ClaimedSubmit)."""
        return ClaimedSubmit(self, request, owner=owner, trust_callback_urls=trust)

    async def aclose(self) -> None:  # noqa: B027
        """Release what this coordinator holds. Idempotent."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class LocalCoordinator(Coordinator):
    """One process: the client's own pacer, outcomes routed in memory, leases always granted."""

    def limiter(self, limit: RateLimit | None) -> Limiter:
        return Pacer(limit)

    def submitter(
        self, request: Callable[..., Awaitable[FourKStatus]], *, owner: str, trust: bool
    ) -> Callable[..., Awaitable[FourKStatus]]:
        """The request itself: the registry already makes one stream per task, and no other
        process keeps results (no claim, no coroutine more per poll)."""
        return request


class ClaimedSubmit:
    """A wait's get-4k-video request, through the coordinator: a result already known costs
    nothing, and while another process holds the task's lease this one follows its outcome."""

    def __init__(
        self,
        coordinator: Coordinator,
        request: Callable[..., Awaitable[FourKStatus]],
        *,
        owner: str,
        trust_callback_urls: bool,
    ) -> None:
        self._coordinator = coordinator
        self._request = request
        self._owner = owner  # this client's name on task leases (random, not a secret)
        self._trust = trust_callback_urls

    async def __call__(
        self,
        task_id: str,
        index: int,
        counter: Counter,
        on_retry: RetryHook | None,
        callback_url: str | None = None,
        attempts: int | None = None,
        ask: Ask | None = None,
    ) -> FourKStatus:
        """Claim, then send on ``ask``'s slot; when no request is needed the slot stays with
        the ask, and the wait hands it back to the limiter unused."""
        claim = await self._coordinator.claim(task_id, index, self._owner)
        if claim.result is not None:
            return claim.result
        early = claim.early
        if early is not None and early.ok and self._trust and early.index == index:
            return CallbackStatus(
                task_id=task_id, index=index, ready=True, result_urls=early.result_urls,
                image_urls=early.image_urls, msg=early.msg, code=early.code,
            )  # fmt: skip
        if not claim.granted:
            return FourKStatus(
                task_id=task_id, index=index, ready=False, msg="another process polls this task"
            )
        status = await self._request(
            task_id, index, counter, on_retry, callback_url, attempts, ask=ask
        )
        if status.ready:
            await self._coordinator.publish_result(status, self._owner)
        return status
