"""The wait loop: submit once, then poll on the policy's schedule until the 4K is ready.

One :class:`SharedWait` runs per (task id, index) and client; every concurrent waiter on the
same pair subscribes to it, so a second ``wait_for_4k`` never sends a second submission. Each
:class:`Subscription` has its own deadline; the loop keeps one timer for the earliest, ends the
subscriptions whose deadline passed, and stops when none is left.

A transient failure (connection, timeout, 408, rate-type 429, 455, 5xx, an HTML page from the
edge) never ends a wait: the loop retries it on the :class:`RetryPolicy` backoff (each sleep
capped, ``Retry-After`` and maintenance waits cut to ``max_retry_after``), emitting RETRYING
with the error, until the deadline; then :class:`WaitTimeoutError` carries the last transient
error as ``__cause__``. Only a final answer ends a wait early. Before a deadline the loop makes
one last check, ``last_look_lead()`` ahead of it, if its schedule would otherwise sleep through.

The loop holds no task while it sleeps: each request is a short *step* task, and between steps
the wait is this object and one timer handle. A waiter costs a small object and a future (or a
plain callback in a batch). Few live objects per wait is what keeps 10,000 waits cheap, in
memory and in garbage-collection pauses.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
from collections.abc import Awaitable, Callable, Iterator

from ._config import PollPolicy, RetryPolicy
from ._errors import SourceNotReadyError, SourceTaskFailedError, Veo4kError, WaitTimeoutError
from ._listeners import Listener, ListenerHub
from ._models import FourKResult, FourKStatus, TaskRecord, WaitEvent, WaitState
from ._transport import Counter, retry_delay
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

LAST_LOOK_LEAD = 1.0
"""Seconds before a deadline at which the last check goes out (a tenth of short timeouts)."""


def last_look_lead(timeout: float) -> float:
    """How long before a deadline of a ``timeout``-second wait its last check is sent."""
    return min(LAST_LOOK_LEAD, timeout / 10)


OnEnd = Callable[["SharedWait", FourKResult | None, BaseException | None], None]
"""A batch's end-of-wait callback: the wait, and its result or error."""


class Subscription:
    """One waiter on a :class:`SharedWait`: its deadline and where the outcome goes."""

    __slots__ = ("deadline", "listener", "target", "timeout")

    def __init__(
        self,
        target: asyncio.Future[FourKResult] | OnEnd,
        *,
        deadline: float,
        timeout: float,
        listener: Listener | None,
    ) -> None:
        self.target = target
        self.deadline = deadline
        self.timeout = timeout
        self.listener = listener

    def resolve(
        self, wait: SharedWait, result: FourKResult | None, error: BaseException | None
    ) -> None:
        """Deliver the outcome (once; a finished future is left alone)."""
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


CONFIRM_BACKOFF = (2.0, 4.0, 8.0, 16.0, 32.0)
"""After a callback, a confirming poll that still says "processing" is retried this soon (s)
before the wait falls back to its policy: the status endpoint may lag the callback."""

Submit = Callable[..., Awaitable[FourKStatus]]
GetRecord = Callable[..., Awaitable[TaskRecord]]


class SharedWait:
    """One poll loop for a task and index, and the subscribers listening to it."""

    __slots__ = (
        "_alarm",
        "_caps",
        "_confirming",
        "_context",
        "_delays",
        "_first",
        "_get_record",
        "_hub",
        "_launch",
        "_looked_for",
        "_on_end",
        "_pending",
        "_phase",
        "_retry",
        "_rng",
        "_stop_error",
        "_stopping",
        "_submit",
        "_timer",
        "_via_callback",
        "counter",
        "done",
        "fourk_task_id",
        "index",
        "last_error",
        "last_state",
        "policy",
        "started",
        "step",
        "subscribers",
        "task_id",
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
        launch: Callable[[SharedWait], None],
        phase: float | None = None,
        retry: RetryPolicy | None = None,
        hub: ListenerHub | None = None,
    ) -> None:
        self.task_id = task_id
        self.index = index
        self.policy = policy
        self.counter = Counter()
        self.started = now
        self.subscribers: list[Subscription] = []
        self.last_state = ""
        self.last_error: Veo4kError | None = None
        """The transient failure of the latest request, None once a request succeeds."""
        self.fourk_task_id: str | None = None
        self.done = False
        self.step: asyncio.Task[None] | None = None
        """The request in flight, if any (named ``veo4k-wait-<task>-<index>``)."""
        self._rng = rng
        self._retry = retry or RetryPolicy()
        self._caps: Iterator[float] | None = None
        self._hub = hub or ListenerHub()
        self._looked_for = -1.0  # the deadline whose last check was already scheduled
        self._phase = phase
        self._submit = submit
        self._get_record = get_record
        self._on_end = on_end
        # Called when a request is due; it calls begin_step() now or when a slot frees up.
        self._launch = launch
        self._delays: Iterator[float] | None = None
        self._confirming: Iterator[float] | None = None
        self._first = True
        self._via_callback = False
        self._pending: _Signal | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._alarm: asyncio.TimerHandle | None = None
        self._stop_error: BaseException | None = None
        self._stopping = False
        # The starting waiter's context, shared by every timer and step of this loop (one copy,
        # not one per handle), so on_update listeners see the caller's context variables.
        self._context = contextvars.copy_context()

    def elapsed(self) -> float:
        """Seconds since this loop started."""
        return asyncio.get_running_loop().time() - self.started

    # -- subscriptions -------------------------------------------------------------------

    def subscribe(self, sub: Subscription) -> None:
        """Add a waiter; its deadline is kept by the loop's alarm."""
        self.subscribers.append(sub)
        if self._alarm is None or sub.deadline < self._alarm.when():
            self._set_alarm()

    def unsubscribe(self, sub: Subscription) -> None:
        """Remove a waiter (no-op if already gone); stop the loop when none is left."""
        try:
            self.subscribers.remove(sub)
        except ValueError:
            return
        if not self.subscribers:
            self.stop()

    def _set_alarm(self) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
        if self.subscribers and not self.done:
            when = min(s.deadline for s in self.subscribers)
            loop = asyncio.get_running_loop()
            self._alarm = loop.call_at(when, self._on_alarm, context=self._context)

    def _on_alarm(self) -> None:
        self._alarm = None
        now = asyncio.get_running_loop().time()
        expired = [s for s in self.subscribers if s.deadline <= now]
        self.subscribers = [s for s in self.subscribers if s.deadline > now]
        for sub in expired:
            sub.resolve(self, None, self.timeout_error(sub.timeout))
        if self.subscribers:
            self._set_alarm()
        else:
            self.stop()

    @property
    def stopping(self) -> bool:
        """Stopped or stopping: no new waiter may join this loop."""
        return self.done or self._stopping

    def stop(self, error: BaseException | None = None) -> None:
        """End the loop now; subscribers left get ``error`` (default: cancelled)."""
        if self.done:
            return
        self._stop_error, self._stopping = error, True
        if self.step is not None:
            self.step.cancel()  # _step_done finishes the wait
        else:
            self._finish(None, error or asyncio.CancelledError())

    def timeout_error(self, timeout: float) -> WaitTimeoutError:
        """The error for a deadline that passed, with what the loop had done by then; its
        ``__cause__`` is the transient failure the wait was riding out, if any."""
        error = WaitTimeoutError(
            self.task_id, self.index, timeout, self.counter.requests, self.last_state
        )
        error.__cause__ = self.last_error
        return error

    def _finish(self, result: FourKResult | None, error: BaseException | None) -> None:
        if self.done:
            return
        self.done = True
        for handle in (self._alarm, self._timer):
            if handle is not None:
                handle.cancel()
        self._alarm = self._timer = None
        subscribers, self.subscribers = self.subscribers, []
        for sub in subscribers:
            sub.resolve(self, result, error)
        self._on_end(self)

    # -- events and callbacks --------------------------------------------------------------

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

    def signal(self, *, ready: FourKStatus | None = None, error: Veo4kError | None = None) -> None:
        """A callback arrived: end the wait with ``ready`` or ``error``, or else poll now.

        A sleeping loop wakes at once; a request in flight sees the signal when it ends:
        nothing a callback says is lost.
        """
        if self.done:
            return
        self._pending = ("ready", ready) if ready else ("error", error) if error else ("poll", None)
        if self._timer is not None:
            self._timer.cancel()
            self._next_step()

    # -- the loop ----------------------------------------------------------------------------

    def start(self) -> None:
        """Send the first request now."""
        self._next_step()

    def _next_step(self) -> None:
        self._timer = None
        if not self.stopping:
            self._launch(self)

    def begin_step(self) -> None:
        """Send the next request now (called by the scheduler when a slot is free)."""
        if self.stopping or self.step is not None:
            return
        self.step = asyncio.get_running_loop().create_task(
            self._step(), name=f"veo4k-wait-{self.task_id}-{self.index}", context=self._context
        )
        self.step.add_done_callback(self._step_done, context=self._context)

    def _step_done(self, step: asyncio.Task[None]) -> None:
        self.step = None
        if step.cancelled() or self._stopping:  # a step may end before its cancel lands
            self._finish(None, self._stop_error or asyncio.CancelledError())
            return
        error = step.exception()
        if error is not None:  # a bug, not a Kie answer: hand it to the waiters as it is
            self._finish(None, error)

    async def _step(self) -> None:
        try:
            await self._attempt()
        except Veo4kError as exc:
            if is_transient(exc):
                self._retry_later(exc)
                return
            self.emit(WaitState.FAILED, msg=str(exc), error=exc)
            self._finish(None, exc)

    def _retry_later(self, exc: Veo4kError) -> None:
        """A transient failure: keep the wait going on the retry backoff, up to the deadline."""
        self.last_error = exc
        if self._caps is None:
            self._caps = self._retry.backoff_caps()
        # Full jitter under the RetryPolicy's cap, never above the poll policy's own longest
        # sleep (a fast policy stays fast); Retry-After and maintenance waits still apply.
        longest = self.policy.wait_max * (1.0 + self.policy.wait_jitter)
        delay = retry_delay(self._retry, self._rng, exc, min(next(self._caps), longest))
        delay = self._schedule(delay)
        self.emit(WaitState.RETRYING, next_delay=delay, msg=str(exc), error=exc)

    def _schedule(self, delay: float) -> float:
        """Set the timer for the next request; return the delay actually used.

        If the next request would come after the last-check point of the earliest deadline,
        it is moved there instead (once per deadline): one last look before timing out.
        """
        if self.done or self._stopping:
            return delay
        if self._pending is not None:
            delay = 0.0  # a callback came during the request: act on it now
        elif self.subscribers:
            first = min(self.subscribers, key=lambda s: s.deadline)
            now = asyncio.get_running_loop().time()
            look_at = first.deadline - last_look_lead(first.timeout)
            if now + delay > look_at and self._looked_for != first.deadline:
                self._looked_for = first.deadline
                if now < look_at:  # else the request that just ended was that last look
                    delay = look_at - now
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(delay, self._next_step, context=self._context)
        return delay

    async def _attempt(self) -> None:
        """One request (with its retries); then finish, or set the timer for the next one."""
        signal, self._pending = self._pending, None
        if signal is not None:
            kind, payload = signal
            if kind == "ready":
                assert isinstance(payload, FourKStatus)
                await self._complete(payload, via_callback=True)
                return
            if kind == "error":
                assert isinstance(payload, Veo4kError)
                raise payload
            self._via_callback = True  # "poll": a callback asked to confirm now
            self._confirming = iter(CONFIRM_BACKOFF)
        state = WaitState.SUBMITTED if self._first else WaitState.PROCESSING
        try:
            # The one place a poll step sends its request; transient failures come back here
            # at once (no retries inside): the loop retries them on its own schedule.
            status = await self._submit(self.task_id, self.index, self.counter, None)
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
                await self._complete(status, via_callback=self._via_callback)
                return
            msg = status.msg
            self._first = False
        self.last_error, self._caps = None, None  # Kie answered: the outage, if any, is over
        if self._delays is None:
            self._delays = self.policy.delays(self._rng, self._phase)
        delay = (next(self._confirming, None) if self._confirming else None) or next(self._delays)
        delay = self._schedule(delay)
        self.emit(state, next_delay=delay, msg=msg)

    async def _complete(self, status: FourKStatus, *, via_callback: bool) -> None:
        self.fourk_task_id = status.fourk_task_id or self.fourk_task_id
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


_Signal = tuple[str, FourKStatus | Veo4kError | None]
