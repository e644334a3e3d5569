"""Outcomes published and subscribed: one pub/sub channel per namespace.

Measured choice: pub/sub delivers a message to every subscribed process in one hop (under a
millisecond on loopback), needs no per-reader cursor, and a missed message costs nothing
lasting because the outcome is also stored under its own key (with a TTL) and every poll step
reads it (``CLAIM``). Streams would add replay, which those stored keys already give.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from .._callbacks import CallbackEvent
from .._models import FourKStatus

__all__ = ["Listener", "decode", "encode_event", "encode_status", "event_from", "status_from"]

log = logging.getLogger("veo4k")


def encode_event(event: CallbackEvent) -> dict[str, Any]:
    """A callback as plain data (no token, no signature: only what Kie said)."""
    return {
        "task_id": event.task_id,
        "ok": event.ok,
        "code": event.code,
        "msg": event.msg,
        "result_urls": list(event.result_urls),
        "image_urls": list(event.image_urls),
    }


def event_from(data: dict[str, Any]) -> CallbackEvent:
    """The inverse of :func:`encode_event`."""
    return CallbackEvent(
        task_id=str(data["task_id"]),
        ok=bool(data["ok"]),
        code=int(data["code"]),
        msg=str(data["msg"]),
        result_urls=tuple(str(u) for u in data["result_urls"]),
        image_urls=tuple(str(u) for u in data["image_urls"]),
    )


def encode_status(status: FourKStatus) -> dict[str, Any]:
    """A ready result as plain data."""
    return {
        "task_id": status.task_id,
        "index": status.index,
        "result_urls": list(status.result_urls),
        "image_urls": list(status.image_urls),
        "msg": status.msg,
        "code": status.code,
    }


def status_from(data: dict[str, Any]) -> FourKStatus:
    """The inverse of :func:`encode_status` (always ready)."""
    return FourKStatus(
        task_id=str(data["task_id"]),
        index=int(data["index"]),
        ready=True,
        result_urls=tuple(str(u) for u in data["result_urls"]),
        image_urls=tuple(str(u) for u in data["image_urls"]),
        msg=str(data["msg"]),
        code=int(data["code"]),
    )


def decode(raw: bytes | str) -> tuple[str, str, dict[str, Any]] | None:
    """``(origin, kind, value)`` of a channel message, or None for one we cannot read."""
    try:
        msg = json.loads(raw)
        return str(msg["o"]), str(msg["k"]), dict(msg["v"])
    except (ValueError, KeyError, TypeError):
        return None


class Listener:
    """Subscribes to the namespace channel in the background; resubscribes after an outage."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        channel: str,
        on_message: Callable[[bytes | str], None],
        *,
        on_down: Callable[[BaseException], None],
        on_up: Callable[[], None],
        retry_interval: float,
    ) -> None:
        self._client = client
        self._channel = channel
        self._on_message = on_message
        self._on_down = on_down
        self._on_up = on_up
        self._retry = retry_interval
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        self._failed = False  # log an unexpected failure once, not once per retry

    def start(self) -> None:
        """Start listening (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="veo4k-redis-listener"
            )

    async def _run(self) -> None:
        while True:
            try:
                if isinstance(self._client, RedisCluster):
                    await self._client.initialize()  # its pubsub needs the slot map loaded
                pubsub = self._client.pubsub()
                try:
                    await pubsub.subscribe(self._channel)
                    self.subscribed.set()
                    self._on_up()
                    while True:
                        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if msg is not None and msg.get("type") == "message":
                            self._on_message(msg["data"])
                finally:
                    self.subscribed.clear()
                    # redis-py leaves PubSub.aclose unannotated
                    await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call]
            except (RedisError, OSError) as exc:
                self._on_down(exc)
                await asyncio.sleep(self._retry)
            except Exception:  # a bug (ours or the driver's) must not end the fan-out
                if self._failed:
                    log.debug("veo4k Redis listener failed again; resubscribing", exc_info=True)
                else:
                    self._failed = True
                    log.exception(
                        "veo4k Redis listener failed; resubscribing every %g s", self._retry
                    )
                await asyncio.sleep(self._retry)

    async def aclose(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
