"""Many waits at once: outcomes in completion order, or results in input order.

The client checks the arguments and plans the policy; these functions only join the waits,
collect their ends from one queue and leave cleanly (no wait outlives its batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Sequence

from ._config import PollPolicy
from ._errors import NotSubmittedError, Veo4kError, WaitTimeoutError
from ._models import FourKResult, Outcome, WaitState
from ._poll import Listener, SharedWait
from ._subscriptions import Subscription
from ._waits import settle

__all__ = ["collect", "outcomes"]

log = logging.getLogger("veo4k")

START_CHUNK = 200  # waits a batch starts per event-loop pass


async def outcomes(
    join: Callable[[str, int], SharedWait],
    pairs: Sequence[tuple[str, int]],
    *,
    timeout: float | None,
    policy: PollPolicy,
    on_update: Listener | None,
) -> AsyncGenerator[Outcome, None]:
    """Join a wait per pair and yield each outcome as soon as it is known; leaving early
    unsubscribes (stopping waits nobody else shares). An explicit ``timeout`` is one deadline
    for all; else each task's policy timeout counts from its own submission.

    When the deadline cannot fit every task (some are not submitted, so no credits are spent
    on them), one warning says so for the batch, not one per task."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Queue[tuple[SharedWait, FourKResult | None, BaseException | None]]
    ended = asyncio.Queue()

    def on_end(shared: SharedWait, result: FourKResult | None, error: BaseException | None) -> None:
        ended.put_nowait((shared, result, error))

    joined: list[tuple[SharedWait, Subscription]] = []
    warned = False
    try:
        since = loop.time()
        limit = policy.timeout if timeout is None else timeout
        for n, (task_id, index) in enumerate(pairs, 1):
            shared = join(task_id, index)
            sub = Subscription(
                on_end, timeout=limit, listener=on_update, since=since,
                explicit=timeout is not None, queue_timeout=policy.queue_timeout,
            )  # fmt: skip
            shared.subscribe(sub)
            joined.append((shared, sub))
            if n % START_CHUNK == 0:
                await asyncio.sleep(0)  # let started waits run: no 10,000-step loop pass
        for _ in pairs:
            shared, result, error = await ended.get()
            if isinstance(error, asyncio.CancelledError):
                raise error
            if error is not None and not isinstance(error, Veo4kError):
                raise error  # a bug, not an outcome: let it surface
            if isinstance(error, NotSubmittedError) and not warned:
                warned = True
                log.warning(
                    "the deadline of this batch of %d tasks cannot fit them all at the "
                    "account's rate: tasks that could no longer finish in time are not "
                    "submitted (NotSubmittedError, no credits spent); the first refused: %s",
                    len(pairs), shared.task_id,
                )  # fmt: skip
            if isinstance(error, WaitTimeoutError) and on_update is not None:
                shared.emit(WaitState.FAILED, msg=str(error), error=error, only=on_update)
            yield Outcome(task_id=shared.task_id, index=shared.index, result=result, error=error)
    finally:
        for shared, sub in joined:
            shared.unsubscribe(sub)
        await settle(shared for shared, _ in joined)


async def collect(
    stream: AsyncGenerator[Outcome, None],
    pairs: Sequence[tuple[str, int]],
    *,
    return_exceptions: bool,
) -> list[FourKResult | Veo4kError]:
    """The outcomes of ``stream`` in the order of ``pairs``; the first error raised unless
    ``return_exceptions`` (leaving the stream stops the other waits)."""
    results: dict[tuple[str, int], FourKResult | Veo4kError] = {}
    async with contextlib.aclosing(stream):
        async for outcome in stream:
            if outcome.error is not None and not return_exceptions:
                raise outcome.error
            value = outcome.result if outcome.result is not None else outcome.error
            assert value is not None
            results[(outcome.task_id, outcome.index)] = value
    return [results[pair] for pair in pairs]
