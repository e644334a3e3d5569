"""Hostile modes of the fake: a Kie and a file host that try to hurt the client.

Switch them on with ``FakeKie(hostile={Hostile.MARKUP, ...})`` (or ``kie.hostile.add(...)``
later, or ``veo4k testing --hostile markup``): the real client then meets them over real
sockets, and tests check that every answer stays inert and every file whole.
"""

from __future__ import annotations

import enum
import functools
import gzip
import hashlib
from typing import Any

__all__ = [
    "DEEP_LEVELS",
    "MARKUP_TEXT",
    "NONCANONICAL_LOOPBACK",
    "Hostile",
    "deep_value",
    "flood_headers",
    "gzip_bomb",
]


class Hostile(enum.StrEnum):
    """What a hostile Kie or file host does."""

    MARKUP = "markup"
    """Every error message (and record-info's ``errorMessage``) starts with :data:`MARKUP_TEXT`:
    Rich markup, a terminal title and clear-screen escape, a C1 control and bidi overrides."""
    DEEP_JSON = "deep_json"
    """get-4k-video and record-info answers carry :data:`DEEP_LEVELS` levels of nesting with a
    JSON escape in them (enough to break any recursive walk of the answer)."""
    TRUNCATE = "truncate"
    """The file host answers 200 with no Content-Length and closes the connection halfway."""
    WRONG_RANGE = "wrong_range"
    """The file host answers a ``Range: bytes=N-`` request with ``206 bytes 0-...``."""
    GZIP_BOMB = "gzip_bomb"
    """The file host sends a small ``Content-Encoding: gzip`` body that decodes to 64 MiB of
    zeros (and no Content-Length)."""
    NONCANONICAL_HOST = "noncanonical_host"
    """Result URLs name the file host as ``2130706433`` (127.0.0.1 as one decimal number)."""
    HEADER_FLOOD = "header_flood"
    """Every API answer carries :data:`FLOOD_HEADERS` extra headers of 8,000 bytes (8 MB)."""


MARKUP_TEXT = (
    "[/bold][link=https://evil.example/pay]click here[/link] [red on white]URGENT[/]"
    "\x1b]0;pwned\x07\x1b[2J\x9b31m \u202egnp.exe\u202c \u2066x\u2069"
)
"""What :attr:`Hostile.MARKUP` puts before every message a terminal may show."""

DEEP_LEVELS = 900
"""Deep enough to break a recursive walk, shallow enough for json.loads to parse it."""
NONCANONICAL_LOOPBACK = "2130706433"
"""127.0.0.1 written as one number: resolvers accept it, URL parsers disagree about it."""
BOMB_BYTES = 64 * 1024**2
FLOOD_HEADERS = 1000


@functools.cache
def flood_headers() -> dict[str, str]:
    """The extra headers of :attr:`Hostile.HEADER_FLOOD`."""
    return {f"X-Flood-{i}": "v" * 8000 for i in range(FLOOD_HEADERS)}


def deep_value(levels: int = DEEP_LEVELS) -> Any:
    """``[[[... {"k": "a\\\\b"} ...]]]``: nested lists with an escaped string at the bottom."""
    value: Any = {"k": "a\\b"}
    for _ in range(levels):
        value = [value]
    return value


@functools.cache
def gzip_bomb(size: int = BOMB_BYTES) -> bytes:
    """A gzip stream of ``size`` zero bytes (about 1/1000 of that on the wire)."""
    return gzip.compress(b"\0" * size, compresslevel=9, mtime=0)


def etag_of(name: str, version: int) -> str:
    """A strong ETag for one version of a served file."""
    return '"' + hashlib.sha256(f"{name}#{version}".encode()).hexdigest()[:16] + '"'
