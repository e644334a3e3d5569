"""How one task of a batch ended, in words: the report, the kind of a failure (final or
retryable) and a one-line reason a person can act on."""

from __future__ import annotations

import re

import attrs

from .._errors import (
    APIError,
    BadRequestError,
    FourKUnavailableError,
    MediaFetchError,
    NotFoundError,
    SourceNotReadyError,
    SourceTaskFailedError,
    ValidationError,
    Veo4kError,
)
from ._journal import Kind

__all__ = ["TaskReport", "classify", "describe"]

_CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception): ")
"""``ClientConnectorError: `` inside a library message: a class name, not a reason."""


@attrs.frozen(kw_only=True)
class TaskReport:
    """How one task of a batch ended."""

    task_id: str
    index: int
    status: str
    """downloaded, done (not downloaded), skipped (finished in an earlier run), failed,
    replayed (failed for good in an earlier run), not_submitted (refused before it was sent,
    no credits spent: a rerun sends it) or interrupted."""
    urls: tuple[str, ...] = ()
    path: str = ""
    size: int = 0
    error: str = ""
    kind: str = ""
    """For failures: ``final`` (Kie's answer about the task) or ``retryable``."""
    requests: int = 0
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        """Finished well, in this run or an earlier one."""
        return self.status in ("downloaded", "done", "skipped")


def classify(exc: BaseException) -> str:
    """``final`` for Kie's own verdict on a task, ``retryable`` for anything a rerun may fix.

    Final: the 4K is unavailable, the source generation failed, or Kie refused the task itself
    (400, 404, 422, 451). Auth, credits, rate limits, maintenance, server errors, transport,
    timeouts, configuration, downloads and file-system errors are retryable.
    """
    if isinstance(exc, FourKUnavailableError | SourceTaskFailedError):
        return Kind.FINAL
    if isinstance(exc, SourceNotReadyError):
        return Kind.RETRYABLE
    if isinstance(exc, BadRequestError | NotFoundError | ValidationError | MediaFetchError):
        return Kind.FINAL
    return Kind.RETRYABLE


def describe(exc: BaseException) -> str:
    """A one-line reason for a report: what happened, in words, with Kie's message."""
    if isinstance(exc, FourKUnavailableError):
        return f"4K unavailable: {exc.msg}"
    if isinstance(exc, SourceTaskFailedError):
        return f"source video failed: {exc}"
    if isinstance(exc, APIError):
        return f"Kie refused ({exc.code}): {exc.msg}"
    if isinstance(exc, OSError) and not isinstance(exc, Veo4kError | TimeoutError):
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot write{where}: {exc.strerror or exc}"
    if not isinstance(exc, Veo4kError | OSError):
        return f"unexpected {type(exc).__name__}: {exc} (a bug: please report it)"[:500]
    return _CLASS_NAME.sub("", str(exc)).replace("\n", " ")
