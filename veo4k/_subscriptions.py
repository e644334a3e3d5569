"""The waiters of a poll loop: where each outcome goes, and when each gives up.

Two kinds of deadline. An explicit ``timeout=`` on a call is a hard bound on the whole call,
queueing for the account's budget included: ``deadline`` is fixed when the call starts. The
policy's default timeout counts from the submission (the wait's first request): until then
the waiter is bounded by the policy's ``queue_timeout`` instead, and once the task is submitted
its deadline moves to the submission (or the call, if it joined later) plus ``timeout``.

:class:`Waiters` is the part of a poll loop that keeps them: one alarm for the earliest end,
and the admission of its submission (a loop nobody can use any more is not submitted).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
from collections.abc import Callable
from typing import Any

from ._admission import Admission
from ._config import PollPolicy
from ._errors import NotSubmittedError, Veo4kError, WaitTimeoutError
from ._limiter import Limiter
from ._listeners import Listener, ListenerHub
from ._models import FourKResult, WaitEvent, WaitState
from ._schedule import Ask, Lane
from ._transport import Counter

__all__ = ["LAST_LOOK_LEAD", "Subscription", "Waiters", "last_look_lead"]

LAST_LOOK_LEAD = 1.0
"""Seconds before a deadline at which the last check goes out (a tenth of short timeouts)."""


def last_look_lead(timeout: float) -> float:
    """How long before a deadline of a ``timeout``-second wait its last check is sent."""
    return min(LAST_LOOK_LEAD, timeout / 10)


class Subscription:
    """One waiter on a :class:`SharedWait`: its deadline and where the outcome goes."""

    __slots__ = (
        "deadline", "explicit", "listener", "queue_timeout", "short", "since", "target", "timeout",
    )  # fmt: skip

    def __init__(
        self,
        target: asyncio.Future[FourKResult] | Callable[[Any, Any, Any], None],
        *,
        timeout: float,
        listener: Listener | None,
        since: float,
        explicit: bool = True,
        queue_timeout: float = 86_400.0,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.listener = listener
        self.since = since
        """Loop time of the call."""
        self.explicit = explicit
        """True: ``timeout`` bounds the whole call; False: it counts from the submission."""
        self.queue_timeout = queue_timeout
        self.deadline = since + (timeout if explicit else queue_timeout)
        """When this waiter gives up (for a default timeout: its queue bound, until the task
        is submitted)."""
        self.short = False
        """Its timeout was shorter than an upscale when it subscribed: the caller's choice (the
        4K may be done already), so admission always sends its submission."""

    def submitted(self, at: float) -> None:
        """The task was submitted at ``at``: a default timeout starts counting now."""
        if not self.explicit:
            self.deadline = max(self.since, at) + self.timeout

    def unsubmitted(self) -> None:
        """The submission was rejected after all: a default timeout has not started."""
        if not self.explicit:
            self.deadline = self.since + self.queue_timeout

    def expired(
        self, wait: Waiters, *, submitted: bool, reason: str | None = None
    ) -> WaitTimeoutError:
        """The error for this waiter's end: not submitted (no credits spent; ``reason`` says
        why, default: its deadline or queue bound), or not ready in time; either way with the
        transient failure the wait was riding out (e.g. Kie's 429s) as ``__cause__``."""
        error: WaitTimeoutError
        if not submitted:
            if reason is None and self.explicit:
                reason = f"its deadline (timeout={self.timeout:g} s) came while it queued"
            elif reason is None:
                reason = f"it queued longer than queue_timeout={self.queue_timeout:g} s"
            error = NotSubmittedError(
                wait.task_id, wait.index, self.timeout, wait.counter.requests, wait.last_state,
                reason=reason if "budget" in reason else reason + " for the account's budget",
            )  # fmt: skip
        else:
            error = WaitTimeoutError(
                wait.task_id, wait.index, self.timeout, wait.counter.requests, wait.last_state
            )
        error.__cause__ = wait.last_error
        return error

    def resolve(self, wait: Any, result: FourKResult | None, error: BaseException | None) -> None:
        """Deliver the outcome (once; a finished future is left alone); a batch's callback
        also gets the wait it came from."""
        target = self.target
        if isinstance(target, asyncio.Future):
            if target.done():
                return
            if isinstance(error, asyncio.CancelledError):
                target.cancel()
            elif error is not None:
                target.set_exception(error)
            else:
                target.set_result(result)  # type: ignore[arg-type]
        else:
            target(wait, result, error)


class Waiters(Ask):
    """A poll loop's waiters and their deadlines, and the admission of its submission.

    The loop (:class:`~veo4k._poll.SharedWait`) is its own ask in the schedule; this part
    keeps the subscriptions, one alarm for the earliest end, and answers the schedule's
    "may this submission still be sent?". The loop provides ``done``, ``stop``, ``_finish``
    and ``_joined`` (what a new waiter changes in the loop).
    """

    __slots__ = (
        "_alarm",
        "_context",
        "_hub",
        "_limiter",
        "basis",
        "counter",
        "fourk_task_id",
        "index",
        "last_error",
        "last_state",
        "started",
        "submitted_at",
        "subscribers",
        "task_id",
    )

    def __init__(
        self,
        task_id: str,
        index: int,
        *,
        now: float,
        limiter: Limiter,
        basis: PollPolicy,
        hub: ListenerHub | None,
    ) -> None:
        super().__init__(Lane.SUBMIT, urgent=False, due=now)
        self.task_id = task_id
        self.index = index
        self.counter = Counter()
        self.started = now
        self.last_state = ""
        self.last_error: Veo4kError | None = None
        """The transient failure of the latest request, None once a request succeeds."""
        self.fourk_task_id: str | None = None
        self.subscribers: list[Subscription] = []
        self.submitted_at: float | None = None
        """Loop time of the first request's slot: default timeouts count from here."""
        self.basis = basis
        """The policy an upscale's duration is estimated from (admission): a callback wait's
        is the client's polling policy, not its sparse safety net."""
        self._limiter = limiter
        self._hub = hub or ListenerHub()
        self._alarm: asyncio.TimerHandle | None = None
        # The starting waiter's context, shared by every timer and step of this loop (one copy,
        # not one per handle), so on_update listeners see the caller's context variables.
        self._context = contextvars.copy_context()

    def elapsed(self) -> float:
        """Seconds since this loop started."""
        return asyncio.get_running_loop().time() - self.started

    @property
    def done(self) -> bool:
        """The loop has ended."""
        raise NotImplementedError

    def stop(self, error: BaseException | None = None) -> None:
        """End the loop now; subscribers left get ``error`` (default: cancelled)."""
        raise NotImplementedError

    def _finish(self, result: FourKResult | None, error: BaseException | None) -> None:
        raise NotImplementedError

    def _joined(self, sub: Subscription) -> None:
        raise NotImplementedError

    def _left(self) -> None:
        """A waiter left (or its deadline passed): a queued request no longer keeps the place
        that waiter's deadline gave it."""
        if self.queued:
            self._rekey()

    def _key(self) -> float:
        """A queued request's urgency from its waiters: a submission goes by the earliest
        deadline, a poll is released by the earliest last-check point."""
        if self.submitted_at is None:
            return min((s.deadline for s in self.subscribers), default=math.inf)
        return min(
            (s.deadline - last_look_lead(s.timeout) for s in self.subscribers),
            default=math.inf,
        )

    def _rekey(self) -> None:
        key = self._key()
        if key != self.latest:
            self.latest = key
            self._limiter.offer(self)  # its new place (and maybe its slot, at once)

    # -- waiters -----------------------------------------------------------------------------

    def emit(
        self,
        state: WaitState,
        *,
        next_delay: float | None = None,
        msg: str = "",
        error: Veo4kError | None = None,
        only: Listener | None = None,
    ) -> None:
        """Tell the listeners (or just ``only``) where the wait stands; never blocks on them."""
        self.last_state = f"{state.value}: {msg}" if msg else state.value
        if only is not None:
            targets = [only]
        else:
            targets = [s.listener for s in self.subscribers if s.listener is not None]
        if not targets:
            return
        event = WaitEvent(
            task_id=self.task_id,
            index=self.index,
            state=state,
            attempt=self.counter.requests,
            elapsed=self.elapsed(),
            next_delay=next_delay,
            msg=msg,
            error=error,
            fourk_task_id=self.fourk_task_id,
        )
        for listener in targets:
            self._hub.deliver(listener, event, self._context)

    def subscribe(self, sub: Subscription) -> None:
        """Add a waiter; the first one starts the loop (its deadline orders the submission)."""
        sub.short = sub.explicit and sub.timeout < self._estimate()  # judged once, as it came
        self.subscribers.append(sub)
        if self.submitted_at is not None:
            sub.submitted(self.submitted_at)
        self._joined(sub)
        self._set_alarm()

    def unsubscribe(self, sub: Subscription) -> None:
        """Remove a waiter (no-op if already gone); stop the loop when none is left."""
        try:
            self.subscribers.remove(sub)
        except ValueError:
            return
        if not self.subscribers:
            self.stop()
        elif not self.done:
            self._left()
            self._set_alarm()

    def _mark_submitted(self, at: float) -> None:
        """The first request got its slot at ``at``: default timeouts start counting."""
        self.submitted_at = at
        self._limiter.schedule.paid_open += 1
        for sub in self.subscribers:
            sub.submitted(at)
        self._set_alarm()

    def _paid_settled(self) -> None:
        """The loop ended: a submitted wait owes the account no more requests."""
        if self.submitted_at is not None:
            self._limiter.schedule.paid_open -= 1

    def _unmark_submitted(self) -> None:
        """Kie rejected the submission (429): nothing is submitted yet."""
        self.submitted_at = None
        self._limiter.schedule.paid_open -= 1
        for sub in self.subscribers:
            sub.unsubmitted()
        self._set_alarm()

    def _set_alarm(self) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
        if self.subscribers and not self.done:
            when = min(s.deadline for s in self.subscribers)
            if self.submitted_at is None and self.queued:
                when = min(when, Admission.refuse_at(self._needed(), self._bounds()))
            loop = asyncio.get_running_loop()
            self._alarm = loop.call_at(when, self._on_alarm, when, context=self._context)

    def _on_alarm(self, when: float) -> None:
        self._alarm = None
        now = max(asyncio.get_running_loop().time(), when)  # a timer may fire a hair early
        if self.submitted_at is None and self.queued and self._refuses(now):
            self._limiter.withdraw(self)
            self.refused()
            return
        expired = [s for s in self.subscribers if s.deadline <= now]
        self.subscribers = [s for s in self.subscribers if s.deadline > now]
        for sub in expired:
            sub.resolve(self, None, sub.expired(self, submitted=self.submitted_at is not None))
        if not self.subscribers:
            self.stop()
            return
        if expired:
            self._left()
        self._set_alarm()

    # -- admission ---------------------------------------------------------------------------

    def _estimate(self) -> float:
        return self._limiter.schedule.admission.estimate(self.basis)

    def _needed(self) -> float:
        """Seconds a submission sent now needs before its deadline: an upscale, and room in the
        account's budget for a request of every wait already paid for and one poll of its own
        (a batch with one deadline must not pay for tasks it will have no slot to poll)."""
        schedule = self._limiter.schedule
        return max(self._estimate(), (schedule.paid_open + 1) * schedule.slot_gap)

    def _bounds(self) -> list[float]:
        """The deadline of each waiter; empty (always of use) if any has a default timeout (it
        counts from the submission) or one shorter than an upscale from the start."""
        if any(not s.explicit or s.short for s in self.subscribers):
            return []
        return [s.deadline for s in self.subscribers]

    def _refuses(self, now: float) -> bool:
        return Admission.refuses(now, self._needed(), self._bounds())

    def admit(self, now: float, admission: Admission) -> bool:
        """The schedule asks before granting this submission its slot."""
        return not self._refuses(now)

    def refused(self) -> None:
        """Not submitted: what queueing left of every waiter's timeout cannot fit an upscale."""
        reason = (
            "what queueing for the account's budget left of its timeout cannot fit an "
            f"upscale (about {self._estimate():.0f} s)"
        )
        subscribers, self.subscribers = self.subscribers, []
        for sub in subscribers:
            sub.resolve(self, None, sub.expired(self, submitted=False, reason=reason))
        self._finish(None, None)  # nobody is left to tell
