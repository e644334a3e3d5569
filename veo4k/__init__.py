"""veo4k: an asyncio client for the Kie.ai Veo 3.1 "Get 4K Video" API.

>>> async with veo4k.Veo4kClient() as client:          # key from KIE_API_KEY
...     result = await client.wait_for_4k("veo_task_abc")
...     print(result.video_url)
"""

from __future__ import annotations

from typing import Any

from ._callback_server import CallbackServer
from ._callbacks import CallbackReceiver
from ._client import Veo4kClient
from ._config import PollPolicy, RateLimit, RetryPolicy
from ._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ClientStateError,
    ConfigurationError,
    DownloadError,
    DownloadTimeoutError,
    EdgeBlockedError,
    FeatureDisabledError,
    FourKUnavailableError,
    GenerationFailedError,
    InsufficientCreditsError,
    InvalidCallbackError,
    MediaFetchError,
    NotFoundError,
    NotSubmittedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    SignatureError,
    SourceNotReadyError,
    SourceTaskFailedError,
    SubKeyLimitError,
    TransportError,
    UpstreamTimeoutError,
    ValidationError,
    Veo4kError,
    WaitTimeoutError,
)
from ._models import (
    CallbackEvent,
    FourKResult,
    FourKStatus,
    Outcome,
    TaskRecord,
    WaitEvent,
    WaitState,
)
from ._oneshot import wait_for_4k
from ._progress import BatchProgress, ProgressCounts
from ._signature import verify_signature
from ._wire import is_transient

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "BatchProgress",
    "CallbackEvent",
    "CallbackReceiver",
    "CallbackServer",
    "ClientStateError",
    "ConfigurationError",
    "DownloadError",
    "DownloadTimeoutError",
    "EdgeBlockedError",
    "FeatureDisabledError",
    "FourKResult",
    "FourKStatus",
    "FourKUnavailableError",
    "GenerationFailedError",
    "InsufficientCreditsError",
    "InvalidCallbackError",
    "MediaFetchError",
    "NotFoundError",
    "NotSubmittedError",
    "Outcome",
    "PollPolicy",
    "ProgressCounts",
    "QuotaExceededError",
    "RateLimit",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailableError",
    "SignatureError",
    "SourceNotReadyError",
    "SourceTaskFailedError",
    "SubKeyLimitError",
    "TaskRecord",
    "TransportError",
    "UpstreamTimeoutError",
    "ValidationError",
    "Veo4kClient",
    "Veo4kError",
    "WaitEvent",
    "WaitState",
    "WaitTimeoutError",
    "is_transient",
    "verify_signature",
    "wait_for_4k",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        return version("veo4k")
    raise AttributeError(f"module 'veo4k' has no attribute {name!r}")
