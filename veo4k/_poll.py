"""The wait loop: submit once, then poll on the policy's schedule until the 4K is ready.

One :class:`SharedWait` runs per (task id, index) and client; every concurrent waiter on the
same pair listens to it, so a second ``wait_for_4k`` never sends a second submission.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Awaitable, Callable

from ._config import PollPolicy
from ._errors import SourceNotReadyError, SourceTaskFailedError, Veo4kError
from ._models import FourKResult, FourKStatus, TaskRecord, WaitEvent, WaitState
from ._transport import Counter, RetryHook

__all__ = ["Listener", "SharedWait"]

log = logging.getLogger("veo4k")

Listener = Callable[[WaitEvent], object]
"""An ``on_update`` callback: sync, or async (its awaitable is awaited)."""

Submit = Callable[[Counter, RetryHook], Awaitable[FourKStatus]]
GetRecord = Callable[[Counter, RetryHook], Awaitable[TaskRecord]]


class SharedWait:
    """One poll loop for a task and index, and the waiters listening to it."""

    def __init__(
        self, task_id: str, index: int, policy: PollPolicy, rng: random.Random, now: float
    ) -> None:
        self.task_id = task_id
        self.index = index
        self.policy = policy
        self.counter = Counter()
        self.started = now
        self.listeners: list[Listener] = []
        self.waiters = 0
        self.last_state = ""
        self._rng = rng
        self._wakeup: asyncio.Future[FourKStatus] | None = None
        self.task: asyncio.Task[FourKResult] | None = None

    def elapsed(self) -> float:
        """Seconds since this loop started."""
        return asyncio.get_running_loop().time() - self.started

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
        self.last_state = f"{state.value}{': ' + msg if msg else ''}"
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
        for listener in [only] if only else list(self.listeners):
            try:
                result = listener(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("on_update callback raised; the wait goes on")

    def deliver(self, status: FourKStatus) -> bool:
        """End the current sleep early with a ready status (from a callback)."""
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(status)
            return True
        return False

    async def _sleep(self, delay: float) -> FourKStatus | None:
        loop = asyncio.get_running_loop()
        self._wakeup = loop.create_future()
        try:
            async with asyncio.timeout(delay):
                return await self._wakeup
        except TimeoutError:
            return None
        finally:
            self._wakeup = None

    async def run(self, submit: Submit, get_record: GetRecord) -> FourKResult:
        """Submit, poll and return the result; raise the typed error that ends the wait."""
        try:
            return await self._run(submit, get_record)
        except Veo4kError as exc:
            await self.emit(WaitState.FAILED, msg=str(exc), error=exc)
            raise

    async def _run(self, submit: Submit, get_record: GetRecord) -> FourKResult:
        delays = self.policy.delays(self._rng)
        first = True

        async def on_retry(exc: Veo4kError, attempt: int, delay: float) -> None:
            await self.emit(WaitState.RETRYING, next_delay=delay, msg=str(exc), error=exc)

        while True:
            state = WaitState.SUBMITTED if first else WaitState.PROCESSING
            try:
                status = await submit(self.counter, on_retry)
            except SourceNotReadyError as exc:
                record = await get_record(self.counter, on_retry)
                if record.failed:
                    raise SourceTaskFailedError(
                        self.task_id, record.success_flag, record.error_code, record.error_message
                    ) from exc
                state, msg = WaitState.SOURCE_PENDING, exc.msg
            else:
                if status.ready:
                    return await self._done(status, via_callback=False)
                msg = status.msg
                first = False
            delay = next(delays)
            await self.emit(state, next_delay=delay, msg=msg)
            woken = await self._sleep(delay)
            if woken is not None:
                return await self._done(woken, via_callback=True)

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
