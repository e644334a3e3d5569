"""The wait loop: submit once, then poll on the policy's schedule until the 4K is ready.

One :class:`SharedWait` runs per (task id, index) and client; every concurrent waiter on the
same pair subscribes to it, so a second ``wait_for_4k`` never sends a second submission. Each
:class:`Subscription` has its own deadline; the loop keeps one alarm for the earliest, ends the
subscriptions whose deadline passed, and stops when none is left.

A transient failure (connection, timeout, 408, rate-type 429, 455, 5xx, an HTML page from the
edge) never ends a wait: the loop retries it on the :class:`RetryPolicy` backoff (each sleep
capped, ``Retry-After`` and maintenance waits cut to ``max_retry_after``), emitting RETRYING
with the error, until the deadline; then :class:`WaitTimeoutError` carries the last transient
error as ``__cause__``. Only a final answer ends a wait early. Before a deadline the loop makes
one last check, ``last_look_lead()`` ahead of it, if its schedule would otherwise sleep through.

The loop's step is a small state machine, and each request asks the limiter for its slot
*before* it starts (the wait is its own entry in the schedule, see :mod:`veo4k._schedule`)::

    NEW --first waiter--> QUEUED --slot granted--> IN_FLIGHT --step ends--> SLEEPING --due--> QUEUED
    any state --result, final error, stop, deadline--> ENDED

A signal (a callback, a result another process saw, a lease handed over) is acted on in every
state: NEW keeps it for the first waiter; SLEEPING and QUEUED act at once (a result ends the
wait and frees its place, a "poll now" queues an urgent confirmation); IN_FLIGHT keeps it for
the end of the step, the only way out of IN_FLIGHT, which acts on it before anything else.
No interleaving of a signal and a step's end can leave the loop without a timer, a place in
the schedule or a request in flight.

The loop holds no task while it sleeps or queues: each request is a short *step* task, and
between steps the wait is this object and one timer handle (or one heap entry). Few live
objects per wait is what keeps 10,000 waits cheap, in memory and in garbage-collection pauses.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator

from ._config import PollPolicy, RetryPolicy
from ._errors import (
    FourKUnavailableError,
    RateLimitError,
    SourceNotReadyError,
    SourceTaskFailedError,
    Veo4kError,
)
from ._limiter import Limiter
from ._listeners import Listener, ListenerHub
from ._models import CallbackEvent, CallbackStatus, FourKResult, FourKStatus, TaskRecord, WaitState
from ._schedule import Lane
from ._subscriptions import Subscription, Waiters, last_look_lead
from ._transport import retry_delay
from ._wire import is_transient

__all__ = [
    "GetRecord",
    "Listener",
    "OnEnd",
    "SharedWait",
    "Submit",
    "Subscription",
    "last_look_lead",
]

log = logging.getLogger("veo4k")

OnEnd = Callable[["SharedWait", FourKResult | None, BaseException | None], None]
"""A batch's end-of-wait callback: the wait, and its result or error."""

CONFIRM_BACKOFF = (2.0, 4.0, 8.0, 16.0, 32.0)
"""After a callback, a confirming poll that still says "processing" is retried this soon (s)
before the wait falls back to its policy: the status endpoint may lag the callback."""

Submit = Callable[..., Awaitable[FourKStatus]]
GetRecord = Callable[..., Awaitable[TaskRecord]]

_NEW, _SLEEPING, _QUEUED, _IN_FLIGHT, _ENDED = range(5)

_Signal = tuple[str, FourKStatus | Veo4kError | None]


class SharedWait(Waiters):
    """One poll loop for a task and index, and the subscribers listening to it."""

    __slots__ = (
        "_caps",
        "_confirming",
        "_delays",
        "_first",
        "_get_record",
        "_looked_for",
        "_next_delay",
        "_next_urgent",
        "_on_end",
        "_pending",
        "_phase",
        "_retry",
        "_rng",
        "_state",
        "_stop_error",
        "_stopping",
        "_submit",
        "_submitting",
        "_timer",
        "_via_callback",
        "policy",
        "step",
    )

    def __init__(
        self,
        task_id: str,
        index: int,
        policy: PollPolicy,
        rng: random.Random,
        *,
        now: float,
        submit: Submit,
        get_record: GetRecord,
        on_end: Callable[[SharedWait], None],
        limiter: Limiter,
        phase: float | None = None,
        retry: RetryPolicy | None = None,
        hub: ListenerHub | None = None,
        basis: PollPolicy | None = None,
        early: CallbackEvent | None = None,
        trust_early: bool = False,
    ) -> None:
        super().__init__(task_id, index, now=now, limiter=limiter, basis=basis or policy, hub=hub)
        self.policy = policy
        self.step: asyncio.Task[None] | None = None
        """The request in flight, if any (named ``veo4k-wait-<task>-<index>``)."""
        self._rng = rng
        self._retry = retry or RetryPolicy()
        self._caps: Iterator[float] | None = None
        self._looked_for = -1.0  # the deadline whose last check was already scheduled
        self._phase = phase
        self._submit = submit
        self._get_record = get_record
        self._on_end = on_end
        self._delays: Iterator[float] | None = None
        self._confirming: Iterator[float] | None = None
        self._first = True  # no answer has said "processing" yet
        self._via_callback = False
        self._pending: _Signal | None = None
        self._state = _NEW
        self._next_delay = 0.0
        self._next_urgent = False
        self._timer: asyncio.TimerHandle | None = None
        self._stop_error: BaseException | None = None
        self._stopping = False
        self._submitting = False  # the request in flight is the wait's first (its submission)
        if early is not None:  # a callback that came before anyone waited: acted on first
            self.on_callback(early, trusted=trust_early)

    @property
    def done(self) -> bool:
        """The loop has ended."""
        return self._state == _ENDED

    @property
    def stopping(self) -> bool:
        """Stopped or stopping: no new waiter may join this loop."""
        return self._state == _ENDED or self._stopping

    # -- waiters and ending ------------------------------------------------------------------

    def _joined(self, sub: Subscription) -> None:
        """A waiter joined: the first starts the loop; a nearer deadline moves a queued
        request up, or a sleeping loop's next request to the new waiter's last check; one
        joining a queued submission hears that it queues."""
        if self._state == _NEW:
            self._begin()
        elif self._state == _QUEUED:
            self._rekey()
            queued = self.last_state.startswith(WaitState.QUEUED.value)
            if self._state == _QUEUED and queued and sub.listener is not None:
                self.emit(WaitState.QUEUED, msg=self._queued_msg(), only=sub.listener)
        elif self._state == _SLEEPING and self._timer is not None:
            look_at = sub.deadline - last_look_lead(sub.timeout)
            if self.submitted_at is not None and look_at < self._timer.when():
                self._timer.cancel()  # the loop would sleep through this waiter's deadline
                self._looked_for, self._next_urgent = sub.deadline, True
                loop = asyncio.get_running_loop()
                self._timer = loop.call_at(look_at, self._due, context=self._context)

    def stop(self, error: BaseException | None = None) -> None:
        """End the loop now; subscribers left get ``error`` (default: cancelled)."""
        if self._state == _ENDED:
            return
        self._stop_error, self._stopping = error, True
        if self.step is not None:
            self.step.cancel()  # _step_done finishes the wait
        else:
            self._finish(None, error or asyncio.CancelledError())

    def _finish(self, result: FourKResult | None, error: BaseException | None) -> None:
        if self._state == _ENDED:
            return
        self._state = _ENDED
        self._limiter.withdraw(self)
        self._paid_settled()
        for handle in (self._alarm, self._timer):
            if handle is not None:
                handle.cancel()
        self._alarm = self._timer = None
        subscribers, self.subscribers = self.subscribers, []
        for sub in subscribers:
            sub.resolve(self, result, error)
        self._on_end(self)

    def _queued_msg(self) -> str:
        ahead = len(self._limiter.schedule) - 1
        return f"waiting for the account's budget behind {ahead} request(s)"

    # -- events and signals ------------------------------------------------------------------

    def signal(self, *, ready: FourKStatus | None = None, error: Veo4kError | None = None) -> None:
        """A callback arrived: end the wait with ``ready`` or ``error``, or else poll now.

        Sleeping or queued, the loop acts at once; a request in flight (or a loop nobody has
        subscribed to yet) acts on it as soon as it can: nothing a callback says is lost.
        """
        if self._state == _ENDED:
            return
        signal: _Signal = (
            ("ready", ready) if ready else ("error", error) if error else ("poll", None)
        )
        if self._state in (_NEW, _IN_FLIGHT):
            if self._pending is None or signal[0] != "poll":  # a poll never hides a result
                self._pending = signal
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._limiter.withdraw(self)
        self._act(signal)

    def on_callback(self, event: CallbackEvent, *, trusted: bool) -> None:
        """A verified callback for this task: a trusted result ends the wait, anything else
        asks for a confirming poll (the body is not signed, only the task id and time are)."""
        if trusted and event.ok:
            ready = FourKStatus(
                task_id=event.task_id, index=self.index, ready=True,
                result_urls=event.result_urls, image_urls=event.image_urls, msg=event.msg,
                code=event.code,
            )  # fmt: skip
            self.signal(ready=ready)
        elif trusted and event.unavailable:
            self.signal(error=FourKUnavailableError(event.code, event.msg, event.task_id))
        else:
            self.signal()

    def _act(self, signal: _Signal) -> None:
        kind, payload = signal
        if kind == "ready":
            assert isinstance(payload, FourKStatus)
            self._complete(payload, via_callback=True)
        elif kind == "error":
            assert isinstance(payload, Veo4kError)
            self.emit(WaitState.FAILED, msg=str(payload), error=payload)
            self._finish(None, payload)
        else:  # a callback asks to confirm now
            self._via_callback = True
            self._confirming = iter(CONFIRM_BACKOFF)
            if self.submitted_at is None:  # Kie has run the task already: nothing to submit
                self._mark_submitted(asyncio.get_running_loop().time())
            self._queue(urgent=True)

    # -- the loop ----------------------------------------------------------------------------

    def _begin(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._state = _SLEEPING
            self._act(pending)
        else:
            self._queue(urgent=False)

    def _queue(self, *, urgent: bool) -> None:
        """Become a candidate for the next slot (SLEEPING or NEW -> QUEUED)."""
        self._timer = None
        if self.stopping:
            return
        self.due = asyncio.get_running_loop().time()
        if self.submitted_at is None:
            self.lane, self.urgent = Lane.SUBMIT, False
        else:
            self.lane, self.urgent = Lane.FOLLOW_UP, urgent
        self.latest = self._key()
        self._state = _QUEUED
        self._limiter.offer(self)  # may grant at once
        if self._state == _QUEUED and self.lane is Lane.SUBMIT:
            # Visible when at least a second's worth of requests is ahead, not for a tick.
            if len(self._limiter.schedule) - 1 >= self._limiter.pacer.rate:
                self.emit(WaitState.QUEUED, msg=self._queued_msg())
            self._set_alarm()  # admission may refuse it while it queues

    def granted(self, at: float) -> bool:
        """The schedule hands this wait a slot: start the step (QUEUED -> IN_FLIGHT)."""
        if self._state != _QUEUED or self._stopping:
            return False
        self.slot = at
        self._state = _IN_FLIGHT
        self._submitting = self.submitted_at is None
        if self._submitting:
            self._mark_submitted(at)
        self.step = asyncio.get_running_loop().create_task(
            self._step(), name=f"veo4k-wait-{self.task_id}-{self.index}", context=self._context
        )
        self.step.add_done_callback(self._step_done, context=self._context)
        return True

    def _step_done(self, step: asyncio.Task[None]) -> None:
        """The one way out of IN_FLIGHT: act on a signal that came meanwhile, else sleep."""
        self.step = None
        if self.slot is not None:  # granted, never sent (stopped first, or another process polls)
            granted, self.slot = self.slot, None
            self._limiter.unused(granted)
        if step.cancelled() or self._stopping:  # a step may end before its cancel lands
            self._finish(None, self._stop_error or asyncio.CancelledError())
            return
        error = step.exception()
        if error is not None:  # a bug, not a Kie answer: hand it to the waiters as it is
            self._finish(None, error)
            return
        if self._state == _ENDED:
            return
        pending, self._pending = self._pending, None
        self._state = _SLEEPING
        if pending is not None:
            self._act(pending)
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._next_delay, self._due, context=self._context)

    def _due(self) -> None:
        self._queue(urgent=self._next_urgent)

    async def _step(self) -> None:
        try:
            await self._attempt()
        except Veo4kError as exc:
            if is_transient(exc):
                self._retry_later(exc)
                return
            self.emit(WaitState.FAILED, msg=str(exc), error=exc)
            self._finish(None, exc)
        finally:
            self._submitting = False

    def _retry_later(self, exc: Veo4kError) -> None:
        """A transient failure: keep the wait going on the retry backoff, up to the deadline.

        A submission Kie answered 429 was rejected, not queued (``kie-api.md``): nothing was
        submitted, so the wait is a submission again (its place by deadline, admission, and a
        default timeout not started). Any other failure may have reached Kie: it counts.
        """
        self.last_error = exc
        if self._submitting and isinstance(exc, RateLimitError):
            self._unmark_submitted()
        if self._caps is None:
            self._caps = self._retry.backoff_caps()
        # Full jitter under the RetryPolicy's cap, never above the poll policy's own longest
        # sleep (a fast policy stays fast); Retry-After and maintenance waits still apply.
        longest = self.policy.wait_max * (1.0 + self.policy.wait_jitter)
        delay = retry_delay(self._retry, self._rng, exc, min(next(self._caps), longest))
        delay = self._plan(delay, urgent=False)
        self.emit(WaitState.RETRYING, next_delay=delay, msg=str(exc), error=exc)

    def _plan(self, delay: float, *, urgent: bool) -> float:
        """The sleep before the next request (and whether it is urgent).

        If the next request would come after the last-check point of the earliest deadline,
        it is moved there instead (once per deadline): one last look before timing out.
        """
        self._next_urgent = urgent
        if self.subscribers:
            first = min(self.subscribers, key=lambda s: s.deadline)
            now = asyncio.get_running_loop().time()
            look_at = first.deadline - last_look_lead(first.timeout)
            if now + delay > look_at and self._looked_for != first.deadline:
                self._looked_for = first.deadline
                if now < look_at:  # else the request that just ended was that last look
                    delay = look_at - now
                    self._next_urgent = True
        self._next_delay = delay
        return delay

    async def _attempt(self) -> None:
        """One request (and a record-info check if Kie says the source is not done)."""
        state = WaitState.SUBMITTED if self._first else WaitState.PROCESSING
        try:
            # The one place a poll step sends its request (on the slot granted to this wait);
            # transient failures come back here at once: the loop retries on its own schedule.
            status = await self._submit(self.task_id, self.index, self.counter, None, ask=self)
        except SourceNotReadyError as exc:
            record = await self._get_record(self.task_id, self.counter, None)
            if record.failed:
                raise SourceTaskFailedError(
                    self.task_id, record.success_flag, record.error_code, record.error_message
                ) from exc
            state, msg = WaitState.SOURCE_PENDING, exc.msg
        else:
            self.fourk_task_id = status.fourk_task_id or self.fourk_task_id
            if status.ready:
                via_callback = self._via_callback or isinstance(status, CallbackStatus)
                self._complete(status, via_callback=via_callback)
                return
            msg = status.msg
            self._first = False
        self.last_error, self._caps = None, None  # Kie answered: the outage, if any, is over
        if self._delays is None:
            self._delays = self.policy.delays(self._rng, self._phase)
        confirm = next(self._confirming, None) if self._confirming else None
        delay = self._plan(confirm or next(self._delays), urgent=confirm is not None)
        self.emit(state, next_delay=delay, msg=msg)

    def _complete(self, status: FourKStatus, *, via_callback: bool) -> None:
        self.fourk_task_id = status.fourk_task_id or self.fourk_task_id
        if not self._first and self.submitted_at is not None:  # this client saw it processing
            loop = asyncio.get_running_loop()
            self._limiter.schedule.admission.observe(loop.time() - self.submitted_at)
        self.emit(WaitState.READY, msg=status.msg)
        result = FourKResult(
            task_id=self.task_id,
            index=self.index,
            result_urls=status.result_urls,
            image_urls=status.image_urls,
            requests=self.counter.requests,
            elapsed=self.elapsed(),
            via_callback=via_callback,
            fourk_task_id=self.fourk_task_id,
        )
        self._finish(result, None)
