"""The fake's other two faces: the file host that serves 4K files, and the sender that
POSTs callbacks to a client's ``callBackUrl`` (split from ``_fake.py``, mixed into FakeKie)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from .._signature import sign
from ._hostile import NONCANONICAL_LOOPBACK, Hostile, etag_of, gzip_bomb
from ._model import CallbackShape, FakeTask, Stats, callback_body, fake_video_bytes

__all__ = ["CallbackSenderMixin", "FileHostMixin"]


class FileHostMixin:
    """Serves ``/files/{name}`` with Range and If-Range support, expiry and interruptions;
    records any Authorization header that reaches it (a client must never send its key
    there). ``file_versions[name] += 1`` changes a file's bytes and ETag (a resumed download
    must notice); the :class:`Hostile` file-host modes apply here."""

    stats: Stats
    expired_files: set[str]
    interrupt_files: dict[str, int]
    file_versions: dict[str, int]
    range_support: bool
    file_size: int
    file_base_url: str
    hostile: set[Hostile]

    def result_url(self, task_id: str, index: int = 0) -> str:
        """Where the fake serves the 4K file of a task."""
        base = self.file_base_url
        if Hostile.NONCANONICAL_HOST in self.hostile:
            base = base.replace("127.0.0.1", NONCANONICAL_LOOPBACK)
        return f"{base}/files/{task_id}_{index}.mp4"

    def file_bytes(self, name: str) -> bytes:
        """The bytes served for ``name`` now (its current version)."""
        version = self.file_versions.get(name, 0)
        return fake_video_bytes(name if not version else f"{name}#{version}", self.file_size)

    async def _capture(self, request: web.Request) -> web.StreamResponse:
        if "Authorization" in request.headers:
            self.stats.file_auth_violations.append(str(request.url))
        return web.Response(status=404)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if "Authorization" in request.headers:
            self.stats.file_auth_violations.append(str(request.url))
            return web.Response(status=400, text="Authorization header sent to the file host")
        if name in self.expired_files:
            return web.Response(status=403, text="expired")
        data = self.file_bytes(name)
        etag = etag_of(name, self.file_versions.get(name, 0))
        range_header = request.headers.get("Range", "")
        ranged = self.range_support and range_header.startswith("bytes=") and (
            range_header.endswith("-"))  # fmt: skip
        if Hostile.GZIP_BOMB in self.hostile:
            return _raw(request, b"Content-Encoding: gzip\r\n", gzip_bomb())
        if Hostile.TRUNCATE in self.hostile and not ranged:
            return _raw(request, b"", data[: len(data) // 2])  # no length, cut halfway
        start = 0
        if ranged:
            self.stats.range_requests += 1
            if request.headers.get("If-Range", etag) != etag:
                self.stats.if_range_mismatches += 1  # changed since: the whole file, 200
            else:
                start = int(range_header[6:-1] or 0)
            if start >= len(data):
                return web.Response(
                    status=416, headers={"Content-Range": f"bytes */{len(data)}", "ETag": etag}
                )
        body = data[start:]
        resp = web.StreamResponse(status=206 if start else 200)
        resp.content_type = "video/mp4"
        resp.headers["ETag"] = etag
        if start:
            first = start
            if Hostile.WRONG_RANGE in self.hostile:  # the right length from the wrong place
                first, body = 0, data[: len(data) - start]
            resp.headers["Content-Range"] = f"bytes {first}-{first + len(body) - 1}/{len(data)}"
        resp.content_length = len(body)
        if self.range_support:
            resp.headers["Accept-Ranges"] = "bytes"
        await resp.prepare(request)
        cut = self.interrupt_files.pop(name, None)
        if cut is not None and cut > start:
            await resp.write(body[: cut - start])
            transport = request.transport
            if transport is not None:
                transport.abort()
            return resp
        await resp.write(body)
        await resp.write_eof()
        return resp


def _raw(request: web.Request, headers: bytes, body: bytes) -> web.Response:
    """Answer 200 with ``body`` and no length (HTTP/1.0 style: ends at close), by hand: aiohttp
    itself always sends a length or chunks."""
    transport = request.transport
    if transport is not None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nConnection: close\r\n"
        transport.write(head + headers + b"\r\n" + body)
        transport.close()
    return web.Response(status=500)  # never sent: the connection is closed


class CallbackSenderMixin:
    """Delivers callbacks as Kie does: after the job, signed if ``hmac_key``, maybe repeated."""

    stats: Stats
    hmac_key: str | None
    callback_shape: CallbackShape
    callback_duplicates: int
    callback_delay: float
    callback_sink: Callable[[str, bytes, dict[str, str]], Awaitable[object]] | None
    _shapes: itertools.cycle[CallbackShape]
    _session: aiohttp.ClientSession | None
    _deliveries: set[asyncio.Task[None]]

    def result_url(self, task_id: str, index: int = 0) -> str:
        raise NotImplementedError  # provided by FileHostMixin

    def _schedule_callback(self, task: FakeTask, index: int, url: str, after: float) -> None:
        task_ref = asyncio.get_running_loop().create_task(
            self._deliver(task, index, url, after + self.callback_delay)
        )
        self._deliveries.add(task_ref)
        task_ref.add_done_callback(self._deliveries.discard)

    def callback_payload(
        self, task: FakeTask, index: int, shape: CallbackShape | None = None
    ) -> dict[str, Any]:
        """The body Kie would send to ``callBackUrl`` once the 4K job of ``task`` ends."""
        shape = shape or self.callback_shape
        if shape is CallbackShape.ROTATE:
            shape = next(self._shapes)
        return callback_body(task, shape, self.result_url(task.task_id, index))

    def callback_headers(self, task_id: str, timestamp: int | None = None) -> dict[str, str]:
        """Signed headers for a delivery about ``task_id`` (none without ``hmac_key``)."""
        headers = {"Content-Type": "application/json"}
        if self.hmac_key:
            ts = int(time.time()) if timestamp is None else timestamp
            headers["X-Webhook-Timestamp"] = str(ts)
            headers["X-Webhook-Signature"] = sign(task_id, ts, self.hmac_key)
        return headers

    async def _deliver(self, task: FakeTask, index: int, url: str, after: float) -> None:
        await asyncio.sleep(after)
        body = json.dumps(self.callback_payload(task, index)).encode()
        for _ in range(1 + self.callback_duplicates):
            await self.post_callback(url, body, self.callback_headers(task.task_id))

    async def post_callback(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """POST one callback delivery as Kie does (15 s answer timeout); return the status.

        With ``callback_sink`` set the delivery is handed to it in process instead.
        """
        if self.callback_sink is not None:
            await self.callback_sink(url, body, headers)
            self.stats.callbacks_sent += 1
            return 200
        assert self._session is not None, "FakeKie is not started"
        try:
            async with self._session.post(
                url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=15)
            ) as resp:
                await resp.read()
                self.stats.callbacks_sent += 1
                return resp.status
        except (aiohttp.ClientError, TimeoutError):
            self.stats.callbacks_failed += 1
            return 0
