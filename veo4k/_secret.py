"""The API key, held so that no repr, str, traceback local or server echo can show it.

The key only ever exists as plain text inside :class:`ApiKey` and inside the header value
aiohttp writes to the socket; that value is a ``str`` whose ``repr`` is redacted, so headers
dicts in aiohttp's frames (shown by ``rich.traceback(show_locals=True)``, pytest
``--showlocals`` or Sentry) print ``<redacted>`` instead.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from typing import Any

from ._errors import ConfigurationError

__all__ = ["REDACTED", "ApiKey", "AuthHeaders"]

REDACTED = "<redacted>"


class _HiddenStr(str):
    """A header value: sent as is, shown as ``'<redacted>'`` by repr (not by str: aiohttp
    formats header values with str())."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(REDACTED)


class ApiKey:
    """The key; ``repr``/``str`` are redacted, :meth:`reveal` is the only way out."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    @classmethod
    def load(cls, value: object) -> ApiKey:
        """Check a user-supplied key (stripped, non-empty, no whitespace) and wrap it."""
        text = value.strip() if isinstance(value, str) else ""
        value = None  # no frame local keeps the plain key if we raise below
        if not text:
            raise ConfigurationError(
                "no API key: pass api_key=... or set the KIE_API_KEY environment variable"
            )
        if not all("!" <= c <= "~" for c in text):  # a header value: visible ASCII only
            text = ""
            raise ConfigurationError(
                "api_key must be printable ASCII, without whitespace or control characters"
            )
        return cls(text)

    def reveal(self) -> str:
        return self._value

    def fingerprint(self, purpose: str) -> str:
        """A name for this key that reveals nothing about it: the HMAC-SHA256 of ``purpose``
        keyed with the key (salted per purpose, and no guess can be checked without the key),
        64 bits in hex."""
        return hmac.new(self._value.encode(), purpose.encode(), hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        return "<api key hidden>"

    __str__ = __repr__

    def scrub(self, text: str) -> str:
        """``text`` with every occurrence of the key replaced by ``<redacted>``."""
        return text.replace(self._value, REDACTED) if self._value in text else text

    def scrub_bytes(self, body: bytes) -> bytes:
        """A server body with the key removed, raw and JSON-escaped (``\\/``, ``\\uXXXX``)."""
        raw = self._value.encode()
        if raw in body:
            body = body.replace(raw, REDACTED.encode())
        escaped = json.dumps(self._value)[1:-1].encode()
        if escaped != raw and escaped in body:
            body = body.replace(escaped, REDACTED.encode())
        return body

    def scrub_value(self, value: Any) -> Any:
        """A parsed JSON value with the key removed from every string (keys included).

        Iterative, not recursive: a server's nesting depth must not become ours (1,000 levels
        of lists would raise RecursionError in a recursive walk)."""
        root: list[Any] = [None]
        stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]  # (node, parent, slot)
        while stack:
            node, parent, slot = stack.pop()
            if isinstance(node, str):
                parent[slot] = self.scrub(node)
            elif isinstance(node, list):
                copy: list[Any] = [None] * len(node)
                parent[slot] = copy
                stack.extend((item, copy, i) for i, item in enumerate(node))
            elif isinstance(node, dict):
                keys = [self.scrub(str(k)) for k in node]
                mapping: dict[str, Any] = dict.fromkeys(keys)
                parent[slot] = mapping
                stack.extend((v, mapping, k) for k, v in zip(keys, node.values(), strict=True))
            else:
                parent[slot] = node
        return root[0]


class AuthHeaders(Mapping[str, str]):
    """The request headers carrying the key: a mapping whose repr shows no secret, with the
    Authorization value a redacted-repr str (so aiohttp's copies print redacted too)."""

    __slots__ = ("_extra", "_key")

    def __init__(self, key: ApiKey, extra: Mapping[str, str]) -> None:
        self._key = key
        self._extra = dict(extra)

    def __getitem__(self, name: str) -> str:
        if name == "Authorization":
            return _HiddenStr(f"Bearer {self._key.reveal()}")
        return self._extra[name]

    def __iter__(self) -> Iterator[str]:
        yield "Authorization"
        yield from self._extra

    def __len__(self) -> int:
        return 1 + len(self._extra)

    def __repr__(self) -> str:
        return f"AuthHeaders(Authorization={REDACTED}, {self._extra!r})"
