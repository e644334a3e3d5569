"""Where a batch stands: each task's phase, the counts every display shows, and an ETA from
the account's rate.

A task of ``veo4k upscale`` is in one phase at a time::

    queued --Kie accepts it--> processing --4K ready--> downloading --> done
       |                           |                         |
       +----> not submitted        +-------> failed <--------+

``queued`` counts tasks not yet sent in this run; ``submitted`` counts the tasks Kie accepted
in this run (it only grows, as in :class:`veo4k.ProgressCounts`). A task that ends before
any wait (finished in an earlier run, replayed) goes straight to done or failed.

The ETA is for the last 4K to be ready (downloads come on top). At the account's current rate
``r`` (the pacer's, lowered after a 429), with ``q`` tasks queued and ``p`` processing, the
batch still needs about one submission and one poll per queued task and one poll per
processing task: ``(2q + p) / r`` seconds; and the last submission, ``q / r`` from now, still
needs an upscale ``U``. So::

    eta = max((2q + p) / r, q / r + U)          (q = 0: U minus the age of the last submission)

(the bound ``benchmarks/batch.py`` measures a batch against), plus, under ``--concurrency C``,
``q / C * U + U`` (each of the C places frees once per upscale). ``U`` is the policy's own
guess, ``2 * first_delay + wait_initial`` (Kie's 10 minutes and one poll with the defaults),
or longer when this run saw upscales take longer: the 90th percentile of how long tasks were
still processing (a lower bound of their upscale, which held-back polls do not inflate).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import math
from collections.abc import Callable, Iterable

import attrs

from .._config import PollPolicy
from .._models import WaitEvent, WaitState

__all__ = ["BatchStatus", "Phase", "Tally"]

LEARN_AFTER = 10
"""Upscales seen still processing before they can lengthen the policy's guess."""
LEARN_WINDOW = 200


class Phase(enum.IntEnum):
    """Where one task of the batch stands."""

    QUEUED = 0
    PROCESSING = 1
    DOWNLOADING = 2
    DONE = 3
    FAILED = 4
    NOT_SUBMITTED = 5


_ACCEPTED = frozenset({WaitState.SUBMITTED, WaitState.PROCESSING, WaitState.SOURCE_PENDING})
_ENDED = {
    "downloaded": Phase.DONE, "done": Phase.DONE, "skipped": Phase.DONE,
    "failed": Phase.FAILED, "replayed": Phase.FAILED, "not_submitted": Phase.NOT_SUBMITTED,
}  # fmt: skip
"""A task report's status -> its last phase (``interrupted`` keeps the phase it had)."""


@attrs.frozen(kw_only=True)
class BatchStatus:
    """A snapshot of the batch: every display draws from one of these."""

    total: int
    queued: int
    submitted: int
    processing: int
    downloading: int
    done: int
    failed: int
    not_submitted: int
    eta: float
    """Seconds until the last 4K should be ready (0 when nothing is left to wait for)."""
    rate: float
    """The account's current rate in requests per second (``inf``: no limit)."""
    elapsed: float
    """Seconds since the batch started."""

    @property
    def finished(self) -> int:
        """Tasks that ended, either way."""
        return self.done + self.failed + self.not_submitted

    def as_json(self) -> dict[str, object]:
        """The ``batch`` object of ``--json``."""
        return {
            "event": "batch", "total": self.total, "queued": self.queued,
            "submitted": self.submitted, "processing": self.processing,
            "downloading": self.downloading, "done": self.done, "failed": self.failed,
            "not_submitted": self.not_submitted, "eta": round(self.eta, 1),
            "rate": None if math.isinf(self.rate) else round(self.rate, 3),
            "elapsed": round(self.elapsed, 3),
        }  # fmt: skip


class Tally:
    """Each task's phase, kept by the batch as things happen; read by the displays."""

    def __init__(
        self,
        *,
        policy: PollPolicy,
        rate: Callable[[], float],
        cap: int | None = None,
    ) -> None:
        self._rate = rate
        self._cap = cap
        self._guess = 2 * policy.first_delay + policy.wait_initial
        self._phase: dict[tuple[str, int], Phase] = {}
        self._counts = [0] * len(Phase)
        self.submitted = 0
        self._submitted_at: dict[tuple[str, int], float] = {}
        self._processing_for: dict[tuple[str, int], float] = {}
        self._seen: collections.deque[float] = collections.deque(maxlen=LEARN_WINDOW)
        self._upscale: float | None = None
        self._last_submission = -math.inf
        self._started = self._now()

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def add(self, pairs: Iterable[tuple[str, int]], phase: Phase = Phase.QUEUED) -> None:
        """Count tasks in ``phase`` (a task already counted moves there)."""
        for pair in pairs:
            self.move(pair, phase)

    def move(self, pair: tuple[str, int], phase: Phase) -> None:
        """``pair`` is now in ``phase``."""
        old = self._phase.get(pair)
        if old is phase:
            return
        if old is not None:
            self._counts[old] -= 1
        self._phase[pair] = phase
        self._counts[phase] += 1

    def phase(self, pair: tuple[str, int]) -> Phase | None:
        """Where ``pair`` stands (None: not in this batch)."""
        return self._phase.get(pair)

    def event(self, event: WaitEvent) -> None:
        """A wait's event: Kie accepted the task, polled it, or has its 4K."""
        pair = (event.task_id, event.index)
        if event.state in _ACCEPTED:
            now = self._now()
            if pair not in self._submitted_at:
                self._submitted_at[pair] = now
                self._last_submission = now
                self.submitted += 1
            elif event.state is WaitState.PROCESSING:
                self._processing_for[pair] = now - self._submitted_at[pair]
            if self._phase.get(pair) is Phase.QUEUED:
                self.move(pair, Phase.PROCESSING)
        elif event.state is WaitState.READY:
            self._submitted_at.pop(pair, None)
            seen = self._processing_for.pop(pair, None)
            if seen is not None:
                self._seen.append(seen)
                self._upscale = None

    def ended(self, pair: tuple[str, int], status: str) -> None:
        """A task's report: its last phase (``interrupted`` keeps the one it had)."""
        self._submitted_at.pop(pair, None)
        self._processing_for.pop(pair, None)
        phase = _ENDED.get(status)
        if phase is not None:
            self.move(pair, phase)

    def upscale_time(self) -> float:
        """``U`` of the module docstring: the policy's guess, or longer as seen."""
        if self._upscale is None:
            self._upscale = self._guess
            if len(self._seen) >= LEARN_AFTER:
                ordered = sorted(self._seen)
                self._upscale = max(self._guess, ordered[math.ceil(0.9 * len(ordered)) - 1])
        return self._upscale

    def status(self) -> BatchStatus:
        """The counts and the ETA now."""
        c = self._counts
        queued, processing = c[Phase.QUEUED], c[Phase.PROCESSING]
        rate = self._rate()
        now = self._now()
        return BatchStatus(
            total=len(self._phase), queued=queued, submitted=self.submitted,
            processing=processing, downloading=c[Phase.DOWNLOADING], done=c[Phase.DONE],
            failed=c[Phase.FAILED], not_submitted=c[Phase.NOT_SUBMITTED],
            eta=self._eta(queued, processing, rate, now), rate=rate, elapsed=now - self._started,
        )  # fmt: skip

    def _eta(self, queued: int, processing: int, rate: float, now: float) -> float:
        if queued + processing == 0:
            return 0.0
        upscale = self.upscale_time()
        per = 0.0 if math.isinf(rate) or rate <= 0 else 1.0 / rate
        if queued:
            eta = max((2 * queued + processing) * per, queued * per + upscale)
            if self._cap is not None:
                eta = max(eta, queued / self._cap * upscale + upscale)
            return eta
        youngest = max(0.0, upscale - (now - self._last_submission))
        return max(processing * per, youngest)
