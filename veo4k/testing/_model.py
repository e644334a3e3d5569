"""What the fake Kie simulates: task outcomes, jobs, counters, callback bodies, file bytes."""

from __future__ import annotations

import collections
import enum
import hashlib
import json
from typing import Any

import attrs

__all__ = [
    "CREDIT",
    "DOWNLOAD_URL",
    "FOURK",
    "MSG_DONE",
    "MSG_NOT_SUCCESS",
    "MSG_PROCESSING",
    "MSG_UNAVAILABLE",
    "RECORD",
    "CallbackShape",
    "FakeTask",
    "Job",
    "Stats",
    "TaskOutcome",
    "callback_body",
    "fake_video_bytes",
    "record_data",
]

FOURK = "/api/v1/veo/get-4k-video"
RECORD = "/api/v1/veo/record-info"
DOWNLOAD_URL = "/api/v1/common/download-url"
CREDIT = "/api/v1/chat/credit"
MSG_PROCESSING = "4k is processing. It should be ready in 5-10 minutes. Please check back shortly."
MSG_DONE = "The video has been generated successfully"
MSG_UNAVAILABLE = "The 4K version of this video is unavailable. Please try a different video."
MSG_NOT_SUCCESS = "record status is not success."


class TaskOutcome(enum.StrEnum):
    """How a fake source task behaves when its 4K is requested."""

    OK = "ok"
    UNAVAILABLE = "unavailable"
    """The 4K job runs, then fails: 500 "4K version ... unavailable" and a failure callback."""
    SOURCE_FAILED = "source_failed"
    """The source generation failed: 422 "record status is not success.", successFlag 2."""
    SOURCE_GENERATING = "source_generating"
    """The source is still generating for ``source_ready_after`` seconds, then OK."""
    EXPIRED = "expired"
    """422 "Temporarily supports records within 14 days."."""
    BLANK = "blank"
    """422 "record result data is blank."."""
    FETCH_FAILED = "fetch_failed"
    """451 "Failed to fetch the image"."""


class CallbackShape(enum.StrEnum):
    """The documented callback payload shapes (see kie-api.md)."""

    A = "A"
    B = "B"
    B_FLAT = "B_flat"
    C = "C"
    D = "D"
    ROTATE = "rotate"


@attrs.define(kw_only=True)
class Job:
    """One 4K job the fake runs for a task and index."""

    started: float
    callback_url: str | None
    done: bool = False


@attrs.define(kw_only=True)
class FakeTask:
    """A source task the fake knows, and what happened to its 4K requests."""

    task_id: str
    ready_after: float = 2.0
    """Seconds from the first 4K submission to a ready 4K."""
    outcome: TaskOutcome = TaskOutcome.OK
    source_ready_after: float = 0.0
    indices: int = 1
    done_code: int = 422
    """Code of a repeat answer that carries the URLs (422 as documented, or 200)."""
    urls_as_string: bool = False
    """Send URL lists as a JSON-encoded string, as one doc sample does."""
    legacy_accept: bool = False
    """Answer the first submission with ``data`` holding only ``taskId`` (older docs)."""
    fourk_task_id: str | None = None
    """A new id Kie gives the 4K job in get-4k-video's ``data.taskId`` (undocumented)."""
    record_quirks: bool = False
    """Answer record-info with the variants seen in samples: ``"null"`` strings, ``message``
    instead of ``msg``, epoch-millisecond times, float credits, ``fullResultUrls``, extra fields."""
    created_at: float = 0.0
    jobs: dict[int, Job] = attrs.field(factory=dict)
    posts: collections.Counter[int] = attrs.field(factory=collections.Counter)
    """get-4k-video requests per index."""
    charges: collections.Counter[int] = attrs.field(factory=collections.Counter)
    """Paid submissions per index: requests that started a 4K job."""


@attrs.define
class Stats:
    """What the fake saw: requests, 429s, faults, file-host misuse, callbacks."""

    requests: collections.Counter[str] = attrs.field(factory=collections.Counter)
    times: collections.deque[float] = attrs.field(
        factory=lambda: collections.deque(maxlen=1_000_000)
    )
    rate_limited: int = 0
    rejected_times: collections.deque[float] = attrs.field(
        factory=lambda: collections.deque(maxlen=1_000_000)
    )
    faults_fired: collections.Counter[str] = attrs.field(factory=collections.Counter)
    file_auth_violations: list[str] = attrs.field(factory=list)
    range_requests: int = 0
    if_range_mismatches: int = 0
    """Ranged requests whose If-Range named an older version: answered with the whole file."""
    callbacks_sent: int = 0
    callbacks_failed: int = 0


def record_data(task: FakeTask, flag: int, source: str) -> dict[str, Any]:
    """The ``data`` of a record-info answer for ``task`` in state ``flag``."""
    error_code, error_message = (400, "Generation failed: content policy.") if flag == 2 else (
        None, "")  # fmt: skip
    response = {"taskId": task.task_id, "resultUrls": [source], "resolution": "1080p"}
    if task.record_quirks:
        null = "null"
        return {
            "taskId": task.task_id,
            "paramJson": null,
            "completeTime": 1749205800000 if flag == 1 else null,
            "response": {**response, "fullResultUrls": [source], "originUrls": null}
            if flag == 1
            else null,
            "successFlag": flag,
            "errorCode": error_code if error_code is not None else null,
            "errorMessage": error_message or null,
            "createTime": 1749205500000,
            "creditsConsumed": 12.5,
            "fallbackFlag": False,
            "someFutureField": {"nested": [1, 2, 3]},
        }
    return {
        "taskId": task.task_id,
        "paramJson": json.dumps({"prompt": "a fake prompt"}),
        "completeTime": "2025-06-06 10:30:00" if flag == 1 else None,
        "response": response if flag == 1 else None,
        "successFlag": flag,
        "errorCode": error_code,
        "errorMessage": error_message,
        "createTime": "2025-06-06T10:25:00Z",
        "fallbackFlag": False,
    }


def fake_video_bytes(name: str, size: int) -> bytes:
    """Deterministic bytes that start like an MP4 file."""
    head = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
    seed = hashlib.sha256(name.encode()).digest()
    body = (seed * (size // len(seed) + 1))[: max(0, size - len(head))]
    return (head + body)[:size]


def callback_body(task: FakeTask, shape: CallbackShape, video_url: str) -> dict[str, Any]:
    """A callback body in one of the documented shapes (or the failure shape)."""
    tid = task.task_id
    if task.outcome is TaskOutcome.UNAVAILABLE:
        return {"code": 500, "msg": MSG_UNAVAILABLE, "data": {"taskId": tid}}
    video = [video_url]
    image = [video[0].removesuffix(".mp4") + ".jpg"]
    data: dict[str, Any]
    if shape is CallbackShape.A:
        data = {"taskId": tid, "info": {"resultUrls": video, "imageUrls": image}}
    elif shape is CallbackShape.B:
        data = {"taskId": tid, "fallbackFlag": False, "info": {"resultUrls": video}}
    elif shape is CallbackShape.B_FLAT:
        data = {
            "taskId": tid,
            "resultUrls": json.dumps(video),
            "mediaIds": ["m1"],
            "imageUrls": image,
        }
    elif shape is CallbackShape.C:
        info = {"imageUrls": image, "resultUrls": video}
        data = {"creditsConsumed": 120, "info": info, "taskId": tid}
    else:
        data = {"task_id": tid, "result_urls": video, "media_ids": ["m1"], "image_urls": image}
    return {"code": 200, "msg": "4K Video generated successfully.", "data": data}
