"""The real ``veo4k`` command as a subprocess against a FakeKie served over HTTP: concurrent
runs, signals, file-system errors, reruns that know why a task failed, NDJSON as it happens."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import socket
import sqlite3
import sys
from contextlib import closing
from typing import Any

import pytest

from veo4k.testing import FakeKie, TaskOutcome, fake_video_bytes

FAST = ["--first-poll", "0.05", "--poll-every", "0.05", "--rate-limit", "1000/1"]
PIPE = asyncio.subprocess.PIPE


def env_for(kie: FakeKie, key: str | None = None) -> dict[str, str]:
    return {**os.environ, "KIE_API_KEY": key or kie.api_key, "KIE_BASE_URL": kie.base_url}


async def veo4k(kie: FakeKie, *argv: str, key: str | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "veo4k", *argv, env=env_for(kie, key), stdout=PIPE, stderr=PIPE
    )


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await proc.communicate()
    assert proc.returncode is not None
    assert "Traceback" not in err.decode(), err.decode()
    return proc.returncode, out.decode(), err.decode()


def summary(stdout: str) -> dict[str, Any]:
    last: dict[str, Any] = json.loads(stdout.splitlines()[-1])
    assert last["event"] == "summary"
    return last


def journal_states(folder: pathlib.Path) -> dict[str, tuple[str, str]]:
    with closing(sqlite3.connect(folder / "veo4k-journal.sqlite")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = db.execute("SELECT task_id, state, kind FROM tasks").fetchall()
    return {task: (state, kind) for task, state, kind in rows}


async def test_second_run_on_the_same_folder_is_refused(tmp_path: pathlib.Path) -> None:
    """While one run holds OUT, a second refuses at once (exit 3) and writes nothing; the first
    finishes untouched."""
    async with FakeKie(ready_after=60.0) as kie:
        started = asyncio.Event()
        kie.on_submission = lambda task, index: started.set()
        first = await veo4k(kie, "upscale", "veo_a", "veo_b", "--out", str(tmp_path), *FAST)
        await started.wait()
        journal_before = (tmp_path / "veo4k-journal.sqlite").read_bytes()
        code, _, err = await finish(
            await veo4k(kie, "upscale", "veo_a", "veo_c", "--out", str(tmp_path), *FAST)
        )
        assert code == 3
        assert err.count("\n") == 1
        assert "another veo4k run is using the journal" in err
        other = tmp_path.parent / f"{tmp_path.name}-other.sqlite"
        code, _, err = await finish(await veo4k(
            kie, "upscale", "veo_c", "--out", str(tmp_path), "--journal", str(other), *FAST
        ))  # fmt: skip
        assert code == 3  # another journal, the same download folder: refused too
        assert not other.exists()
        assert kie.submissions("veo_c") == 0
        assert (tmp_path / "veo4k-journal.sqlite").read_bytes() == journal_before
        for task in ("veo_a", "veo_b"):
            kie.tasks[task].ready_after = 0.0
        assert (await finish(first))[0] == 0
    for name in ("veo_a_0.mp4", "veo_b_0.mp4"):
        assert (tmp_path / name).read_bytes() == fake_video_bytes(name, kie.file_size)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
async def test_signal_mid_batch_stops_cleanly_and_rerun_finishes(
    tmp_path: pathlib.Path, signum: int, code: int
) -> None:
    """SIGTERM/SIGINT mid-batch: in-flight waits cancelled, a summary printed, exit 143/130,
    the journal consistent; a rerun completes with every task submitted once."""
    ids = [f"veo_s{i}" for i in range(4)]
    async with FakeKie(ready_after=30.0) as kie:
        argv = ["upscale", *ids, "--out", str(tmp_path), "--json", *FAST]
        proc = await veo4k(kie, *argv)
        assert proc.stdout is not None
        seen: set[str] = set()
        while len(seen) < len(ids):  # NDJSON read while the run is going
            event = json.loads(await proc.stdout.readline())
            if event["event"] == "submitted":
                seen.add(event["task_id"])
        proc.send_signal(signum)
        returncode, out, err = await finish(proc)
        assert returncode == code
        last = summary(out)
        assert last["exit_code"] == code
        assert last["counts"]["interrupted"] == len(ids)
        assert all(t["requests"] >= 1 for t in last["tasks"])
        assert f"stopped by {signal.Signals(signum).name}" in err
        assert {s for s, _ in journal_states(tmp_path).values()} == {"submitted"}
        with closing(sqlite3.connect(tmp_path / "veo4k-journal.sqlite")) as db:
            notes = db.execute("SELECT task_id FROM events WHERE detail='interrupted'").fetchall()
        assert sorted(t for (t,) in notes) == ids
        for task in ids:
            kie.tasks[task].ready_after = 0.0  # the same tasks: their charges still count
        returncode, out, _ = await finish(await veo4k(kie, *argv))
        assert returncode == 0
        assert summary(out)["counts"]["downloaded"] == len(ids)
        assert [kie.submissions(t) for t in ids] == [1] * len(ids)


async def test_json_events_as_they_happen(kie: FakeKie, tmp_path: pathlib.Path) -> None:
    """--json is NDJSON: submitted, progress, done, downloaded / failed per task in order,
    then a summary with URLs, requests and errors for every task."""
    kie.add_task("veo_slow", ready_after=0.4)
    kie.add_task("veo_gone", outcome=TaskOutcome.UNAVAILABLE)
    proc = await veo4k(kie, "upscale", "veo_slow", "veo_gone", "--out", str(tmp_path), "--json",
                       *FAST)  # fmt: skip
    assert proc.stdout is not None
    first = json.loads(await proc.stdout.readline())
    assert first["event"] == "submitted"
    assert proc.returncode is None  # the first event came while the run was going
    code, rest, _ = await finish(proc)
    events = [first, *map(json.loads, rest.splitlines())]
    slow = [e["event"] for e in events if e.get("task_id") == "veo_slow"]
    assert slow[0] == "submitted"
    assert "progress" in slow
    assert slow[-2:] == ["done", "downloaded"]
    assert [e["event"] for e in events if e.get("task_id") == "veo_gone"][-1] == "failed"
    assert code == 1
    tasks = {t["task_id"]: t for t in summary(rest)["tasks"]}
    assert tasks["veo_slow"]["result_urls"]
    assert tasks["veo_slow"]["requests"] >= 2
    assert tasks["veo_gone"]["error_kind"] == "final"
    assert tasks["veo_gone"]["error"].startswith("4K unavailable")
    assert tasks["veo_gone"]["requests"] >= 1


async def test_file_system_error_fails_only_that_download(
    kie: FakeKie, tmp_path: pathlib.Path
) -> None:
    """A file that cannot be written (its .part path is a folder: works as root, unlike chmod)
    fails that task's download with the path and the reason, keeps its URLs; the batch goes on;
    a rerun downloads it without a second submission. (The download refuses a .part that is not
    a regular file before opening it; OS errors proper are pinned in test_cli_inputs.)"""
    (tmp_path / "veo_b_0.mp4.part").mkdir()
    argv = ["upscale", "veo_a", "veo_b", "veo_c", "--out", str(tmp_path), "--json", *FAST]
    code, out, _ = await finish(await veo4k(kie, *argv))
    assert code == 1
    tasks = {t["task_id"]: t for t in summary(out)["tasks"]}
    assert [tasks[t]["status"] for t in ("veo_a", "veo_b", "veo_c")] == [
        "downloaded", "failed", "downloaded",
    ]  # fmt: skip
    assert tasks["veo_b"]["error"].startswith(
        f"{tmp_path / 'veo_b_0.mp4.part'} is not a regular file; refusing it"
    )
    assert tasks["veo_b"]["error_kind"] == "retryable"
    assert tasks["veo_b"]["result_urls"]
    assert tasks["veo_b"]["requests"] >= 1
    assert journal_states(tmp_path)["veo_b"] == ("done", "retryable")
    (tmp_path / "veo_b_0.mp4.part").rmdir()
    code, out, _ = await finish(await veo4k(kie, *argv))
    assert code == 0
    assert (tmp_path / "veo_b_0.mp4").read_bytes() == fake_video_bytes("veo_b_0.mp4", 65_536)
    assert kie.submissions("veo_b") == 1


async def test_read_only_output_folder_is_refused_before_any_request(
    kie: FakeKie, tmp_path: pathlib.Path
) -> None:
    """--out in a folder nobody can write (procfs: refuses even root, unlike chmod): one line,
    exit 2, nothing sent; the journal may live elsewhere and stays untouched."""
    journal = tmp_path / "j.sqlite"
    code, _, err = await finish(
        await veo4k(kie, "upscale", "veo_a", "--out", "/proc/self", "--journal", str(journal))
    )
    assert code == 2
    assert err.startswith("veo4k: error: cannot write in /proc/self: ")
    assert err.count("\n") == 1
    assert sum(kie.stats.requests.values()) == 0
    code, _, err = await finish(await veo4k(kie, "upscale", "veo_a", "--out", "/proc/self"))
    assert (code, err.count("\n")) == (2, 1)
    assert "cannot write in /proc/self" in err


async def test_rerun_retries_what_was_not_kies_final_answer(
    kie: FakeKie, tmp_path: pathlib.Path
) -> None:
    """A wrong key fails every task as retryable: the rerun with the right key tries them;
    Kie's final answer (4K unavailable) is then only replayed, listed, with --retry-failed
    pointed at, and costs no request."""
    kie.add_task("veo_gone", outcome=TaskOutcome.UNAVAILABLE)
    argv = ["upscale", "veo_ok", "veo_gone", "--out", str(tmp_path), *FAST]
    code, out, _ = await finish(await veo4k(kie, *argv, key="wrong-key"))
    assert code == 1
    assert journal_states(tmp_path)["veo_ok"] == ("failed", "retryable")
    assert "2 failures may pass on a rerun" in out
    code, out, _ = await finish(await veo4k(kie, *argv))
    assert code == 1
    assert journal_states(tmp_path) == {
        "veo_ok": ("downloaded", ""), "veo_gone": ("failed", "final"),
    }  # fmt: skip
    before = sum(kie.stats.requests.values())
    code, out, _ = await finish(await veo4k(kie, *argv))
    assert code == 1
    assert sum(kie.stats.requests.values()) == before
    assert "1 task failed for good in an earlier run" in out
    assert "veo_gone:0" in out
    assert "--retry-failed" in out
    assert out.count("4K unavailable") == 1  # each failure once


async def test_missing_or_truncated_file_is_downloaded_again(
    kie: FakeKie, tmp_path: pathlib.Path
) -> None:
    """A deleted or truncated output file is fetched again on a rerun, through a fresh link
    from Kie when the journaled one has expired; no second submission."""
    argv = ["upscale", "veo_a", "veo_b", "--out", str(tmp_path), *FAST]
    assert (await finish(await veo4k(kie, *argv)))[0] == 0
    (tmp_path / "veo_a_0.mp4").unlink()
    with (tmp_path / "veo_b_0.mp4").open("r+b") as f:
        f.truncate(1000)
    kie.expired_files.update({"veo_a_0.mp4", "veo_b_0.mp4"})
    code, out, _ = await finish(await veo4k(kie, *argv))
    assert code == 0, out
    for name in ("veo_a_0.mp4", "veo_b_0.mp4"):
        assert (tmp_path / name).read_bytes() == fake_video_bytes(name, kie.file_size)
    assert kie.stats.requests["/api/v1/common/download-url"] == 2
    assert (kie.submissions("veo_a"), kie.submissions("veo_b")) == (1, 1)


async def test_duplicates_and_bad_lines_are_reported_before_any_request(
    kie: FakeKie, tmp_path: pathlib.Path
) -> None:
    """Every bad line is reported as file:line before anything is sent; duplicates are
    reported and submitted once."""
    bad = tmp_path / "bad.csv"
    bad.write_text("task_id,index\nveo_a,0\nveo_b,x\nveo_c,1,2\n")
    code, _, err = await finish(await veo4k(kie, "upscale", "--from", str(bad), "t:z"))
    assert code == 2
    assert err.splitlines() == [
        "veo4k: error: argument 1: bad task 't:z': the index after ':' must be a whole number",
        f"veo4k: error: {bad}:3: bad task 'veo_b:x': the index after ':' must be a whole number",
        f"veo4k: error: {bad}:4: expected task_id[,index], got 3 columns",
        "veo4k: 3 problems; nothing was sent",
    ]
    assert sum(kie.stats.requests.values()) == 0
    good = tmp_path / "ids.txt"
    good.write_text("veo_a\nveo_a:0\n")
    code, _, err = await finish(await veo4k(kie, "upscale", "veo_a", "--from", str(good),
                                            "--out", str(tmp_path / "o"), *FAST))  # fmt: skip
    assert code == 0
    assert err.count("it is sent once") == 2
    assert kie.submissions("veo_a") == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_callback_url_decides_the_listening_path(
    kie: FakeKie, tmp_path: pathlib.Path
) -> None:
    """--callback-url .../hooks/kie with --listen: the built-in server answers on /hooks/kie,
    so Kie's callback ends the wait long before the first poll (60 s)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/hooks/kie"
    proc = await veo4k(kie, "upscale", "veo_cb", "--out", str(tmp_path), "--listen",
                       f"127.0.0.1:{port}", "--callback-url", url, "--first-poll", "60",
                       "--json")  # fmt: skip
    code, out, _ = await asyncio.wait_for(finish(proc), 30)
    assert code == 0
    assert summary(out)["counts"]["downloaded"] == 1
    assert kie.stats.callbacks_sent >= 1
    assert kie.stats.callbacks_failed == 0


async def test_rerun_asks_kie_again_when_an_old_link_cannot_be_refreshed(
    kie: FakeKie, tmp_path: pathlib.Path
) -> None:
    """A journaled link that expired and that Kie will not refresh: the rerun asks for the
    finished 4K again (a repeat request, not a second paid job) and downloads it."""
    argv = ["upscale", "veo_old", "--out", str(tmp_path), *FAST]
    assert (await finish(await veo4k(kie, *argv)))[0] == 0
    posts = kie.posts("veo_old")
    (tmp_path / "veo_old_0.mp4").unlink()
    kie.expired_files.add("veo_old_0.mp4")
    kie.inject("envelope", code=422, msg="The url is too old.", path="/api/v1/common/download-url")
    code, out, _ = await finish(await veo4k(kie, *argv))
    assert code == 0, out
    assert (tmp_path / "veo_old_0.mp4").read_bytes() == fake_video_bytes("veo_old_0.mp4", 65_536)
    assert kie.posts("veo_old") == posts + 1
    assert kie.submissions("veo_old") == 1


async def test_reader_going_away_does_not_stop_the_batch(
    kie: FakeKie, tmp_path: pathlib.Path
) -> None:
    """`veo4k upscale ... --json | head -1`: the batch still finishes and journals, quietly."""
    read_end, write_end = os.pipe()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "veo4k", "upscale", "veo_p1", "veo_p2", "veo_p3", "--out",
        str(tmp_path), "--json", *FAST, env=env_for(kie), stdout=write_end, stderr=PIPE,
    )  # fmt: skip
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        first = await asyncio.get_running_loop().run_in_executor(None, reader.readline)
    assert json.loads(first)["event"] == "submitted"
    _, err = await proc.communicate()
    assert proc.returncode == 0
    assert err.decode() == ""
    assert {s for s, _ in journal_states(tmp_path).values()} == {"downloaded"}
