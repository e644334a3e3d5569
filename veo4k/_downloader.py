"""A client's downloads: their own session (no Authorization, guarded resolver), the running
ones (so ``aclose`` can stop them), and the client's options applied to each."""

from __future__ import annotations

import asyncio
import os
import pathlib
import random
from collections.abc import Awaitable, Callable

import aiohttp

from . import _validate as check
from ._config import RetryPolicy
from ._download import DEFAULT_TIMEOUT, ProgressCallback, download_file, resolve_destination
from ._errors import ClientStateError, ConfigurationError
from ._models import FourKResult
from ._urls import GuardedResolver, HostPolicy

__all__ = ["Downloader", "Refresh"]

Refresh = Callable[[str, str | None], Awaitable[str]]
"""Ask Kie for a fresh link: ``(stale_url, task_id) -> url``."""


class Downloader:
    """Fetches result files for one client; the file host never sees the API key."""

    def __init__(
        self,
        *,
        refresh: Refresh,
        policy: HostPolicy,
        user_agent: str,
        retry: RetryPolicy,
        rng: random.Random,
        request_timeout: float,
    ) -> None:
        self._refresh = refresh
        self._policy = policy
        self._user_agent = user_agent
        self._retry = retry
        self._rng = rng
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=request_timeout, sock_read=request_timeout
        )
        self._session: aiohttp.ClientSession | None = None
        self._running: set[asyncio.Task[pathlib.Path]] = set()
        self._closed = False

    @property
    def running(self) -> int:
        """Downloads in progress."""
        return len(self._running)

    def checked(
        self,
        result: FourKResult | str,
        dest: str | os.PathLike[str],
        *,
        overwrite: bool,
        on_progress: ProgressCallback | None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> tuple[str, str | None, pathlib.Path, float]:
        """Check a download's arguments before anything runs: URL, task id, path, deadline."""
        deadline = check.positive_seconds(timeout, "timeout")
        if on_progress is not None and not callable(on_progress):
            raise ConfigurationError("on_progress must be callable")
        url, task_id, path = resolve_destination(result, dest, overwrite=overwrite)
        return url, task_id, path, deadline

    async def fetch(
        self,
        url: str,
        task_id: str | None,
        path: pathlib.Path,
        *,
        deadline: float,
        on_progress: ProgressCallback | None,
    ) -> pathlib.Path:
        """Run one download as a task of its own, so :meth:`aclose` can stop it."""
        if self._session is None:
            self._session = aiohttp.ClientSession(  # no Authorization, ever
                headers={"User-Agent": self._user_agent},
                auto_decompress=False,  # decoded by _part.Decoder, with a bounded output
                connector=aiohttp.TCPConnector(resolver=GuardedResolver(self._policy)),
            )

        async def refresh(stale: str) -> str:
            return await self._refresh(stale, task_id)

        running = asyncio.get_running_loop().create_task(
            download_file(
                self._session, url, path, refresh=refresh, retry=self._retry, rng=self._rng,
                task_id=task_id, on_progress=on_progress, timeout=self._timeout,
                policy=self._policy, deadline=deadline,
            ),
            name=f"veo4k-download-{path.name}",
        )  # fmt: skip
        self._running.add(running)
        try:
            return await running
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._closed and running.cancelled() and not (current and current.cancelling()):
                raise ClientStateError(
                    "the client was closed during the download (the .part is kept)"
                ) from None
            raise
        finally:
            self._running.discard(running)

    async def aclose(self) -> None:
        """Stop running downloads (within 1 s; each caller gets ClientStateError), close the
        session."""
        self._closed = True
        for running in self._running:
            running.cancel()
        if self._running:
            await asyncio.wait(self._running, timeout=1.0)
        if self._session is not None:
            await self._session.close()
            self._session = None
