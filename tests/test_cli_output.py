"""What a person sees: a live display under a real 80x24 terminal (tmux, or a pty where tmux
is missing), plain uncoloured lines in a pipe, counts that agree, the fault matrix on request."""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import pathlib
import pty
import re
import shlex
import shutil
import struct
import subprocess
import sys
import termios

import veo4k
from veo4k.cli._display import JsonLines
from veo4k.cli._tally import Tally
from veo4k.testing import FakeKie, TaskOutcome

from .virtual import virtual_time

VEO4K = [sys.executable, "-m", "veo4k"]
FAST = ["--first-poll", "0.05", "--poll-every", "0.05", "--rate-limit", "1000/1"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
IDS = ["veo_task_screen_a", "veo_task_screen_b", "veo_task_screen_gone"]
COUNTS = r"0 queued, 3 submitted, \d processing, (\d downloading, )?\d done, \d failed"
ETA = r"ETA \d+:\d\d:\d\d at \d+ req/s"
BOARD = re.compile(rf"{COUNTS}; {ETA}")
"""A batch line in a pipe; the live board has the counts, then the bar, done/total, elapsed
time and the ETA."""


def _argv(kie: FakeKie, out: pathlib.Path) -> list[str]:
    return [*VEO4K, "upscale", *IDS, "--out", str(out), *FAST]


def _env(kie: FakeKie) -> dict[str, str]:
    return {**os.environ, "KIE_API_KEY": kie.api_key, "KIE_BASE_URL": kie.base_url,
            "COLUMNS": "", "LINES": ""}  # fmt: skip


def _check_final_screen(text: str) -> None:
    """The table fits 80 columns without wrapping, each row and failure once, footer agrees."""
    lines = [line.rstrip() for line in text.splitlines()]
    assert max(map(len, lines)) <= 80
    rows = [line for line in lines if line.startswith("│ veo_task_screen")]
    assert len(rows) == 3, text
    assert all(line.endswith("│") for line in rows)
    statuses = [row.split("│")[2].strip() for row in rows]
    assert sorted(statuses) == ["downloaded", "downloaded", "failed"]
    assert "3 tasks: 2 downloaded, 1 failed; " in text
    assert text.count("4K unavailable") == 1
    assert not re.search(r"\b1 (requests|tasks)\b", text)


async def _tmux_screen(kie: FakeKie, out: pathlib.Path, tmux: str) -> tuple[str, str]:
    """Run in a detached tmux session 80x24 on a private server; capture mid-run and at the end."""
    sock = f"veo4k-test-{os.getpid()}"
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in _env(kie).items() if k.startswith("KIE"))
    command = (f"env {env} {shlex.join(_argv(kie, out))}; echo EXIT=$?; "
               f"{tmux} -L {sock} wait-for -S finished; exec cat")  # fmt: skip

    async def tmux_run(*args: str) -> str:
        """tmux on its own server; awaited, so the fake in this loop keeps answering."""
        proc = await asyncio.create_subprocess_exec(
            tmux, "-L", sock, "-f", "/dev/null", *args, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        return out.decode()

    await tmux_run("new-session", "-d", "-s", "veo4k", "-x", "80", "-y", "24", command)
    try:
        live = ""
        for _ in range(400):  # tiny delays while the run is going, until the bar is drawn
            live = await tmux_run("capture-pane", "-p", "-t", "veo4k")
            if "3 submitted," in live and "━" in live:
                break
            await asyncio.sleep(0.01)
        await tmux_run("wait-for", "finished")
        final = await tmux_run("capture-pane", "-p", "-S", "-", "-t", "veo4k")
    finally:
        await tmux_run("kill-server")
    return live, final


async def _pty_screen(kie: FakeKie, out: pathlib.Path) -> tuple[str, str]:
    """Without tmux: the same run on a pseudo-terminal set to 80x24."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = await asyncio.create_subprocess_exec(
        *_argv(kie, out), env={**_env(kie), "TERM": "xterm"}, stdin=follower, stdout=follower,
        stderr=follower,
    )  # fmt: skip
    os.close(follower)
    chunks: list[bytes] = []
    loop = asyncio.get_running_loop()
    while True:
        try:
            data = await loop.run_in_executor(None, os.read, leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    await proc.wait()
    os.close(leader)
    raw = b"".join(chunks).decode(errors="replace")
    text = ANSI.sub("", raw).replace("\r\n", "\n")
    final = text[text.rindex("veo4k batch") - 80 :]
    return text, final + f"\nEXIT={proc.returncode}\n"


async def test_live_display_in_an_80x24_terminal(tmp_path: pathlib.Path) -> None:
    """A terminal gets a live bar with counts, then a summary that fits 80 columns."""
    async with FakeKie(ready_after=0.8) as kie:
        kie.add_task("veo_task_screen_gone", outcome=TaskOutcome.UNAVAILABLE)
        tmux = shutil.which("tmux")
        if tmux:
            live, final = await _tmux_screen(kie, tmp_path, tmux)
        else:  # CI without tmux (.ci/run installs it when it can)
            live, final = await _pty_screen(kie, tmp_path)
    assert "3 submitted," in live  # all three submitted, counted live
    assert "━" in live  # the bar
    lines = [line.strip() for line in live.splitlines()]
    board = lines.index(next(line for line in lines if "3 submitted," in line))
    assert re.fullmatch(COUNTS, lines[board]), lines[board]  # every count, in 80 columns
    assert re.fullmatch(rf"[━╸╺]+ \d/3 \d:\d\d:\d\d {ETA}", lines[board + 1]), lines[board + 1]
    assert "EXIT=1" in final
    _check_final_screen(final.split("EXIT=")[0])


async def test_pipe_output_is_plain(tmp_path: pathlib.Path) -> None:
    """In a pipe: no colour codes, no bar, lines within 80 columns, plurals right, each failure's
    reason once, footer counts equal to the table's rows."""
    async with FakeKie(ready_after=0.05) as kie:
        kie.add_task("veo_task_screen_gone", outcome=TaskOutcome.UNAVAILABLE)
        proc = await asyncio.create_subprocess_exec(
            *_argv(kie, tmp_path), env=_env(kie), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 1
    assert err == b""
    assert "\x1b" not in text
    assert "━" not in text.split("veo4k batch")[0]  # no bar before the summary
    assert "veo_task_screen_a:0 submitted (0 s, 1 request)" in text
    batch = [line for line in text.splitlines() if "; ETA " in line]
    assert len(batch) >= 2  # when the first task is accepted, and at the end
    assert BOARD.fullmatch(batch[-1]), batch[-1]
    assert "2 done, 1 failed" in batch[-1]
    _check_final_screen(text)


def test_fault_matrix_prints_only_when_asked() -> None:
    """The 60-line fault matrix is one line unless VEO4K_FAULT_MATRIX=1."""
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "tests/faults/test_matrix.py", "-k", "connection"]  # fmt: skip
    root = pathlib.Path(__file__).parent.parent
    env = {k: v for k, v in os.environ.items() if k != "VEO4K_FAULT_MATRIX"}
    quiet = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, check=True)
    assert "set VEO4K_FAULT_MATRIX=1 to print them" in quiet.stdout
    assert "fault matrix: fault x position" not in quiet.stdout
    loud = subprocess.run(argv, cwd=root, env={**env, "VEO4K_FAULT_MATRIX": "1"},
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert "fault matrix: fault x position" in loud.stdout
    assert "connection refused" in loud.stdout


@virtual_time
async def test_batch_objects_come_every_five_seconds_while_nothing_happens() -> None:
    """--json: a batch object when the first task is accepted, then every 5 s even while no
    task changes (the first polls are minutes away), and one at the end; none before."""
    tally = Tally(policy=veo4k.PollPolicy(), rate=lambda: 1.9)
    tally.add([("veo_a", 0), ("veo_b", 0)])
    out = io.StringIO()
    with JsonLines(out, tally) as sink:
        await asyncio.sleep(60)
        assert out.getvalue() == ""  # nothing accepted yet: no batch object
        event = veo4k.WaitEvent(task_id="veo_a", index=0, state=veo4k.WaitState.SUBMITTED,
                                attempt=1, elapsed=60.0)  # fmt: skip
        tally.event(event)
        sink.event(event)
        await asyncio.sleep(12)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in lines] == ["submitted", "batch", "batch", "batch", "batch"]
    assert [e["elapsed"] for e in lines[1:]] == [60.0, 65.0, 70.0, 72.0]
    assert {(e["queued"], e["submitted"], e["processing"]) for e in lines[1:]} == {(1, 1, 1)}
