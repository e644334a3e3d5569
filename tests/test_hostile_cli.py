"""The real ``veo4k`` command as a subprocess against a hostile Kie (issue 18): what a server
sends stays inert on the terminal, bad input is one line and an exit code, never a traceback."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pathlib
import sqlite3
import sys
import unicodedata
from contextlib import closing
from typing import TextIO
from unittest import mock

import pytest

import veo4k
from veo4k.cli._main import main as veo4k_main
from veo4k.testing import MARKUP_TEXT, FakeKie, Hostile, TaskOutcome

FAST = ["--first-poll", "0.05", "--poll-every", "0.05", "--rate-limit", "1000/1"]
PIPE = asyncio.subprocess.PIPE


async def run(
    kie: FakeKie | None, *argv: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run ``veo4k`` to the end: exit code, stdout, stderr (no traceback, ever)."""
    base = {**os.environ, "COLUMNS": "200"}
    if kie is not None:
        base |= {"KIE_API_KEY": kie.api_key, "KIE_BASE_URL": kie.base_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "veo4k", *argv, env=base | (env or {}), stdout=PIPE, stderr=PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    assert "Traceback" not in out.decode() + err.decode(), err.decode()
    return proc.returncode, out.decode(), err.decode()


def assert_inert(text: str) -> None:
    """No terminal control, no bidi or other format character, no markup taking effect."""
    bad = {c for c in text if c not in "\n" and (not c.isprintable() and c not in "\t")}
    assert not bad, sorted(hex(ord(c)) for c in bad)
    assert not any(unicodedata.category(c) == "Cf" for c in text)
    assert "[/bold]" in text  # shown as text, not taken as markup (nor crashing on it)
    assert "[link=https://evil.example/pay]" in text


async def test_server_text_is_shown_inert_in_the_summary_and_status(
    tmp_path: pathlib.Path,
) -> None:
    """A Kie message full of Rich markup, OSC/CSI escapes, C1 and bidi characters crashes
    neither the summary nor ``veo4k status``, and reaches the terminal escaped; the journal
    keeps it raw and every rerun shows it inert again."""
    async with FakeKie(ready_after=0.0, hostile={Hostile.MARKUP}) as kie:
        kie.add_task("veo_gone", outcome=TaskOutcome.UNAVAILABLE)
        kie.add_task("veo_bad_source", outcome=TaskOutcome.SOURCE_FAILED)
        for _ in range(2):  # the rerun replays the journaled message
            code, out, err = await run(kie, "upscale", "veo_gone", "--out", str(tmp_path), *FAST)
            assert code == 1
            assert "4K unavailable" in out
            assert_inert(out + err)
            assert "\\x1b]0;pwned\\x07" in out  # escaped, visible
        code, out, err = await run(kie, "status", "veo_bad_source")
        assert code == 0
        assert_inert(out + err)
        assert "\\u202egnp.exe" in out
    journal = (tmp_path / "veo4k-journal.sqlite").read_bytes()
    assert MARKUP_TEXT.encode() in journal  # stored raw


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--callback-url", "http://[::1"], {}, "--callback-url"),
        ([], {"KIE_BASE_URL": "http://[::1"}, "KIE_BASE_URL"),
        ([], {"KIE_API_KEY": "abc\x01def"}, "KIE_API_KEY"),
        ([], {"KIE_BASE_URL": "http://api.example.com"}, "https"),
        ([], {"KIE_BASE_URL": "https://127.1"}, "canonical"),
        ([], {"KIE_BASE_URL": "https://2130706433"}, "canonical"),
        (["--callback-url", "https://0x7f.1/cb"], {}, "canonical"),
        (["--listen", "[::1"], {}, "--listen"),
    ],
)
async def test_bad_input_is_one_line_and_exit_2(
    tmp_path: pathlib.Path, argv: list[str], env: dict[str, str], needle: str
) -> None:
    """Each bad option or environment value: one ``veo4k: error:`` line, exit 2, nothing
    sent, no traceback, the secret never echoed."""
    async with FakeKie() as kie:
        args = ["upscale", "veo_a", "--out", str(tmp_path / "out"), *FAST, *argv]
        code, _, err = await run(kie, *args, env=env)
        assert code == 2, err
        assert err.count("\n") == 1, err
        assert err.startswith("veo4k: error: "), err
        assert needle in err
        assert "abc\x01def" not in err
        assert kie.stats.requests.total() == 0


async def test_deep_json_answers_do_not_stop_the_batch(tmp_path: pathlib.Path) -> None:
    """Answers nested 900 levels deep (with a JSON escape, so the key scrub walks them) used
    to end the whole batch with a RecursionError traceback; now every task finishes."""
    async with FakeKie(ready_after=0.0, hostile={Hostile.DEEP_JSON}) as kie:
        argv = ["upscale", "veo_a", "veo_b", "--out", str(tmp_path), "--json", *FAST]
        code, out, _ = await run(kie, *argv)
    assert code == 0
    last = json.loads(out.splitlines()[-1])
    assert last["counts"]["downloaded"] == 2


@pytest.mark.parametrize(
    "corruption",
    ["urls='not json'", "urls='{\"a\": 1}'", "state='exploded'", "size='big'", "task_id='../x'"],
)
async def test_a_corrupt_journal_cell_is_exit_4_in_one_line(
    tmp_path: pathlib.Path, corruption: str
) -> None:
    """A journal cell veo4k never writes (not JSON, a wrong type, an unknown state, an id
    that breaks the rule) is one line and exit 4 on the rerun, never a traceback."""
    async with FakeKie(ready_after=0.0) as kie:
        assert (await run(kie, "upscale", "veo_a", "--out", str(tmp_path), *FAST))[0] == 0
        with closing(sqlite3.connect(tmp_path / "veo4k-journal.sqlite")) as db, db:
            db.execute(f"UPDATE tasks SET {corruption}")  # committed, then closed
        code, out, err = await run(kie, "upscale", "veo_a", "--out", str(tmp_path), *FAST)
    assert code == 4
    assert out == ""
    assert err.count("\n") == 1
    assert "corrupt row" in err


async def test_task_ids_differing_only_in_case_are_refused_before_sending(
    tmp_path: pathlib.Path,
) -> None:
    """``veo_ABC`` and ``veo_abc`` would write one file on macOS or Windows: refused in one
    line each (exit 2, nothing sent), in one list and against the folder's journal."""
    async with FakeKie(ready_after=0.0) as kie:
        code, _, err = await run(kie, "upscale", "veo_ABC", "veo_abc", "--out", str(tmp_path))
        assert code == 2
        assert err.count("\n") == 1
        assert "differ only in case" in err
        assert kie.stats.requests.total() == 0
        assert (await run(kie, "upscale", "veo_Abc", "--out", str(tmp_path), *FAST))[0] == 0
        code, _, err = await run(kie, "upscale", "veo_abC", "--out", str(tmp_path), *FAST)
        assert code == 2
        assert "veo_abC:0 and veo_Abc:0 (in the journal) differ only in case" in err
        assert kie.posts("veo_abC") == 0


async def test_symlinks_planted_in_out_are_never_written_through(tmp_path: pathlib.Path) -> None:
    """A symlink at the write probe's old name, at the lock or at the journal (or its WAL)
    never makes veo4k create, truncate or write a file outside ``--out``: the probe uses a
    fresh name (O_EXCL), the lock and the journal are opened with O_NOFOLLOW and refused
    (exit 2 and 4, one line)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "precious.txt"
    victim.write_bytes(b"precious")
    async with FakeKie(ready_after=0.0) as kie:
        out = tmp_path / "probe"
        out.mkdir()
        (out / ".veo4k-write-test").symlink_to(victim)
        assert (await run(kie, "upscale", "veo_a", "--out", str(out), *FAST))[0] == 0
        assert victim.read_bytes() == b"precious"
        cases = [
            ("lock", "veo4k-journal.sqlite.lock", 2),
            ("journal", "veo4k-journal.sqlite", 4),
            ("wal", "veo4k-journal.sqlite-wal", 4),
        ]
        for folder, name, expected in cases:
            out = tmp_path / folder
            out.mkdir()
            (out / name).symlink_to(outside / f"made-by-veo4k-{folder}")
            code, _, err = await run(kie, "upscale", "veo_b", "--out", str(out), *FAST)
            assert code == expected, err
            assert err.count("\n") == 1
            assert "is a symlink; refusing to write through it" in err
        assert sorted(p.name for p in outside.iterdir()) == ["precious.txt"]
        assert victim.read_bytes() == b"precious"
        assert kie.posts("veo_b") == 0


def test_library_warnings_become_inert_command_lines() -> None:
    """While the command runs, a warning the library logs (quoting a server's words, with an
    exception) is one ``veo4k: warning:`` line: inert, the exception as type and message,
    no traceback; after the command its handler is gone."""
    logger = logging.getLogger("veo4k")
    before = list(logger.handlers)
    err = io.StringIO()
    hostile = f"{MARKUP_TEXT} \x1b]0;pwned\x07\u202e"

    def warn(argv: list[str], out: TextIO, _err: TextIO) -> int:
        try:
            raise veo4k.TransportError(hostile)
        except veo4k.TransportError:
            logger.warning("journal write failed for %s", hostile, exc_info=True)
        return 0

    with mock.patch("veo4k.cli._main._run", warn):
        assert veo4k_main(["demo"], out=io.StringIO(), err=err) == 0
    lines = err.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("veo4k: warning: journal write failed for ")
    assert ": TransportError: " in lines[0]
    assert_inert(lines[0])
    assert logger.handlers == before
