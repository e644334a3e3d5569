"""Download a finished 4K to disk: resumable, verified, atomic, and never with the API key.

The file host (``tempfile.aiquickdraw.com`` ...) is not Kie's API: downloads use their own
session that carries no Authorization header, so the key cannot leak there even through a
redirect.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from . import _validate as check
from ._config import RetryPolicy
from ._errors import ConfigurationError, DownloadError
from ._models import FourKResult

__all__ = ["ProgressCallback", "download_file", "resolve_destination"]

log = logging.getLogger("veo4k")

ProgressCallback = Callable[[int, int | None], object]
"""``on_progress(bytes_done, bytes_total_or_None)``; sync or async."""

CHUNK = 1 << 16
MAX_FILE_BYTES = 20 * 1024**3  # without a Content-Length, stop at 20 GiB
_EXPIRED = (403, 404, 410)


def resolve_destination(
    result: FourKResult | str, dest: str | os.PathLike[str], *, overwrite: bool
) -> tuple[str, str | None, Path]:
    """Check a download request: ``(url, task id, file path)``, or a typed error."""
    if isinstance(result, FourKResult):
        url, task_id = result.video_url, result.task_id
        name: str | None = f"{result.task_id}_{result.index}"
    elif isinstance(result, str) and result:
        url, task_id, name = result, None, None
    else:
        raise ConfigurationError("result must be a FourKResult or a URL string")
    check.callback_url(url, "result URL")
    path = Path(dest)
    if path.is_dir():
        if name is None:
            raise ConfigurationError("dest is a folder: pass a FourKResult or a file path")
        path = path / f"{name}.mp4"
    if path.exists() and not overwrite:
        raise DownloadError(
            f"{path} exists; pass overwrite=True to replace it", url=url, task_id=task_id
        )
    if not path.parent.is_dir():
        raise ConfigurationError(f"dest folder {path.parent} does not exist")
    return url, task_id, path


class _Retry(Exception):
    """A transient failure: try again from what the .part file holds."""


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
) -> Path:
    """Stream ``url`` into ``dest.part``, resuming with Range, then rename it to ``dest``."""
    part = dest.with_name(dest.name + ".part")
    refreshed = False
    caps = retry.backoff_caps()
    for attempt in range(1, retry.attempts + 1):
        try:
            await _fetch(session, url, part, on_progress, timeout, task_id)
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
        _fsync(part)
        os.replace(part, dest)
        return dest
    raise DownloadError("download did not complete", url=url, task_id=task_id)


class _Expired(Exception):
    """403/404/410 from the file host: the link has expired."""


async def _fetch(
    session: aiohttp.ClientSession,
    url: str,
    part: Path,
    on_progress: ProgressCallback | None,
    timeout: aiohttp.ClientTimeout,
    task_id: str | None,
) -> None:
    have = part.stat().st_size if part.exists() else 0  # noqa: ASYNC240 - metadata, microseconds
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        async with session.get(url, headers=headers, timeout=timeout) as resp:
            if resp.status in _EXPIRED:
                raise _Expired()
            if resp.status == 416 and have:
                total = _range_total(resp.headers.get("Content-Range", ""))
                if total == have:
                    return  # the .part was already complete
                part.unlink()  # noqa: ASYNC240 - metadata, microseconds
                raise _Retry("416 for a partial file: starting over")
            if resp.status >= 500 or resp.status == 429:
                raise _Retry(f"HTTP {resp.status}")
            if resp.status not in (200, 206):
                raise DownloadError(
                    f"file host answered HTTP {resp.status}", url=url, task_id=task_id
                )
            if resp.status == 200:
                have = 0  # the host ignored the Range: start over
                total = resp.content_length
            else:
                total = _range_total(resp.headers.get("Content-Range", ""))
            limit = total if total is not None else MAX_FILE_BYTES
            done = have
            with part.open("ab" if have else "wb") as out:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    done += len(chunk)
                    if done > limit:
                        raise DownloadError(
                            f"file is larger than announced ({limit} bytes)", url=url,
                            task_id=task_id,
                        )  # fmt: skip
                    out.write(chunk)
                    if on_progress is not None:
                        await _call(on_progress, done, total)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _Retry(f"{type(exc).__name__}: {exc}") from None
    if total is not None and done != total:
        raise _Retry(f"got {done} of {total} bytes")


def _range_total(content_range: str) -> int | None:
    """The total of ``bytes a-b/total`` (or ``bytes */total``)."""
    _, _, total = content_range.rpartition("/")
    return int(total) if total.isdigit() else None


async def _call(fn: ProgressCallback, done: int, total: int | None) -> None:
    result = fn(done, total)
    if inspect.isawaitable(result):
        await result


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
