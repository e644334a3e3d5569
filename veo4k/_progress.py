"""Batch progress from ``on_update`` events: counts a progress bar can show."""

from __future__ import annotations

import attrs

from ._models import WaitEvent, WaitState

__all__ = ["BatchProgress", "ProgressCounts"]

_WAITING = frozenset(
    {WaitState.SUBMITTED, WaitState.PROCESSING, WaitState.RETRYING, WaitState.SOURCE_PENDING}
)


@attrs.frozen
class ProgressCounts:
    """A snapshot: ``submitted`` counts tasks Kie accepted at least once (cumulative);
    ``queued`` the tasks waiting for the account's budget, not submitted yet."""

    total: int
    submitted: int
    processing: int
    done: int
    failed: int
    queued: int = 0

    @property
    def finished(self) -> int:
        """Tasks that ended, either way."""
        return self.done + self.failed


class BatchProgress:
    """Pass as ``on_update`` to a batch; read :meth:`counts` to draw progress.

    >>> progress = veo4k.BatchProgress(total=len(task_ids))
    >>> async for outcome in client.as_completed(task_ids, on_update=progress):
    ...     print(progress.counts())
    """

    def __init__(self, total: int = 0) -> None:
        self.total = total
        self._state: dict[tuple[str, int], WaitState] = {}
        self._submitted: set[tuple[str, int]] = set()

    def __call__(self, event: WaitEvent) -> None:
        key = (event.task_id, event.index)
        previous = self._state.get(key)
        if previous in (WaitState.READY, WaitState.FAILED):
            return  # a task's end is final; a late event of a shared loop changes nothing
        self._state[key] = event.state
        if event.state in (WaitState.SUBMITTED, WaitState.PROCESSING, WaitState.READY):
            self._submitted.add(key)

    def counts(self) -> ProgressCounts:
        """The current counts."""
        states = list(self._state.values())
        return ProgressCounts(
            total=max(self.total, len(states)),
            submitted=len(self._submitted),
            processing=sum(s in _WAITING for s in states),
            done=states.count(WaitState.READY),
            failed=states.count(WaitState.FAILED),
            queued=states.count(WaitState.QUEUED),
        )
