"""What Kie's bytes mean: the envelope, URL lists, times, and the code table of kie-api.md.

Nothing here does I/O. Every parse failure becomes a :class:`Veo4kError`; nothing a server
sends can raise anything else out of this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from ._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    EdgeBlockedError,
    FeatureDisabledError,
    FourKUnavailableError,
    GenerationFailedError,
    InsufficientCreditsError,
    MediaFetchError,
    NotFoundError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    SourceNotReadyError,
    SubKeyLimitError,
    TransportError,
    UpstreamTimeoutError,
    ValidationError,
)
from ._models import FourKStatus, TaskRecord
from ._urls import result_url

EXCERPT_CHARS = 200
MAX_BODY_BYTES = 1_048_576

_CODE_ERRORS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    404: NotFoundError,
    408: UpstreamTimeoutError,
    422: ValidationError,
    429: RateLimitError,
    433: SubKeyLimitError,
    451: MediaFetchError,
    455: ServiceUnavailableError,
    501: GenerationFailedError,
    505: FeatureDisabledError,
}
FINAL_5XX = frozenset({501, 505})
TRANSIENT_CODES = frozenset({408, 429, 455}) | (frozenset(range(500, 600)) - FINAL_5XX)
"""Codes a one-off call retries and a wait polls through (a quota 429 is told apart by msg)."""
_QUOTA_WORDS = ("quota", "daily", "hourly", "per day", "per hour", "monthly", "total")
_NULLS = frozenset({"null", "none", "undefined"})


@attrs.frozen
class Envelope:
    """The ``{"code", "msg", "data"}`` wrapper of every Kie answer."""

    code: int
    msg: str
    data: Any
    http_status: int = 200
    retry_after: float | None = None


def excerpt(body: bytes) -> str:
    """A short, printable start of a body for error messages."""
    return body[:EXCERPT_CHARS].decode("utf-8", "replace")


def parse_envelope(body: bytes, *, http_status: int, retry_after: float | None = None) -> Envelope:
    """Parse a body into an :class:`Envelope`, or raise :class:`TransportError` if it is none."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise TransportError(
            "response body is not JSON" if body.strip() else "response body is empty",
            status=http_status,
            excerpt=excerpt(body),
        ) from None
    code = payload.get("code") if isinstance(payload, dict) else None
    if isinstance(code, bool) or not isinstance(code, int | str):
        raise TransportError(
            "response is not a Kie envelope", status=http_status, excerpt=excerpt(body)
        )
    try:
        code = int(code)
    except ValueError:
        raise TransportError(
            "response code is not an integer", status=http_status, excerpt=excerpt(body)
        ) from None
    msg = payload.get("msg")
    if msg is None:
        msg = payload.get("message")  # some samples say "message"
    if not isinstance(msg, str):
        msg = "" if msg is None else str(msg)
    return Envelope(code, msg, payload.get("data"), http_status, retry_after)


def is_null(value: object) -> bool:
    """``None``, or a string Kie uses for an absent value (``"null"``)."""
    return value is None or (isinstance(value, str) and value.strip().lower() in _NULLS)


def edge_blocked(status: int, body: bytes) -> bool:
    """Cloudflare's ``403 error code: 1010`` (a refused client signature), not an envelope."""
    return status == 403 and b"error code: 1010" in body[:EXCERPT_CHARS]


def url_list(value: object) -> tuple[str, ...]:
    """Accept a list of URLs, a JSON-encoded list, a single URL string, or nothing."""
    if value == "" or is_null(value):
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except (ValueError, RecursionError):
                raise ValueError(f"not a JSON list of URLs: {text[:80]!r}") from None
        else:
            return (result_url(text),)
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of URLs, got {type(value).__name__}")
    if not all(isinstance(u, str) for u in value):
        raise ValueError("a URL list holds something that is not a string")
    return tuple(result_url(u) for u in value if u)  # untrusted: http(s), length cap


def parse_time(value: object) -> datetime | None:
    """Parse ``2025-06-06 10:30:00`` (taken as UTC), ISO 8601, or epoch s/ms into aware UTC."""
    if value == "" or is_null(value):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())  # epoch seconds or milliseconds as a string
    if isinstance(value, bool):
        raise ValueError("a time cannot be a boolean")
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        return datetime.fromtimestamp(seconds, UTC)
    if not isinstance(value, str):
        raise ValueError(f"expected a time string, got {type(value).__name__}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _error_code(value: object, _: object) -> int | str | None:
    if is_null(value):
        return None
    if isinstance(value, int | str):
        return value
    return str(value)


def make_converter() -> cattrs.Converter:
    """The package's private converter: lenient on extra fields, strict on types."""
    conv = cattrs.Converter()
    conv.register_structure_hook_func(lambda t: t == tuple[str, ...], lambda v, _: url_list(v))
    conv.register_structure_hook_func(lambda t: t == datetime | None, lambda v, _: parse_time(v))
    conv.register_structure_hook_func(lambda t: t == int | str | None, _error_code)
    conv.register_structure_hook_func(
        lambda t: t == str | None, lambda v, _: None if is_null(v) else str(v)
    )
    conv.register_structure_hook_func(lambda t: t == float | None, lambda v, _: _number(v))
    conv.register_structure_hook(
        TaskRecord,
        make_dict_structure_fn(
            TaskRecord,
            conv,
            task_id=override(rename="taskId"),
            success_flag=override(rename="successFlag"),
            result_urls=override(rename="resultUrls"),
            full_result_urls=override(rename="fullResultUrls"),
            origin_urls=override(rename="originUrls"),
            credits=override(rename="creditsConsumed"),
            error_code=override(rename="errorCode"),
            error_message=override(rename="errorMessage"),
            create_time=override(rename="createTime"),
            complete_time=override(rename="completeTime"),
        ),
    )
    return conv


def _number(value: object) -> float | None:
    if is_null(value) or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    return float(value)


def _nulls_dropped(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not is_null(v)}


def parse_record(conv: cattrs.Converter, env: Envelope, task_id: str) -> TaskRecord:
    """Turn a record-info envelope with code 200 into a :class:`TaskRecord`."""
    data = env.data
    if not isinstance(data, dict):
        raise TransportError("record-info answer has no data object", task_id=task_id)
    flat = _nulls_dropped(data)
    response = data.get("response")
    if isinstance(response, dict):
        for key in ("resultUrls", "fullResultUrls", "originUrls", "resolution"):
            if not is_null(response.get(key)):
                flat[key] = response[key]
    flat.setdefault("taskId", task_id)
    if "errorMessage" in flat:
        flat["errorMessage"] = str(flat["errorMessage"])
    try:
        return conv.structure(flat, TaskRecord)
    except Exception as exc:  # any shape problem in the body is a malformed answer
        raise TransportError(
            f"record-info answer is malformed ({cattrs_detail(exc)})", task_id=task_id
        ) from exc


def cattrs_detail(exc: BaseException) -> str:
    """One line naming what a structuring failure was about."""
    if isinstance(exc, cattrs.ClassValidationError):
        notes = [str(e) for e in exc.exceptions]
        return "; ".join(notes)[:200]
    return f"{type(exc).__name__}: {exc}"[:200]


def _is_unavailable(msg: str) -> bool:
    low = msg.lower()
    return "unavailable" in low and "4k" in low


def _is_processing(msg: str) -> bool:
    low = msg.lower()
    # "generated successfully" without URLs yet: the URLs are on their way, keep waiting.
    return "processing" in low or "generated successfully" in low


def _is_source_not_ready(msg: str) -> bool:
    return "status is not success" in msg.lower()


def _is_quota(msg: str) -> bool:
    low = msg.lower()
    return any(word in low for word in _QUOTA_WORDS)


def error_for(env: Envelope, task_id: str | None) -> APIError:
    """The typed error for a non-success envelope (code table of kie-api.md)."""
    kwargs: dict[str, Any] = {"http_status": env.http_status}
    if env.code == 429 and _is_quota(env.msg):
        return QuotaExceededError(env.code, env.msg, task_id, **kwargs)
    if env.code == 429:
        return RateLimitError(env.code, env.msg, task_id, retry_after=env.retry_after, **kwargs)
    if env.code >= 500 and _is_unavailable(env.msg):
        return FourKUnavailableError(env.code, env.msg, task_id, **kwargs)
    if env.code == 422 and _is_source_not_ready(env.msg):
        return SourceNotReadyError(env.code, env.msg, task_id, **kwargs)
    if env.code >= 500 and env.code not in FINAL_5XX:
        return ServerError(env.code, env.msg, task_id, **kwargs)
    return _CODE_ERRORS.get(env.code, APIError)(env.code, env.msg, task_id, **kwargs)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying, and no reason to end a wait: transport faults (unless marked final),
    408, a rate-type 429, 455 and 5xx (but not 501, 505 or "4K unavailable").

    Everything else veo4k raises is final: auth, credits, quota, sub-key limit, validation,
    unusable source, "4K unavailable", generation failed, feature disabled, edge block.
    """
    if isinstance(exc, TransportError):
        return exc.retryable
    if isinstance(exc, FourKUnavailableError | QuotaExceededError | EdgeBlockedError):
        return False
    return isinstance(exc, APIError) and exc.code in TRANSIENT_CODES


def fourk_status(env: Envelope, task_id: str, index: int) -> FourKStatus:
    """Classify a get-4k-video answer: ready, processing, or raise the typed error.

    Readiness is a non-empty ``data.resultUrls`` whatever the code says (Kie answers a repeat
    request for a finished 4K with code 422 and the URLs).
    """
    data = env.data if isinstance(env.data, dict) else {}
    try:
        result_urls = url_list(data.get("resultUrls"))
        image_urls = url_list(data.get("imageUrls"))
    except ValueError as exc:  # asking again gets the same URLs: final, not retried
        raise TransportError(
            f"get-4k-video answer is malformed ({exc})",
            status=env.http_status,
            task_id=task_id,
            retryable=False,
        ) from None
    # Kie may name the 4K job with an id of its own (undocumented): keep it, never rely on it.
    job_id = data.get("taskId")
    fourk_task_id = job_id if isinstance(job_id, str) and job_id and job_id != task_id else None
    if result_urls:
        return FourKStatus(
            task_id=task_id,
            index=index,
            ready=True,
            result_urls=result_urls,
            image_urls=image_urls,
            msg=env.msg,
            code=env.code,
            fourk_task_id=fourk_task_id,
        )
    if env.code == 200 or (env.code == 422 and _is_processing(env.msg)):
        return FourKStatus(
            task_id=task_id,
            index=index,
            ready=False,
            msg=env.msg,
            code=env.code,
            fourk_task_id=fourk_task_id,
        )
    raise error_for(env, task_id)
