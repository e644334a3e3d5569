"""client.download against a hostile file host (issue 18): a cut, misranged, changed or
gzip-bombed file never ends up on disk as if it were whole."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import veo4k
from veo4k._part import MAX_RATIO, RATIO_SLACK
from veo4k.testing import FakeKie, Hostile, fake_video_bytes

from .conftest import ClientFactory
from .test_hostile_cli import FAST, run

NAME = "veo_1_0.mp4"


async def test_a_cut_body_without_length_is_checked_and_completed(
    kie: FakeKie, client: veo4k.Veo4kClient, tmp_path: pathlib.Path
) -> None:
    """A 200 with no Content-Length that closes halfway was renamed as the whole file; now
    a ranged probe finds the rest and the file is whole."""
    result = await client.wait_for_4k("veo_1")
    kie.hostile.add(Hostile.TRUNCATE)
    path = await client.download(result, tmp_path)
    assert path.read_bytes() == fake_video_bytes(NAME, kie.file_size)
    assert kie.stats.range_requests == 1  # the probe


async def test_a_body_without_length_from_a_host_without_ranges_is_refused(
    kie: FakeKie, client: veo4k.Veo4kClient, tmp_path: pathlib.Path
) -> None:
    """No length and no Range support: nothing tells a cut file from a whole one, so the
    download fails (DownloadError) and nothing is left at the destination."""
    result = await client.wait_for_4k("veo_1")
    kie.hostile.add(Hostile.TRUNCATE)
    kie.range_support = False
    with pytest.raises(veo4k.DownloadError, match="no length and ignores Range"):
        await client.download(result, tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_the_cli_never_journals_a_cut_file_as_downloaded(tmp_path: pathlib.Path) -> None:
    """The command against a host that cuts every plain answer short: the file on disk is
    whole and journaled with its real size."""
    async with FakeKie(ready_after=0.0, hostile={Hostile.TRUNCATE}) as kie:
        code, _, _ = await run(kie, "upscale", "veo_1", "--out", str(tmp_path), *FAST)
    assert code == 0
    assert (tmp_path / NAME).read_bytes() == fake_video_bytes(NAME, kie.file_size)


async def test_a_206_from_the_wrong_offset_restarts_from_zero(
    kie: FakeKie, client: veo4k.Veo4kClient, tmp_path: pathlib.Path
) -> None:
    """``Range: bytes=N-`` answered ``206 bytes 0-...`` (the right length from the wrong
    place) was appended; now the .part is dropped and the file fetched whole."""
    result = await client.wait_for_4k("veo_1")
    kie.hostile.add(Hostile.WRONG_RANGE)
    kie.interrupt_files[NAME] = kie.file_size // 2
    path = await client.download(result, tmp_path)
    assert path.read_bytes() == fake_video_bytes(NAME, kie.file_size)


async def test_a_resume_sends_if_range_and_restarts_when_the_file_changed(
    kie: FakeKie, client: veo4k.Veo4kClient, tmp_path: pathlib.Path
) -> None:
    """The resumed request carries If-Range with the first answer's ETag; the file changed on
    the host meanwhile, so the host sends it whole and the old half is not spliced in."""
    result = await client.wait_for_4k("veo_1")
    kie.interrupt_files[NAME] = kie.file_size // 2

    def change_it(done: int, total: int | None) -> None:
        kie.file_versions[NAME] = 1  # after the first bytes went out

    path = await client.download(result, tmp_path, on_progress=change_it)
    assert path.read_bytes() == kie.file_bytes(NAME) != fake_video_bytes(NAME, kie.file_size)
    assert kie.stats.if_range_mismatches == 1


async def test_a_part_from_an_earlier_call_keeps_its_etag(
    kie: FakeKie, make_client: ClientFactory, tmp_path: pathlib.Path
) -> None:
    """A .part left by a failed call (a crashed run) remembers the ETag it was started with:
    the next call resumes it only if the host still serves that file."""
    client = make_client(retry_policy=veo4k.RetryPolicy(attempts=1))
    result = await client.wait_for_4k("veo_1")
    kie.interrupt_files[NAME] = kie.file_size // 2
    with pytest.raises(veo4k.DownloadError):
        await client.download(result, tmp_path)
    assert (tmp_path / f"{NAME}.part").stat().st_size == kie.file_size // 2
    kie.file_versions[NAME] = 1
    path = await client.download(result, tmp_path)
    assert path.read_bytes() == kie.file_bytes(NAME)
    assert kie.stats.if_range_mismatches == 1


async def test_a_gzip_bomb_is_cut_off_with_a_typed_error(
    kie: FakeKie, client: veo4k.Veo4kClient, tmp_path: pathlib.Path
) -> None:
    """51 KB of gzip that decodes to 64 MiB: stopped once the output passes 8 x the input +
    1 MiB, DownloadError, nothing left on disk."""
    result = await client.wait_for_4k("veo_1")
    kie.hostile.add(Hostile.GZIP_BOMB)
    written: list[int] = []
    with pytest.raises(veo4k.DownloadError, match="compression bomb"):
        await client.download(result, tmp_path, on_progress=lambda d, t: written.append(d))
    assert max(written) <= MAX_RATIO * 70_000 + RATIO_SLACK + 65_536
    assert list(tmp_path.iterdir()) == []


async def test_a_folder_in_the_way_fails_that_task_with_the_os_reason(
    tmp_path: pathlib.Path,
) -> None:
    """``out/<task>_0.mp4/`` is a folder: that task fails with 'Is a directory' (nothing is
    written into the folder), the other task downloads, exit 1."""
    (tmp_path / "veo_a_0.mp4").mkdir()
    async with FakeKie(ready_after=0.0) as kie:
        argv = ["upscale", "veo_a", "veo_b", "--out", str(tmp_path), *FAST]
        code, out, _ = await run(kie, *argv)
    assert code == 1
    assert os.strerror(21) in out  # EISDIR: "Is a directory"
    assert list((tmp_path / "veo_a_0.mp4").iterdir()) == []
    assert (tmp_path / "veo_b_0.mp4").is_file()


async def test_a_disk_error_is_a_download_error_caused_by_the_os_error(
    kie: FakeKie, tmp_path: pathlib.Path
) -> None:
    """A write the OS refuses (here a file-size limit: EFBIG, as real as ENOSPC) is a
    DownloadError whose __cause__ is the OSError, never a bare OSError."""
    script = textwrap.dedent(f"""
        import asyncio, resource, signal, veo4k
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
        async def main():
            async with veo4k.Veo4kClient({kie.api_key!r}, base_url={kie.base_url!r}) as c:
                try:
                    await c.download({kie.result_url("veo_1")!r}, {str(tmp_path)!r} + "/v.mp4")
                except veo4k.Veo4kError as exc:
                    print(type(exc).__name__, type(exc.__cause__).__name__,
                          exc.__cause__.errno, exc)
        asyncio.run(main())
    """)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    kind, cause, number, *message = out.decode().split()
    assert (kind, cause, int(number)) == ("DownloadError", "OSError", 27)  # EFBIG
    assert "File too large" in " ".join(message)


async def test_the_size_probe_is_not_a_failed_attempt(
    kie: FakeKie, make_client: ClientFactory, tmp_path: pathlib.Path
) -> None:
    """With a single attempt allowed, a body without length is still confirmed by its probe
    (the probe is a check, not a retry)."""
    client = make_client(retry_policy=veo4k.RetryPolicy(attempts=1))
    result = await client.wait_for_4k("veo_1")
    kie.hostile.add(Hostile.TRUNCATE)
    path = await client.download(result, tmp_path)
    assert path.read_bytes() == fake_video_bytes(NAME, kie.file_size)
