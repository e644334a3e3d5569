"""The veo4k command, in process and as a subprocess, against the fake Kie server."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing

import pytest

from veo4k.cli import main
from veo4k.cli._inputs import parse_task, read_task_file
from veo4k.testing import FakeKie, FakeTask, TaskOutcome, fake_video_bytes

FAST = ["--first-poll", "0.05", "--poll-every", "0.05", "--rate-limit", "1000/1"]


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def env_for(kie: FakeKie) -> dict[str, str]:
    return {**os.environ, "KIE_API_KEY": kie.api_key, "KIE_BASE_URL": kie.base_url}


def test_demo_in_process() -> None:
    """veo4k demo runs a batch on the fake and prints outcomes and a summary; exit 0."""
    code, out, _ = run(["demo", "--tasks", "6", "--seed", "3"])
    assert code == 0
    assert "6 tasks: 5 downloaded, 1 failed; " in out
    assert "4K unavailable" in out


def test_demo_as_subprocess() -> None:
    """python -m veo4k demo works from a shell, without any key."""
    env = {k: v for k, v in os.environ.items() if k != "KIE_API_KEY"}
    proc = subprocess.run(
        [sys.executable, "-m", "veo4k", "demo", "--tasks", "4"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "4 tasks: " in proc.stdout


def test_missing_key_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    """Without KIE_API_KEY: exit 2 and one line telling what to set, no traceback."""
    code, _, err = run(["upscale", "veo_task_1", "--out", str(tmp_path)])
    assert code == 2
    assert err.strip() == "veo4k: error: no API key: set the KIE_API_KEY environment variable"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["upscale", "--out", "o"], "no tasks"),
        (["upscale", "t:x"], "index"),
        (["upscale", "t", "--rate-limit", "fast"], "--rate-limit"),
        (["upscale", "t", "--listen", "nowhere"], "--listen"),
        (["upscale", "t", "--timeout", "-1"], "--timeout"),
        (["upscale", "--from", "/no/such/file"], "cannot read"),
    ],
)
def test_usage_errors_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path, argv: list[str], message: str
) -> None:
    """Bad command lines exit 2 with a one-line message naming the problem."""
    monkeypatch.setenv("KIE_API_KEY", "k")
    monkeypatch.chdir(tmp_path)
    code, _, err = run(argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_task_parsing(tmp_path: pathlib.Path) -> None:
    """TASK_ID[:INDEX] arguments, plain lists and CSV files with or without a header."""
    assert parse_task("veo_task_1") == ("veo_task_1", 0)
    assert parse_task("veo_task_1:2") == ("veo_task_1", 2)
    listing = tmp_path / "ids.txt"
    listing.write_text("# my batch\nveo_a\n\nveo_b:1\n")
    assert read_task_file(str(listing)) == [("veo_a", 0), ("veo_b", 1)]
    table = tmp_path / "tasks.csv"
    table.write_text("task_id,index\nveo_a,0\nveo_b,3\nveo_c,\n")
    assert read_task_file(str(table)) == [("veo_a", 0), ("veo_b", 3), ("veo_c", 0)]


async def test_upscale_from_file_json(
    kie: FakeKie, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    """upscale --from FILE --json: one JSON object per task, files on disk, exit 1 if any fail."""
    kie.add_task("veo_bad", outcome=TaskOutcome.EXPIRED)
    listing = tmp_path / "ids.txt"
    listing.write_text("veo_a\nveo_b\nveo_bad\n")
    env = env_for(kie)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "veo4k", "upscale", "--from", str(listing), "--out",
        str(tmp_path / "out"), "--json", *FAST, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await proc.communicate()
    assert proc.returncode == 1, stderr.decode()
    lines = [json.loads(line) for line in stdout.decode().splitlines()]
    assert lines[-1]["event"] == "summary"
    by_id = {task["task_id"]: task for task in lines[-1]["tasks"]}
    assert set(by_id) == {"veo_a", "veo_b", "veo_bad"}
    assert by_id["veo_a"]["status"] == "downloaded"
    assert by_id["veo_bad"]["status"] == "failed"
    assert by_id["veo_bad"]["error_kind"] == "final"
    assert "Kie refused (422)" in by_id["veo_bad"]["error"]
    data = (tmp_path / "out" / "veo_a_0.mp4").read_bytes()
    assert data == fake_video_bytes("veo_a_0.mp4", kie.file_size)
    assert kie.stats.file_auth_violations == []
    assert kie.api_key not in stdout.decode() + stderr.decode()


async def test_status_json(kie: FakeKie) -> None:
    """veo4k status --json prints record-info as JSON."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "veo4k", "status", "veo_task_1", "--json", env=env_for(kie),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    record = json.loads(stdout)
    assert record["state"] == "succeeded"
    assert record["resolution"] == "1080p"


async def test_kill_9_then_rerun_pays_once_and_finishes(tmp_path: pathlib.Path) -> None:
    """kill -9 mid-batch, then the same command again: every task finishes, each submitted
    once, every file complete and no .part left behind; the journal records the history."""
    ids = [f"veo_task_{i}" for i in range(8)]
    listing = tmp_path / "ids.txt"
    listing.write_text("\n".join(ids))
    out = tmp_path / "out"
    async with FakeKie(ready_after=0.6, file_size=512 * 1024) as kie:
        half = asyncio.Event()

        def submitted(task: FakeTask, index: int) -> None:
            if sum(kie.submissions(t) for t in ids) >= 4:
                half.set()

        kie.on_submission = submitted
        argv = [sys.executable, "-m", "veo4k", "upscale", "--from", str(listing), "--out",
                str(out), "--rate-limit", "4/1", "--first-poll", "0.3",
                "--poll-every", "0.1"]  # fmt: skip
        first = await asyncio.create_subprocess_exec(
            *argv, env=env_for(kie), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await half.wait()
        first.send_signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        done_before = len(list(out.glob("*.mp4")))
        assert done_before < len(ids)  # really killed mid-batch
        second = await asyncio.create_subprocess_exec(
            *argv, env=env_for(kie), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await second.communicate()
        assert second.returncode == 0, stderr.decode()
        assert [kie.submissions(t) for t in ids] == [1] * len(ids)
        for task_id in ids:
            name = f"{task_id}_0.mp4"
            assert (out / name).read_bytes() == fake_video_bytes(name, kie.file_size)
        assert not list(out.glob("*.part"))
    with closing(sqlite3.connect(out / "veo4k-journal.sqlite")) as db:
        states = dict(db.execute("SELECT task_id, state FROM tasks").fetchall())
        history: dict[str, list[str]] = {t: [] for t in ids}
        for task_id, state in db.execute("SELECT task_id, state FROM events ORDER BY rowid"):
            history[task_id].append(state)
    assert set(states.values()) == {"downloaded"}
    for task_id, steps in history.items():
        assert steps[-2:] == ["done", "downloaded"], task_id
        assert steps.count("downloaded") == 1, task_id
    assert kie.api_key not in (out / "veo4k-journal.sqlite").read_bytes().decode("latin-1")


async def test_rerun_skips_finished_tasks(
    kie: FakeKie, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    """A second run of a finished batch sends nothing and reports the tasks as skipped."""
    argv = ["upscale", "veo_a", "veo_b", "--out", str(tmp_path), "--json", *FAST]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "veo4k", *argv, env=env_for(kie), stdout=asyncio.subprocess.PIPE
    )
    await proc.communicate()
    requests = sum(kie.stats.requests.values())
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "veo4k", *argv, env=env_for(kie), stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await proc.communicate()
    assert proc.returncode == 0
    events = [json.loads(x)["event"] for x in stdout.decode().splitlines()]
    assert events == ["skipped", "skipped", "summary"]
    assert sum(kie.stats.requests.values()) == requests


def test_help_has_examples() -> None:
    """--help of every command shows an example."""
    for argv in (["--help"], ["demo", "--help"], ["upscale", "--help"], ["status", "--help"]):
        with pytest.raises(SystemExit) as info:
            main(argv, out=io.StringIO(), err=io.StringIO())
        assert info.value.code == 0
