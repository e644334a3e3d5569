"""Every error veo4k raises, under one root.

::

    Veo4kError
    ├── ConfigurationError (also ValueError)   bad argument, policy or missing key
    ├── ClientStateError (also RuntimeError)   client closed, or used from another event loop
    ├── TransportError                         connection, timeout or garbled answer   (t)
    ├── EdgeBlockedError                       HTTP 403 "error code: 1010" from Cloudflare  (f)
    ├── APIError(code, msg, task_id)           Kie answered with an error code in the body
    │   ├── BadRequestError                    400 (e.g. content policy)                    (f)
    │   ├── AuthenticationError                401 key missing or invalid                   (f)
    │   ├── InsufficientCreditsError           402 not enough credits                       (f)
    │   ├── NotFoundError                      404                                          (f)
    │   ├── UpstreamTimeoutError               408 upstream took longer than 10 minutes     (t)
    │   ├── ValidationError                    422 that is neither "processing" nor "done"  (f)
    │   │   └── SourceNotReadyError            422 "record status is not success."
    │   ├── RateLimitError                     429 request rate exceeded                    (t)
    │   ├── QuotaExceededError                 429 hourly/daily/total cap of the key        (f)
    │   ├── SubKeyLimitError                   433 usage limit of a sub-key                 (f)
    │   ├── MediaFetchError                    451 Kie could not fetch the source media     (f)
    │   ├── ServiceUnavailableError            455 maintenance                              (t)
    │   ├── ServerError                        500 and other 5xx                            (t)
    │   ├── GenerationFailedError              501 the generation failed                    (f)
    │   ├── FeatureDisabledError               505 the feature is disabled                  (f)
    │   └── FourKUnavailableError              Kie says the 4K version is unavailable       (f)
    ├── SourceTaskFailedError                  record-info says the source generation failed
    ├── WaitTimeoutError (also TimeoutError)   the deadline passed before the 4K was ready
    │   └── NotSubmittedError                  ... before it could be submitted: no credits spent
    ├── SignatureError                         a callback failed verification
    ├── InvalidCallbackError                   a callback body is malformed or too large
    └── DownloadError                          a result file could not be downloaded
        └── DownloadTimeoutError (also TimeoutError)  the download's total deadline passed

(t) transient: a wait keeps polling through it until its deadline, a one-off call retries it
per :class:`RetryPolicy`. (f) final: it ends a wait at once (``veo4k.is_transient`` tells).
A non-retryable ``TransportError`` (a refused redirect, a 4xx page that is no envelope) is final.

No exception carries the API key: messages are built from codes, messages and task ids only.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "ClientStateError",
    "ConfigurationError",
    "DownloadError",
    "DownloadTimeoutError",
    "EdgeBlockedError",
    "FeatureDisabledError",
    "FourKUnavailableError",
    "GenerationFailedError",
    "InsufficientCreditsError",
    "InvalidCallbackError",
    "MediaFetchError",
    "NotFoundError",
    "NotSubmittedError",
    "QuotaExceededError",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
    "SignatureError",
    "SourceNotReadyError",
    "SourceTaskFailedError",
    "SubKeyLimitError",
    "TransportError",
    "UpstreamTimeoutError",
    "ValidationError",
    "Veo4kError",
    "WaitTimeoutError",
]


class Veo4kError(Exception):
    """Root of every error raised by veo4k."""


class ConfigurationError(Veo4kError, ValueError):
    """An argument, policy or setting is invalid, or the API key is missing."""


class ClientStateError(Veo4kError, RuntimeError):
    """The client is closed, or is being used from an event loop other than its own."""


class TransportError(Veo4kError):
    """The request failed below the API: connection, timeout, or a body that is not an envelope."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        excerpt: str = "",
        task_id: str | None = None,
        attempts: int = 1,
        retryable: bool = True,
    ) -> None:
        self.reason = message
        self.status = status
        self.retryable = retryable
        self.excerpt = excerpt
        self.task_id = task_id
        self.attempts = attempts
        parts = [message]
        if status is not None:
            parts.append(f"HTTP {status}")
        if task_id:
            parts.append(f"task {task_id!r}")
        if attempts > 1:
            parts.append(f"after {attempts} attempts")
        if excerpt:
            parts.append(f"body starts {excerpt!r}")
        super().__init__("; ".join(parts))

    def replace(self, **changes: Any) -> TransportError:
        """A copy with some attributes changed (used to add the task id or attempt count)."""
        fields = {
            "status": self.status,
            "excerpt": self.excerpt,
            "task_id": self.task_id,
            "attempts": self.attempts,
            "retryable": self.retryable,
        }
        return TransportError(self.reason, **(fields | changes))


class APIError(Veo4kError):
    """Kie answered with an error ``code`` in the response envelope."""

    def __init__(
        self, code: int, msg: str, task_id: str | None = None, *, http_status: int | None = None
    ) -> None:
        self.code = code
        self.msg = msg
        self.task_id = task_id
        self.http_status = http_status
        where = f" (task {task_id!r})" if task_id else ""
        super().__init__(f"Kie API error {code}: {msg}{where}")

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_api_error, (type(self), self.code, self.msg, self.task_id))


def _rebuild_api_error(cls: type[APIError], code: int, msg: str, task_id: str | None) -> APIError:
    return cls(code, msg, task_id)


class BadRequestError(APIError):
    """400: the request was refused (for example by the content policy)."""


class AuthenticationError(APIError):
    """401: the API key is missing or invalid."""


class InsufficientCreditsError(APIError):
    """402: the account has not enough credits."""


class NotFoundError(APIError):
    """404: the resource or endpoint does not exist."""


class UpstreamTimeoutError(APIError):
    """408: Kie's upstream took longer than 10 minutes; transient, a wait keeps going."""


class ValidationError(APIError):
    """422 that means the source task cannot be upgraded (expired, unknown, blank)."""


class SourceNotReadyError(ValidationError):
    """422 ``record status is not success.``: the source generation has not succeeded (yet)."""


class RateLimitError(APIError):
    """429: the account's request rate was exceeded."""

    def __init__(
        self,
        code: int,
        msg: str,
        task_id: str | None = None,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(code, msg, task_id, http_status=http_status)
        self.retry_after = retry_after


class QuotaExceededError(APIError):
    """429 whose message names an hourly, daily or total cap of the key: waiting seconds will
    not help, so it is final (and not a :class:`RateLimitError`, which is retried)."""


class SubKeyLimitError(APIError):
    """433: the usage limit set on this sub-key is exhausted."""


class MediaFetchError(APIError):
    """451: Kie could not fetch the source media."""


class ServiceUnavailableError(APIError):
    """455: the service is under maintenance."""


class ServerError(APIError):
    """500 or another 5xx code: a server-side failure, retried a bounded number of times."""


class GenerationFailedError(APIError):
    """501: the generation failed; the task will not succeed."""


class FeatureDisabledError(APIError):
    """505: the feature is disabled for this account or service."""


class FourKUnavailableError(APIError):
    """Kie says the 4K version of this video is unavailable: permanent, do not retry."""


class EdgeBlockedError(Veo4kError):
    """HTTP 403 ``error code: 1010``: Cloudflare, in front of Kie, refused the request."""

    def __init__(self, *, status: int = 403, task_id: str | None = None) -> None:
        self.status = status
        self.task_id = task_id
        where = f" (task {task_id!r})" if task_id else ""
        super().__init__(
            f"request blocked at Kie's edge (Cloudflare 1010, HTTP {status}){where}: the "
            "request's signature, usually its User-Agent, was refused. This is not a bad API "
            "key and retrying the same request will not help: send a descriptive User-Agent "
            "(veo4k sends 'veo4k/<version> (+python aiohttp)' unless Veo4kClient(user_agent=...) "
            "or a proxy changes it)"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_edge_blocked, (self.status, self.task_id))


def _rebuild_edge_blocked(status: int, task_id: str | None) -> EdgeBlockedError:
    return EdgeBlockedError(status=status, task_id=task_id)


class SourceTaskFailedError(Veo4kError):
    """record-info says the source generation failed (``successFlag`` 2 or 3)."""

    def __init__(
        self,
        task_id: str,
        success_flag: int,
        error_code: int | str | None = None,
        error_message: str = "",
    ) -> None:
        self.task_id = task_id
        self.success_flag = success_flag
        self.error_code = error_code
        self.error_message = error_message
        detail = f": {error_message}" if error_message else ""
        super().__init__(
            f"source generation of task {task_id!r} failed (successFlag={success_flag}, "
            f"errorCode={error_code}){detail}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (
            type(self),
            (self.task_id, self.success_flag, self.error_code, self.error_message),
        )


class WaitTimeoutError(Veo4kError, TimeoutError):
    """The deadline passed before the 4K video was ready."""

    submitted = True
    """False for :class:`NotSubmittedError`: the task was never sent, no credits spent."""

    def __init__(
        self, task_id: str, index: int, timeout: float, attempts: int, last_state: str = ""
    ) -> None:
        self.task_id = task_id
        self.index = index
        self.timeout = timeout
        self.attempts = attempts
        self.last_state = last_state
        last = f"; last state: {last_state}" if last_state else ""
        super().__init__(
            f"4K of task {task_id!r} index {index} not ready after {timeout:g} s "
            f"and {attempts} request(s){last}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (
            type(self),
            (self.task_id, self.index, self.timeout, self.attempts, self.last_state),
        )


class NotSubmittedError(WaitTimeoutError):
    """The wait ended before its task was submitted: no job started, no credits were spent.

    Its deadline came while it queued for the account's budget, or what queueing left of an
    explicit timeout could no longer fit an upscale (``estimate`` seconds), or it queued
    longer than the policy's ``queue_timeout``. ``attempts`` is 0, unless Kie rejected the
    submission with 429 (rejected, not queued): then it counts those requests, and the last
    429 is the ``__cause__``.
    """

    submitted = False

    def __init__(
        self,
        task_id: str,
        index: int,
        timeout: float,
        attempts: int = 0,
        last_state: str = "",
        *,
        reason: str = "its deadline came while it queued for the account's budget",
    ) -> None:
        super().__init__(task_id, index, timeout, attempts, last_state)
        self.reason = reason
        self.args = (
            f"4K of task {task_id!r} index {index} not submitted (no credits spent): {reason}",
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_not_submitted,
            (self.task_id, self.index, self.timeout, self.attempts, self.last_state, self.reason),
        )


def _rebuild_not_submitted(
    task_id: str, index: int, timeout: float, attempts: int, last_state: str, reason: str
) -> NotSubmittedError:
    return NotSubmittedError(task_id, index, timeout, attempts, last_state, reason=reason)


class SignatureError(Veo4kError):
    """A callback delivery failed verification: bad or missing signature, or stale timestamp."""


class InvalidCallbackError(Veo4kError):
    """A callback delivery is malformed (not JSON, no task id) or too large."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


class DownloadError(Veo4kError):
    """A result file could not be downloaded."""

    def __init__(self, message: str, *, url: str = "", task_id: str | None = None) -> None:
        self.url = url
        self.task_id = task_id
        where = f" (task {task_id!r})" if task_id else ""
        super().__init__(f"{message}{where}")


class DownloadTimeoutError(DownloadError, TimeoutError):
    """The download did not finish within its total deadline (connect and body included)."""
