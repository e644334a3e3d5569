"""Who gets the account's next request slot: lanes, urgency and admission.

The limiter (:mod:`veo4k._limiter`, or ``veo4k.redis``) decides *when* a slot exists; this room
decides *who* gets it, at the moment it exists. A request waiting for a slot is an :class:`Ask`:
a small entry in a heap (a due poll is not a task), with its lane and urgency.

Lanes. A *follow-up* is a request about a task already submitted: a poll, the confirmation of a
callback, a record-info check, a link refresh. A *submission* may start a paid job. The rule:

- urgent follow-ups (confirmations, record-info, link refreshes, a wait's last look before its
  deadline) go first, earliest due first: they never wait behind a submission;
- while submissions wait, a due poll is held back, at most ``hold_back`` seconds (300) after it
  became due, and released before its wait's deadline early enough for every follow-up then
  waiting to get a slot first (its last look); once its hold is over it goes before submissions,
  earliest end of hold first. While no submission waits, polls go at once. A poll is never sent
  before the wait's PollPolicy makes it due: the policy is a floor on spacing;
- submissions go earliest deadline first, then in arrival order; even while polls past their
  hold wait, at least one slot in four (``submit_share``) goes to a waiting submission.

So neither side starves: a poll waits at most ``hold_back`` for submissions (then its turn among
polls), and submissions keep at least a quarter of the slots. A limiter shared by several
processes (``veo4k.redis``) applies the same rule across them: each process asks for a slot in
the :class:`Rank` of its best candidate and tells which ranks it still has waiting
(:meth:`Schedule.demand`). Holding polls back while
submissions wait is what keeps a rate-bound batch near two requests per task (the submission,
and one poll that finds the 4K ready) with a detection delay that does not grow with the batch.

Admission. A submission is the only request that spends credits: before a submission gets
its slot, the schedule asks it (:meth:`Ask.admit`) whether it can still finish, with the
estimate of :class:`~veo4k._admission.Admission`; one that cannot is not sent at all.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import math
from typing import NamedTuple, Protocol

from ._admission import Admission

__all__ = [
    "HOLD_BACK",
    "SUBMIT_SHARE",
    "Ask",
    "Demand",
    "Lane",
    "Rank",
    "Schedule",
    "SlotOwner",
    "wait_for_slot",
]

HOLD_BACK = 300.0
"""Seconds a due poll may wait for submissions (``benchmarks/batch.py`` sweeps it)."""
SUBMIT_SHARE = 0.25
"""While submissions wait, at least this share of the slots goes to them."""


class Lane(enum.IntEnum):
    """What a request is to the account's budget."""

    FOLLOW_UP = 0
    """About a task already submitted (poll, confirmation, record-info, link refresh)."""
    SUBMIT = 1
    """It may start a paid job."""


class Rank(enum.IntEnum):
    """A slot's claim on the account across the processes that share it (lowest first).

    The module docstring's rule, account-wide: an urgent follow-up of any process goes before a
    poll whose hold is over, which goes before a submission (but for the submissions' share),
    which goes before a poll still held back (a *spare* poll, asked for only by a process whose
    own submissions do not wait).
    """

    URGENT = 0
    POLL = 1
    SUBMIT = 2
    SPARE = 3


class Demand(NamedTuple):
    """What a process asks of the shared schedule: the rank of its next grant (None: nobody
    waits) and, per rank up to ``SUBMIT``, whether asks of it are left after that grant."""

    rank: Rank | None
    left: tuple[bool, bool, bool]


_URGENT, _POLLS, _SUBMISSIONS = 0, 1, 2


class Ask:
    """A request's place in the schedule: its lane and urgency, and its slot once granted.

    ``due`` is when it became due; ``latest`` is, for a poll, the time past which it must not
    be held (its deadline), and for a submission its deadline (the order among submissions).
    A wait is its own ask (no object more per wait); one-off requests use :func:`wait_for_slot`.
    """

    __slots__ = ("_seq", "due", "lane", "latest", "slot", "urgent")

    def __init__(
        self,
        lane: Lane = Lane.FOLLOW_UP,
        *,
        urgent: bool = True,
        due: float = 0.0,
        latest: float = math.inf,
    ) -> None:
        self.lane = lane
        self.urgent = urgent
        self.due = due
        self.latest = latest
        self.slot: float | None = None
        """The loop time of a slot granted and not yet used: the request goes then (a shared
        limiter may hand a slot out a little ahead of its time)."""
        self._seq = -1  # its entry in the schedule, -1 while not queued

    @property
    def queued(self) -> bool:
        """Waiting in a schedule for a slot."""
        return self._seq >= 0

    def granted(self, at: float) -> bool:
        """Take the slot granted at ``at``; False passes it to the next candidate."""
        raise NotImplementedError

    def admit(self, now: float, admission: Admission) -> bool:
        """May this submission still be sent (see :meth:`Admission.refuses`)? False ends it:
        :meth:`refused` is called and the slot goes to the next candidate."""
        return True

    def refused(self) -> None:
        """Admission said no: end without sending (only asks whose ``admit`` can say no)."""


class SlotOwner(Protocol):
    """What :func:`wait_for_slot` needs of a limiter."""

    def offer(self, ask: Ask) -> None: ...
    def withdraw(self, ask: Ask) -> None: ...
    def unused(self, granted_at: float) -> None: ...


class _Waiter(Ask):
    __slots__ = ("future",)

    def __init__(self, lane: Lane, due: float, latest: float) -> None:
        super().__init__(lane, urgent=lane is Lane.FOLLOW_UP, due=due, latest=latest)
        self.future: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def granted(self, at: float) -> bool:
        if self.future.done():  # cancelled: its owner withdraws it when it runs
            return False
        self.future.set_result(at)
        return True


async def wait_for_slot(
    limiter: SlotOwner, lane: Lane = Lane.FOLLOW_UP, latest: float | None = None
) -> float:
    """Wait for a slot as a one-off request; return the loop time it was granted at.

    A follow-up is urgent (first in line); a submission is ordered by ``latest`` (default:
    now, before any wait's submission). Cancelling the caller while it queues frees its place
    at once; a slot granted and then cancelled before use is handed back (``unused``).
    """
    now = asyncio.get_running_loop().time()
    waiter = _Waiter(lane, now, now if latest is None else latest)
    limiter.offer(waiter)
    try:
        return await waiter.future
    except asyncio.CancelledError:
        if waiter.future.done() and not waiter.future.cancelled():
            limiter.unused(waiter.future.result())
        else:
            limiter.withdraw(waiter)
        raise


class Schedule:
    """The asks waiting for a slot, and the rule that picks the next one (module docstring).

    ``max_in_flight`` caps slots granted and not yet finished (the client's connections).
    """

    def __init__(
        self,
        *,
        hold_back: float = HOLD_BACK,
        submit_share: float = SUBMIT_SHARE,
        max_in_flight: float = math.inf,
    ) -> None:
        self.hold_back = hold_back
        self.submit_share = submit_share
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        """Slots granted whose request has not ended."""
        self.slot_gap = 0.0
        """Seconds between slots at the current rate (the limiter keeps it up to date)."""
        self.admission = Admission()
        self.paid_open = 0
        """Waits submitted and not ended: each owes the account at least one more request."""
        self._heaps: tuple[list[tuple[float, int, Ask]], ...] = ([], [], [])
        self._waiting = [0, 0, 0]
        self._seq = 0
        self._stale = 0
        self._polls_in_a_row = 0

    def __len__(self) -> int:
        return sum(self._waiting)

    def waiting(self, lane: Lane) -> int:
        """Asks of ``lane`` waiting now (per-lane demand)."""
        if lane is Lane.SUBMIT:
            return self._waiting[_SUBMISSIONS]
        return self._waiting[_URGENT] + self._waiting[_POLLS]

    @property
    def has_room(self) -> bool:
        """A slot may be granted now without passing ``max_in_flight``."""
        return self.in_flight < self.max_in_flight

    def push(self, ask: Ask) -> None:
        """Queue ``ask`` (again, with its current urgency, if it was queued)."""
        self.remove(ask)
        if ask.lane is Lane.SUBMIT:
            heap, key = _SUBMISSIONS, ask.latest
        elif ask.urgent:
            heap, key = _URGENT, ask.due
        else:  # held back at most hold_back, and released early enough that every poll
            # waiting now gets a slot before this one's deadline (two slots to spare)
            ahead = self._waiting[_POLLS] + self._waiting[_URGENT] + 2
            heap, key = _POLLS, min(ask.due + self.hold_back, ask.latest - ahead * self.slot_gap)
        self._seq += 4  # the low two bits name the heap, so removal needs no search
        ask._seq = self._seq + heap
        heapq.heappush(self._heaps[heap], (key, ask._seq, ask))
        self._waiting[heap] += 1

    def remove(self, ask: Ask) -> bool:
        """Take ``ask`` out (False if it was not queued); its place is free at once."""
        if ask._seq < 0:
            return False
        self._waiting[ask._seq & 3] -= 1
        ask._seq = -1  # its entry stays in the heap, stale, until popped or compacted
        self._stale += 1
        if self._stale > 1024 and self._stale > len(self):
            self._compact()
        return True

    def grant(self, now: float) -> bool:
        """Hand the slot of ``now`` to the best candidate; False if nobody took it."""
        while (ask := self._pop(now)) is not None:
            if ask.granted(now):
                self.in_flight += 1
                return True
        return False

    def finished(self) -> None:
        """A granted slot's request ended (or was never sent)."""
        self.in_flight -= 1

    # -- the rule ----------------------------------------------------------------------------

    def demand(self, now: float) -> Demand:
        """The rank the next slot would go to at ``now``, and what waits besides, without
        taking anything: a limiter sharing the account asks the shared schedule for a slot of
        this rank and publishes what is left (:class:`Rank`)."""
        heap = self._choose(now)
        over = self._polls_over(now)
        if heap is None:
            rank = None
        elif heap == _POLLS:
            rank = Rank.POLL if over else Rank.SPARE
        else:
            rank = Rank.URGENT if heap == _URGENT else Rank.SUBMIT
        left = (
            self._waiting[_URGENT] > (rank is Rank.URGENT),
            over > (rank is Rank.POLL),
            self._waiting[_SUBMISSIONS] > (rank is Rank.SUBMIT),
        )
        return Demand(rank, left)

    def _polls_over(self, now: float) -> int:
        """Polls whose hold is over at ``now``, counted up to two (all :meth:`demand` needs)."""
        entries = self._heaps[_POLLS]
        taken: list[tuple[float, int, Ask]] = []
        while len(taken) < 2 and self._top(_POLLS) is not None and entries[0][0] <= now:
            taken.append(heapq.heappop(entries))
        for entry in taken:
            heapq.heappush(entries, entry)
        return len(taken)

    def _pop(self, now: float) -> Ask | None:
        heap = self._choose(now)
        if heap is None:
            return None
        if heap == _POLLS and self._top(_SUBMISSIONS) is not None:
            self._polls_in_a_row += 1  # a poll past its hold went before a submission
        elif heap == _SUBMISSIONS:
            self._polls_in_a_row = 0
        return self._take(heap)

    def _choose(self, now: float) -> int | None:
        """Which heap the next slot goes to (the rule of the module docstring)."""
        if self.in_flight >= self.max_in_flight:
            return None
        if self._top(_URGENT) is not None:
            return _URGENT
        poll = self._top(_POLLS)
        if self._top_admitted(now) is None:
            return None if poll is None else _POLLS
        hold_over = poll is not None and self._heaps[_POLLS][0][0] <= now
        if hold_over and (self._polls_in_a_row + 1) * self.submit_share < 1:
            return _POLLS
        return _SUBMISSIONS

    def _top(self, heap: int) -> Ask | None:
        entries = self._heaps[heap]
        while entries:
            _, seq, ask = entries[0]
            if ask._seq == seq:
                return ask
            heapq.heappop(entries)
            self._stale -= 1
        return None

    def _take(self, heap: int) -> Ask:
        _, _, ask = heapq.heappop(self._heaps[heap])
        ask._seq = -1
        self._waiting[heap] -= 1
        return ask

    def _top_admitted(self, now: float) -> Ask | None:
        while (ask := self._top(_SUBMISSIONS)) is not None:
            if ask.admit(now, self.admission):
                return ask
            self._take(_SUBMISSIONS)
            ask.refused()
        return None

    def _compact(self) -> None:
        for entries in self._heaps:
            entries[:] = [e for e in entries if e[2]._seq == e[1]]
            heapq.heapify(entries)
        self._stale = 0
