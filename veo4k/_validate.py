"""Argument checks made before any request: each failure names the argument."""

from __future__ import annotations

import math
from collections.abc import Iterable
from urllib.parse import urlsplit

from ._errors import ConfigurationError

__all__ = ["base_url", "callback_url", "index", "positive_seconds", "task_id", "task_pairs"]

MAX_TASK_ID = 256
MAX_INDEX = 1000


def task_id(value: object, name: str = "task_id") -> str:
    """A non-blank string without control characters, stripped."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ConfigurationError(f"{name} must not be empty or blank")
    if len(text) > MAX_TASK_ID:
        raise ConfigurationError(f"{name} is longer than {MAX_TASK_ID} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ConfigurationError(f"{name} must not contain control characters")
    return text


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
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{name} must be an http(s) URL with a host, got {value!r}")
    return value.strip()


def callback_url(value: object, name: str = "callback_url") -> str | None:
    """None, or an absolute http(s) URL."""
    return None if value is None else _http_url(value, name)


def base_url(value: object, name: str = "base_url") -> str:
    """An absolute http(s) URL without a trailing slash, query or fragment."""
    url = _http_url(value, name)
    parts = urlsplit(url)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigurationError(f"{name} must not carry credentials, a query or a fragment")
    return url.rstrip("/")


def positive_seconds(value: object, name: str) -> float:
    """A finite number of seconds > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{name} must be finite and > 0, got {value!r}")
    return float(value)


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
