"""Download a finished 4K to disk: resumable, verified, atomic, bounded, and never with the key.

The file host (``tempfile.aiquickdraw.com`` ...) is not Kie's API: downloads use their own
session that carries no Authorization header, so the key cannot leak there even through a
redirect. Every URL (the first, each redirect, a refreshed link) passes the client's
:class:`HostPolicy`; the session's resolver applies it to the addresses actually connected to.

Files (:mod:`._part`): the ``.part`` is opened with ``O_NOFOLLOW`` (a symlink planted there
is refused, never written through) and renamed over the destination (a symlink there is
replaced, not followed). On cancellation, ``aclose()`` or the deadline the ``.part`` is kept:
the next call resumes it, with ``If-Range`` and a check that the 206 starts at its size.
A body is complete only when its announced length is reached (or an encoded stream's end
marker and checksum arrived); bytes without a length are confirmed by a ranged probe.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import os
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import aiohttp
from yarl import URL

from . import _validate as check
from ._config import RetryPolicy
from ._errors import ConfigurationError, DownloadError, DownloadTimeoutError
from ._models import FourKResult
from ._part import Decoder, Part
from ._part import open_part as _open_part
from ._urls import HostPolicy, HostRefused, result_url

__all__ = [
    "DEFAULT_TIMEOUT",
    "ProgressCallback",
    "_open_part",
    "download_file",
    "resolve_destination",
]

log = logging.getLogger("veo4k")

ProgressCallback = Callable[[int, int | None], object]
"""``on_progress(bytes_done, bytes_total_or_None)``; sync or async."""

CHUNK = 1 << 16
MAX_FILE_BYTES = 20 * 1024**3  # without a usable Content-Length, stop at 20 GiB
MAX_REDIRECTS = 5
MAX_PROBES = 3
"""Ranged requests that confirm the size of bytes that came with no length, per download."""
DEFAULT_TIMEOUT = 3600.0
"""Total seconds for one ``download()``: connect, body, retries and a link refresh (a 1 GB
file at 1 MB/s takes about 17 minutes)."""
_EXPIRED = (403, 404, 410)
_REDIRECTS = (301, 302, 303, 307, 308)
_RANGE = re.compile(r"bytes (?:([0-9]{1,19})-([0-9]{1,19})|\*)/([0-9]{1,19}|\*)")


def resolve_destination(
    result: FourKResult | str, dest: str | os.PathLike[str], *, overwrite: bool
) -> tuple[str, str | None, Path]:
    """Check a download request: ``(url, task id, file path)``, or a typed error.

    ``dest`` is a folder when it ends with a path separator or names an existing folder (it is
    created if missing); the file is then :func:`result_file_name`. Otherwise it is the file.
    """
    if isinstance(result, FourKResult):
        if not result.result_urls:
            raise ConfigurationError("result has no result URL")
        url, task_id = result.video_url, check.task_id(result.task_id, "result.task_id")
        name: str | None = check.result_file_name(result.task_id, result.index)
    elif isinstance(result, str) and result:
        url, task_id, name = result, None, None
    else:
        raise ConfigurationError("result must be a FourKResult or a URL string")
    check.callback_url(url, "result URL")
    try:
        result_url(url)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    raw = os.fspath(dest)
    path = Path(raw)
    if raw.endswith(("/", os.sep)) or path.is_dir():
        if name is None:
            raise ConfigurationError("dest is a folder: pass a FourKResult or a file path")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"dest folder {path} cannot be created: {exc.strerror or exc}"
            ) from exc
        path = path / name
    if path.is_dir():  # a folder in the way of the file: the OS's own words, as cause
        reason = IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        raise DownloadError(
            f"cannot write {path}: {reason.strerror}", url=url, task_id=task_id
        ) from reason
    if os.path.lexists(path) and not overwrite:
        raise DownloadError(
            f"{path} exists; pass overwrite=True to replace it", url=url, task_id=task_id
        )
    if not path.parent.is_dir():
        raise ConfigurationError(f"dest folder {path.parent} does not exist")
    return url, task_id, path


class _Retry(Exception):
    """A transient failure: try again from what the .part file holds."""


class _Expired(Exception):
    """403/404/410 from the file host: the link has expired."""


async def download_file(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    *,
    refresh: Callable[[str], Awaitable[str]],
    retry: RetryPolicy,
    rng: random.Random,
    task_id: str | None,
    on_progress: ProgressCallback | None,
    timeout: aiohttp.ClientTimeout,
    policy: HostPolicy,
    deadline: float,
) -> Path:
    """Stream ``url`` into ``dest.part`` (resuming with Range), then rename it to ``dest``;
    all within ``deadline`` seconds, else :class:`DownloadTimeoutError`. A file-system error
    (disk full, permissions, a folder in the way) is a :class:`DownloadError` whose
    ``__cause__`` is the ``OSError``."""
    part = Part(dest, url, task_id)
    try:
        async with asyncio.timeout(deadline) as timer:
            return await _download(
                session, url, part, refresh=refresh, retry=retry, rng=rng,
                on_progress=on_progress, timeout=timeout, policy=policy,
            )  # fmt: skip
    except TimeoutError:
        if not timer.expired():
            raise
        raise DownloadTimeoutError(
            f"download not complete within timeout={deadline:g} s (the .part is kept)",
            url=url,
            task_id=task_id,
        ) from None
    except OSError as exc:  # not the network (that is retried): the disk
        where = exc.filename or part.path
        raise part.error(f"cannot write {where}: {exc.strerror or exc}") from exc


async def _download(
    session: aiohttp.ClientSession,
    url: str,
    part: Part,
    *,
    refresh: Callable[[str], Awaitable[str]],
    retry: RetryPolicy,
    rng: random.Random,
    on_progress: ProgressCallback | None,
    timeout: aiohttp.ClientTimeout,
    policy: HostPolicy,
) -> Path:
    refreshed = False
    caps = retry.backoff_caps()
    attempt = probes = 0
    while True:
        try:
            await _fetch(session, url, part, on_progress, timeout, policy)
        except _Expired:
            if refreshed:
                raise part.error(
                    "result URL expired and a fresh link from Kie was refused too"
                ) from None
            refreshed = True
            url = part.url = await refresh(url)
            continue
        except _Retry as exc:
            if part.unverified and probes < MAX_PROBES:  # no failure: ask for the size now
                probes += 1
                continue
            attempt += 1
            if attempt >= retry.attempts:
                raise part.error(f"download failed after {attempt} attempts: {exc}") from None
            delay = rng.uniform(0, next(caps))
            log.debug("download of %s interrupted (%s); resuming in %.2f s",
                      part.dest.name, exc, delay)  # fmt: skip
            await asyncio.sleep(delay)
            continue
        return part.finish()


async def _fetch(
    session: aiohttp.ClientSession,
    url: str,
    part: Part,
    on_progress: ProgressCallback | None,
    timeout: aiohttp.ClientTimeout,
    policy: HostPolicy,
) -> None:
    have = part.size()
    # identity: a Range means bytes of the file, not of a compressed stream of it
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        if part.validator:  # the host sends the whole file (200) if it changed since
            headers["If-Range"] = part.validator
    try:
        for _ in range(MAX_REDIRECTS + 1):
            policy.check(url)
            async with session.get(
                url, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                if resp.status in _REDIRECTS:
                    location = resp.headers.get("Location", "")
                    if not location:
                        raise part.error(f"redirect {resp.status} without a Location")
                    url = _join(resp.url, location, part)
                    continue
                await _receive(resp, part, have, on_progress)
                return
    except HostRefused as exc:
        raise part.error(f"download refused: {exc}") from None
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, HostRefused):
            raise part.error(f"download refused: {exc.os_error}") from None
        raise _Retry(f"{type(exc).__name__}: {exc}") from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _Retry(f"{type(exc).__name__}: {exc}") from None
    raise part.error(f"more than {MAX_REDIRECTS} redirects")


async def _receive(
    resp: aiohttp.ClientResponse,
    part: Part,
    have: int,
    on_progress: ProgressCallback | None,
) -> None:
    """Write one answer into the .part, or say why not (:class:`_Retry`, :class:`_Expired`,
    DownloadError). Complete means: the length announced (Content-Length of an identity
    body, or a Content-Range total) reached, or an encoded stream's end and checksum seen;
    bytes that came without either are confirmed by a ranged probe before they count."""
    encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
    encoding = "" if encoding == "identity" else encoding
    if resp.status in _EXPIRED:
        raise _Expired()
    if resp.status == 416 and have:
        if _content_range(resp.headers.get("Content-Range", ""))[2] == have:
            part.unverified = False
            return  # the .part was already complete
        part.discard()
        raise _Retry("416 for a partial file: starting over")
    if resp.status >= 500 or resp.status == 429:
        raise _Retry(f"HTTP {resp.status}")
    if resp.status not in (200, 206):
        raise part.error(f"file host answered HTTP {resp.status}")
    decoder = Decoder(encoding, part)
    validator = _validator(resp.headers)
    if resp.status == 206:
        start, _, total = _content_range(resp.headers.get("Content-Range", ""))
        reason = _resume_refused(encoding, start, have, part.validator, validator)
        if reason:
            part.discard()  # a range of another file, place or encoding: not our bytes
            raise _Retry(f"{reason}: starting over")
    else:
        if part.unverified and resp.content_length is None and not encoding:
            part.discard()
            raise part.error(
                "the file host sends no length and ignores Range: a cut download cannot be "
                "told from a whole one"
            )
        have = 0  # the whole file (the host ignored the Range, or it changed): start over
        total = None if encoding else resp.content_length  # the length of the encoded body
    limit = total if total is not None else MAX_FILE_BYTES
    done = have
    with part.open(append=bool(have), validator=validator) as out:
        try:
            async for raw in resp.content.iter_chunked(CHUNK):
                for chunk in decoder.feed(raw, CHUNK):
                    done += len(chunk)
                    if done > limit:
                        raise part.error(f"file is larger than announced ({limit} bytes)")
                    out.write(chunk)
                    if on_progress is not None:
                        await _call(on_progress, done, total)
        except DownloadError:
            out.close()
            part.discard()  # bad content (too long, a bomb, corrupt): never resume from it
            raise
        out.flush()
        # a 4K file is hundreds of MB: its fsync may take seconds, which the event loop (an
        # app's waits, its web handlers) must not spend blocked
        await asyncio.to_thread(os.fsync, out.fileno())
    if not decoder.complete():
        part.discard()  # a cut compressed stream cannot be resumed
        raise _Retry(f"{encoding} stream ended before its end marker: starting over")
    if total is not None and done != total:
        raise _Retry(f"got {done} of {total} bytes")
    part.unverified = total is None and not decoder.encoded_stream
    if part.unverified:
        raise _Retry(f"{done} bytes with no length announced: checking the size")


def _resume_refused(
    encoding: str, start: int | None, have: int, kept: str | None, sent: str | None
) -> str:
    """Why a 206 cannot continue the .part ('' if it can)."""
    if encoding:
        return f"{encoding}-encoded partial content"
    if start != have:
        return f"the host sent bytes from {start}, not from {have} (the bytes on disk)"
    if kept and sent and kept != sent:
        return "the file changed on the host since the .part was started"
    return ""


def _validator(headers: Mapping[str, str]) -> str | None:
    """What ``If-Range`` may send back: a strong ETag, else Last-Modified."""
    etag = headers.get("ETag", "").strip()
    if etag and not etag.startswith("W/") and _printable(etag):
        return etag
    modified = headers.get("Last-Modified", "").strip()
    return modified if modified and _printable(modified) else None


def _printable(text: str) -> bool:
    return len(text) <= 256 and all(" " <= c <= "~" for c in text)


def _join(base: URL, location: str, part: Part) -> str:
    try:
        return str(base.join(URL(location)))
    except ValueError:
        raise part.error(f"redirect to a malformed Location {location[:80]!r}") from None


def _content_range(header: str) -> tuple[int | None, int | None, int | None]:
    """``bytes a-b/total`` (or ``bytes */total``) as (a, b, total); None where absent."""
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None, None, None
    first, last, total = match.groups()
    return (
        int(first) if first else None,
        int(last) if last else None,
        int(total) if total != "*" else None,
    )


async def _call(fn: ProgressCallback, done: int, total: int | None) -> None:
    result = fn(done, total)
    if inspect.isawaitable(result):
        await result
