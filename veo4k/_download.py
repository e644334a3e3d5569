"""Download a finished 4K to disk: resumable, verified, atomic, bounded, and never with the key.

The file host (``tempfile.aiquickdraw.com`` ...) is not Kie's API: downloads use their own
session that carries no Authorization header, so the key cannot leak there even through a
redirect. Every URL (the first, each redirect, a refreshed link) passes the client's
:class:`HostPolicy`; the session's resolver applies it to the addresses actually connected to.

Files: the ``.part`` is opened with ``O_NOFOLLOW`` (a symlink planted there is refused, never
written through) and renamed over the destination (a symlink there is replaced, not followed).
On cancellation, ``aclose()`` or the deadline the ``.part`` is kept: the next call resumes it.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import os
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

import aiohttp
from yarl import URL

from . import _validate as check
from ._config import RetryPolicy
from ._errors import ConfigurationError, DownloadError, DownloadTimeoutError
from ._models import FourKResult
from ._urls import HostPolicy, HostRefused, result_url

__all__ = ["DEFAULT_TIMEOUT", "ProgressCallback", "download_file", "resolve_destination"]

log = logging.getLogger("veo4k")

ProgressCallback = Callable[[int, int | None], object]
"""``on_progress(bytes_done, bytes_total_or_None)``; sync or async."""

CHUNK = 1 << 16
MAX_FILE_BYTES = 20 * 1024**3  # without a usable Content-Length, stop at 20 GiB
MAX_REDIRECTS = 5
DEFAULT_TIMEOUT = 3600.0
"""Total seconds for one ``download()``: connect, body, retries and a link refresh (a 1 GB
file at 1 MB/s takes about 17 minutes)."""
_EXPIRED = (403, 404, 410)
_REDIRECTS = (301, 302, 303, 307, 308)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


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
            raise ConfigurationError(f"dest folder {path} cannot be created: {exc}") from None
        path = path / name
    if path.is_dir():
        raise ConfigurationError(f"{path} is a folder")
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
    all within ``deadline`` seconds, else :class:`DownloadTimeoutError`."""
    try:
        async with asyncio.timeout(deadline) as timer:
            return await _download(
                session, url, dest, refresh=refresh, retry=retry, rng=rng, task_id=task_id,
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


async def _download(
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
) -> Path:
    part = dest.with_name(dest.name + ".part")
    refreshed = False
    caps = retry.backoff_caps()
    for attempt in range(1, retry.attempts + 1):
        try:
            await _fetch(session, url, part, on_progress, timeout, task_id, policy)
        except _Expired:
            if refreshed:
                raise DownloadError(
                    "result URL expired and a fresh link from Kie was refused too",
                    url=url,
                    task_id=task_id,
                ) from None
            refreshed = True
            url = await refresh(url)
            continue
        except _Retry as exc:
            if attempt == retry.attempts:
                raise DownloadError(
                    f"download failed after {attempt} attempts: {exc}", url=url, task_id=task_id
                ) from None
            delay = rng.uniform(0, next(caps))
            log.debug("download of %s interrupted (%s); resuming in %.2f s", dest.name, exc, delay)
            await asyncio.sleep(delay)
            continue
        os.replace(part, dest)  # replaces a symlink at dest itself, never its target
        return dest
    raise DownloadError("download did not complete", url=url, task_id=task_id)


def _part_size(part: Path, url: str, task_id: str | None) -> int:
    try:
        st = os.lstat(part)
    except FileNotFoundError:
        return 0
    if not os.path.isfile(part) or os.path.islink(part):
        raise DownloadError(f"{part} is not a regular file; refusing it", url=url, task_id=task_id)
    return st.st_size


def _discard(part: Path) -> None:
    """Remove a .part whose bytes cannot be resumed from (microseconds: no thread needed)."""
    part.unlink(missing_ok=True)


def _open_part(part: Path, append: bool, url: str, task_id: str | None) -> BinaryIO:
    flags = os.O_WRONLY | os.O_CREAT | _NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
    try:
        fd = os.open(part, flags, 0o644)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise DownloadError(
                f"{part} is a symlink; refusing to follow it", url=url, task_id=task_id
            ) from None
        raise DownloadError(f"cannot write {part}: {exc}", url=url, task_id=task_id) from None
    return os.fdopen(fd, "ab" if append else "wb")


async def _fetch(
    session: aiohttp.ClientSession,
    url: str,
    part: Path,
    on_progress: ProgressCallback | None,
    timeout: aiohttp.ClientTimeout,
    task_id: str | None,
    policy: HostPolicy,
) -> None:
    have = _part_size(part, url, task_id)
    # identity: a Range means bytes of the file, not of a compressed stream of it
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        for _ in range(MAX_REDIRECTS + 1):
            policy.check(url)
            async with session.get(
                url, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                if resp.status in _REDIRECTS:
                    location = resp.headers.get("Location", "")
                    if not location:
                        raise DownloadError(
                            f"redirect {resp.status} without a Location", url=url, task_id=task_id
                        )
                    url = _join(resp.url, location, task_id)
                    continue
                await _receive(resp, part, have, on_progress, url, task_id)
                return
    except HostRefused as exc:
        raise DownloadError(f"download refused: {exc}", url=url, task_id=task_id) from None
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, HostRefused):
            raise DownloadError(
                f"download refused: {exc.os_error}", url=url, task_id=task_id
            ) from None
        raise _Retry(f"{type(exc).__name__}: {exc}") from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _Retry(f"{type(exc).__name__}: {exc}") from None
    raise DownloadError(f"more than {MAX_REDIRECTS} redirects", url=url, task_id=task_id)


async def _receive(
    resp: aiohttp.ClientResponse,
    part: Path,
    have: int,
    on_progress: ProgressCallback | None,
    url: str,
    task_id: str | None,
) -> None:
    encoded = resp.headers.get("Content-Encoding", "identity").strip().lower()
    encoded = "" if encoded == "identity" else encoded  # aiohttp decodes gzip/deflate/br
    if resp.status in _EXPIRED:
        raise _Expired()
    if resp.status == 416 and have:
        total = _range_total(resp.headers.get("Content-Range", ""))
        if total == have:
            return  # the .part was already complete
        _discard(part)
        raise _Retry("416 for a partial file: starting over")
    if resp.status >= 500 or resp.status == 429:
        raise _Retry(f"HTTP {resp.status}")
    if resp.status not in (200, 206):
        raise DownloadError(f"file host answered HTTP {resp.status}", url=url, task_id=task_id)
    if resp.status == 206 and encoded:
        _discard(part)  # a range of a compressed stream: not our bytes
        raise _Retry(f"{encoded}-encoded partial content: starting over")
    if resp.status == 200:
        have = 0  # the host ignored the Range: start over
        total = None if encoded else resp.content_length  # the length of the encoded body
    else:
        total = _range_total(resp.headers.get("Content-Range", ""))
    limit = total if total is not None else MAX_FILE_BYTES
    done = have
    with _open_part(part, bool(have), url, task_id) as out:
        async for chunk in resp.content.iter_chunked(CHUNK):
            done += len(chunk)
            if done > limit:
                out.close()
                _discard(part)  # bad content: never resume from it
                raise DownloadError(
                    f"file is larger than announced ({limit} bytes)", url=url, task_id=task_id
                )
            out.write(chunk)
            if on_progress is not None:
                await _call(on_progress, done, total)
        out.flush()
        os.fsync(out.fileno())
    if total is not None and done != total:
        raise _Retry(f"got {done} of {total} bytes")


def _join(base: URL, location: str, task_id: str | None) -> str:
    try:
        return str(base.join(URL(location)))
    except ValueError:
        raise DownloadError(
            f"redirect to a malformed Location {location[:80]!r}", url=str(base), task_id=task_id
        ) from None


def _range_total(content_range: str) -> int | None:
    """The total of ``bytes a-b/total`` (or ``bytes */total``)."""
    _, _, total = content_range.rpartition("/")
    return int(total) if total.isdigit() else None


async def _call(fn: ProgressCallback, done: int, total: int | None) -> None:
    result = fn(done, total)
    if inspect.isawaitable(result):
        await result
