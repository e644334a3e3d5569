"""The shared poll loops of one client, keyed by (task id, index), and the callbacks routed
to them.

A wait joins the loop of its task and index (making it if needed; its first subscriber starts
it) and leaves it when done; the last one to leave stops it. Each new loop takes the next point
of a golden-ratio sequence as the phase of its first-delay jitter, so a batch started together
polls evenly spread. Loops ask the client's limiter for their slots themselves: the registry
only finds, signals and forgets them.
"""

from __future__ import annotations

import asyncio
import functools
import random
import weakref
from collections.abc import Callable, Iterable

from ._config import PollPolicy, RetryPolicy
from ._errors import ClientStateError
from ._limiter import Limiter
from ._listeners import ListenerHub
from ._models import CallbackEvent, FourKStatus
from ._poll import GetRecord, SharedWait, Submit
from ._subscriptions import Subscription

__all__ = ["WaitRegistry", "settle"]

_GOLDEN = 0.6180339887498949  # additive recurrence step: the most even spread of first polls


class WaitRegistry:
    """Starts, shares and stops the poll loops of one client."""

    def __init__(
        self,
        *,
        submit: Submit,
        get_record: GetRecord,
        limiter: Limiter,
        rng: random.Random,
        trust_callback_urls: bool,
        retry: RetryPolicy | None = None,
        on_forget: Callable[[str, int], None] | None = None,
        recent: Callable[[str], CallbackEvent | None] | None = None,
    ) -> None:
        # One try per step: a wait rides out transient failures on its own schedule, up to its
        # deadline, rather than giving up after RetryPolicy.attempts.
        self._submit: Submit = functools.partial(submit, attempts=1)
        self._get_record: GetRecord = functools.partial(get_record, attempts=1)
        self._retry = retry or RetryPolicy()
        self.listeners = ListenerHub()
        """Runs the async on_update listeners of every wait of this client."""
        self._rng = rng
        self._trust = trust_callback_urls
        self._waits: dict[tuple[str, int], SharedWait] = {}
        self._by_task: dict[str, list[SharedWait]] = {}
        self._phase = rng.random()  # where this client's low-discrepancy sequence starts
        self.closing = False
        self._limiter = limiter
        self._on_forget = on_forget  # the coordinator frees the task's lease
        self._recent = recent  # the receiver's callbacks that came before anyone waited
        self._used: weakref.WeakValueDictionary[str, CallbackEvent] = (
            weakref.WeakValueDictionary()
        )  # the last callback per task that reached a wait here

    def __len__(self) -> int:
        return len(self._waits)

    def join(
        self,
        task_id: str,
        index: int,
        policy: PollPolicy,
        callback_url: str | None,
        *,
        basis: PollPolicy | None = None,
    ) -> SharedWait:
        """The loop for ``(task_id, index)``, made now if there is none (subscribe to it: the
        first waiter starts it).

        A callback that came before anyone waited (``recent``) is handed to a new loop, which
        acts on it first. ``basis`` is the policy an upscale's duration is estimated from
        (default: ``policy``).
        """
        key = (task_id, index)
        shared = self._waits.get(key)
        if shared is not None and not shared.stopping:
            return shared
        if shared is not None:  # its last waiter just left: it is being stopped, start afresh
            self._forget(shared)
        loop = asyncio.get_running_loop()
        self._phase = (self._phase + _GOLDEN) % 1.0
        submit = (
            functools.partial(self._submit, callback_url=callback_url)
            if callback_url
            else self._submit
        )
        early = self._recent(task_id) if self._recent is not None else None
        # A kept callback that already reached a wait here may be another index's (Kie names
        # none): a hint to confirm, never URLs to trust for this one.
        used = early is not None and self._used.get(task_id) is early
        trust_early = self._trusted(task_id, joining=True) and not used
        shared = SharedWait(
            task_id, index, policy, self._rng, now=loop.time(), phase=self._phase,
            submit=submit, get_record=self._get_record, on_end=self._forget,
            limiter=self._limiter, retry=self._retry, hub=self.listeners, basis=basis,
            early=early, trust_early=trust_early,
        )  # fmt: skip
        self._waits[key] = shared
        self._by_task.setdefault(task_id, []).append(shared)
        return shared

    @staticmethod
    async def leave(shared: SharedWait, sub: Subscription) -> None:
        """Remove a waiter; if it was the last, stop the loop and let its request end."""
        shared.unsubscribe(sub)
        await settle([shared])

    async def close(self) -> None:
        """Stop every loop; their waiters get :class:`ClientStateError`."""
        self.closing = True
        waits = list(self._waits.values())
        for shared in waits:
            shared.stop(ClientStateError("the client was closed while this wait ran"))
        await settle(waits)
        await self.listeners.close()
        self._waits.clear()
        self._by_task.clear()

    def on_callback(self, event: CallbackEvent) -> None:
        """Route a verified callback to the loops of its task (of its index, when known)."""
        alone = self._trusted(event.task_id)
        if event.task_id in self._by_task:
            self._used[event.task_id] = event  # held as long as the receiver keeps it
        for shared in list(self._by_task.get(event.task_id, ())):
            if event.index is None:  # Kie names no index: trusted only with one index waiting
                shared.on_callback(event, trusted=alone)
            elif event.index == shared.index:
                shared.on_callback(event, trusted=self._trust)

    def on_result(self, status: FourKStatus) -> None:
        """A ready result seen by a poll elsewhere (another process): end its wait here."""
        shared = self._waits.get((status.task_id, status.index))
        if shared is not None:
            shared.signal(ready=status)

    def _trusted(self, task_id: str, *, joining: bool = False) -> bool:
        # A callback of unknown index is trusted only with one index of its task waiting
        # here; else it is always confirmed by a poll.
        waiting = len(self._by_task.get(task_id, ())) + joining
        return self._trust and waiting == 1

    def _forget(self, shared: SharedWait) -> None:
        key = (shared.task_id, shared.index)
        if self._waits.get(key) is shared:
            del self._waits[key]
            if self._on_forget is not None:
                self._on_forget(shared.task_id, shared.index)
        siblings = self._by_task.get(shared.task_id)
        if siblings is not None and shared in siblings:
            siblings.remove(shared)
            if not siblings:
                del self._by_task[shared.task_id]


async def settle(waits: Iterable[SharedWait]) -> None:
    """Wait until the requests of stopped loops have ended (so no task outlives its wait)."""
    steps = [w.step for w in waits if w.stopping and w.step is not None]
    if steps:
        await asyncio.wait(steps)
