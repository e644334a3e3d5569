"""Faults the fake server can inject, one answer at a time."""

from __future__ import annotations

import asyncio
import enum
import json
import random

import attrs
from aiohttp import web

__all__ = ["EDGE_BLOCK_BODY", "Fault", "FaultKind", "fault_answer"]


class FaultKind(enum.StrEnum):
    """What goes wrong with one answer."""

    HTML = "html"
    """An HTML error page with HTTP ``status`` (default 502)."""
    ENVELOPE = "envelope"
    """A well-formed envelope with error ``code`` (HTTP 200 unless ``status`` is given)."""
    TRUNCATED = "truncated"
    """Valid JSON cut in half."""
    EMPTY = "empty"
    """HTTP 200 with no body."""
    NON_JSON = "non_json"
    """text/plain prose."""
    NOT_ENVELOPE = "not_envelope"
    """Valid JSON that is not an envelope."""
    RESET_BEFORE = "reset_before"
    """The connection is dropped before the request is acted on."""
    RESET_AFTER = "reset_after"
    """The request is acted on (a submission counts), then the connection is dropped."""
    SLOW = "slow"
    """The answer comes after ``delay`` seconds."""
    REDIRECT = "redirect"
    """A 307 to the fake's file host: a client must not follow it with its key."""
    EDGE_BLOCK = "edge_block"
    """Cloudflare's refusal of a client signature: HTTP 403, text/plain ``error code: 1010``."""
    REFUSED = "refused"
    """Nobody answers: in process a refused connection, over the wire a dropped one."""


@attrs.define(kw_only=True)
class Fault:
    """One injected fault and where it applies; ``times`` counts down as it fires."""

    kind: FaultKind
    times: int = 1
    path: str | None = None
    task_id: str | None = None
    status: int | None = None
    code: int = 500
    msg: str = "Internal Error, Please try again later."
    delay: float = 5.0
    retry_after: float | None = None
    location: str = ""
    after: int = 0
    """Let this many matching requests through before firing (0: fire on the next one)."""
    until: float | None = None
    """Fire only until this event-loop time: an outage window (with a large ``times``)."""

    def matches(self, path: str, task_id: str | None, now: float | None = None) -> bool:
        """Whether this fault fires for a request on ``path`` for ``task_id`` (counts ``after``)."""
        if self.times <= 0:
            return False
        if self.until is not None and now is not None and now >= self.until:
            return False
        if self.path is not None and self.path != path:
            return False
        if self.task_id is not None and self.task_id != task_id:
            return False
        if self.after > 0:
            self.after -= 1
            return False
        return True

    @property
    def acts_first(self) -> bool:
        """Faults answered without touching the fake's state."""
        return self.kind not in (FaultKind.RESET_AFTER, FaultKind.SLOW)


def random_fault(rng: random.Random) -> Fault:
    """A fault drawn from a mix of everything a flaky network and server produce."""
    return rng.choice(
        [
            Fault(kind=FaultKind.HTML, status=rng.choice([500, 502, 503, 504])),
            Fault(kind=FaultKind.ENVELOPE, code=500),
            Fault(kind=FaultKind.ENVELOPE, code=455, msg="Service under maintenance"),
            Fault(kind=FaultKind.ENVELOPE, code=408, msg="Upstream took too long"),
            Fault(kind=FaultKind.ENVELOPE, code=429, status=429, msg="Rate limited"),
            Fault(kind=FaultKind.TRUNCATED),
            Fault(kind=FaultKind.EMPTY),
            Fault(kind=FaultKind.NON_JSON),
            Fault(kind=FaultKind.NOT_ENVELOPE),
            Fault(kind=FaultKind.RESET_BEFORE),
            Fault(kind=FaultKind.RESET_AFTER),
        ]
    )


EDGE_BLOCK_BODY = b"error code: 1010"


def fault_answer(fault: Fault) -> tuple[int, bytes, dict[str, str]] | None:
    """The bytes of a fault that is an answer: ``(status, body, headers)``; None for faults
    that are about the connection or timing (resets, refusals, slowness)."""
    kind = fault.kind
    if kind is FaultKind.HTML:
        status = fault.status or 502
        page = f"<html><body><h1>{status} Bad Gateway</h1><p>nginx</p></body></html>"
        return status, page.encode(), {"Content-Type": "text/html"}
    if kind is FaultKind.ENVELOPE:
        headers = {"Content-Type": "application/json"}
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        body = json.dumps({"code": fault.code, "msg": fault.msg, "data": None}).encode()
        return fault.status or 200, body, headers
    if kind is FaultKind.EDGE_BLOCK:
        return 403, EDGE_BLOCK_BODY, {"Content-Type": "text/plain"}
    if kind is FaultKind.TRUNCATED:
        text = json.dumps({"code": 200, "msg": "success", "data": {"taskId": "x"}})
        return 200, text[: len(text) // 2].encode(), {"Content-Type": "application/json"}
    if kind is FaultKind.EMPTY:
        return 200, b"", {"Content-Type": "application/json"}
    if kind is FaultKind.NON_JSON:
        return 200, b"Service temporarily overloaded", {"Content-Type": "text/plain"}
    if kind is FaultKind.NOT_ENVELOPE:
        body = json.dumps({"status": "ok", "result": [1, 2, 3]}).encode()
        return 200, body, {"Content-Type": "application/json"}
    if kind is FaultKind.REDIRECT:
        return 307, b"", {"Location": fault.location}
    return None


def _drop(request: web.Request) -> web.Response:
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=500)


async def answer_fault(
    fault: Fault, request: web.Request, acted: web.Response | None = None
) -> web.StreamResponse:
    """The response for ``fault``; ``acted`` is the real answer, for faults that come after."""
    kind = fault.kind
    if kind is FaultKind.REDIRECT:
        raise web.HTTPTemporaryRedirect(fault.location)
    answer = fault_answer(fault)
    if answer is not None:
        status, body, headers = answer
        return web.Response(status=status, body=body, headers=headers)
    if kind is FaultKind.SLOW:
        await asyncio.sleep(fault.delay)
        return acted if acted is not None else web.Response(status=500)
    # RESET_BEFORE / RESET_AFTER / REFUSED
    return _drop(request)
