"""Many waits at once: outcomes in completion order, or results in input order.

The client checks the arguments and plans the policy; these functions only join the waits,
collect their ends from one queue and leave cleanly (no wait outlives its batch).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Sequence

from ._errors import Veo4kError, WaitTimeoutError
from ._models import FourKResult, Outcome, WaitState
from ._poll import Listener, SharedWait, Subscription
from ._waits import settle

__all__ = ["collect", "outcomes"]

START_CHUNK = 200  # waits a batch starts per event-loop pass


async def outcomes(
    join: Callable[[str, int], SharedWait],
    pairs: Sequence[tuple[str, int]],
    *,
    limit: float,
    on_update: Listener | None,
) -> AsyncGenerator[Outcome, None]:
    """Join a wait per pair (one deadline for all, ``limit`` s away) and yield each outcome as
    soon as it is known; leaving early unsubscribes (stopping waits nobody else shares)."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Queue[tuple[SharedWait, FourKResult | None, BaseException | None]]
    ended = asyncio.Queue()

    def on_end(shared: SharedWait, result: FourKResult | None, error: BaseException | None) -> None:
        ended.put_nowait((shared, result, error))

    joined: list[tuple[SharedWait, Subscription]] = []
    try:
        deadline = loop.time() + limit
        for n, (task_id, index) in enumerate(pairs, 1):
            shared = join(task_id, index)
            sub = Subscription(on_end, deadline=deadline, timeout=limit, listener=on_update)
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
