"""Boundary input: every bad argument is a ValueError/ConfigurationError naming it, raised
before any request is made."""

from __future__ import annotations

import math
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import veo4k
from veo4k.testing import FakeKie

from ..conftest import ClientFactory

pytestmark = pytest.mark.faults

Call = Callable[[veo4k.Veo4kClient], Awaitable[Any]]

CASES: list[tuple[str, Call, str]] = [
    ("empty task id", lambda c: c.wait_for_4k(""), "task_id"),
    ("blank task id", lambda c: c.wait_for_4k("  \t "), "task_id"),
    ("task id with newline", lambda c: c.request_4k("a\nb"), "task_id"),
    ("task id too long", lambda c: c.request_4k("x" * 300), "task_id"),
    ("non-string task id", lambda c: c.get_record(123), "task_id"),  # type: ignore[arg-type]
    ("negative index", lambda c: c.wait_for_4k("t", -1), "index"),
    ("float index", lambda c: c.request_4k("t", 0.5), "index"),  # type: ignore[arg-type]
    ("bool index", lambda c: c.request_4k("t", True), "index"),
    ("huge index", lambda c: c.request_4k("t", 10**9), "index"),
    ("ftp callback", lambda c: c.wait_for_4k("t", callback_url="ftp://h/cb"), "callback_url"),
    ("relative callback", lambda c: c.request_4k("t", callback_url="/cb"), "callback_url"),
    ("javascript callback", lambda c: c.request_4k("t", callback_url="javascript:x"),
     "callback_url"),
    ("zero timeout", lambda c: c.wait_for_4k("t", timeout=0), "timeout"),
    ("negative timeout", lambda c: c.wait_for_4k("t", timeout=-3), "timeout"),
    ("nan timeout", lambda c: c.wait_for_4k("t", timeout=math.nan), "timeout"),
    ("inf timeout", lambda c: c.wait_for_4k("t", timeout=math.inf), "timeout"),
    ("policy not a PollPolicy", lambda c: c.wait_for_4k("t", poll_policy=30), "poll_policy"),  # type: ignore[arg-type]
    ("batch with bad index", lambda c: c.wait_for_4k_many(["a", ("b", -2)]), "tasks"),
    ("batch that is a string", lambda c: c.wait_for_4k_many("abc"), "tasks"),
    ("batch zero timeout", lambda c: c.wait_for_4k_many(["a"], timeout=0), "timeout"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "call", "argument"), CASES, ids=[c[0] for c in CASES])
async def test_bad_argument_raises_before_any_request(
    kie: FakeKie, make_client: ClientFactory, name: str, call: Call, argument: str
) -> None:
    """Each bad input raises ConfigurationError (a ValueError) naming the argument."""
    client = make_client()
    with pytest.raises(veo4k.ConfigurationError, match=argument) as info:
        await call(client)
    assert isinstance(info.value, ValueError)
    assert sum(kie.stats.requests.values()) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"first_delay": -1},
        {"wait_initial": 0},
        {"wait_max": 1, "wait_initial": 5},
        {"wait_exp_base": 0.9},
        {"wait_jitter": -0.1},
        {"timeout": 0},
        {"timeout": math.inf},
        {"first_delay_jitter": math.nan},
    ],
)
def test_absurd_policies(kwargs: dict[str, float]) -> None:
    """Absurd policies are refused at construction, naming the field."""
    with pytest.raises(veo4k.ConfigurationError, match=next(iter(kwargs))):
        veo4k.PollPolicy(**kwargs)


async def test_bad_download_destination(
    kie: FakeKie, make_client: ClientFactory, tmp_path: pathlib.Path
) -> None:
    """A download into a missing folder fails before any request."""
    client = make_client()
    result = veo4k.FourKResult(task_id="t", index=0, result_urls=(kie.result_url("t"),))
    with pytest.raises(veo4k.ConfigurationError, match="does not exist"):
        await client.download(result, tmp_path / "missing" / "x.mp4")
    assert sum(kie.stats.requests.values()) == 0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 0, -1, "5", True])
def test_float_options_refuse_nan_and_inf(bad: object) -> None:
    """Every float option where infinity makes no sense refuses nan/inf (and non-numbers)
    with a message naming it; the CLI's --timeout goes through the same check."""
    from veo4k import _validate as check

    constructors: list[tuple[str, Callable[[], object]]] = [
        ("request_timeout", lambda: veo4k.Veo4kClient("k", request_timeout=bad)),  # type: ignore[arg-type]
        ("tolerance", lambda: veo4k.CallbackReceiver("k", tolerance=bad)),  # type: ignore[arg-type]
        ("dedupe_ttl", lambda: veo4k.CallbackReceiver("k", dedupe_ttl=bad)),  # type: ignore[arg-type]
        ("header_timeout", lambda: veo4k.CallbackServer(header_timeout=bad)),  # type: ignore[arg-type]
        ("body_timeout", lambda: veo4k.CallbackServer(body_timeout=bad)),  # type: ignore[arg-type]
        ("keepalive_timeout", lambda: veo4k.CallbackServer(keepalive_timeout=bad)),  # type: ignore[arg-type]
        ("close_timeout", lambda: veo4k.CallbackServer(close_timeout=bad)),  # type: ignore[arg-type]
        ("--timeout", lambda: check.positive_seconds(bad, "--timeout")),
    ]  # fmt: skip
    for name, make in constructors:
        with pytest.raises(veo4k.ConfigurationError, match=name):
            make()


async def test_download_timeout_refuses_nan_and_inf(
    kie: FakeKie, make_client: ClientFactory, tmp_path: pathlib.Path
) -> None:
    """download(timeout=inf/nan) is a ConfigurationError before any request."""
    client = make_client()
    for bad in (math.inf, math.nan, 0):
        with pytest.raises(veo4k.ConfigurationError, match="timeout"):
            await client.download(kie.result_url("t"), tmp_path / "x.mp4", timeout=bad)
    assert sum(kie.stats.requests.values()) == 0
