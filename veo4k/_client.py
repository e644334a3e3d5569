"""``Veo4kClient``: submit 4K upscales, wait for them, read task records."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import pathlib
import random
import secrets
from collections.abc import AsyncGenerator, Iterable
from types import TracebackType
from typing import Self

import aiohttp

from . import _validate as check
from ._batch import collect, outcomes
from ._callback_plan import CallbackPlan
from ._callback_server import CallbackServer
from ._callbacks import CallbackReceiver
from ._config import PollPolicy, RateLimit, RetryPolicy
from ._coordination import Coordinator, LocalCoordinator
from ._download import DEFAULT_TIMEOUT, ProgressCallback
from ._downloader import Downloader
from ._endpoints import Endpoints
from ._errors import (
    ClientStateError,
    ConfigurationError,
    Veo4kError,
    WaitTimeoutError,
)
from ._limiter import Pacer
from ._models import FourKResult, FourKStatus, Outcome, TaskRecord, WaitState
from ._poll import Listener, SharedWait
from ._secret import ApiKey
from ._subscriptions import Subscription
from ._transport import Api, Counter, default_user_agent
from ._urls import HostPolicy, is_loopback_url
from ._waits import WaitRegistry

__all__ = ["Veo4kClient"]

log = logging.getLogger("veo4k")

DEFAULT_BASE_URL = "https://api.kie.ai"
_KIE_RATE_LIMIT = RateLimit()


class Veo4kClient:
    """An asyncio client for Kie's Veo 3.1 "Get 4K Video" API.

    Use it as an async context manager (or call :meth:`aclose`). One client serves any number of
    concurrent waits; all of its requests share one pacer, so they stay under ``rate_limit``,
    and at most ``max_connections`` are in flight. ``request_timeout`` bounds one HTTP exchange;
    it is enforced by a sweep every ``min(1 s, request_timeout / 4)``, so a request may run that
    much longer (a timer per request would leave tens of thousands of handles in the event loop
    under load). Every request sends ``user_agent`` (default ``veo4k/<version> (+python
    aiohttp)``): Kie's edge (Cloudflare) blocks clients without a descriptive one.

    Kie is called over https only: plain http only to a loopback ``base_url`` (a local fake)
    or with ``allow_http=True``, else :class:`ConfigurationError` here, before any connection
    (the key would cross the network in clear text).

    :meth:`download` fetches https URLs on public addresses only: ``allow_http`` and
    ``allow_private_hosts`` (loopback, private, link-local) opt in to more. When ``base_url`` is
    itself loopback (a local fake), loopback result URLs, http included, are allowed too.

    ``callbacks`` is a started :class:`CallbackServer`, or an app's own
    :class:`CallbackReceiver` with the public ``callback_url`` of its route. ``coordinator``
    (e.g. ``veo4k.redis.RedisCoordinator``) shares the rate budget, callbacks and task leases
    with other processes; the client never closes a coordinator it was given.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        request_timeout: float = 30.0,
        poll_policy: PollPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        retry_policy: RetryPolicy | None = None,
        rate_limit: RateLimit | None = _KIE_RATE_LIMIT,
        max_connections: int = 100,
        callbacks: CallbackServer | CallbackReceiver | None = None,
        trust_callback_urls: bool = False,
        callback_poll_policy: PollPolicy | None = None,
        rng: random.Random | None = None,
        user_agent: str | None = None,
        allow_http: bool = False,
        allow_private_hosts: bool = False,
        callback_url: str | None = None,
        coordinator: Coordinator | None = None,
    ) -> None:
        try:
            key = ApiKey.load(api_key if api_key is not None else os.environ.get("KIE_API_KEY"))
        finally:
            api_key = None  # the plain key stays in no frame local (tracebacks with locals)
        self._base_url = check.base_url(
            base_url if base_url is not None else os.environ.get("KIE_BASE_URL", DEFAULT_BASE_URL),
            allow_http=bool(allow_http),
        )
        self._request_timeout = check.positive_seconds(request_timeout, "request_timeout")
        if poll_policy is not None and not isinstance(poll_policy, PollPolicy):
            raise ConfigurationError("poll_policy must be a veo4k.PollPolicy")
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise ConfigurationError("rate_limit must be a veo4k.RateLimit or None")
        self._max_connections = check.positive_int(
            max_connections, "max_connections", maximum=10_000
        )
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise ConfigurationError("session must be an aiohttp.ClientSession")
        self._poll_policy = poll_policy or PollPolicy()
        self._callbacks = CallbackPlan(
            callbacks, callback_url=callback_url, trust=trust_callback_urls,
            safety_net=callback_poll_policy, poll_policy=self._poll_policy,
        )  # fmt: skip
        if coordinator is not None and not isinstance(coordinator, Coordinator):
            raise ConfigurationError("coordinator must be a veo4k coordinator (RedisCoordinator)")
        self._coordinator = coordinator or LocalCoordinator()
        self._own_coordinator = coordinator is None
        self._coordinator.bind_key(key)  # results and budgets are scoped to the key's account
        self._user_agent = check.user_agent(user_agent) or default_user_agent()
        self._rate_limit = rate_limit
        self._rng = rng or random.Random()
        self._user_session = session
        self._own_session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._limiter = self._coordinator.limiter(rate_limit)
        self._pacer = self._limiter.pacer
        self._retry_policy = retry_policy or RetryPolicy()
        self._api = Api(
            session=self._session,
            base_url=self._base_url,
            api_key=key,
            request_timeout=self._request_timeout,
            retry=self._retry_policy,
            pacer=self._limiter,
            rng=self._rng,
            max_connections=max_connections,
            user_agent=self._user_agent,
        )
        self._kie = Endpoints(self._api)
        self._downloader = Downloader(
            refresh=self._kie.fresh_download_url,
            policy=HostPolicy(
                allow_http=bool(allow_http),
                allow_private=bool(allow_private_hosts),
                loopback=is_loopback_url(self._base_url),
            ),
            user_agent=self._user_agent,
            retry=self._retry_policy,
            rng=self._rng,
            request_timeout=self._request_timeout,
        )
        owner = secrets.token_hex(8)  # this client's name on task leases (random, not a secret)
        self._waits = WaitRegistry(
            submit=self._coordinator.submitter(
                self._kie.request_4k, owner=owner, trust=self._callbacks.trust
            ),
            get_record=self._kie.get_record,
            limiter=self._limiter,
            rng=self._rng,
            trust_callback_urls=self._callbacks.trust,
            retry=self._retry_policy,
            on_forget=functools.partial(self._coordinator.release, owner=owner),
            recent=self._callbacks.recent,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"Veo4kClient(base_url={self._base_url!r}, rate_limit={self._rate_limit!r}, "
            f"waits={len(self._waits)}, state={state})"
        )

    @property
    def base_url(self) -> str:
        """The API root requests go to."""
        return self._base_url

    @property
    def poll_policy(self) -> PollPolicy:
        """The default policy of :meth:`wait_for_4k`."""
        return self._poll_policy

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has run."""
        return self._closed

    @property
    def pacer(self) -> Pacer:
        """The client-wide request pacer (current rate, 429s seen, queue length).

        With a shared coordinator, the local pacer it falls back to when that is unavailable.
        """
        return self._pacer

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._check_usable()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every wait in flight and close the session this client created. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._downloader.aclose()  # running downloads raise ClientStateError
        await self._waits.close()
        self._callbacks.detach(self._waits.on_callback)
        self._coordinator.remove_sink(self._waits)
        self._limiter.close()
        if self._own_coordinator:
            await self._coordinator.aclose()
        self._api.close()
        if self._own_session is not None:
            await self._own_session.close()
            self._own_session = None

    def _check_usable(self) -> None:
        if self._closed:
            raise ClientStateError("this Veo4kClient is closed; create a new one")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._coordinator.add_sink(self._waits)
            self._callbacks.attach(self._waits.on_callback, via=self._coordinator)
        elif self._loop is not loop:
            raise ClientStateError(
                "this Veo4kClient belongs to another event loop; create one client per loop"
            )

    def _session(self) -> aiohttp.ClientSession:
        if self._user_session is not None:
            if self._user_session.closed:
                raise ClientStateError("the aiohttp session passed to Veo4kClient is closed")
            return self._user_session
        if self._own_session is None:
            self._own_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections)
            )
        return self._own_session

    # -- single requests ---------------------------------------------------------------------

    async def request_4k(
        self, task_id: str, index: int = 0, *, callback_url: str | None = None
    ) -> FourKStatus:
        """Send one get-4k-video request: it submits the job, or reports on it.

        Returns ``ready=False`` while Kie is processing, the URLs once done; raises the typed
        :class:`APIError` for real errors. Transient failures are retried a bounded number of
        times first. A repeat request never starts a second paid job on Kie's side.
        """
        task_id, index = check.task_id(task_id), check.index(index)
        callback_url = check.callback_url(callback_url)
        self._check_usable()
        return await self._kie.request_4k(task_id, index, Counter(), None, callback_url)

    async def get_record(self, task_id: str) -> TaskRecord:
        """Read ``record-info``: the authoritative status of any Veo task."""
        task_id = check.task_id(task_id)
        self._check_usable()
        return await self._kie.get_record(task_id, Counter(), None)

    # -- waiting -----------------------------------------------------------------------------

    async def wait_for_4k(
        self,
        task_id: str,
        index: int = 0,
        *,
        timeout: float | None = None,
        poll_policy: PollPolicy | None = None,
        callback_url: str | None = None,
        on_update: Listener | None = None,
    ) -> FourKResult:
        """Submit the 4K job if needed, then poll until it is ready or ``timeout`` passes.

        An explicit ``timeout`` bounds the whole call, queueing for the account's budget
        included, raising :class:`WaitTimeoutError`. Without it the policy's timeout counts
        from the submission, and queueing before it is bounded by ``queue_timeout``. A wait
        that queued until what is left of its timeout cannot fit an upscale (the policy's
        ``upscale_time``, else learned from this client's 4Ks, else ``2 * first_delay + 2 *
        wait_initial``) is not submitted: :class:`NotSubmittedError`, no credits spent; a
        timeout shorter than that from the start is always sent. Concurrent waits for the same
        task and index on this client share one poll loop: one submission, one request stream
        (the first waiter's policy and callback URL drive it). ``on_update`` is called with a
        :class:`WaitEvent` on every state change and poll; an async one runs in a task of its
        own, so it never delays the result or the deadline.

        A transient failure (connection, timeout, 408, 429, 455, 5xx) never ends the wait: it
        is retried on the :class:`RetryPolicy` backoff until the deadline, with a RETRYING
        event; the :class:`WaitTimeoutError` then has the last one as ``__cause__``. A final
        answer (auth, credits, quota, validation, 4K unavailable, ...) ends it at once. Just
        before the deadline the wait makes one last check. Waiting again is safe: a repeat
        request reports on the running job and never starts another.
        """
        task_id, index = check.task_id(task_id), check.index(index)
        callback_url = check.callback_url(callback_url)
        if on_update is not None and not callable(on_update):
            raise ConfigurationError("on_update must be callable")
        self._check_usable()
        policy, callback_url, basis = self._callbacks.plan(poll_policy, callback_url)
        explicit = timeout is not None
        limit = policy.timeout if timeout is None else check.positive_seconds(timeout, "timeout")
        loop = asyncio.get_running_loop()
        shared = self._waits.join(task_id, index, policy, callback_url, basis=basis)
        fut: asyncio.Future[FourKResult] = loop.create_future()
        sub = Subscription(
            fut, timeout=limit, listener=on_update, since=loop.time(), explicit=explicit,
            queue_timeout=policy.queue_timeout,
        )  # fmt: skip
        shared.subscribe(sub)
        try:
            return await fut
        except WaitTimeoutError as exc:
            if on_update is not None:
                shared.emit(WaitState.FAILED, msg=str(exc), error=exc, only=on_update)
            raise
        finally:
            await self._waits.leave(shared, sub)

    # -- downloads ---------------------------------------------------------------------------

    async def download(
        self,
        result: FourKResult | str,
        dest: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        on_progress: ProgressCallback | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> pathlib.Path:
        """Download a finished 4K video to ``dest`` and return its path.

        ``dest`` is a folder (for ``<task_id>_<index>.mp4``; created if missing) when it ends
        with ``/`` or names an existing folder, else the file. Streams into ``dest.part`` and
        renames it when complete; an interrupted download resumes from the ``.part`` with a
        Range request; the length is checked; transient failures are retried (bounded). An
        expired link (403/404) is refreshed once through Kie's ``download-url``. The file host
        never sees the API key.

        ``timeout`` (default 3600 s) bounds the whole call: connect, a slow body, retries; past
        it :class:`DownloadTimeoutError`. :meth:`aclose` stops a running download at once
        (:class:`ClientStateError`). After a timeout, ``aclose`` or cancellation the ``.part``
        is kept, so the next call resumes. Only https URLs (http with ``allow_http``) on public
        addresses (others with ``allow_private_hosts``) are fetched, redirects included.
        """
        url, task_id, path, deadline = self._downloader.checked(
            result, dest, overwrite=overwrite, on_progress=on_progress, timeout=timeout
        )
        self._check_usable()
        return await self._downloader.fetch(
            url, task_id, path, deadline=deadline, on_progress=on_progress
        )

    async def fresh_download_url(self, url: str, *, task_id: str | None = None) -> str:
        """Ask Kie for a fresh link to a generated file (valid about 20 minutes)."""
        self._check_usable()
        return await self._kie.fresh_download_url(url, task_id)

    # -- batches -----------------------------------------------------------------------------

    async def as_completed(
        self,
        tasks: Iterable[str | tuple[str, int]],
        *,
        timeout: float | None = None,
        poll_policy: PollPolicy | None = None,
        callback_url: str | None = None,
        on_update: Listener | None = None,
    ) -> AsyncGenerator[Outcome, None]:
        """Wait for many tasks at once and yield each :class:`Outcome` as soon as it is known.

        ``timeout`` is one deadline for the whole batch; without it each task's policy
        timeout counts from its own submission (see :meth:`wait_for_4k`). When the deadline
        cannot fit every task, the ones that could no longer finish are not submitted
        (:class:`NotSubmittedError`) and one warning is logged for the batch.

        One task's failure never stops the others. Leaving the loop early cancels the waits
        still running (wrap the iterator in ``contextlib.aclosing`` to do that at once).
        Waits are as cheap as the loop they share: 10,000 pending outcomes cost about 3 KiB
        each (``benchmarks/scale.py``).
        """
        pairs = check.task_pairs(tasks)
        callback_url = check.callback_url(callback_url)
        if on_update is not None and not callable(on_update):
            raise ConfigurationError("on_update must be callable")
        self._check_usable()
        policy, callback_url, basis = self._callbacks.plan(poll_policy, callback_url)
        if timeout is not None:
            timeout = check.positive_seconds(timeout, "timeout")

        def join(task_id: str, index: int) -> SharedWait:
            return self._waits.join(task_id, index, policy, callback_url, basis=basis)

        async with contextlib.aclosing(
            outcomes(join, pairs, timeout=timeout, policy=policy, on_update=on_update)
        ) as stream:
            async for outcome in stream:
                yield outcome

    async def wait_for_4k_many(
        self,
        tasks: Iterable[str | tuple[str, int]],
        *,
        return_exceptions: bool = False,
        timeout: float | None = None,
        poll_policy: PollPolicy | None = None,
        callback_url: str | None = None,
        on_update: Listener | None = None,
    ) -> list[FourKResult | Veo4kError]:
        """Wait for many tasks; return their results in input order.

        With ``return_exceptions=False`` the first error cancels the other waits and is raised;
        with ``True`` each failed task's slot holds its :class:`Veo4kError`.
        """
        pairs = check.task_pairs(tasks)
        stream = self.as_completed(
            pairs,
            timeout=timeout,
            poll_policy=poll_policy,
            callback_url=callback_url,
            on_update=on_update,
        )
        return await collect(stream, pairs, return_exceptions=return_exceptions)
