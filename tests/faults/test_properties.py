"""Property tests: nothing a server or a sender puts in a body raises anything but a
Veo4kError, and signature verification accepts exactly the valid signatures."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import veo4k
from veo4k._callbacks import parse_callback
from veo4k._signature import sign
from veo4k._wire import fourk_status, make_converter, parse_envelope, parse_record

pytestmark = pytest.mark.faults

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
keys = st.sampled_from(["code", "msg", "data", "taskId", "task_id", "resultUrls", "imageUrls",
                        "result_urls", "info", "successFlag", "response", "createTime",
                        "completeTime", "errorCode", "errorMessage", "originUrls"])  # fmt: skip
envelope_like = st.recursive(
    st.none() | st.integers(-1000, 1000) | st.text(max_size=30) | st.booleans(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=6),
    max_leaves=25,
)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_escape_as_other_errors(body: bytes) -> None:
    """Any bytes: an envelope or a TransportError."""
    with contextlib.suppress(veo4k.TransportError):
        parse_envelope(body, http_status=200)


def _classify(payload: object) -> None:
    body = json.dumps(payload).encode()
    try:
        env = parse_envelope(body, http_status=200)
        status = fourk_status(env, "t", 0)
        assert status.ready == bool(status.result_urls)
        parse_record(make_converter(), env, "t")
    except veo4k.Veo4kError:
        pass


@SETTINGS
@given(st.one_of(json_values, envelope_like))
def test_arbitrary_json_answers_classify_or_raise_typed(payload: object) -> None:
    """Any JSON as a get-4k-video or record-info answer: a status/record or a Veo4kError."""
    _classify(payload)


@SETTINGS
@given(st.dictionaries(keys, envelope_like, max_size=6))
def test_arbitrary_envelopes(payload: dict[str, object]) -> None:
    """Envelope-shaped dictionaries with random fields: never an unexpected exception."""
    _classify(payload)


@SETTINGS
@given(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                 envelope_like.map(lambda v: json.dumps(v).encode())))  # fmt: skip
def test_arbitrary_callback_bodies(body: bytes) -> None:
    """Any callback body: an event or InvalidCallbackError."""
    try:
        event, _ = parse_callback(body)
    except veo4k.InvalidCallbackError:
        return
    assert event.task_id
    assert event.ok == (event.code == 200 and bool(event.result_urls))


task_ids = st.text(min_size=1, max_size=40)
stamps = st.integers(min_value=0, max_value=2**40)
hmac_keys = st.text(min_size=1, max_size=40)


@SETTINGS
@given(task_ids, stamps, hmac_keys)
def test_valid_signatures_verify(task_id: str, stamp: int, key: str) -> None:
    """sign() output always verifies, with the timestamp as int or str."""
    signature = sign(task_id, stamp, key)
    assert veo4k.verify_signature(task_id, stamp, signature, key)
    assert veo4k.verify_signature(task_id, str(stamp), signature, key.encode())


@SETTINGS
@given(task_ids, stamps, hmac_keys, task_ids, stamps, hmac_keys)
def test_only_valid_signatures_verify(
    task_id: str, stamp: int, key: str, other_id: str, other_stamp: int, other_key: str
) -> None:
    """Any change of task id, timestamp or key makes the signature invalid."""
    signature = sign(task_id, stamp, key)
    expected = (other_id, other_stamp, other_key) == (task_id, stamp, key)
    if f"{other_id}.{other_stamp}" == f"{task_id}.{stamp}" and other_key == key:
        expected = True  # same signed message ("a.1" + "2" == "a.12"): same signature
    assert veo4k.verify_signature(other_id, other_stamp, signature, other_key) is expected


@SETTINGS
@given(task_ids, stamps, hmac_keys, st.text(max_size=60))
def test_random_signatures_do_not_verify(task_id: str, stamp: int, key: str, guess: str) -> None:
    """A random string is never accepted (unless it happens to be the signature)."""
    assert veo4k.verify_signature(task_id, stamp, guess, key) is (
        guess == sign(task_id, stamp, key)
    )
