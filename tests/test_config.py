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
    assert policy.first_delay <= first <= policy.first_delay * (1 + policy.first_delay_jitter)
    rest = [next(delays) for _ in range(200)]
    assert min(rest) >= 30.0
    assert policy.timeout >= 1800


def test_poll_schedule_formula() -> None:
    """Intervals grow as wait_initial * base**n, capped at wait_max, times 1 + U(0, jitter)."""
    policy = veo4k.PollPolicy(
        first_delay=5, first_delay_jitter=0, wait_initial=1, wait_max=8, wait_jitter=0, timeout=60
    )
    delays = policy.delays(random.Random(0))
    assert [next(delays) for _ in range(7)] == [5, 1, 2, 4, 8, 8, 8]


def test_poll_jitter_bounds() -> None:
    """Jitter only ever adds, and never more than the wait_jitter fraction of the delay."""
    policy = veo4k.PollPolicy(
        first_delay=0, first_delay_jitter=0, wait_initial=2, wait_max=2, wait_jitter=0.25, timeout=9
    )
    delays = policy.delays(random.Random(3))
    next(delays)
    values = [next(delays) for _ in range(500)]
    assert all(2 <= v <= 2.5 for v in values)
    assert max(values) - min(values) > 0.4  # it really is jittered


@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_jitter_scales_with_the_policy(scale: float) -> None:
    """Jitter is relative: the same policy at any scale stays within delay * (1 + jitter)."""
    policy = veo4k.PollPolicy(
        first_delay=3 * scale, wait_initial=scale, wait_max=4 * scale, timeout=1000 * scale
    )
    delays = policy.delays(random.Random(5))
    first = next(delays)
    assert 3 * scale <= first <= 3 * scale * (1 + policy.first_delay_jitter)
    rest = [next(delays) for _ in range(300)]
    assert max(rest) <= 4 * scale * (1 + policy.wait_jitter)
    assert min(rest) >= scale


def test_fast_policy_of_issue_11_is_fast() -> None:
    """The user's fast policy sleeps 0 s first and never more than 0.25 s * 1.1 after."""
    policy = veo4k.PollPolicy(first_delay=0, wait_initial=0.05, wait_max=0.25, timeout=15)
    delays = policy.delays(random.Random(0))
    assert next(delays) == 0
    assert max(next(delays) for _ in range(1000)) <= 0.275


@pytest.mark.parametrize("field", ["first_delay_jitter", "wait_jitter"])
def test_absolute_jitter_is_refused(field: str) -> None:
    """An old absolute jitter (30 s) is refused with a message that says it is a fraction."""
    with pytest.raises(veo4k.ConfigurationError, match="fraction"):
        veo4k.PollPolicy(**{field: 30.0})  # type: ignore[arg-type]


def test_safety_net_keeps_timeout_and_spaces_polls() -> None:
    """The callback safety net polls every safety_net_interval at most, same timeout."""
    policy = veo4k.PollPolicy(timeout=60, safety_net_interval=120)
    net = policy.safety_net()
    assert net.timeout == 60
    assert net.wait_initial == net.wait_max == 120
    assert net.first_delay == 300  # never earlier than the policy's own first poll
    assert veo4k.PollPolicy().safety_net().first_delay == 900


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


def test_retry_after_cap_is_documented_and_validated() -> None:
    """max_retry_after defaults to 60 s and must be a finite number >= 0."""
    assert veo4k.RetryPolicy().max_retry_after == 60.0
    with pytest.raises(veo4k.ConfigurationError, match="max_retry_after"):
        veo4k.RetryPolicy(max_retry_after=math.inf)


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
    """A given phase places the first poll at first_delay * (1 + phase * first_delay_jitter)."""
    policy = veo4k.PollPolicy(first_delay=300, first_delay_jitter=0.1)
    assert next(policy.delays(random.Random(0), phase=0.5)) == 315.0
