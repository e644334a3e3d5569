"""Frozen configuration: validation, the poll schedule formula, retry caps."""

from __future__ import annotations

import math
import random

import attrs
import pytest

import veo4k


def test_default_poll_policy_respects_kie_30s_advice() -> None:
    """After the first delay, the default never polls faster than every 30 s."""
    policy = veo4k.PollPolicy()
    delays = policy.delays(random.Random(1))
    first = next(delays)
    assert policy.first_delay <= first <= policy.first_delay + policy.first_delay_jitter
    rest = [next(delays) for _ in range(200)]
    assert min(rest) >= 30.0
    assert policy.timeout >= 1800


def test_poll_schedule_formula() -> None:
    """Intervals grow as wait_initial * base**n, capped at wait_max, plus U(0, wait_jitter)."""
    policy = veo4k.PollPolicy(
        first_delay=5, first_delay_jitter=0, wait_initial=1, wait_max=8, wait_jitter=0, timeout=60
    )
    delays = policy.delays(random.Random(0))
    assert [next(delays) for _ in range(7)] == [5, 1, 2, 4, 8, 8, 8]


def test_poll_jitter_bounds() -> None:
    """Jitter only ever adds, and never more than wait_jitter."""
    policy = veo4k.PollPolicy(
        first_delay=0, first_delay_jitter=0, wait_initial=2, wait_max=2, wait_jitter=0.5, timeout=9
    )
    delays = policy.delays(random.Random(3))
    next(delays)
    values = [next(delays) for _ in range(500)]
    assert all(2 <= v <= 2.5 for v in values)
    assert max(values) - min(values) > 0.4  # it really is jittered


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("first_delay", -1),
        ("wait_initial", 0),
        ("wait_max", math.inf),
        ("wait_exp_base", 0.5),
        ("wait_exp_base", 100),
        ("wait_jitter", math.nan),
        ("timeout", 0),
        ("timeout", -5),
        ("timeout", "10"),
        ("timeout", True),
    ],
)
def test_absurd_poll_policies_are_rejected(field: str, value: object) -> None:
    """Each invalid knob raises ConfigurationError (a ValueError) naming the field."""
    with pytest.raises(veo4k.ConfigurationError, match=field) as info:
        veo4k.PollPolicy(**{field: value})  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_wait_max_below_initial_is_rejected() -> None:
    """wait_max < wait_initial makes no sense."""
    with pytest.raises(veo4k.ConfigurationError, match="wait_max"):
        veo4k.PollPolicy(wait_initial=60, wait_max=30)


def test_policies_are_frozen_and_evolvable() -> None:
    """Config objects are immutable; attrs.evolve derives variants (and re-validates)."""
    policy = veo4k.PollPolicy()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        policy.timeout = 5  # type: ignore[misc]
    assert attrs.evolve(policy, timeout=5).timeout == 5
    with pytest.raises(veo4k.ConfigurationError):
        attrs.evolve(policy, timeout=-1)


@pytest.mark.parametrize("attempts", [0, 101, 2.5, True])
def test_retry_attempts_bounded(attempts: object) -> None:
    """Retries are always bounded: attempts within [1, 100]."""
    with pytest.raises(veo4k.ConfigurationError, match="attempts"):
        veo4k.RetryPolicy(attempts=attempts)  # type: ignore[arg-type]


def test_retry_caps_grow_to_max() -> None:
    """Full-jitter caps double from wait_initial up to wait_max."""
    caps = veo4k.RetryPolicy(wait_initial=1, wait_max=10).backoff_caps()
    assert [next(caps) for _ in range(6)] == [1, 2, 4, 8, 10, 10]


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_requests", 0), ("max_requests", 2.5), ("period", 0), ("decrease", 1.5), ("increase", 0)],
)
def test_bad_rate_limits_are_rejected(field: str, value: object) -> None:
    """RateLimit validates its fields."""
    with pytest.raises(veo4k.ConfigurationError, match=field):
        veo4k.RateLimit(**{field: value})  # type: ignore[arg-type]


def test_phase_replaces_first_jitter_draw() -> None:
    """A given phase places the first poll at first_delay + phase * first_delay_jitter."""
    policy = veo4k.PollPolicy(first_delay=300, first_delay_jitter=30)
    assert next(policy.delays(random.Random(0), phase=0.5)) == 315.0
