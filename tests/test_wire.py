"""Parsing and classification of Kie's answers (kie-api.md, every code and variant)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

import veo4k
from veo4k._wire import (
    Envelope,
    fourk_status,
    is_transient,
    make_converter,
    parse_envelope,
    parse_record,
    parse_time,
    url_list,
)

URL = "https://tempfile.aiquickdraw.com/v/example_task_1234567890.mp4"
JPG = "https://tempfile.aiquickdraw.com/v/example_task_1234567890.jpg"


def env(code: int, msg: str, data: object = None, http_status: int = 200) -> Envelope:
    return Envelope(code, msg, data, http_status)


def test_envelope_parses_code_msg_data() -> None:
    """A well-formed body becomes an envelope with the body's code, not the HTTP status."""
    body = json.dumps({"code": 422, "msg": "x", "data": {"taskId": "t"}}).encode()
    parsed = parse_envelope(body, http_status=200)
    assert (parsed.code, parsed.msg, parsed.data) == (422, "x", {"taskId": "t"})


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty"),
        (b"<html>502 Bad Gateway</html>", "not JSON"),
        (b'{"code": 200, "msg": "succ', "not JSON"),
        (b'{"status": "ok"}', "not a Kie envelope"),
        (b"[1, 2]", "not a Kie envelope"),
        (b'{"code": true, "msg": ""}', "not a Kie envelope"),
        (b'{"code": "abc", "msg": ""}', "not an integer"),
    ],
)
def test_garbled_bodies_are_transport_errors(body: bytes, reason: str) -> None:
    """Empty, HTML, truncated and non-envelope bodies raise TransportError with an excerpt."""
    with pytest.raises(veo4k.TransportError, match=reason) as info:
        parse_envelope(body, http_status=502)
    assert info.value.status == 502


def test_string_code_is_accepted() -> None:
    """A code sent as a numeric string is read as the number."""
    assert parse_envelope(b'{"code": "200", "msg": "ok"}', http_status=200).code == 200


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ()),
        ("", ()),
        ([URL], (URL,)),
        (json.dumps([URL, JPG]), (URL, JPG)),
        (URL, (URL,)),
        ([URL, ""], (URL,)),
    ],
)
def test_url_list_variants(value: object, expected: tuple[str, ...]) -> None:
    """URL lists arrive as lists, JSON-encoded strings, single strings or null."""
    assert url_list(value) == expected


@pytest.mark.parametrize("value", [[1, 2], {"a": 1}, "[not json", 5])
def test_url_list_rejects_garbage(value: object) -> None:
    """Anything else in a URL list is a ValueError (turned into TransportError upstream)."""
    with pytest.raises(ValueError, match=r"."):
        url_list(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-06-06 10:30:00", datetime(2025, 6, 6, 10, 30, tzinfo=UTC)),
        ("2024-03-20T10:25:00Z", datetime(2024, 3, 20, 10, 25, tzinfo=UTC)),
        ("2024-03-20T18:25:00+08:00", datetime(2024, 3, 20, 10, 25, tzinfo=UTC)),
        (1717669800000, datetime(2024, 6, 6, 10, 30, tzinfo=UTC)),
        (None, None),
    ],
)
def test_times_parse_to_aware_utc(value: object, expected: datetime | None) -> None:
    """Both documented time formats (and epoch ms) give aware UTC datetimes."""
    assert parse_time(value) == expected


# -- get-4k-video classification: the table of kie-api.md ------------------------------------


def test_accepted_first_request_is_processing() -> None:
    """200 with null resultUrls: accepted, not ready."""
    data = {"taskId": "veo_task_abcdef123456", "resultUrls": None, "imageUrls": None}
    status = fourk_status(env(200, "success", data), "t", 0)
    assert status.ready is False
    assert status.result_urls == ()


def test_accepted_legacy_shape_is_processing() -> None:
    """Older docs: data holds only taskId."""
    assert fourk_status(env(200, "success", {"taskId": "t"}), "t", 0).ready is False


@pytest.mark.parametrize("http_status", [200, 422])
def test_422_processing_is_not_an_error(http_status: int) -> None:
    """422 "4k is processing" means keep waiting, whether HTTP says 200 or 422."""
    msg = "4k is processing. It should be ready in 5-10 minutes. Please check back shortly."
    data = {"taskId": "t", "resultUrls": None, "imageUrls": None}
    status = fourk_status(env(422, msg, data, http_status), "t", 0)
    assert status.ready is False
    assert status.code == 422


@pytest.mark.parametrize("code", [200, 422])
def test_urls_mean_ready_whatever_the_code(code: int) -> None:
    """A non-empty resultUrls is ready, even under code 422 ("generated successfully")."""
    data = {"taskId": "t", "resultUrls": [URL], "imageUrls": [JPG]}
    status = fourk_status(env(code, "The video has been generated successfully", data), "t", 1)
    assert status.ready is True
    assert status.result_urls == (URL,)
    assert status.image_urls == (JPG,)
    assert status.index == 1


def test_urls_as_json_string_are_ready() -> None:
    """resultUrls as a JSON-encoded string still counts."""
    data = {"resultUrls": json.dumps([URL])}
    assert fourk_status(env(422, "done", data), "t", 0).result_urls == (URL,)


@pytest.mark.parametrize(
    "msg",
    [
        "record is null.",
        "Temporarily supports records within 14 days.",
        "record result data is blank.",
        "record result data not exist.",
        "record result data is empty.",
    ],
)
def test_422_cannot_upgrade_is_validation_error(msg: str) -> None:
    """The 422 sub-messages that mean the source cannot be upgraded raise ValidationError."""
    with pytest.raises(veo4k.ValidationError) as info:
        fourk_status(env(422, msg), "t", 0)
    assert not isinstance(info.value, veo4k.SourceNotReadyError)
    assert (info.value.code, info.value.msg, info.value.task_id) == (422, msg, "t")
    assert not is_transient(info.value)


def test_422_record_status_not_success() -> None:
    """ "record status is not success." is its own type, for the waiter to check record-info."""
    with pytest.raises(veo4k.SourceNotReadyError):
        fourk_status(env(422, "record status is not success."), "t", 0)


@pytest.mark.parametrize(
    ("code", "error", "transient"),
    [
        (400, veo4k.BadRequestError, False),
        (401, veo4k.AuthenticationError, False),
        (402, veo4k.InsufficientCreditsError, False),
        (404, veo4k.NotFoundError, False),
        (408, veo4k.UpstreamTimeoutError, True),
        (429, veo4k.RateLimitError, True),
        (433, veo4k.SubKeyLimitError, False),
        (451, veo4k.MediaFetchError, False),
        (455, veo4k.ServiceUnavailableError, True),
        (500, veo4k.ServerError, True),
        (501, veo4k.GenerationFailedError, False),
        (503, veo4k.ServerError, True),
        (505, veo4k.FeatureDisabledError, False),
        (418, veo4k.APIError, False),
    ],
)
def test_codes_map_to_typed_errors(code: int, error: type[veo4k.APIError], transient: bool) -> None:
    """Each documented code raises its own APIError subclass; only 408, 429, 455 and 5xx other
    than 501/505 are transient."""
    with pytest.raises(error) as info:
        fourk_status(env(code, "m"), "t", 0)
    assert type(info.value) is error
    assert is_transient(info.value) is transient


@pytest.mark.parametrize(
    "msg",
    ["Daily quota exceeded for this key", "hourly limit reached", "Total usage quota reached"],
)
def test_quota_429_is_final(msg: str) -> None:
    """A 429 naming an hourly/daily/total cap is QuotaExceededError: final, not a RateLimitError."""
    with pytest.raises(veo4k.QuotaExceededError) as info:
        fourk_status(env(429, msg, http_status=429), "t", 0)
    assert not isinstance(info.value, veo4k.RateLimitError)
    assert not is_transient(info.value)


def test_edge_block_is_final_and_explained() -> None:
    """Cloudflare's 1010 is EdgeBlockedError: final, not an auth error, says how to fix it."""
    error = veo4k.EdgeBlockedError(task_id="t")
    assert not is_transient(error)
    assert not isinstance(error, veo4k.AuthenticationError)
    assert "blocked at Kie's edge (Cloudflare 1010" in str(error)
    assert "User-Agent" in str(error)


def test_message_instead_of_msg() -> None:
    """An envelope with ``message`` instead of ``msg`` keeps its text."""
    body = json.dumps({"code": 200, "message": "success", "data": None}).encode()
    assert parse_envelope(body, http_status=200).msg == "success"


def test_differing_4k_task_id_is_kept() -> None:
    """A data.taskId other than the source id is kept as fourk_task_id; the same id is not."""
    other = fourk_status(env(200, "success", {"taskId": "job-4k"}), "t", 0)
    assert other.fourk_task_id == "job-4k"
    same = fourk_status(env(200, "success", {"taskId": "t"}), "t", 0)
    assert same.fourk_task_id is None


def test_500_unavailable_is_permanent() -> None:
    """A 500 saying the 4K version is unavailable is FourKUnavailableError, never retried."""
    msg = "The 4K version of this video is unavailable. Please try a different video."
    with pytest.raises(veo4k.FourKUnavailableError) as info:
        fourk_status(env(500, msg), "t", 0)
    assert not is_transient(info.value)


def test_malformed_url_list_is_transport_error() -> None:
    """A resultUrls that is neither list nor JSON list is a garbled answer."""
    with pytest.raises(veo4k.TransportError, match="malformed"):
        fourk_status(env(200, "ok", {"resultUrls": {"x": 1}}), "t", 0)


# -- record-info ------------------------------------------------------------------------------


def test_record_info_sample_parses() -> None:
    """The documented record-info sample becomes a TaskRecord with aware times."""
    data = {
        "taskId": "veo_task_abcdef123456",
        "paramJson": '{"prompt":"..."}',
        "completeTime": "2025-06-06 10:30:00",
        "response": {
            "taskId": "veo_task_abcdef123456",
            "resultUrls": ["http://example.com/video1.mp4"],
            "originUrls": ["http://example.com/original_video1.mp4"],
            "resolution": "1080p",
        },
        "successFlag": 1,
        "errorCode": None,
        "errorMessage": "",
        "createTime": "2025-06-06 10:25:00",
        "fallbackFlag": False,
    }
    record = parse_record(make_converter(), env(200, "success", data), "veo_task_abcdef123456")
    assert record.succeeded
    assert record.result_urls == ("http://example.com/video1.mp4",)
    assert record.origin_urls == ("http://example.com/original_video1.mp4",)
    assert record.resolution == "1080p"
    assert record.complete_time == datetime(2025, 6, 6, 10, 30, tzinfo=UTC)
    assert record.create_time is not None
    assert record.create_time.tzinfo is not None


@pytest.mark.parametrize(("flag", "failed"), [(0, False), (1, False), (2, True), (3, True)])
def test_record_flags(flag: int, failed: bool) -> None:
    """successFlag 2 and 3 are terminal failures; 0 is generating."""
    record = parse_record(make_converter(), env(200, "ok", {"successFlag": flag}), "t")
    assert record.failed is failed
    assert record.generating is (flag == 0)


@pytest.mark.parametrize(
    "data", [None, [], {"successFlag": "x"}, {"successFlag": 1, "createTime": "yesterday"}]
)
def test_malformed_record_is_transport_error(data: object) -> None:
    """A record-info answer missing or mistyping required fields raises TransportError."""
    with pytest.raises(veo4k.TransportError):
        parse_record(make_converter(), env(200, "ok", data), "t")


def test_record_info_variants_parse() -> None:
    """ "null" strings, epoch-ms times (number or string), float credits, fullResultUrls and
    unknown fields all parse (kie-api.md, samples)."""
    data = {
        "taskId": "t",
        "successFlag": 1,
        "response": {"resultUrls": "null", "fullResultUrls": ["http://x/full.mp4"]},
        "errorCode": "null",
        "errorMessage": "null",
        "createTime": 1749205500000,
        "completeTime": "1749205800000",
        "creditsConsumed": 12.5,
        "resolution": "null",
        "brandNewField": {"a": [1]},
    }
    record = parse_record(make_converter(), env(200, "success", data), "t")
    assert record.full_result_urls == ("http://x/full.mp4",)
    assert record.result_urls == ()
    assert record.error_code is None
    assert record.error_message == ""
    assert record.resolution is None
    assert record.credits == 12.5
    assert record.create_time == datetime(2025, 6, 6, 10, 25, tzinfo=UTC)
    assert record.complete_time == datetime(2025, 6, 6, 10, 30, tzinfo=UTC)
