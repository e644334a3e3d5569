"""``veo4k.wait_for_4k``: one wait without keeping a client around."""

from __future__ import annotations

from typing import Any

from ._client import Veo4kClient
from ._config import PollPolicy
from ._errors import ConfigurationError
from ._models import FourKResult
from ._poll import Listener

__all__ = ["wait_for_4k"]


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
