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
from types import TracebackType
from typing import Protocol, Self

import attrs

from ._callbacks import CallbackEvent
from ._config import RateLimit
from ._limiter import Limiter, Pacer
from ._models import FourKStatus

__all__ = ["Claim", "Coordinator", "Limiter", "LocalCoordinator", "OutcomeSink"]


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
    """A callback for the task that arrived before this wait (in any process)."""


class Coordinator(abc.ABC):
    """Rate slots, outcomes and leases for the clients (and receivers) that share it.

    Closing a client never closes a coordinator it did not create; close yours with
    :meth:`aclose` (or ``async with``) after the clients using it.
    """

    def __init__(self) -> None:
        self._sinks: list[OutcomeSink] = []

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
