"""client.download against the fake file host: resume, verify, refresh, never leak the key."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import pathlib
import threading
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

import veo4k
from veo4k._download import _open_part
from veo4k.testing import FakeKie, fake_video_bytes

from .conftest import ClientFactory


async def finished(client: veo4k.Veo4kClient, task_id: str = "veo_task_1") -> veo4k.FourKResult:
    return await client.wait_for_4k(task_id)


async def test_download_into_folder(
    kie: FakeKie, client: veo4k.Veo4kClient, tmp_path: pathlib.Path
) -> None:
    """A folder destination gets <task_id>_<index>.mp4 with exactly the served bytes."""
    result = await finished(client)
    seen: list[tuple[int, int | None]] = []
    path = await client.download(result, tmp_path, on_progress=lambda d, t: seen.append((d, t)))
    assert path == tmp_path / "veo_task_1_0.mp4"
    assert path.read_bytes() == fake_video_bytes("veo_task_1_0.mp4", kie.file_size)
    assert not list(tmp_path.glob("*.part"))
    assert seen[-1] == (kie.file_size, kie.file_size)
    assert kie.stats.file_auth_violations == []


async def test_interrupted_download_resumes_with_range(
    kie: FakeKie, client: veo4k.Veo4kClient, tmp_path: pathlib.Path
) -> None:
    """A connection cut halfway leaves a .part; the retry asks for the rest with Range."""
    result = await finished(client)
    kie.interrupt_files["veo_task_1_0.mp4"] = kie.file_size // 2
    path = await client.download(result, tmp_path / "out.mp4")
    assert path.read_bytes() == fake_video_bytes("veo_task_1_0.mp4", kie.file_size)
    assert kie.stats.range_requests == 1


async def test_existing_part_file_is_resumed(
    kie: FakeKie, client: veo4k.Veo4kClient, tmp_path: pathlib.Path
) -> None:
    """A .part left by a crashed run is continued, not restarted."""
    result = await finished(client)
    data = fake_video_bytes("veo_task_1_0.mp4", kie.file_size)
    (tmp_path / "v.mp4.part").write_bytes(data[:1000])
    path = await client.download(result, tmp_path / "v.mp4")
    assert path.read_bytes() == data
    assert kie.stats.range_requests == 1


async def test_host_without_range_support_restarts(
    kie: FakeKie, client: veo4k.Veo4kClient, tmp_path: pathlib.Path
) -> None:
    """A host that ignores Range (200) gets the .part overwritten, not appended to."""
    result = await finished(client)
    kie.range_support = False
    data = fake_video_bytes("veo_task_1_0.mp4", kie.file_size)
    (tmp_path / "v.mp4.part").write_bytes(b"garbage" * 10)
    path = await client.download(result, tmp_path / "v.mp4")
    assert path.read_bytes() == data


async def test_expired_link_is_refreshed_once(
    kie: FakeKie, client: veo4k.Veo4kClient, tmp_path: pathlib.Path
) -> None:
    """403 from the file host: a fresh link from Kie's download-url, then success."""
    result = await finished(client)
    kie.expired_files.add("veo_task_1_0.mp4")
    path = await client.download(result, tmp_path)
    assert path.exists()
    assert kie.stats.requests["/api/v1/common/download-url"] == 1


async def test_refusal_to_refresh_is_a_clear_error(
    kie: FakeKie, client: veo4k.Veo4kClient, tmp_path: pathlib.Path
) -> None:
    """An expired link Kie will not refresh ends in DownloadError naming the task."""
    result = await finished(client)
    foreign = veo4k.FourKResult(
        task_id="veo_task_1",
        index=0,
        result_urls=(kie.result_url("x").replace("/files/", "/gone/"),),
    )
    with pytest.raises(veo4k.DownloadError, match="veo_task_1"):
        await client.download(foreign, tmp_path / "x.mp4")
    assert result.video_url


async def test_existing_file_needs_overwrite(
    kie: FakeKie, client: veo4k.Veo4kClient, tmp_path: pathlib.Path
) -> None:
    """An existing destination is never clobbered silently."""
    result = await finished(client)
    (tmp_path / "veo_task_1_0.mp4").write_bytes(b"keep me")
    with pytest.raises(veo4k.DownloadError, match="overwrite"):
        await client.download(result, tmp_path)
    assert (tmp_path / "veo_task_1_0.mp4").read_bytes() == b"keep me"
    await client.download(result, tmp_path, overwrite=True)
    assert (tmp_path / "veo_task_1_0.mp4").stat().st_size == kie.file_size


async def test_bad_download_arguments(client: veo4k.Veo4kClient, tmp_path: pathlib.Path) -> None:
    """Bad results or destinations are ConfigurationError before any request."""
    with pytest.raises(veo4k.ConfigurationError):
        await client.download(42, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(veo4k.ConfigurationError):
        await client.download("ftp://x/y.mp4", tmp_path / "y.mp4")
    with pytest.raises(veo4k.ConfigurationError, match="does not exist"):
        await client.download("http://x/y.mp4", tmp_path / "nope" / "y.mp4")


async def test_key_never_reaches_the_file_host(
    kie: FakeKie, make_client: ClientFactory, tmp_path: pathlib.Path
) -> None:
    """Downloads go through a session without Authorization (the fake refuses it with 400)."""
    client = make_client()
    result = await client.wait_for_4k("veo_task_1")
    await client.download(result, tmp_path)
    assert kie.stats.file_auth_violations == []


# -- hardening (issue 13): deadline, aclose, symlinks, hosts, redirects, gzip, folders ----------

DATA = bytes(range(256)) * 64


class FileHost:
    """A loopback file host with misbehaving routes (slow, gzip, redirect loops...)."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.base = ""
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self._serve)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def close(self) -> None:
        self._release.set()
        assert self._runner is not None
        await self._runner.cleanup()

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits.append(name)
        if name == "data":
            return web.Response(body=DATA)
        if name == "gzip":
            body = gzip.compress(DATA)
            return web.Response(body=body, headers={"Content-Encoding": "gzip"})
        if name == "drip":  # announces the file, then one byte per 20 ms
            resp = web.StreamResponse(headers={"Content-Length": str(len(DATA))})
            await resp.prepare(request)
            for i in range(len(DATA)):
                await resp.write(DATA[i : i + 1])
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.02):
                        await self._release.wait()
            return resp
        if name == "hang":  # accepts the connection, never answers
            await self._release.wait()
            return web.Response(status=503)
        if name == "loop":
            raise web.HTTPFound("/loop")
        if name == "to-data":
            raise web.HTTPFound("/data")
        if name == "to-ftp":
            raise web.HTTPFound("ftp://127.0.0.1/x.mp4")
        if name == "to-metadata":
            raise web.HTTPFound("https://169.254.169.254/latest/meta-data/")
        return web.Response(status=404)


@pytest_asyncio.fixture
async def files() -> AsyncIterator[FileHost]:
    host = FileHost()
    await host.start()
    yield host
    await host.close()


def fake_result(url: str, task_id: str = "veo_task_1") -> veo4k.FourKResult:
    return veo4k.FourKResult(task_id=task_id, index=0, result_urls=(url,))


async def test_total_deadline_covers_a_slow_body(
    client: veo4k.Veo4kClient, files: FileHost, tmp_path: pathlib.Path
) -> None:
    """A host dripping bytes cannot hold download() past its timeout (DownloadTimeoutError,
    also a TimeoutError); the .part is kept for a later resume."""
    started = time.monotonic()
    with pytest.raises(veo4k.DownloadTimeoutError, match=r"timeout=0\.3") as info:
        await client.download(fake_result(files.url("drip")), tmp_path, timeout=0.3)
    assert isinstance(info.value, TimeoutError)
    assert time.monotonic() - started < 1.5
    assert (tmp_path / "veo_task_1_0.mp4.part").stat().st_size > 0


async def test_total_deadline_covers_a_silent_host(
    client: veo4k.Veo4kClient, files: FileHost, tmp_path: pathlib.Path
) -> None:
    """A host that accepts and never answers ends at the deadline too."""
    with pytest.raises(veo4k.DownloadTimeoutError):
        await client.download(fake_result(files.url("hang")), tmp_path / "x.mp4", timeout=0.2)


async def _started(
    client: veo4k.Veo4kClient, files: FileHost, tmp_path: pathlib.Path
) -> asyncio.Task[pathlib.Path]:
    first = asyncio.Event()
    task = asyncio.create_task(
        client.download(
            fake_result(files.url("drip")), tmp_path, on_progress=lambda d, t: first.set()
        )
    )
    await first.wait()
    return task


async def test_aclose_stops_a_running_download(
    client: veo4k.Veo4kClient, files: FileHost, tmp_path: pathlib.Path
) -> None:
    """aclose() during a download ends it within 1 s with ClientStateError; .part kept."""
    task = await _started(client, files, tmp_path)
    started = time.monotonic()
    await client.aclose()
    with pytest.raises(veo4k.ClientStateError, match="closed during the download"):
        await task
    assert time.monotonic() - started < 1.0
    assert (tmp_path / "veo_task_1_0.mp4.part").exists()
    assert not (tmp_path / "veo_task_1_0.mp4").exists()


async def test_cancelling_a_download_stops_it(
    client: veo4k.Veo4kClient, files: FileHost, tmp_path: pathlib.Path
) -> None:
    """Cancelling the caller cancels the transfer at once; the .part is kept."""
    task = await _started(client, files, tmp_path)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1.0
    assert client._downloader.running == 0  # the transfer task ended too
    assert (tmp_path / "veo_task_1_0.mp4.part").exists()


async def test_symlinked_part_is_never_followed(
    client: veo4k.Veo4kClient, files: FileHost, tmp_path: pathlib.Path
) -> None:
    """A symlink planted at the .part path is refused; its target is untouched."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (tmp_path / "v.mp4.part").symlink_to(victim)
    with pytest.raises(veo4k.DownloadError, match=r"not a regular file|symlink"):
        await client.download(files.url("data"), tmp_path / "v.mp4")
    assert victim.read_bytes() == b"precious"


async def test_open_part_uses_o_nofollow(tmp_path: pathlib.Path) -> None:
    """Even if a symlink appears between the check and the open, O_NOFOLLOW refuses it."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (tmp_path / "v.part").symlink_to(victim)
    with pytest.raises(veo4k.DownloadError, match="symlink"):
        _open_part(tmp_path / "v.part", False, "https://h/v", None)
    assert victim.read_bytes() == b"precious"


async def test_symlink_at_destination_is_replaced_not_followed(
    client: veo4k.Veo4kClient, files: FileHost, tmp_path: pathlib.Path
) -> None:
    """A symlink at dest counts as existing; with overwrite the link itself is replaced."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (tmp_path / "v.mp4").symlink_to(victim)
    with pytest.raises(veo4k.DownloadError, match="overwrite"):
        await client.download(files.url("data"), tmp_path / "v.mp4")
    path = await client.download(files.url("data"), tmp_path / "v.mp4", overwrite=True)
    assert not path.is_symlink()
    assert path.read_bytes() == DATA
    assert victim.read_bytes() == b"precious"


async def test_gzip_encoded_file_is_decoded(
    client: veo4k.Veo4kClient, files: FileHost, tmp_path: pathlib.Path
) -> None:
    """Content-Encoding: gzip is decoded; the length check does not trip on it."""
    path = await client.download(files.url("gzip"), tmp_path / "g.mp4")
    assert path.read_bytes() == DATA


@pytest.mark.parametrize("dest", ["videos/", "videos/deeper/"])
async def test_dest_ending_in_slash_is_a_folder(
    client: veo4k.Veo4kClient, files: FileHost, tmp_path: pathlib.Path, dest: str
) -> None:
    """dest ending in '/' is a folder, created if missing: never a file named 'videos'."""
    path = await client.download(fake_result(files.url("data")), f"{tmp_path}/{dest}")
    assert path == tmp_path / dest / "veo_task_1_0.mp4"
    assert path.read_bytes() == DATA


async def test_redirects_are_followed_capped_and_checked(
    client: veo4k.Veo4kClient, files: FileHost, tmp_path: pathlib.Path
) -> None:
    """One redirect is fine; a loop stops after 5; ftp or metadata targets are refused."""
    path = await client.download(files.url("to-data"), tmp_path / "ok.mp4")
    assert path.read_bytes() == DATA
    with pytest.raises(veo4k.DownloadError, match="more than 5 redirects"):
        await client.download(files.url("loop"), tmp_path / "loop.mp4")
    assert files.hits.count("loop") == 6
    with pytest.raises(veo4k.DownloadError, match="http"):
        await client.download(files.url("to-ftp"), tmp_path / "ftp.mp4")
    with pytest.raises(veo4k.DownloadError, match="private or link-local"):
        await client.download(files.url("to-metadata"), tmp_path / "meta.mp4")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam",
        "https://169.254.169.254/x.mp4",
        "https://10.0.0.8/x.mp4",
        "https://192.168.1.1/x.mp4",
        "https://[fe80::1]/x.mp4",
        "https://[::ffff:169.254.169.254]/x.mp4",
    ],
)
async def test_private_and_link_local_hosts_refused_even_with_a_local_base_url(
    client: veo4k.Veo4kClient, tmp_path: pathlib.Path, url: str
) -> None:
    """The loopback exception covers loopback only: link-local and private stay refused."""
    with pytest.raises(veo4k.DownloadError, match="refused"):
        await client.download(url, tmp_path / "x.mp4", timeout=5)


async def test_loopback_refused_for_a_remote_base_url(
    files: FileHost, tmp_path: pathlib.Path
) -> None:
    """With Kie's real base URL, a loopback or http result URL is refused before any request;
    allow_http + allow_private_hosts let it through."""
    async with veo4k.Veo4kClient("k", base_url="https://api.kie.ai") as strict:
        with pytest.raises(veo4k.DownloadError, match="allow_http"):
            await strict.download(files.url("data"), tmp_path / "a.mp4")
        with pytest.raises(veo4k.DownloadError, match="allow_private_hosts"):
            await strict.download(files.url("data").replace("http:", "https:"),
                                  tmp_path / "a.mp4")  # fmt: skip
    assert files.hits == []
    async with veo4k.Veo4kClient(
        "k", base_url="https://api.kie.ai", allow_http=True, allow_private_hosts=True
    ) as relaxed:
        path = await relaxed.download(files.url("data"), tmp_path / "a.mp4")
    assert path.read_bytes() == DATA


async def test_names_resolving_to_private_addresses_are_refused(
    files: FileHost, tmp_path: pathlib.Path
) -> None:
    """A DNS name is checked on the addresses the connection would use: 'localhost' (which
    resolves to loopback) is refused like 127.0.0.1, by the resolver, without a request."""
    async with veo4k.Veo4kClient("k", base_url="https://api.kie.ai", allow_http=True) as strict:
        url = files.url("data").replace("127.0.0.1", "localhost")
        with pytest.raises(veo4k.DownloadError, match="refused"):
            await strict.download(url, tmp_path / "a.mp4")
    assert files.hits == []


async def test_the_file_is_synced_off_the_event_loop(
    kie: FakeKie, client: veo4k.Veo4kClient, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fsync that makes a finished file durable runs in a worker thread: on a slow disk
    it takes seconds, which must not block the loop's other waits and handlers."""
    threads: list[threading.Thread] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        threads.append(threading.current_thread())
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = await client.download(await finished(client), tmp_path)
    assert path.read_bytes() == fake_video_bytes("veo_task_1_0.mp4", kie.file_size)
    assert threads
    assert threading.main_thread() not in threads
