"""Argument checks made before any request: each failure names the argument."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from ._errors import ConfigurationError
from ._urls import canonical_host, is_loopback_url

__all__ = [
    "TASK_ID_RULE",
    "base_url",
    "callback_url",
    "index",
    "is_task_id",
    "positive_int",
    "positive_seconds",
    "result_file_name",
    "task_id",
    "task_pairs",
]

MAX_TASK_ID = 128
MAX_INDEX = 1000
TASK_ID_RULE = "1-128 characters from A-Z a-z 0-9 _ . -, not starting with a dot"
"""What veo4k accepts as a task id. Kie issues 32 lowercase hex characters, ``veo_task_...``
and UUIDs; this safe superset can never be a path (no ``/``, ``\\``, ``..`` or hidden name),
a header or log injection (no spaces or control characters)."""
_TASK_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")


def is_task_id(value: object) -> bool:
    """True if ``value`` follows :data:`TASK_ID_RULE` exactly (no stripping)."""
    return isinstance(value, str) and _TASK_ID.fullmatch(value) is not None


def task_id(value: object, name: str = "task_id") -> str:
    """A task id per :data:`TASK_ID_RULE` (surrounding whitespace stripped)."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ConfigurationError(f"{name} must not be empty or blank")
    if len(text) > MAX_TASK_ID:
        raise ConfigurationError(f"{name} is longer than {MAX_TASK_ID} characters")
    if not is_task_id(text):
        raise ConfigurationError(f"{name} must be {TASK_ID_RULE}, got {text[:40]!r}")
    return text


def result_file_name(task: object, index_: object) -> str:
    """``<task_id>_<index>.mp4``: the one place a file name is made from a task id.

    The id is checked against :data:`TASK_ID_RULE` first, so the name is always one plain path
    component inside the target folder (tests prove it with hypothesis).
    """
    return f"{task_id(task)}_{index(index_)}.mp4"


def index(value: object, name: str = "index") -> int:
    """A non-negative int (not a bool) below a sane bound."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_INDEX:
        raise ConfigurationError(f"{name} must be within [0, {MAX_INDEX}], got {value}")
    return value


def _http_url(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, got {type(value).__name__}")
    try:
        parts = urlsplit(value.strip())
        host, scheme = parts.hostname, parts.scheme
        _ = parts.port  # a port that is no number raises here, not at the first request
    except ValueError:  # 'http://[::1' and the like
        host = scheme = None
    if scheme not in ("http", "https") or not host:
        raise ConfigurationError(f"{name} must be an http(s) URL with a host, got {value!r}")
    try:
        canonical_host(host)
    except ValueError as exc:
        raise ConfigurationError(f"{name}: {exc}") from None
    return value.strip()


def callback_url(value: object, name: str = "callback_url") -> str | None:
    """None, or an absolute http(s) URL."""
    return None if value is None else _http_url(value, name)


def base_url(value: object, name: str = "base_url", *, allow_http: bool = True) -> str:
    """An absolute http(s) URL without a trailing slash, query or fragment; plain http only
    to a loopback host unless ``allow_http`` (the API key would cross the network in clear
    text)."""
    url = _http_url(value, name)
    parts = urlsplit(url)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigurationError(f"{name} must not carry credentials, a query or a fragment")
    if parts.scheme == "http" and not (allow_http or is_loopback_url(url)):
        raise ConfigurationError(
            f"{name} is plain http: the API key would cross the network in clear text; "
            "use https, a loopback address (a local fake), or allow_http=True"
        )
    return url.rstrip("/")


def positive_seconds(value: object, name: str, *, maximum: float | None = None) -> float:
    """A finite number of seconds > 0 (nan and inf are refused), at most ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{name} must be finite and > 0, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigurationError(f"{name} must be <= {maximum:g} s, got {value!r}")
    return float(value)


def positive_int(value: object, name: str, *, maximum: int) -> int:
    """An int (not a bool) within ``[1, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ConfigurationError(f"{name} must be an int within [1, {maximum}], got {value!r}")
    return value


def task_pairs(tasks: Iterable[object], name: str = "tasks") -> list[tuple[str, int]]:
    """Task ids or (task id, index) pairs, normalised to pairs."""
    if isinstance(tasks, str | bytes):
        raise ConfigurationError(f"{name} must be an iterable of task ids, not a single string")
    pairs: list[tuple[str, int]] = []
    for item in tasks:
        if isinstance(item, tuple) and len(item) == 2:
            pairs.append((task_id(item[0], f"{name} item"), index(item[1], f"{name} index")))
        else:
            pairs.append((task_id(item, f"{name} item"), 0))
    return pairs


def user_agent(value: object) -> str | None:
    """A one-line, non-empty User-Agent, or None for the default."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\n" in value or "\r" in value:
        raise ConfigurationError("user_agent must be a non-empty one-line string")
    return value.strip()
