"""The wait loop: submit once, then poll on the policy's schedule until the 4K is ready.

One :class:`SharedWait` runs per (task id, index) and client; every concurrent waiter on the
same pair subscribes to it, so a second ``wait_for_4k`` never sends a second submission. Each
:class:`Subscription` has its own deadline; the loop keeps one timer for the earliest, ends the
subscriptions whose deadline passed, and stops when none is left. A waiter thus costs a small
object and a future (or a plain callback in a batch), not a task and timers of its own: that is
what lets 10,000 waits share an event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Iterator

from ._config import PollPolicy
from ._errors import SourceNotReadyError, SourceTaskFailedError, Veo4kError, WaitTimeoutError
from ._models import FourKResult, FourKStatus, TaskRecord, WaitEvent, WaitState
from ._transport import Counter, RetryHook

__all__ = ["Listener", "OnEnd", "SharedWait", "Subscription"]

log = logging.getLogger("veo4k")

Listener = Callable[[WaitEvent], object]
"""An ``on_update`` callback: sync, or async (its awaitable is awaited)."""

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
            if error is not None:
                target.set_exception(error)
            else:
                target.set_result(result)  # type: ignore[arg-type]
        else:
            target(wait, result, error)


CONFIRM_BACKOFF = (2.0, 4.0, 8.0, 16.0, 32.0)
"""After a callback, a confirming poll that still says "processing" is retried this soon (s)
before the wait falls back to its policy: the status endpoint may lag the callback."""

Submit = Callable[[str, int, Counter, RetryHook], Awaitable[FourKStatus]]
GetRecord = Callable[[str, Counter, RetryHook], Awaitable[TaskRecord]]


class SharedWait:
    """One poll loop for a task and index, and the subscribers listening to it."""

    __slots__ = (
        "_alarm",
        "_pending",
        "_phase",
        "_rng",
        "_wakeup",
        "counter",
        "index",
        "last_state",
        "policy",
        "started",
        "subscribers",
        "task",
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
        phase: float | None = None,
    ) -> None:
        self.task_id = task_id
        self.index = index
        self.policy = policy
        self.counter = Counter()
        self.started = now
        self.subscribers: list[Subscription] = []
        self.last_state = ""
        self.task: asyncio.Task[FourKResult] | None = None
        self._rng = rng
        self._phase = phase
        self._wakeup: asyncio.Future[_Signal | None] | None = None
        self._pending: _Signal | None = None
        self._alarm: asyncio.TimerHandle | None = None

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
            self._stop()

    def _set_alarm(self) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
        if self.subscribers:
            when = min(s.deadline for s in self.subscribers)
            self._alarm = asyncio.get_running_loop().call_at(when, self._on_alarm)

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
            self._stop()

    def _stop(self) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def finish(self, closed_error: BaseException | None) -> None:
        """The loop's task ended: hand its outcome to every subscriber left."""
        task = self.task
        assert task is not None
        assert task.done()
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
        subscribers, self.subscribers = self.subscribers, []
        if task.cancelled():
            error: BaseException = closed_error or asyncio.CancelledError()
            for sub in subscribers:
                sub.resolve(self, None, error)
            return
        exc = task.exception()
        result = None if exc is not None else task.result()
        for sub in subscribers:
            sub.resolve(self, result, exc)

    def timeout_error(self, timeout: float) -> WaitTimeoutError:
        """The error for a deadline that passed, with what the loop had done by then."""
        return WaitTimeoutError(
            self.task_id, self.index, timeout, self.counter.requests, self.last_state
        )

    # -- the loop --------------------------------------------------------------------------

    async def emit(
        self,
        state: WaitState,
        *,
        next_delay: float | None = None,
        msg: str = "",
        error: Veo4kError | None = None,
        only: Listener | None = None,
    ) -> None:
        """Tell the listeners (or just ``only``) where the wait stands."""
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
        )
        for listener in targets:
            try:
                result = listener(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("on_update callback raised; the wait goes on")

    def signal(self, *, ready: FourKStatus | None = None, error: Veo4kError | None = None) -> None:
        """A callback arrived: end the wait with ``ready`` or ``error``, or else poll now.

        If the loop is not sleeping (a request is in flight, or it has not started), the
        signal waits for its next turn: nothing a callback says is lost.
        """
        signal: _Signal = (
            ("ready", ready) if ready else ("error", error) if error else ("poll", None)
        )
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(signal)
        else:
            self._pending = signal

    async def _sleep(self, delay: float) -> _Signal | None:
        if self._pending is not None:
            signal, self._pending = self._pending, None
            return signal
        loop = asyncio.get_running_loop()
        wakeup: asyncio.Future[_Signal | None] = loop.create_future()
        self._wakeup = wakeup
        handle = loop.call_later(delay, _resolve_none, wakeup)
        try:
            return await wakeup
        finally:
            handle.cancel()
            self._wakeup = None

    async def run(self, submit: Submit, get_record: GetRecord) -> FourKResult:
        """Submit, poll and return the result; raise the typed error that ends the wait."""
        try:
            return await self._run(submit, get_record)
        except Veo4kError as exc:
            await self.emit(WaitState.FAILED, msg=str(exc), error=exc)
            raise

    async def _on_retry(self, exc: Veo4kError, attempt: int, delay: float) -> None:
        await self.emit(WaitState.RETRYING, next_delay=delay, msg=str(exc), error=exc)

    async def _run(self, submit: Submit, get_record: GetRecord) -> FourKResult:
        delays = self.policy.delays(self._rng, self._phase)
        first, via_callback = True, False
        confirming: Iterator[float] = iter(())  # short waits while a callback's news lags
        signal, self._pending = self._pending, None
        while True:
            if signal is not None:
                kind, payload = signal
                if kind == "ready":
                    assert isinstance(payload, FourKStatus)
                    return await self._done(payload, via_callback=True)
                if kind == "error":
                    assert isinstance(payload, Veo4kError)
                    raise payload
                via_callback = True  # "poll": a callback asked to confirm now
                confirming = iter(CONFIRM_BACKOFF)
            state = WaitState.SUBMITTED if first else WaitState.PROCESSING
            try:
                status = await submit(self.task_id, self.index, self.counter, self._on_retry)
            except SourceNotReadyError as exc:
                record = await get_record(self.task_id, self.counter, self._on_retry)
                if record.failed:
                    raise SourceTaskFailedError(
                        self.task_id, record.success_flag, record.error_code, record.error_message
                    ) from exc
                state, msg = WaitState.SOURCE_PENDING, exc.msg
            else:
                if status.ready:
                    return await self._done(status, via_callback=via_callback)
                msg = status.msg
                first = False
            delay = next(confirming, None) or next(delays)
            await self.emit(state, next_delay=delay, msg=msg)
            signal = await self._sleep(delay)

    async def _done(self, status: FourKStatus, *, via_callback: bool) -> FourKResult:
        await self.emit(WaitState.READY, msg=status.msg)
        return FourKResult(
            task_id=self.task_id,
            index=self.index,
            result_urls=status.result_urls,
            image_urls=status.image_urls,
            requests=self.counter.requests,
            elapsed=self.elapsed(),
            via_callback=via_callback,
        )


_Signal = tuple[str, FourKStatus | Veo4kError | None]


def _resolve_none(fut: asyncio.Future[_Signal | None]) -> None:
    if not fut.done():
        fut.set_result(None)
