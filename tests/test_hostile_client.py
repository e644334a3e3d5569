"""The library against a hostile Kie and hostile addresses (issue 18): the key never goes out
in clear text, odd hosts fail at once, deep answers and bad files never crash a wait."""

from __future__ import annotations

import asyncio
import pathlib

import pytest
from aiohttp import web

import veo4k
from veo4k._urls import HostPolicy, HostRefused
from veo4k.testing import FAST_POLICY, FAST_RETRY, FakeKie, Hostile

from .conftest import ClientFactory


@pytest.mark.parametrize(
    "base_url", ["http://api.example.com", "HTTP://api.kie.ai", "http://10.0.0.5:8080"]
)
def test_plain_http_to_kie_is_refused_before_any_connection(base_url: str) -> None:
    """The key never crosses the network in clear text: plain http is a ConfigurationError
    at construction, unless the base URL is loopback or allow_http=True says so."""
    with pytest.raises(veo4k.ConfigurationError, match="plain http"):
        veo4k.Veo4kClient("k", base_url=base_url)
    assert veo4k.Veo4kClient("k", base_url=base_url, allow_http=True).base_url
    for local in ("http://127.0.0.1:8080", "http://localhost:9", "http://[::1]:8080"):
        assert veo4k.Veo4kClient("k", base_url=local).base_url == local
    assert veo4k.Veo4kClient("k", base_url="https://api.example.com").base_url


@pytest.mark.parametrize("host", ["2130706433", "127.1", "0x7f.0.0.1", "0177.0.0.1", "1.2.3.4."])
async def test_non_canonical_ipv4_hosts_fail_at_once(
    host: str, make_client: ClientFactory, tmp_path: pathlib.Path
) -> None:
    """A non-canonical IPv4 host is a typed error at once wherever a URL is taken: base_url,
    callback_url, a download URL, a download's redirect target."""
    with pytest.raises(veo4k.ConfigurationError, match="canonical"):
        veo4k.Veo4kClient("k", base_url=f"https://{host}")
    client = make_client()
    with pytest.raises(veo4k.ConfigurationError, match="canonical"):
        await client.wait_for_4k("veo_1", callback_url=f"https://{host}/cb")
    with pytest.raises(veo4k.ConfigurationError, match="canonical"):
        await client.download(f"https://{host}/v.mp4", tmp_path / "v.mp4")
    with pytest.raises(HostRefused, match="canonical"):
        HostPolicy(allow_private=True, allow_http=True).check(f"http://{host}/v.mp4")


async def test_result_urls_with_a_non_canonical_host_end_the_wait_at_once() -> None:
    """A hostile Kie answering with ``http://2130706433:PORT/...`` URLs ends the wait at once
    with a final TransportError, not after its deadline of retries."""
    async with FakeKie(ready_after=0.0, hostile={Hostile.NONCANONICAL_HOST}) as kie:
        client = veo4k.Veo4kClient(
            kie.api_key, base_url=kie.base_url, poll_policy=FAST_POLICY,
            retry_policy=FAST_RETRY, rate_limit=None, allow_private_hosts=True,
        )  # fmt: skip
        async with client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(veo4k.TransportError, match="canonical") as info:
                await client.wait_for_4k("veo_1", timeout=5)
            assert loop.time() - started < 1.0
            assert not veo4k.is_transient(info.value)
            assert kie.posts("veo_1") == 1


@pytest.mark.parametrize(
    ("host", "embedded"),
    [
        ("64:ff9b::7f00:1", "127.0.0.1"),  # NAT64
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
        ("2002:7f00:1::", "127.0.0.1"),  # 6to4
        ("2002:a00:1::", "10.0.0.1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),  # IPv4-mapped
        ("::7f00:1", "127.0.0.1"),  # IPv4-compatible (deprecated)
        ("64:ff9b:1::808:808", "local-use NAT64"),
    ],
)
def test_ipv6_embedding_ipv4_is_judged_by_the_ipv4(host: str, embedded: str) -> None:
    """NAT64, mapped and compatible IPv6 reach their embedded IPv4: a private or loopback one
    is refused like the IPv4 literal; a public one is allowed. Tunnels (6to4, Teredo) are
    never public, whatever IPv4 they carry."""
    with pytest.raises(OSError, match="loopback, private or link-local"):
        HostPolicy().check(f"https://[{host}]/v.mp4")
    HostPolicy(allow_private=True).check(f"https://[{host}]/v.mp4")
    for public in ("64:ff9b::808:808", "::ffff:8.8.8.8", "2001:4860::1"):
        HostPolicy().check(f"https://[{public}]/v.mp4")
    for tunnel in ("2002:808:808::", "2001:0:4136:e378:8000:63bf:f7f7:f7f7"):  # 6to4, Teredo
        with pytest.raises(OSError, match="loopback, private or link-local"):
            HostPolicy().check(f"https://[{tunnel}]/v.mp4")


async def test_receiver_token_is_added_beside_an_access_token(
    make_client: ClientFactory,
) -> None:
    """A callback URL whose query holds ``access_token=`` (the app's own) still gets the
    receiver's ``token=``: Kie's callback is accepted, not refused with 401. A ``token=`` that
    is not the receiver's is a ConfigurationError at once."""
    receiver = veo4k.CallbackReceiver(token="receiver-token")
    got = asyncio.Event()
    receiver.add_handler(lambda event: got.set())
    app = web.Application()
    app.router.add_post("/cb", receiver.aiohttp_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/cb?access_token=abc"
    try:
        async with FakeKie(ready_after=0.05) as kie:
            client = make_client(
                base_url=kie.base_url, api_key=kie.api_key, callbacks=receiver, callback_url=url
            )
            await client.wait_for_4k("veo_1")
            async with asyncio.timeout(5):
                await got.wait()
        assert (receiver.received, receiver.rejected) == (1, 0)
    finally:
        await receiver.aclose()
        await runner.cleanup()
    with pytest.raises(veo4k.ConfigurationError, match="not the receiver's"):
        veo4k.Veo4kClient("k", callbacks=receiver, callback_url=url + "&token=other")
    with pytest.raises(veo4k.ConfigurationError, match="not the receiver's"):
        veo4k.CallbackServer(receiver, public_url="https://me.example/cb?token=other")
    assert veo4k.Veo4kClient("k", callbacks=receiver, callback_url=url + "&token=receiver-token")


async def test_a_flood_of_response_headers_is_refused(make_client: ClientFactory) -> None:
    """An API answer with 1,000 headers of 8 KB is refused by the client's parser (aiohttp
    3.13.4 caps response headers; 3.13.3 read them all: the reason for the version floor)."""
    async with FakeKie(hostile={Hostile.HEADER_FLOOD}) as kie:
        client = make_client(
            base_url=kie.base_url, api_key=kie.api_key, retry_policy=veo4k.RetryPolicy(attempts=1)
        )
        with pytest.raises(veo4k.TransportError, match="Too many headers"):
            await client.request_4k("veo_1")
