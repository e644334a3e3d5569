"""The ``.part`` file of a download, and the bytes that may go into it.

What ties a ``.part`` to one version of the file on the host: the strong ETag (or else the
Last-Modified date) of the answer that started it, kept in memory and, where the file system
allows, in a ``user.veo4k.validator`` extended attribute of the ``.part`` (a crashed run's
``.part`` then resumes only if the host still serves the same file: ``If-Range``). A ``.part``
without one (older veo4k, a file system without user attributes) is still resumed, but only
from a 206 that starts exactly at its size.

Decoding: downloads ask for ``identity``; a host that gzips anyway is decoded here (not by
aiohttp), with the output bounded: at most :data:`MAX_RATIO` times the encoded bytes received,
plus :data:`RATIO_SLACK`. Video barely compresses, a gzip bomb decodes 1000-fold, so it is cut
off after about a megabyte with a :class:`DownloadError`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ._errors import DownloadError

__all__ = ["MAX_RATIO", "RATIO_SLACK", "Decoder", "Part", "open_part"]

MAX_RATIO = 8
RATIO_SLACK = 1024**2
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_ATTR = "user.veo4k.validator"
_DECODERS = {"gzip": 47, "x-gzip": 47, "deflate": 47}  # zlib wbits: gzip or zlib header


class Part:
    """``dest.part``: its size, its validator, and the moves a download makes on it."""

    def __init__(self, dest: Path, url: str, task_id: str | None) -> None:
        self.dest = dest
        self.path = dest.with_name(dest.name + ".part")
        self.url, self.task_id = url, task_id
        self._validator: str | None = None
        self.unverified = False
        """The bytes came with no length: the next request is a ranged probe of the size."""

    def error(self, message: str) -> DownloadError:
        return DownloadError(message, url=self.url, task_id=self.task_id)

    def size(self) -> int:
        """Bytes on disk (0 if none); a .part that is not a regular file is refused."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return 0
        if not os.path.isfile(self.path) or os.path.islink(self.path):
            raise self.error(f"{self.path} is not a regular file; refusing it")
        return st.st_size

    @property
    def validator(self) -> str | None:
        """The ETag or Last-Modified of the answer that started this .part, if known."""
        if self._validator is None:
            try:
                self._validator = os.getxattr(self.path, _ATTR, follow_symlinks=False).decode()
            except (OSError, AttributeError, UnicodeDecodeError):
                return None  # none stored, or no user attributes here (macOS, Windows, tmpfs)
        return self._validator

    def open(self, *, append: bool, validator: str | None) -> BinaryIO:
        """Open for writing (never through a symlink); a fresh start records ``validator``."""
        out = open_part(self.path, append, self.url, self.task_id)
        if not append:
            self._validator = validator
            if validator:  # else the in-memory copy still guards this call's retries
                with contextlib.suppress(OSError, AttributeError):
                    os.setxattr(out.fileno(), _ATTR, validator.encode()[:256])
        return out

    def discard(self) -> None:
        """Remove bytes that cannot be resumed from (microseconds: no thread needed)."""
        self.path.unlink(missing_ok=True)
        self._validator, self.unverified = None, False

    def finish(self) -> Path:
        """Rename to ``dest``; a symlink at ``dest`` is replaced, never followed."""
        with contextlib.suppress(OSError, AttributeError):
            os.removexattr(self.path, _ATTR, follow_symlinks=False)
        os.replace(self.path, self.dest)
        return self.dest


def open_part(part: Path, append: bool, url: str, task_id: str | None) -> BinaryIO:
    """``os.open`` with ``O_NOFOLLOW``: a symlink planted at the .part is refused."""
    flags = os.O_WRONLY | os.O_CREAT | _NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
    try:
        fd = os.open(part, flags, 0o644)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise DownloadError(
                f"{part} is a symlink; refusing to follow it", url=url, task_id=task_id
            ) from exc
        raise DownloadError(
            f"cannot write {part}: {exc.strerror or exc}", url=url, task_id=task_id
        ) from exc
    return os.fdopen(fd, "ab" if append else "wb")


class Decoder:
    """Undo a ``Content-Encoding`` (identity, gzip, deflate) with bounded output."""

    def __init__(self, encoding: str, part: Part) -> None:
        if encoding and encoding not in _DECODERS:
            raise part.error(f"file host sent {encoding}-encoded content; identity was asked")
        self._zlib = zlib.decompressobj(_DECODERS[encoding]) if encoding else None
        self._part = part
        self.encoded = 0
        self.decoded = 0

    @property
    def encoded_stream(self) -> bool:
        return self._zlib is not None

    def feed(self, raw: bytes, chunk: int) -> Iterator[bytes]:
        """The decoded pieces of ``raw`` (each at most ``chunk`` bytes), one at a time, until
        the output outgrows :data:`MAX_RATIO` x input + :data:`RATIO_SLACK` (DownloadError)."""
        self.encoded += len(raw)
        if self._zlib is None:
            self.decoded += len(raw)
            yield raw
            return
        try:
            piece = self._zlib.decompress(raw, chunk)
            while True:
                self.decoded += len(piece)
                if self.decoded > MAX_RATIO * self.encoded + RATIO_SLACK:
                    raise self._part.error(
                        f"encoded content decodes to more than {MAX_RATIO} times its size "
                        f"(over {self.decoded} bytes from {self.encoded}): a compression bomb"
                    )
                yield piece
                if not self._zlib.unconsumed_tail and len(piece) < chunk:
                    return  # all input used and nothing held back
                piece = self._zlib.decompress(self._zlib.unconsumed_tail, chunk)
        except zlib.error as exc:
            raise self._part.error(f"encoded content is corrupt ({exc})") from None

    def complete(self) -> bool:
        """For an encoded stream: its end marker and checksum arrived (gzip: CRC and size)."""
        return self._zlib is None or self._zlib.eof
