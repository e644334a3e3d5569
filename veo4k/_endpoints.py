"""Kie's three endpoints as the client uses them: build the request, send it through the
:class:`Api`, classify the answer. Waits call these directly (no trip back up to the client).
"""

from __future__ import annotations

from typing import Any

from ._errors import DownloadError
from ._models import FourKStatus, TaskRecord
from ._schedule import Ask, Lane
from ._transport import Api, Counter, RetryHook
from ._urls import result_url
from ._wire import error_for, fourk_status, make_converter, parse_record

__all__ = ["DOWNLOAD_URL_PATH", "FOURK_PATH", "RECORD_PATH", "Endpoints"]

FOURK_PATH = "/api/v1/veo/get-4k-video"
RECORD_PATH = "/api/v1/veo/record-info"
DOWNLOAD_URL_PATH = "/api/v1/common/download-url"


class Endpoints:
    """get-4k-video, record-info and download-url over one :class:`Api`."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._converter = make_converter()

    async def request_4k(
        self,
        task_id: str,
        index: int,
        counter: Counter,
        on_retry: RetryHook | None,
        callback_url: str | None = None,
        attempts: int | None = None,
        ask: Ask | None = None,
    ) -> FourKStatus:
        """One get-4k-video request: it submits the job, or reports on it (a one-off call
        waits in the submission lane; a wait's ask holds its slot and lane already)."""
        body: dict[str, Any] = {"taskId": task_id, "index": index}
        if callback_url:
            body["callBackUrl"] = callback_url
        env = await self.api.call(
            "POST", FOURK_PATH, task_id=task_id, json=body, counter=counter, on_retry=on_retry,
            attempts=attempts, ask=ask, lane=Lane.SUBMIT,
        )  # fmt: skip
        return fourk_status(env, task_id, index)

    async def get_record(
        self,
        task_id: str,
        counter: Counter,
        on_retry: RetryHook | None,
        attempts: int | None = None,
    ) -> TaskRecord:
        """record-info: the authoritative status of any Veo task (an urgent follow-up)."""
        env = await self.api.call(
            "GET", RECORD_PATH, task_id=task_id, params={"taskId": task_id}, counter=counter,
            on_retry=on_retry, attempts=attempts,
        )  # fmt: skip
        if env.code != 200:
            raise error_for(env, task_id)
        return parse_record(self._converter, env, task_id)

    async def fresh_download_url(self, url: str, task_id: str | None) -> str:
        """download-url: a fresh link to a generated file (checked like any result URL; an
        urgent follow-up, never held behind submissions)."""
        env = await self.api.call(
            "POST", DOWNLOAD_URL_PATH, task_id=task_id, json={"url": url}, counter=Counter()
        )
        if env.code != 200 or not isinstance(env.data, str) or not env.data:
            raise DownloadError(
                f"Kie would not refresh the link ({env.code}: {env.msg})", url=url, task_id=task_id
            )
        try:
            return result_url(env.data)
        except ValueError as exc:
            raise DownloadError(f"Kie sent a bad link: {exc}", url=url, task_id=task_id) from None
