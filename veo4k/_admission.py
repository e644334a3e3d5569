"""Admission: whether a wait not yet submitted can still use an upscale.

A submission is the only request that spends credits. :class:`Admission` estimates how long an
upscale takes, submission to result (configured, or learned from this client's 4Ks), and says
when a wait whose queueing left it too little time for one must not be submitted at all; the
schedule (:mod:`veo4k._schedule`) asks it before it hands a submission its slot.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable

from ._config import PollPolicy

__all__ = ["LEARN_AFTER", "LEARN_WINDOW", "Admission"]

LEARN_AFTER = 20
"""4Ks seen before the learned estimate replaces the conservative one."""
LEARN_WINDOW = 200


class Admission:
    """How long an upscale takes, submission to result, to judge what can still finish.

    The estimate is the policy's ``upscale_time`` when set; else, once this client has seen
    20 4Ks it submitted, the 95th percentile of the last 200 (an upper bound: it includes the
    detection delay, hold-back included, which is what a deadline has to fit); before that a
    conservative ``2 * first_delay + 2 * wait_initial`` (660 s with the default policy).
    """

    def __init__(self) -> None:
        self._seen: collections.deque[float] = collections.deque(maxlen=LEARN_WINDOW)
        self._learned: float | None = None

    def observe(self, seconds: float) -> None:
        """A 4K this client submitted was seen ready ``seconds`` after its submission."""
        self._seen.append(seconds)
        self._learned = None

    def estimate(self, policy: PollPolicy) -> float:
        """Seconds an upscale submitted now is expected to take, to its result."""
        if policy.upscale_time is not None:
            return policy.upscale_time
        if len(self._seen) < LEARN_AFTER:
            return 2 * policy.first_delay + 2 * policy.wait_initial
        if self._learned is None:
            ordered = sorted(self._seen)
            self._learned = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
        return self._learned

    @staticmethod
    def refuses(now: float, estimate: float, deadlines: Iterable[float]) -> bool:
        """Whether a wait not yet submitted must not be: ``deadlines`` holds the deadline of
        each of its waiters, none of them exempt (a default timeout counts from the submission;
        a timeout shorter than an upscale when the call began is the caller's choice: the 4K
        may be done already; such waits leave ``deadlines`` empty and are always sent).

        Refused when no waiter can still use the submission: for each, what is left of its
        time cannot fit an upscale (``deadline - now <= estimate``).
        """
        found = False
        for deadline in deadlines:
            if deadline - now > estimate:
                return False
            found = True
        return found

    @staticmethod
    def refuse_at(estimate: float, deadlines: Iterable[float]) -> float:
        """When :meth:`refuses` starts to hold for these waiters (``inf``: never)."""
        return max(deadlines, default=math.inf) - estimate
