"""A fake Kie server on 127.0.0.1 that answers as ``kie-api.md`` documents, quirks included."""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import random
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp import web

from ._delivery import CallbackSenderMixin, FileHostMixin
from ._door import DoorMixin
from ._faults import Fault, FaultKind
from ._hostile import MARKUP_TEXT, Hostile
from ._inprocess import InProcessMixin
from ._model import (
    CREDIT,
    DOWNLOAD_URL,
    FOURK,
    MSG_DONE,
    MSG_NOT_SUCCESS,
    MSG_PROCESSING,
    MSG_UNAVAILABLE,
    RECORD,
    CallbackShape,
    FakeTask,
    Job,
    Stats,
    TaskOutcome,
    record_data,
)

__all__ = ["CallbackShape", "FakeKie", "FakeTask", "TaskOutcome"]


class FakeKie(DoorMixin, InProcessMixin, FileHostMixin, CallbackSenderMixin):
    """An aiohttp fake of Kie's Veo API on 127.0.0.1, for tests, demos and benchmarks.

    ``async with FakeKie() as kie:`` starts it; point a client at ``kie.base_url`` with
    ``kie.api_key``. Tasks are created on first use (``auto_create``) or with :meth:`add_task`.
    Faults are queued with :meth:`inject` or drawn at ``fault_rate``; ``rate_limit`` enforces
    ``(max_requests, period)`` over every API request, as a sliding window. With
    ``require_user_agent`` the fake answers as Kie's edge does to anonymous clients: a request
    with no User-Agent, or aiohttp's default one, gets HTTP 403 ``error code: 1010``.
    ``hostile`` switches on :class:`Hostile` modes (markup in messages, deep JSON, truncated,
    misranged or gzip-bombed files, non-canonical hosts in result URLs).
    """

    def __init__(
        self,
        *,
        api_key: str = "fake-kie-key",
        ready_after: float | tuple[float, float] = 2.0,
        auto_create: bool = True,
        mirror_status: bool = False,
        rate_limit: tuple[int, float] | None = None,
        rate_limit_retry_after: float | None = None,
        hmac_key: str | None = None,
        callback_shape: CallbackShape = CallbackShape.A,
        callback_duplicates: int = 0,
        callback_delay: float = 0.0,
        deliver_callbacks: bool = True,
        fault_rate: float = 0.0,
        callback_sink: Callable[[str, bytes, dict[str, str]], Awaitable[object]] | None = None,
        seed: int = 0,
        require_user_agent: bool = False,
        file_size: int = 65_536,
        host: str = "127.0.0.1",
        port: int = 0,
        hostile: set[Hostile] | frozenset[Hostile] = frozenset(),
    ) -> None:
        self.api_key = api_key
        self.ready_after = ready_after
        self.auto_create = auto_create
        self.mirror_status = mirror_status
        self.rate_limit = rate_limit
        self.rate_limit_retry_after = rate_limit_retry_after
        self.hmac_key = hmac_key
        self.callback_shape = CallbackShape(callback_shape)
        self.callback_duplicates = callback_duplicates
        self.callback_delay = callback_delay
        self.deliver_callbacks = deliver_callbacks
        self.fault_rate = fault_rate
        self.callback_sink = callback_sink
        self.require_user_agent = require_user_agent
        self.user_agents: collections.Counter[str] = collections.Counter()
        """User-Agent headers seen on API requests."""
        self.on_submission: Callable[[FakeTask, int], object] | None = None
        """Called with (task, index) whenever a paid 4K job starts: lets tests await it."""
        self.file_size = file_size
        self.tasks: dict[str, FakeTask] = {}
        self.stats = Stats()
        self.expired_files: set[str] = set()
        self.interrupt_files: dict[str, int] = {}
        self.range_support = True
        self.file_versions: dict[str, int] = {}
        self.hostile: set[Hostile] = {Hostile(h) for h in hostile}
        self._rng = random.Random(seed)
        self._faults: list[Fault] = []
        self._window: collections.deque[float] = collections.deque()
        self._shapes = itertools.cycle([s for s in CallbackShape if s is not CallbackShape.ROTATE])
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self.base_url = ""
        self.file_base_url = ""

    # -- setup -------------------------------------------------------------------------------

    def add_task(self, task_id: str, **options: Any) -> FakeTask:
        """Register a source task; ``options`` are :class:`FakeTask` fields.

        Without ``ready_after`` the fake's own is used: a number, or a ``(low, high)`` range
        drawn from uniformly per task.
        """
        if "ready_after" not in options:
            ready = self.ready_after
            options["ready_after"] = (
                ready if isinstance(ready, int | float) else self._rng.uniform(*ready)
            )
        task = FakeTask(task_id=task_id, created_at=self._now(), **options)
        self.tasks[task_id] = task
        return task

    def inject(self, kind: FaultKind | str, **options: Any) -> Fault:
        """Queue a fault for the next matching request(s); ``options`` are :class:`Fault` fields."""
        fault = Fault(kind=FaultKind(kind), **options)
        if fault.kind is FaultKind.REDIRECT and not fault.location:
            fault.location = f"{self.file_base_url}/redirect-capture"
        self._faults.append(fault)
        return fault

    def submissions(self, task_id: str, index: int = 0) -> int:
        """How many paid 4K jobs were started for a task and index."""
        task = self.tasks.get(task_id)
        return task.charges[index] if task else 0

    def posts(self, task_id: str, index: int = 0) -> int:
        """How many get-4k-video requests arrived for a task and index."""
        task = self.tasks.get(task_id)
        return task.posts[index] if task else 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen on ``host``: an API site and a separate file-host site."""
        app = web.Application(client_max_size=1_048_576)
        app.router.add_post(FOURK, self._fourk)
        app.router.add_get(RECORD, self._record)
        app.router.add_post(DOWNLOAD_URL, self._download_url)
        app.router.add_get(CREDIT, self._credit)
        app.router.add_get("/files/{name}", self._file)
        app.router.add_route("*", "/redirect-capture", self._capture)
        app.router.add_get("/_fake/stats", self._stats_view)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.1
        )
        await self._runner.setup()
        api = web.TCPSite(self._runner, self._host, self._port)
        files = web.TCPSite(self._runner, self._host, 0)
        await api.start()
        await files.start()
        ports = [addr[1] for addr in self._runner.addresses]
        self.base_url = f"http://{self._host}:{ports[0]}"
        self.file_base_url = f"http://{self._host}:{ports[1]}"
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        """Stop delivering callbacks and serving."""
        for task in list(self._deliveries):
            task.cancel()
        if self._deliveries:
            await asyncio.wait(self._deliveries)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- tasks -----------------------------------------------------------------------------

    def _task(self, task_id: str) -> FakeTask | None:
        task = self.tasks.get(task_id)
        if task is None and self.auto_create:
            task = self.add_task(task_id)
        return task

    # -- API ---------------------------------------------------------------------------------

    async def _fourk(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        task_id = body.get("taskId") if isinstance(body, dict) else None
        gate = await self._gate(request, FOURK, task_id if isinstance(task_id, str) else None)
        if not isinstance(gate, tuple):
            return gate  # type: ignore[no-any-return]
        (fault,) = gate
        return await self._finish(request, fault, self._fourk_answer(body))

    def _fourk_answer(self, body: Any) -> web.Response:
        if not isinstance(body, dict) or not isinstance(body.get("taskId"), str):
            return self._envelope(422, "taskId is required")
        index = body.get("index", 0)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            return self._envelope(422, "index is invalid")
        callback_url = body.get("callBackUrl")
        task = self._task(body["taskId"])
        if task is None:
            return self._envelope(422, "record is null.")
        task.posts[index] += 1
        now = self._now()
        if index >= task.indices:
            return self._envelope(422, "record result data not exist.")
        refusal = self._refusal(task, now)
        if refusal is not None:
            return refusal
        job = task.jobs.get(index)
        if job is None:
            job = task.jobs[index] = Job(started=now, callback_url=callback_url)
            task.charges[index] += 1
            if self.on_submission is not None:
                self.on_submission(task, index)
            if callback_url and self.deliver_callbacks:
                self._schedule_callback(task, index, callback_url, task.ready_after)
            if task.ready_after > 0:
                data: dict[str, Any] = {"taskId": task.fourk_task_id or task.task_id}
                if not task.legacy_accept:
                    data |= {"resultUrls": None, "imageUrls": None}
                return self._envelope(200, "success", data)
        job_id = task.fourk_task_id or task.task_id
        if now - job.started < task.ready_after:
            data = {"taskId": job_id, "resultUrls": None, "imageUrls": None}
            return self._envelope(422, MSG_PROCESSING, data)
        job.done = True
        if task.outcome is TaskOutcome.UNAVAILABLE:
            return self._envelope(500, MSG_UNAVAILABLE, {"taskId": task.task_id})
        urls = self._urls(task, index)
        return self._envelope(task.done_code, MSG_DONE, {"taskId": job_id, **urls})

    def _refusal(self, task: FakeTask, now: float) -> web.Response | None:
        outcome = task.outcome
        if outcome is TaskOutcome.EXPIRED:
            return self._envelope(422, "Temporarily supports records within 14 days.")
        if outcome is TaskOutcome.BLANK:
            return self._envelope(422, "record result data is blank.")
        if outcome is TaskOutcome.FETCH_FAILED:
            return self._envelope(
                451, "Failed to fetch the image. Kindly verify any access limits set by you."
            )
        if outcome is TaskOutcome.SOURCE_FAILED or (
            outcome is TaskOutcome.SOURCE_GENERATING
            and now - task.created_at < task.source_ready_after
        ):
            return self._envelope(422, MSG_NOT_SUCCESS)
        return None

    def _urls(self, task: FakeTask, index: int) -> dict[str, Any]:
        video = [self.result_url(task.task_id, index)]
        image = [video[0].removesuffix(".mp4") + ".jpg"]
        if task.urls_as_string:
            return {"resultUrls": json.dumps(video), "imageUrls": json.dumps(image)}
        return {"resultUrls": video, "imageUrls": image}

    async def _record(self, request: web.Request) -> web.StreamResponse:
        task_id = request.query.get("taskId")
        gate = await self._gate(request, RECORD, task_id)
        if not isinstance(gate, tuple):
            return gate  # type: ignore[no-any-return]
        (fault,) = gate
        return await self._finish(request, fault, self._record_answer(task_id))

    def _record_answer(self, task_id: str | None) -> web.Response:
        if not task_id:
            return self._envelope(422, "taskId is required")
        task = self._task(task_id)
        if task is None:
            return self._envelope(422, "record is null.")
        now = self._now()
        flag = 1
        if task.outcome is TaskOutcome.SOURCE_FAILED:
            flag = 2
        elif task.outcome is TaskOutcome.SOURCE_GENERATING and (
            now - task.created_at < task.source_ready_after
        ):
            flag = 0
        source = f"{self.file_base_url}/files/{task.task_id}_1080p.mp4"
        data = record_data(task, flag, source)
        if Hostile.MARKUP in self.hostile and data.get("errorMessage"):
            data["errorMessage"] = f"{MARKUP_TEXT} {data['errorMessage']}"
        if task.record_quirks:  # "message" instead of "msg"
            return web.json_response({"code": 200, "message": "success", "data": data})
        return self._envelope(200, "success", data)

    async def _download_url(self, request: web.Request) -> web.StreamResponse:
        gate = await self._gate(request, DOWNLOAD_URL, None)
        if not isinstance(gate, tuple):
            return gate  # type: ignore[no-any-return]
        try:
            body = await request.json()
        except ValueError:
            body = None
        url = body.get("url") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url.startswith(self.file_base_url + "/files/"):
            return self._envelope(422, "The url is not a Kie-generated file.")
        name = url.split("/files/", 1)[1].split("?", 1)[0]
        self.expired_files.discard(name)
        return self._envelope(200, "success", f"{self.file_base_url}/files/{name}?fresh=1")

    async def _credit(self, request: web.Request) -> web.StreamResponse:
        gate = await self._gate(request, CREDIT, None)
        if not isinstance(gate, tuple):
            return gate  # type: ignore[no-any-return]
        return self._envelope(200, "success", 100)
