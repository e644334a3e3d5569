"""Untrusted task ids and result URLs (issue 13): one rule, enforced at every boundary, before
any request; proven with hypothesis."""

from __future__ import annotations

import ipaddress
import json
import pathlib
import string
import uuid

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import veo4k
from veo4k import _validate as check
from veo4k._callbacks import parse_callback
from veo4k._urls import MAX_URL_CHARS, HostPolicy, HostRefused, result_url
from veo4k._wire import fourk_status, make_converter, parse_envelope, parse_record, url_list
from veo4k.testing import FakeKie

from .conftest import ClientFactory

HOSTILE_IDS = ["../../evil", "/etc/x", "..", ".", ".hidden", "a/b", "a\\b", "x" * 129, "a b",
               "a\nb", "a\x00b", "ünïcode", "C:evil", "a:1", "%2e%2e"]  # fmt: skip
KIE_IDS = ["0123456789abcdef0123456789abcdef", "veo_task_abcdef123456", str(uuid.uuid4()),
           "t", "a.b", "x" * 128, "-dash", "A_Z-0.9"]  # fmt: skip
SETTINGS = settings(max_examples=400, deadline=None)


@pytest.mark.parametrize("task_id", KIE_IDS)
def test_kie_ids_are_accepted(task_id: str) -> None:
    """What Kie issues (32 hex, veo_task_..., UUIDs) and the safe superset pass unchanged."""
    assert check.task_id(task_id) == task_id
    assert check.is_task_id(task_id)


@pytest.mark.parametrize("task_id", HOSTILE_IDS)
def test_hostile_ids_are_refused(task_id: str) -> None:
    """Paths, dot names, separators, spaces, control and non-ASCII characters are refused."""
    with pytest.raises(veo4k.ConfigurationError, match="task_id"):
        check.task_id(task_id)


@SETTINGS
@given(st.text(max_size=140))
def test_the_rule_is_exactly_the_documented_one(text: str) -> None:
    """is_task_id == 1-128 of [A-Za-z0-9_.-], not starting with a dot."""
    allowed = set(string.ascii_letters + string.digits + "_.-")
    expected = 1 <= len(text) <= 128 and set(text) <= allowed and not text.startswith(".")
    assert check.is_task_id(text) is expected


@SETTINGS
@given(st.one_of(st.text(max_size=140), st.from_regex(r"[A-Za-z0-9_.\-/\\]{1,140}")),
       st.integers(-5, 2000))  # fmt: skip
def test_file_names_never_leave_the_folder(text: str, index: int) -> None:
    """result_file_name(): either a ConfigurationError, or one plain component that resolves
    inside the target folder."""
    folder = pathlib.Path("/srv/videos")
    try:
        name = check.result_file_name(text, index)
    except veo4k.ConfigurationError:
        return
    assert "/" not in name
    assert "\\" not in name
    assert not name.startswith(".")
    target = (folder / name).resolve()
    assert target.parent == folder.resolve()
    assert name == f"{text.strip()}_{index}.mp4"


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.request_4k("../../evil"),
        lambda c: c.wait_for_4k("/etc/x"),
        lambda c: c.get_record(".hidden"),
        lambda c: c.wait_for_4k_many(["ok", "../x"]),
        lambda c: c.as_completed([("x" * 129, 0)]).__anext__(),
        lambda c: c.download(
            veo4k.FourKResult(task_id="../../evil", index=0, result_urls=("https://h/v.mp4",)),
            "/tmp/",
        ),
    ],
    ids=["request_4k", "wait_for_4k", "get_record", "wait_for_4k_many", "as_completed",
         "download"],
)  # fmt: skip
async def test_every_boundary_refuses_bad_ids_before_any_request(
    kie: FakeKie, make_client: ClientFactory, call: object
) -> None:
    """request_4k, wait_for_4k, as_completed, download...: ConfigurationError, zero requests."""
    client = make_client()
    with pytest.raises(veo4k.ConfigurationError, match="task"):
        await call(client)  # type: ignore[operator]
    assert sum(kie.stats.requests.values()) == 0


@pytest.mark.parametrize("task_id", ["../../evil", "x" * 129, ".env", 123])
def test_callbacks_with_bad_task_ids_are_invalid(task_id: object) -> None:
    """A callback naming an id that breaks the rule is InvalidCallbackError (HTTP 400)."""
    body = json.dumps({"code": 200, "msg": "ok", "data": {"taskId": task_id,
                       "info": {"resultUrls": ["https://f/v.mp4"]}}})  # fmt: skip
    with pytest.raises(veo4k.InvalidCallbackError):
        parse_callback(body)


# -- result URLs ------------------------------------------------------------------------------

BAD_URLS = ["javascript:alert(1)", "file:///etc/passwd", "ftp://h/v.mp4", "data:text/html,x",
            "//h/v.mp4", "/v.mp4", "https://", "https://h/" + "a" * MAX_URL_CHARS,
            "https://h/a b.mp4", "https://h/\nx"]  # fmt: skip


@pytest.mark.parametrize("url", BAD_URLS)
def test_bad_result_urls_are_typed_errors_everywhere(url: str) -> None:
    """In a get-4k-video answer: TransportError; in a callback: InvalidCallbackError; never a
    value handed to the user."""
    env = parse_envelope(
        json.dumps({"code": 200, "msg": "ok", "data": {"resultUrls": [url]}}).encode(),
        http_status=200,
    )
    with pytest.raises(veo4k.TransportError, match="malformed"):
        fourk_status(env, "t", 0)
    body = json.dumps({"code": 200, "msg": "ok", "data": {"taskId": "t", "resultUrls": [url]}})
    with pytest.raises(veo4k.InvalidCallbackError):
        parse_callback(body)
    record = parse_envelope(json.dumps({"code": 200, "msg": "success", "data": {
        "taskId": "t", "successFlag": 1, "response": {"resultUrls": [url]}}}).encode(),
        http_status=200)  # fmt: skip
    with pytest.raises(veo4k.TransportError, match="malformed"):
        parse_record(make_converter(), record, "t")


@SETTINGS
@given(st.one_of(st.text(max_size=80), st.from_regex(r"(https?|ftp|file|javascript):[ -~]{0,60}")))
def test_any_accepted_url_is_http_with_a_host(text: str) -> None:
    """Whatever a server sends, url_list returns only http(s) URLs with a host, under the cap."""
    try:
        urls = url_list([text])
    except ValueError:
        return
    for url in urls:
        assert url.lower().startswith(("http://", "https://"))
        assert len(url) <= MAX_URL_CHARS
        assert not any(c.isspace() for c in url)


@SETTINGS
@given(st.ip_addresses(), st.booleans(), st.booleans())
@example(ipaddress.IPv6Address("2001:0:4136:e378:8000:63bf:f7f7:f7f7"), False, False)  # Teredo
@example(ipaddress.IPv6Address("2002:808:808::1"), False, False)  # 6to4: not global on 3.13
def test_host_policy_on_literal_addresses(ip: object, private: bool, loopback: bool) -> None:
    """Non-public addresses are refused unless allowed; loopback only by the loopback rule."""
    policy = HostPolicy(allow_private=private, loopback=loopback)
    host = f"[{ip}]" if ":" in str(ip) else str(ip)
    try:
        policy.check(f"https://{host}/v.mp4")
    except HostRefused:
        refused = True
    else:
        refused = False
    addr = ipaddress.ip_address(str(ip))
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if private:
        assert not refused
    elif addr.is_loopback:
        assert refused is not loopback
    elif not addr.is_global or addr.is_multicast:
        assert refused


def test_http_only_when_allowed_or_local() -> None:
    """Plain http: refused by default, allowed with allow_http or for loopback under the
    loopback base_url rule."""
    with pytest.raises(HostRefused, match="allow_http"):
        HostPolicy().check("http://files.example.com/v.mp4")
    HostPolicy(allow_http=True).check("http://files.example.com/v.mp4")
    HostPolicy(loopback=True).check("http://127.0.0.1:8080/v.mp4")
    with pytest.raises(HostRefused, match="allow_http"):
        HostPolicy(loopback=True).check("http://files.example.com/v.mp4")
    assert result_url("https://tempfile.aiquickdraw.com/v/x.mp4")
