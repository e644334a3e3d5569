"""Public result types: immutable, typed, with no I/O of their own."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

import attrs

from ._errors import Veo4kError

__all__ = [
    "CallbackEvent",
    "CallbackStatus",
    "FourKResult",
    "FourKStatus",
    "Outcome",
    "TaskRecord",
    "WaitEvent",
    "WaitState",
]


@attrs.frozen(kw_only=True)
class FourKStatus:
    """One answer of ``get-4k-video``: ready with URLs, or still processing."""

    task_id: str
    index: int
    ready: bool
    result_urls: tuple[str, ...] = ()
    image_urls: tuple[str, ...] = ()
    msg: str = ""
    code: int = 200
    fourk_task_id: str | None = None
    """The id Kie gave the 4K job, when it differs from ``task_id`` (undocumented; informative)."""


@attrs.frozen(kw_only=True)
class CallbackStatus(FourKStatus):
    """A ready status that a kept callback gave, no request sent: the wait ends via callback."""


@attrs.frozen(kw_only=True)
class FourKResult:
    """A finished 4K video: its URLs, and what the wait cost."""

    task_id: str
    index: int
    result_urls: tuple[str, ...]
    image_urls: tuple[str, ...] = ()
    requests: int = 0
    """HTTP requests this wait sent to Kie (submission, polls, record-info, retries)."""
    elapsed: float = 0.0
    """Seconds from the start of the wait to the result."""
    via_callback: bool = False
    """True when a callback delivered the result (see :class:`CallbackServer`)."""
    fourk_task_id: str | None = None
    """The id Kie gave the 4K job, when it differs from ``task_id`` (undocumented; informative)."""

    @property
    def video_url(self) -> str:
        """The first result URL: the 4K video."""
        return self.result_urls[0]


class SuccessFlag(enum.IntEnum):
    """record-info ``successFlag``: 0 generating, 1 success, 2 failed, 3 upstream failed."""

    GENERATING = 0
    SUCCESS = 1
    FAILED = 2
    CREATE_FAILED = 3


@attrs.frozen(kw_only=True)
class TaskRecord:
    """The fields of ``record-info`` that matter: status, URLs, error, times (aware, UTC)."""

    task_id: str
    success_flag: int
    result_urls: tuple[str, ...] = ()
    full_result_urls: tuple[str, ...] = ()
    origin_urls: tuple[str, ...] = ()
    resolution: str | None = None
    credits: float | None = None
    """Credits the task consumed, when the answer says (``creditsConsumed``)."""
    error_code: int | str | None = None
    error_message: str = ""
    create_time: datetime | None = None
    complete_time: datetime | None = None

    @property
    def generating(self) -> bool:
        """The task is still running (``successFlag`` 0)."""
        return self.success_flag == SuccessFlag.GENERATING

    @property
    def succeeded(self) -> bool:
        """The task finished successfully (``successFlag`` 1)."""
        return self.success_flag == SuccessFlag.SUCCESS

    @property
    def failed(self) -> bool:
        """The task failed for good (``successFlag`` 2 or 3)."""
        return self.success_flag in (SuccessFlag.FAILED, SuccessFlag.CREATE_FAILED)


class WaitState(enum.StrEnum):
    """Where a wait stands, as reported to ``on_update``."""

    QUEUED = "queued"
    """The submission waits in line for the account's budget (a second's worth of requests or
    more ahead): nothing was sent yet, and a default timeout has not started."""
    SUBMITTED = "submitted"
    """The 4K job was accepted (or was already running); polling follows."""
    PROCESSING = "processing"
    """A poll said "not yet"."""
    SOURCE_PENDING = "source_pending"
    """The source generation itself has not finished; the 4K request will be repeated."""
    RETRYING = "retrying"
    """A transient failure (connection, 408, 429, 455, 5xx) is being retried; the event's
    ``error`` holds it. A wait keeps retrying until its deadline."""
    READY = "ready"
    """The 4K URLs are known: the wait ends with a result."""
    FAILED = "failed"
    """The wait ends with an error (including a timeout)."""


@attrs.frozen(kw_only=True)
class WaitEvent:
    """One step of a wait, passed to ``on_update`` callbacks."""

    task_id: str
    index: int
    state: WaitState
    attempt: int
    """Requests sent so far by this wait."""
    elapsed: float
    """Seconds since the wait began."""
    next_delay: float | None = None
    """Seconds until the next request, when one is planned."""
    msg: str = ""
    error: Veo4kError | None = None
    fourk_task_id: str | None = None
    """The id Kie gave the 4K job, once known and when it differs from ``task_id``."""


@attrs.frozen(kw_only=True)
class Outcome:
    """How one task of a batch ended: a result or an error, never both."""

    task_id: str
    index: int
    result: FourKResult | None = None
    error: Veo4kError | None = None

    @property
    def ok(self) -> bool:
        """True when the 4K is ready."""
        return self.result is not None


@attrs.frozen(kw_only=True)
class CallbackEvent:
    """One callback delivery from Kie, whatever shape it came in."""

    task_id: str
    ok: bool
    """True when Kie reports success and sends at least one result URL."""
    code: int
    msg: str
    result_urls: tuple[str, ...] = ()
    image_urls: tuple[str, ...] = ()
    received_at: datetime = attrs.field(factory=lambda: datetime.now(UTC))
    duplicate: bool = False
    """An earlier delivery of the same task and outcome was already dispatched."""
    index: int | None = None
    """The video index this callback is for, when known: Kie's callbacks name none, a
    coordinator learns it from the waits of its namespace. None: unknown."""

    @property
    def unavailable(self) -> bool:
        """Kie says the 4K version of this video is unavailable (permanent)."""
        low = self.msg.lower()
        return not self.ok and "unavailable" in low and "4k" in low
