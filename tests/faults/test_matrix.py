"""Every fault the fake can inject, on the submission and on a mid-wait poll: once-off, longer
than the RetryPolicy allows a one-off call, and persistent. A wait ends in its result, or at its
deadline in WaitTimeoutError caused by the fault's typed error; nothing else, never late."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import pytest

import veo4k
from veo4k.testing import FAST_POLICY, FAST_RETRY, FakeKie, FaultKind

from ..conftest import ClientFactory

pytestmark = pytest.mark.faults

FOURK = "/api/v1/veo/get-4k-video"
DEADLINE = 5.0
PERSISTENT_DEADLINE = 0.5  # a persistent fault runs a wait to its deadline: keep it short

# fault name -> (inject options, error expected when the fault persists)
FAULTS: dict[str, tuple[dict[str, Any], type[veo4k.Veo4kError]]] = {
    "HTML 500": ({"kind": FaultKind.HTML, "status": 500}, veo4k.TransportError),
    "HTML 502": ({"kind": FaultKind.HTML, "status": 502}, veo4k.TransportError),
    "HTML 503": ({"kind": FaultKind.HTML, "status": 503}, veo4k.TransportError),
    "HTML 504": ({"kind": FaultKind.HTML, "status": 504}, veo4k.TransportError),
    "envelope 500": ({"kind": FaultKind.ENVELOPE, "code": 500}, veo4k.ServerError),
    "envelope 455": ({"kind": FaultKind.ENVELOPE, "code": 455, "msg": "maintenance"},
                     veo4k.ServiceUnavailableError),
    "envelope 408": ({"kind": FaultKind.ENVELOPE, "code": 408, "msg": "upstream timeout"},
                     veo4k.UpstreamTimeoutError),
    "envelope 429": ({"kind": FaultKind.ENVELOPE, "code": 429, "status": 429},
                     veo4k.RateLimitError),
    "truncated JSON": ({"kind": FaultKind.TRUNCATED}, veo4k.TransportError),
    "empty body": ({"kind": FaultKind.EMPTY}, veo4k.TransportError),
    "text/plain body": ({"kind": FaultKind.NON_JSON}, veo4k.TransportError),
    "JSON, not an envelope": ({"kind": FaultKind.NOT_ENVELOPE}, veo4k.TransportError),
    "reset before acting": ({"kind": FaultKind.RESET_BEFORE}, veo4k.TransportError),
    "reset after acting": ({"kind": FaultKind.RESET_AFTER}, veo4k.TransportError),
    "slower than request_timeout": ({"kind": FaultKind.SLOW, "delay": 1.0},
                                    veo4k.TransportError),
}  # fmt: skip
RETRY = attrs.evolve(FAST_RETRY, attempts=4)


OUTAGE = "6 (outage longer than RetryPolicy)"


@pytest.mark.parametrize("position", ["submission", "mid-wait poll"])
@pytest.mark.parametrize("occurrences", ["2 (transient)", OUTAGE, "all (persistent)"])
@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault(
    kie: FakeKie,
    make_client: ClientFactory,
    matrix: list[tuple[str, str, str, str, str]],
    fault: str,
    position: str,
    occurrences: str,
) -> None:
    """Faults that end end in the result; persistent ones in a timeout from the typed error."""
    options, persistent_error = FAULTS[fault]
    kie.add_task("t", ready_after=0.15)
    persistent = occurrences.startswith("all")
    times = 1000 if persistent else 2 if occurrences.startswith("2") else RETRY.attempts + 2
    kie.inject(path=FOURK, times=times, after=0 if position == "submission" else 1,
               **options)  # fmt: skip
    client = make_client(request_timeout=0.25, retry_policy=RETRY)
    deadline = PERSISTENT_DEADLINE if persistent else DEADLINE
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        result = await client.wait_for_4k("t", timeout=deadline)
    except veo4k.Veo4kError as exc:
        cause = type(exc.__cause__).__name__ if exc.__cause__ else "-"
        observed, outcome = f"{type(exc).__name__} from {cause}", exc
    else:
        observed, outcome = "result", result
    took = loop.time() - start
    expected = f"WaitTimeoutError from {persistent_error.__name__}" if persistent else "result"
    matrix.append((fault, position, occurrences, expected, f"{observed} in {took:.2f} s"))
    assert took < deadline + 0.1
    if persistent:
        assert isinstance(outcome, veo4k.WaitTimeoutError)
        assert isinstance(outcome.__cause__, persistent_error)
        assert kie.submissions("t") <= 1  # 0 when every answer failed before Kie acted
    else:
        assert isinstance(outcome, veo4k.FourKResult)
        assert kie.submissions("t") == 1


async def test_connection_refused(
    make_client: ClientFactory, matrix: list[tuple[str, str, str, str, str]]
) -> None:
    """Nobody listening: a wait keeps trying to its deadline and times out from the
    TransportError; a one-off call gives up after RetryPolicy.attempts."""
    client = make_client(base_url="http://127.0.0.1:9", retry_policy=RETRY)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(veo4k.WaitTimeoutError) as info:
        await client.wait_for_4k("t", timeout=PERSISTENT_DEADLINE)
    took = loop.time() - start
    matrix.append(("connection refused", "submission", "all (persistent)",
                   "WaitTimeoutError from TransportError",
                   f"{type(info.value).__name__} in {took:.2f} s"))  # fmt: skip
    assert PERSISTENT_DEADLINE <= took < PERSISTENT_DEADLINE + 0.1
    assert isinstance(info.value.__cause__, veo4k.TransportError)
    assert "connection failed" in str(info.value.__cause__)
    with pytest.raises(veo4k.TransportError, match="connection failed") as once:
        await client.request_4k("t")
    assert once.value.attempts == RETRY.attempts


async def test_unresolvable_host(make_client: ClientFactory) -> None:
    """A host name that does not resolve: a timeout from TransportError at the deadline, not a
    hang (.invalid never resolves)."""
    client = make_client(base_url="https://kie.invalid", retry_policy=RETRY)
    with pytest.raises(veo4k.WaitTimeoutError) as info:
        await client.wait_for_4k("t", timeout=PERSISTENT_DEADLINE)
    assert isinstance(info.value.__cause__, veo4k.TransportError)


@pytest.mark.parametrize("position", ["submission", "mid-wait poll"])
async def test_redirect_is_refused_and_key_kept(
    kie: FakeKie, make_client: ClientFactory, position: str
) -> None:
    """A redirect from the API to another host is not followed: no key leaves, typed error."""
    kie.inject(FaultKind.REDIRECT, path=FOURK, times=1, after=0 if position == "submission" else 1)
    client = make_client(poll_policy=FAST_POLICY)
    with pytest.raises(veo4k.TransportError, match="redirect refused"):
        await client.wait_for_4k("t", timeout=DEADLINE)
    assert kie.stats.file_auth_violations == []
    assert kie.stats.requests.get("/redirect-capture", 0) == 0
