"""The fake's front door: what every API request meets before its answer (the edge's
User-Agent check, the key, the account's rate window, queued and random faults), the
envelope every answer wears, and the counters tests read (split from ``_fake.py``)."""

from __future__ import annotations

import asyncio
import collections
import random
import time
from typing import Any

from aiohttp import web

from ._faults import EDGE_BLOCK_BODY, Fault, answer_fault, random_fault
from ._hostile import MARKUP_TEXT, Hostile, deep_value, flood_headers
from ._model import FakeTask, Stats

__all__ = ["DoorMixin"]


class DoorMixin:
    """Account-wide checks, the ``{code, msg, data}`` envelope and the stats of a FakeKie."""

    api_key: str
    mirror_status: bool
    hostile: set[Hostile]
    rate_limit: tuple[int, float] | None
    rate_limit_retry_after: float | None
    require_user_agent: bool
    fault_rate: float
    user_agents: collections.Counter[str]
    stats: Stats
    tasks: dict[str, FakeTask]
    _rng: random.Random
    _faults: list[Fault]
    _window: collections.deque[float]

    @staticmethod
    def _now() -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    def _envelope(self, code: int, msg: str, data: Any = None) -> web.Response:
        status = code if self.mirror_status and code != 200 else 200
        if Hostile.MARKUP in self.hostile and code != 200:
            msg = f"{MARKUP_TEXT} {msg}"
        if Hostile.DEEP_JSON in self.hostile and isinstance(data, dict):
            data = {**data, "extra": deep_value()}
        flood = flood_headers() if Hostile.HEADER_FLOOD in self.hostile else None
        body = {"code": code, "msg": msg, "data": data}
        return web.json_response(body, status=status, headers=flood)

    def _over_limit(self, now: float) -> bool:
        if self.rate_limit is None:
            return False
        count, period = self.rate_limit
        while self._window and self._window[0] <= now - period:
            self._window.popleft()
        if len(self._window) >= count:
            self.stats.rate_limited += 1
            self.stats.rejected_times.append(now)
            return True
        self._window.append(now)
        return False

    def _take_fault(self, path: str, task_id: str | None) -> Fault | None:
        now = self._now()
        for fault in self._faults:
            if fault.matches(path, task_id, now):
                fault.times -= 1
                self.stats.faults_fired[fault.kind.value] += 1
                return fault
        if self.fault_rate and self._rng.random() < self.fault_rate:
            fault = random_fault(self._rng)
            self.stats.faults_fired[fault.kind.value] += 1
            return fault
        return None

    def _count(self, path: str) -> float:
        now = self._now()
        self.stats.requests[path] += 1
        self.stats.times.append(now)
        return now

    def _refusal_of(
        self, authorization: str | None, now: float, user_agent: str | None = None
    ) -> web.Response | None:
        """1010 for an anonymous client (if required), 401 for a bad key, 429 over the rate
        limit, else None: the same for every path."""
        self.user_agents[user_agent or ""] += 1
        if self.require_user_agent and (not user_agent or user_agent.startswith("Python/")):
            return web.Response(status=403, body=EDGE_BLOCK_BODY, content_type="text/plain")
        if authorization != f"Bearer {self.api_key}":
            return self._envelope(401, "You do not have access permissions")
        if self._over_limit(now):
            headers = {}
            if self.rate_limit_retry_after is not None:
                headers["Retry-After"] = f"{self.rate_limit_retry_after:g}"
            body = {"code": 429, "msg": "Too many requests, please slow down.", "data": None}
            return web.json_response(body, status=429, headers=headers)
        return None

    async def _gate(self, request: web.Request, path: str, task_id: str | None) -> Any:
        """Common checks; return a response to send at once, or (fault, None) to proceed."""
        now = self._count(path)
        fault = self._take_fault(path, task_id)
        if fault is not None and fault.acts_first:
            return await answer_fault(fault, request)
        headers = request.headers
        refusal = self._refusal_of(headers.get("Authorization"), now, headers.get("User-Agent"))
        return refusal if refusal is not None else (fault,)

    async def _finish(
        self, request: web.Request, fault: Fault | None, answer: web.Response
    ) -> web.StreamResponse:
        if fault is None:
            return answer
        return await answer_fault(fault, request, answer)

    def max_in_window(self, period: float) -> int:
        """The most API requests seen in any window of ``period`` seconds."""
        times, best, lo = list(self.stats.times), 0, 0
        for hi, t in enumerate(times):
            while times[lo] <= t - period:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def stats_summary(self, period: float = 10.0) -> dict[str, Any]:
        """Counters as plain data (also served at ``GET /_fake/stats?period=``)."""
        times = list(self.stats.times)
        return {
            "requests": sum(self.stats.requests.values()),
            "by_path": dict(self.stats.requests),
            "rate_limited": self.stats.rate_limited,
            "faults": dict(self.stats.faults_fired),
            "submissions": sum(sum(t.charges.values()) for t in self.tasks.values()),
            "max_submissions_per_task": max(
                (max(t.charges.values(), default=0) for t in self.tasks.values()), default=0
            ),
            "tasks": len(self.tasks),
            "first": times[0] if times else None,
            "last": times[-1] if times else None,
            "max_in_window": self.max_in_window(period),
            "period": period,
        }

    async def _stats_view(self, request: web.Request) -> web.StreamResponse:
        period = float(request.query.get("period", "10"))
        summary = self.stats_summary(period)
        if request.query.get("times"):
            summary["times"] = list(self.stats.times)
            summary["rejected_times"] = list(self.stats.rejected_times)
        return web.json_response(summary)
