"""``Veo4kClient``: submit 4K upscales, wait for them, read task records."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
from collections.abc import AsyncGenerator, Iterable
from types import TracebackType
from typing import Any, Self

import aiohttp

from . import _validate as check
from ._config import PollPolicy, RateLimit, RetryPolicy
from ._errors import ClientStateError, ConfigurationError, Veo4kError, WaitTimeoutError
from ._limiter import Pacer
from ._models import FourKResult, FourKStatus, Outcome, TaskRecord, WaitState
from ._poll import Listener, SharedWait
from ._transport import Api, Counter, RetryHook
from ._wire import error_for, fourk_status, make_converter, parse_record

__all__ = ["Veo4kClient", "wait_for_4k"]

DEFAULT_BASE_URL = "https://api.kie.ai"
FOURK_PATH = "/api/v1/veo/get-4k-video"
RECORD_PATH = "/api/v1/veo/record-info"
_KIE_RATE_LIMIT = RateLimit()


class Veo4kClient:
    """An asyncio client for Kie's Veo 3.1 "Get 4K Video" API.

    Use it as an async context manager (or call :meth:`aclose`). One client serves any number of
    concurrent waits; all of its requests share one pacer, so they stay under ``rate_limit``.
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
        rng: random.Random | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("KIE_API_KEY")
        if not isinstance(key, str) or not key.strip():
            raise ConfigurationError(
                "no API key: pass api_key=... or set the KIE_API_KEY environment variable"
            )
        if any(c.isspace() for c in key.strip()):
            raise ConfigurationError("api_key must not contain whitespace")
        self._base_url = check.base_url(
            base_url if base_url is not None else os.environ.get("KIE_BASE_URL", DEFAULT_BASE_URL)
        )
        self._request_timeout = check.positive_seconds(request_timeout, "request_timeout")
        if poll_policy is not None and not isinstance(poll_policy, PollPolicy):
            raise ConfigurationError("poll_policy must be a veo4k.PollPolicy")
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise ConfigurationError("rate_limit must be a veo4k.RateLimit or None")
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise ConfigurationError("session must be an aiohttp.ClientSession")
        self._poll_policy = poll_policy or PollPolicy()
        self._rate_limit = rate_limit
        self._rng = rng or random.Random()
        self._user_session = session
        self._own_session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._waits: dict[tuple[str, int], SharedWait] = {}
        self._converter = make_converter()
        self._pacer = Pacer(rate_limit)
        self._api = Api(
            session=self._session,
            base_url=self._base_url,
            api_key=key.strip(),
            request_timeout=self._request_timeout,
            retry=retry_policy or RetryPolicy(),
            pacer=self._pacer,
            rng=self._rng,
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
        """The client-wide request pacer (current rate, 429s seen, queue length)."""
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
        tasks = [w.task for w in self._waits.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._waits.clear()
        self._pacer.close()
        if self._own_session is not None:
            await self._own_session.close()
            self._own_session = None

    def _check_usable(self) -> None:
        if self._closed:
            raise ClientStateError("this Veo4kClient is closed; create a new one")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
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
            self._own_session = aiohttp.ClientSession()
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
        return await self._request_4k(task_id, index, callback_url, Counter(), None)

    async def _request_4k(
        self,
        task_id: str,
        index: int,
        callback_url: str | None,
        counter: Counter,
        on_retry: RetryHook | None,
    ) -> FourKStatus:
        body: dict[str, Any] = {"taskId": task_id, "index": index}
        if callback_url:
            body["callBackUrl"] = callback_url
        env = await self._api.call(
            "POST", FOURK_PATH, task_id=task_id, json=body, counter=counter, on_retry=on_retry
        )
        return fourk_status(env, task_id, index)

    async def get_record(self, task_id: str) -> TaskRecord:
        """Read ``record-info``: the authoritative status of any Veo task."""
        task_id = check.task_id(task_id)
        self._check_usable()
        return await self._get_record(task_id, Counter(), None)

    async def _get_record(
        self, task_id: str, counter: Counter, on_retry: RetryHook | None
    ) -> TaskRecord:
        env = await self._api.call(
            "GET",
            RECORD_PATH,
            task_id=task_id,
            params={"taskId": task_id},
            counter=counter,
            on_retry=on_retry,
        )
        if env.code != 200:
            raise error_for(env, task_id)
        return parse_record(self._converter, env, task_id)

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

        ``timeout`` defaults to the policy's; the wait ends within it, queueing included,
        raising :class:`WaitTimeoutError`. Concurrent waits for the same task and index on
        this client share one poll loop: one submission, one request stream. ``on_update`` is
        called with a :class:`WaitEvent` on every state change and poll.
        """
        task_id, index = check.task_id(task_id), check.index(index)
        callback_url = check.callback_url(callback_url)
        if poll_policy is not None and not isinstance(poll_policy, PollPolicy):
            raise ConfigurationError("poll_policy must be a veo4k.PollPolicy")
        policy = poll_policy or self._poll_policy
        limit = policy.timeout if timeout is None else check.positive_seconds(timeout, "timeout")
        if on_update is not None and not callable(on_update):
            raise ConfigurationError("on_update must be callable")
        self._check_usable()
        shared = self._join(task_id, index, policy, callback_url)
        if on_update is not None:
            shared.listeners.append(on_update)
        assert shared.task is not None
        timer = asyncio.timeout(limit)
        try:
            async with timer:
                return await asyncio.shield(shared.task)
        except TimeoutError:
            if not timer.expired():
                raise
            error = WaitTimeoutError(
                task_id, index, limit, shared.counter.requests, shared.last_state
            )
            if on_update is not None:
                await shared.emit(WaitState.FAILED, msg=str(error), error=error, only=on_update)
            raise error from None
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._closed and current is not None and not current.cancelling():
                raise ClientStateError("the client was closed while this wait ran") from None
            raise
        finally:
            await self._leave(shared, on_update)

    def _join(
        self, task_id: str, index: int, policy: PollPolicy, callback_url: str | None
    ) -> SharedWait:
        key = (task_id, index)
        shared = self._waits.get(key)
        if shared is None:
            loop = asyncio.get_running_loop()
            shared = SharedWait(task_id, index, policy, self._rng, loop.time())

            def submit(counter: Counter, on_retry: RetryHook) -> Any:
                return self._request_4k(task_id, index, callback_url, counter, on_retry)

            def get_record(counter: Counter, on_retry: RetryHook) -> Any:
                return self._get_record(task_id, counter, on_retry)

            shared.task = loop.create_task(
                shared.run(submit, get_record), name=f"veo4k-wait-{task_id}-{index}"
            )
            shared.task.add_done_callback(functools.partial(self._finished, key, shared))
            self._waits[key] = shared
        shared.waiters += 1
        return shared

    def _finished(
        self, key: tuple[str, int], shared: SharedWait, task: asyncio.Task[FourKResult]
    ) -> None:
        if self._waits.get(key) is shared:
            del self._waits[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so a wait nobody awaits any more logs nothing

    async def _leave(self, shared: SharedWait, on_update: Listener | None) -> None:
        shared.waiters -= 1
        if on_update is not None:
            with contextlib.suppress(ValueError):
                shared.listeners.remove(on_update)
        task = shared.task
        if shared.waiters == 0 and task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])

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

        One task's failure never stops the others. Leaving the loop early cancels the waits
        still running (wrap the iterator in ``contextlib.aclosing`` to do that at once).
        """
        pairs = check.task_pairs(tasks)
        if timeout is not None:
            check.positive_seconds(timeout, "timeout")
        check.callback_url(callback_url)
        self._check_usable()

        async def one(task_id: str, index: int) -> Outcome:
            try:
                result = await self.wait_for_4k(
                    task_id,
                    index,
                    timeout=timeout,
                    poll_policy=poll_policy,
                    callback_url=callback_url,
                    on_update=on_update,
                )
            except Veo4kError as exc:
                return Outcome(task_id=task_id, index=index, error=exc)
            return Outcome(task_id=task_id, index=index, result=result)

        running = [asyncio.ensure_future(one(t, i)) for t, i in pairs]
        try:
            for next_done in asyncio.as_completed(running):
                yield await next_done
        finally:
            for fut in running:
                fut.cancel()
            if running:
                await asyncio.wait(running)

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
        results: dict[tuple[str, int], FourKResult | Veo4kError] = {}
        stream = self.as_completed(
            pairs,
            timeout=timeout,
            poll_policy=poll_policy,
            callback_url=callback_url,
            on_update=on_update,
        )
        async with contextlib.aclosing(stream):
            async for outcome in stream:
                if outcome.error is not None and not return_exceptions:
                    raise outcome.error
                value = outcome.result if outcome.result is not None else outcome.error
                assert value is not None
                results[(outcome.task_id, outcome.index)] = value
        return [results[pair] for pair in pairs]


async def wait_for_4k(
    task_id: str,
    index: int = 0,
    *,
    client: Veo4kClient | None = None,
    timeout: float | None = None,
    poll_policy: PollPolicy | None = None,
    callback_url: str | None = None,
    on_update: Listener | None = None,
    **client_kwargs: Any,
) -> FourKResult:
    """One-shot helper: wait for one 4K with ``client``, or with a client made for the call."""
    wait_kwargs: dict[str, Any] = {
        "timeout": timeout,
        "poll_policy": poll_policy,
        "callback_url": callback_url,
        "on_update": on_update,
    }
    if client is not None:
        if client_kwargs:
            raise ConfigurationError(
                f"pass either client= or client options, not both: {sorted(client_kwargs)}"
            )
        return await client.wait_for_4k(task_id, index, **wait_kwargs)
    async with Veo4kClient(**client_kwargs) as own:
        return await own.wait_for_4k(task_id, index, **wait_kwargs)
