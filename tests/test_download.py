"""client.download against the fake file host: resume, verify, refresh, never leak the key."""

from __future__ import annotations

import pathlib

import pytest

import veo4k
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
