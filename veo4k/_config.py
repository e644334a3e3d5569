"""Frozen configuration objects: how to poll, how to retry, how fast to go."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import attrs
import backoff

from ._errors import ConfigurationError

__all__ = ["PollPolicy", "RateLimit", "RetryPolicy"]


def _finite_nonneg(instance: Any, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{attribute.name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"{attribute.name} must be finite and >= 0, got {value!r}")


def _finite_pos(instance: Any, attribute: attrs.Attribute[float], value: float) -> None:
    _finite_nonneg(instance, attribute, value)
    if value <= 0:
        raise ConfigurationError(f"{attribute.name} must be > 0, got {value!r}")


def _exp_base(instance: Any, attribute: attrs.Attribute[float], value: float) -> None:
    _finite_pos(instance, attribute, value)
    if not 1.0 <= value <= 10.0:
        raise ConfigurationError(f"{attribute.name} must be within [1, 10], got {value!r}")


def _capped(seq: Iterator[Any]) -> Iterator[float]:
    next(seq)  # backoff's generators yield once before the first value
    return seq


def _optional_pos(
    instance: Any, attribute: attrs.Attribute[float | None], value: float | None
) -> None:
    if value is not None:
        _finite_pos(instance, attribute, value)  # type: ignore[arg-type]


def _fraction(instance: Any, attribute: attrs.Attribute[float], value: float) -> None:
    _finite_nonneg(instance, attribute, value)
    if value > 1:
        raise ConfigurationError(
            f"{attribute.name} is a fraction of the delay it stretches (0.1 = up to +10 %), "
            f"within [0, 1]; got {value!r}"
        )


@attrs.frozen(kw_only=True)
class PollPolicy:
    """When :meth:`Veo4kClient.wait_for_4k` asks Kie again, and when it gives up.

    The first request goes out at once: it submits the 4K job, or returns the URLs of a finished
    one. Then the waiter sleeps ``first_delay * (1 + U(0, first_delay_jitter))`` seconds, and
    after that the *n*-th interval (n = 0, 1, ...) is::

        min(wait_max, wait_initial * wait_exp_base ** n) * (1 + U(0, wait_jitter))

    until ``timeout`` seconds have passed since the submission (the wait's first request).
    Waiting for the account's budget before that does not use the timeout up; it is bounded
    by ``queue_timeout`` (default 24 h) instead. An explicit ``timeout=`` on a call is a hard
    bound on the whole call, queueing included. Jitter is a *fraction* of the
    delay it stretches, never absolute seconds: a sleep is never shorter than written (Kie's
    30 s advice holds) and never longer than written times ``1 + jitter``, whatever the scale of
    the policy. Before the deadline the wait makes one last check (see ``wait_for_4k``); the
    last sleep is cut so the deadline holds.

    ``upscale_time`` is how long an upscale takes, submission to result, when a deadline must
    fit one: a wait that queued for the budget until its explicit deadline can no longer fit
    an upscale is not submitted (:class:`NotSubmittedError`, no credits spent). None (the
    default): learned from the 4Ks the client has seen, conservative until then (see
    ``Veo4kClient.wait_for_4k``).

    With callbacks (``Veo4kClient(callbacks=...)``) polling is only a safety net for a lost
    delivery: the client's policy then polls no more often than every ``safety_net_interval``
    seconds (first poll included), within the same ``timeout``.

    Why these defaults (measured by ``benchmarks/polling.py``, table in ``benchmarks/README.md``):
    Kie documents 5-10 minutes per 4K and asks for re-calls no more often than every 30 s.
    Polling before 300 s is wasted budget (the upscale is not done that early), so the first poll
    waits for it; its 10 % jitter (300-330 s), drawn by the client from a low-discrepancy
    sequence, spreads a batch submitted at once evenly over 30 one-second windows. After that,
    polling every 30 s (the documented floor, plus up to 5 % so tasks drift apart) notices a
    ready 4K about as fast as fixed 30 s polling does: for 1,000 tasks ready after 5-10 minutes,
    about 7 requests per task (fixed 30 s: 16.6) and a p95 detection delay under 30 s. Starting
    earlier costs requests, a longer first jitter or interval costs delay. The one-hour timeout
    covers a load spike of 30-minute upscales with room to spare.
    """

    first_delay: float = attrs.field(default=300.0, validator=_finite_nonneg)
    first_delay_jitter: float = attrs.field(default=0.1, validator=_fraction)
    wait_initial: float = attrs.field(default=30.0, validator=_finite_pos)
    wait_max: float = attrs.field(default=30.0, validator=_finite_pos)
    wait_exp_base: float = attrs.field(default=2.0, validator=_exp_base)
    wait_jitter: float = attrs.field(default=0.05, validator=_fraction)
    timeout: float = attrs.field(default=3600.0, validator=_finite_pos)
    safety_net_interval: float = attrs.field(default=900.0, validator=_finite_pos)
    queue_timeout: float = attrs.field(default=86_400.0, validator=_finite_pos)
    upscale_time: float | None = attrs.field(default=None, validator=_optional_pos)

    def __attrs_post_init__(self) -> None:
        if self.wait_max < self.wait_initial:
            raise ConfigurationError(
                f"wait_max ({self.wait_max!r}) must be >= wait_initial ({self.wait_initial!r})"
            )

    def delays(self, rng: random.Random, phase: float | None = None) -> Iterator[float]:
        """Yield the sleeps between requests, forever; ``rng`` draws the jitter.

        ``phase`` in [0, 1) replaces the random draw of the first delay's jitter: the client
        passes successive points of a low-discrepancy sequence, so a batch started together
        spreads its first polls evenly over the jitter window instead of in random clumps.
        """
        u = rng.random() if phase is None else phase
        yield self.first_delay * (1.0 + u * self.first_delay_jitter)
        expo = _capped(
            backoff.expo(base=self.wait_exp_base, factor=self.wait_initial, max_value=self.wait_max)
        )
        for base_delay in expo:
            yield base_delay * (1.0 + rng.uniform(0.0, self.wait_jitter))

    def safety_net(self) -> PollPolicy:
        """This policy as the safety net of a callback wait: same timeout, sparse polls."""
        every = self.safety_net_interval
        return attrs.evolve(
            self,
            first_delay=max(self.first_delay, every),
            wait_initial=max(self.wait_initial, every),
            wait_max=max(self.wait_max, every),
        )


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How one request is retried after a transient failure (connection, 429, 455, 5xx).

    Attempt *n* (n = 0, 1, ...) that failed is followed by a sleep of
    ``U(0, min(wait_max, wait_initial * wait_exp_base ** n))`` (full jitter), at least the
    ``Retry-After`` the server sent, and at least ``maintenance_wait`` after a 455; at most
    ``attempts`` tries are made in all, and never past the caller's deadline.

    A ``Retry-After`` header (and ``maintenance_wait``) is cut to ``max_retry_after`` seconds,
    default 60: Kie's rate window is 10 s, and one header must not pause the whole client for
    an hour. A wait for a 4K is not bounded by ``attempts``: it keeps retrying transient
    failures on this backoff (each sleep capped at ``wait_max`` and at the poll policy's
    longest sleep) until its own deadline.
    """

    attempts: int = attrs.field(default=5)
    wait_initial: float = attrs.field(default=1.0, validator=_finite_pos)
    wait_max: float = attrs.field(default=30.0, validator=_finite_pos)
    wait_exp_base: float = attrs.field(default=2.0, validator=_exp_base)
    maintenance_wait: float = attrs.field(default=30.0, validator=_finite_nonneg)
    max_retry_after: float = attrs.field(default=60.0, validator=_finite_nonneg)

    @attempts.validator
    def _check_attempts(self, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
            raise ConfigurationError(f"attempts must be an int within [1, 100], got {value!r}")

    def __attrs_post_init__(self) -> None:
        if self.wait_max < self.wait_initial:
            raise ConfigurationError(
                f"wait_max ({self.wait_max!r}) must be >= wait_initial ({self.wait_initial!r})"
            )

    def backoff_caps(self) -> Iterator[float]:
        """Yield the upper bound of each successive full-jitter sleep."""
        return _capped(
            backoff.expo(base=self.wait_exp_base, factor=self.wait_initial, max_value=self.wait_max)
        )


@attrs.frozen(kw_only=True)
class RateLimit:
    """At most ``max_requests`` requests in any window of ``period`` seconds, per client.

    The default is Kie's documented account limit: 20 generation requests per 10 s. Every request
    the client makes (submissions, polls, record-info) counts. After a 429 the client lowers its
    own rate to ``decrease`` times the current one (never below ``min_fraction`` of the limit) and
    earns it back by ``increase`` of the limit per ``period`` without a 429 (AIMD).
    """

    max_requests: int = attrs.field(default=20)
    period: float = attrs.field(default=10.0, validator=_finite_pos)
    decrease: float = attrs.field(default=0.5)
    increase: float = attrs.field(default=0.1)
    min_fraction: float = attrs.field(default=0.05)

    @max_requests.validator
    def _check_max(self, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"max_requests must be an int >= 1, got {value!r}")

    @decrease.validator
    @increase.validator
    @min_fraction.validator
    def _check_fraction(self, attribute: attrs.Attribute[float], value: float) -> None:
        _finite_pos(self, attribute, value)
        if value > 1:
            raise ConfigurationError(f"{attribute.name} must be within (0, 1], got {value!r}")
