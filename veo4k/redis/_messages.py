"""Outcomes as stored and published: plain JSON, and which video index a callback is for.

Kie's callbacks name no video index. A coordinator learns it from its namespace: every claim
records the index it waits for (per task, ``result_ttl``), every lease renewal records it again
(a record lost in a flush is rebuilt), and a callback of a task waited for at one index only is
that index's; a record that lost an index is marked unsure for one lease TTL (see ``_scripts``).
A callback it cannot match is kept and published under a digest of its URLs, and only prompts
the waits of its task to confirm by a poll: a trusted callback does not end a wait for another
index, in any process (unless that index's worker was cut off from Redis when it claimed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from .._models import CallbackEvent, FourKStatus

__all__ = [
    "callback_field",
    "decode",
    "encode_event",
    "encode_status",
    "event_from",
    "kept_callback",
    "kept_outcomes",
    "kept_result",
    "nudge",
    "status_from",
    "text",
]


def encode_event(event: CallbackEvent) -> dict[str, Any]:
    """A callback as plain data (no token, no signature, no index: only what Kie said)."""
    return {
        "task_id": event.task_id,
        "ok": event.ok,
        "code": event.code,
        "msg": event.msg,
        "result_urls": list(event.result_urls),
        "image_urls": list(event.image_urls),
    }


def event_from(data: dict[str, Any], index: int | None = None) -> CallbackEvent:
    """The inverse of :func:`encode_event`, for video ``index`` (None: unknown)."""
    return CallbackEvent(
        task_id=str(data["task_id"]),
        ok=bool(data["ok"]),
        code=int(data["code"]),
        msg=str(data["msg"]),
        result_urls=tuple(str(u) for u in data["result_urls"]),
        image_urls=tuple(str(u) for u in data["image_urls"]),
        index=index,
    )


def nudge(event: CallbackEvent) -> CallbackEvent:
    """What the waits of a task learn from a callback of unknown index: only that something
    happened (no outcome, no URLs), so each confirms by a poll of its own index."""
    return CallbackEvent(task_id=event.task_id, ok=False, code=0, msg="", index=None)


def callback_field(event: CallbackEvent) -> str:
    """Where a callback is kept under its task, after its index (``i<n>``, or ``u``):
    outcome and a digest of the URLs, so index 1's success is no duplicate of index 0's."""
    digest = hashlib.sha256("\n".join(event.result_urls).encode()).hexdigest()[:16]
    return f":{int(event.ok)}:{event.code}:{digest}"


def kept_callback(fields: list[Any], waited: list[Any], index: int) -> CallbackEvent | None:
    """The callback kept for ``index``, from a task's kept callbacks (``HGETALL`` as a flat
    list) and the indexes its namespace waits for. Those of unknown index count while nobody in
    the namespace waits for another index, and only if they agree (two different successes
    cannot both be this video's). A success wins over a failure report."""
    mine, unknown = [], []
    for name, value in zip(fields[::2], fields[1::2], strict=True):
        field = text(name)
        if field.startswith(f"i{index}:"):
            mine.append(value)
        elif field.startswith("u:"):
            unknown.append((field, value))
    if {text(w) for w in waited} <= {str(index)}:
        successes = {field for field, _ in unknown if field.startswith("u:1:")}
        if len(successes) <= 1:
            mine += [value for _, value in unknown]
    found: CallbackEvent | None = None
    for value in mine:
        try:
            event = event_from(json.loads(value), index)
        except (KeyError, TypeError, ValueError):
            continue
        if found is None or (event.ok and not found.ok):
            found = event
    return found


def kept_outcomes(
    waits: list[tuple[str, int]], reply: list[Any]
) -> Iterator[FourKStatus | CallbackEvent]:
    """What ``READ_KEPT`` found for ``waits``: a kept result, else the callback for the index."""
    for (_, index), at in zip(waits, range(0, len(reply), 3), strict=True):
        result, waited, fields = reply[at : at + 3]
        if result:
            status = kept_result(result)
            if status is not None:  # else unreadable: the wait's next poll asks Kie
                yield status
            continue
        early = kept_callback(fields, waited, index)
        if early is not None:
            yield early


def encode_status(status: FourKStatus) -> dict[str, Any]:
    """A ready result as plain data."""
    return {
        "task_id": status.task_id,
        "index": status.index,
        "result_urls": list(status.result_urls),
        "image_urls": list(status.image_urls),
        "msg": status.msg,
        "code": status.code,
    }


def status_from(data: dict[str, Any]) -> FourKStatus:
    """The inverse of :func:`encode_status` (always ready)."""
    return FourKStatus(
        task_id=str(data["task_id"]),
        index=int(data["index"]),
        ready=True,
        result_urls=tuple(str(u) for u in data["result_urls"]),
        image_urls=tuple(str(u) for u in data["image_urls"]),
        msg=str(data["msg"]),
        code=int(data["code"]),
    )


def kept_result(raw: bytes | str) -> FourKStatus | None:
    """A kept result, or None if it cannot be read."""
    try:
        return status_from(json.loads(raw))
    except (KeyError, TypeError, ValueError):
        return None


def decode(raw: bytes | str) -> dict[str, Any] | None:
    """A channel message (``o`` origin, ``k`` kind, ``v`` value, ...), or None if unreadable."""
    try:
        msg = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(msg, dict) or not isinstance(msg.get("v"), dict):
        return None
    return msg


def text(value: Any) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
