"""Every bad input or environment gets one line, its exit code and no traceback."""

from __future__ import annotations

import errno
import io
import pathlib
import sqlite3
import subprocess
import sys
from contextlib import closing

import pytest

from veo4k.cli import main
from veo4k.cli._batch import BatchOptions, TaskReport, describe, run_batch
from veo4k.cli._journal import SCHEMA_VERSION, Journal, JournalError
from veo4k.testing import FakeKie

INTERNAL = ("parse", "Namespace", "Error:", "_main", "veo4k.cli", "<locals>", "NoneType")


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def folder(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> pathlib.Path:
    """A key and a base URL nothing listens on: a test that sent a request would fail."""
    monkeypatch.setenv("KIE_API_KEY", "k")
    monkeypatch.setenv("KIE_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "binary.txt").write_bytes(b"veo_a\n\x00\x01\x02")
    (tmp_path / "latin1.txt").write_bytes("veo_a\nvéo_b\n".encode("latin-1"))
    (tmp_path / "a-file").write_text("")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "veo4k-journal.sqlite").write_bytes(b"garbage" * 1000)
    newer = tmp_path / "newer"
    newer.mkdir()
    with closing(sqlite3.connect(newer / "veo4k-journal.sqlite")) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["upscale", "--from", "binary.txt"], 2, "binary.txt: a binary file"),
        (["upscale", "--from", "latin1.txt"], 2, "latin1.txt:2: not UTF-8 text"),
        (["upscale", "--from", "."], 2, "cannot read .: Is a directory"),
        (["upscale", "t", "--out", "a-file"], 2, "--out a-file is a file, not a folder"),
        (["upscale", "t", "--out", "a-file/sub"], 2, "cannot create --out a-file/sub: Not a dir"),
        (["upscale", "t", "--out", "corrupt"], 4, "is not a usable veo4k journal"),
        (
            ["upscale", "t", "--out", "newer"],
            4,
            f"newer veo4k (journal schema {SCHEMA_VERSION + 1}",
        ),
        (["upscale", "t", "--timeout", "inf"], 2, "--timeout: expected a number of seconds > 0"),
        (["upscale", "t", "--timeout", "soon"], 2, "got 'soon'"),
        (["upscale", "t", "--concurrency", "0"], 2, "expected a whole number from 1 to 10000"),
        (["upscale", "t", "--listen", "127.0.0.1:99999"], 2, "PORT 0-65535"),
        (["upscale", "t", "--listen", "0.0.0.0:8080"], 2, "add --callback-url"),
        (["upscale", "t", "--callback-url", "ftp://x"], 2, "bad --callback-url"),
        (["upscale", "t", "--rate-limit", "0/10"], 2, "bad --rate-limit"),
        (["upscale", "t", "--bogus"], 2, "unrecognized arguments: --bogus"),
        (["demo", "--tasks", "many"], 2, "expected a whole number from 1 to 1000"),
        (["status", " "], 2, "the task id must not be empty"),
        (["frobnicate"], 2, "invalid choice"),
    ],
)
def test_bad_input_is_one_line(
    folder: pathlib.Path, argv: list[str], code: int, message: str
) -> None:
    """Exit code from the documented table, one line naming the problem, no internal names."""
    actual, out, err = run(argv)
    assert (actual, out) == (code, "")
    assert err.count("\n") == 1, err
    assert message in err
    assert not any(name in err for name in INTERNAL), err


def test_utf16_task_list_is_read(folder: pathlib.Path) -> None:
    """A UTF-16 file (Windows Notepad's 'Unicode') is read, not rejected as binary."""
    from veo4k.cli._inputs import read_task_file

    (folder / "u16.txt").write_text("veo_a\nveo_b:1\n", encoding="utf-16")
    assert read_task_file("u16.txt") == [("veo_a", 0), ("veo_b", 1)]


@pytest.mark.parametrize("separator", ["\x0b", "\x0c", "\x1d", "\x85", "\u2028"])
def test_a_line_is_one_task_whatever_unicode_calls_a_line_break(
    folder: pathlib.Path, separator: str
) -> None:
    """Only \\n, \\r\\n and \\r end a line: ``first<sep>second`` is one bad line (str.splitlines
    made it two tasks, both paid for), and the lines after it keep their numbers."""
    from veo4k.cli._inputs import InputError, read_task_file

    (folder / "ids.txt").write_text(f"first{separator}second\r\nbad id\rveo_ok\n", "utf-8")
    with pytest.raises(InputError) as info:
        read_task_file("ids.txt")
    assert [line.split(": ")[0] for line in info.value.lines] == ["ids.txt:1", "ids.txt:2"]
    (folder / "ok.txt").write_text("veo_a\r\nveo_b\rveo_c\n\n", "utf-8")
    assert read_task_file("ok.txt") == [("veo_a", 0), ("veo_b", 0), ("veo_c", 0)]


@pytest.mark.parametrize("index", ["\u00b2", "\u0663", "\uff13"])
def test_an_index_is_ascii_digits(index: str) -> None:
    """``a:²`` or an Arabic-Indic 3 is a bad task in the usual words, never index 3."""
    from veo4k.cli._inputs import parse_task

    with pytest.raises(ValueError, match="the index after ':' must be a whole number"):
        parse_task(f"veo_a:{index}")


def test_testing_port_out_of_range() -> None:
    """veo4k testing --port 99999: one line, exit 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "veo4k", "testing", "--port", "99999"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "veo4k testing: error: argument --port: expected a port from 0 to 65535, got '99999' "
        "(see veo4k testing --help)"
    )


def test_version_and_help(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--version prints the version; every --help lists units, defaults and the exit codes,
    within 80 columns."""
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("veo4k 0.")
    for argv in (["--help"], ["upscale", "--help"], ["demo", "--help"], ["status", "--help"],
                 ["testing", "--help"]):  # fmt: skip
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
        text = capsys.readouterr().out
        assert "default" in text or argv in (["--help"], ["status", "--help"])
        assert max(map(len, text.splitlines())) <= 80, argv
    main_help = subprocess.run([sys.executable, "-m", "veo4k", "upscale", "--help"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    for needle in ("--callback-url", "--listen", "SECONDS", "(default: no cap", "(default: 8)",
                   "143", "130", "3 "):  # fmt: skip
        assert needle in main_help
    manual = (pathlib.Path(__file__).parent.parent / "docs" / "cli.md").read_text()
    table = main_help.split("exit codes:")[1].strip()
    assert table in manual  # one table, the same in the CLI's manual page


async def test_full_disk_stops_new_downloads_but_waits_go_on(
    kie: FakeKie, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first ENOSPC fails that download and no further download starts; every wait still
    ends, is journaled done with its URLs, and a rerun only downloads."""
    import veo4k

    calls = []

    async def full(self: veo4k.Veo4kClient, result: object, dest: object, **kw: object) -> None:
        calls.append(dest)
        raise OSError(errno.ENOSPC, "No space left on device", str(dest))

    monkeypatch.setattr(veo4k.Veo4kClient, "download", full)
    sink = _Quiet()
    async with veo4k.Veo4kClient(kie.api_key, base_url=kie.base_url, rate_limit=None,
                                 poll_policy=veo4k.testing.FAST_POLICY) as client:  # fmt: skip
        with Journal(tmp_path / "j.sqlite") as journal:
            reports = await run_batch(
                client, [("veo_a", 0), ("veo_b", 0), ("veo_c", 0)], journal,
                BatchOptions(out_dir=tmp_path, concurrency=1), sink,
            )  # fmt: skip
            entries = journal.entries()
    assert len(calls) == 1
    assert [r.status for r in reports] == ["failed"] * 3
    assert reports[0].error == f"cannot write {calls[0]}: No space left on device"
    assert reports[1].error == (
        f"cannot write {tmp_path / 'veo_b_0.mp4'}: not started: the disk is full"
    )
    assert all(r.kind == "retryable" and r.urls for r in reports)
    assert {e.state for e in entries.values()} == {"done"}


class _Quiet:
    def event(self, event: object) -> None:
        return None

    def done(self, result: object) -> None:
        return None

    def report(self, report: TaskReport) -> None:
        return None


async def test_unwritable_journal_stops_the_batch_with_a_message(
    kie: FakeKie, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal write that fails (disk full under SQLite) stops the batch with one typed
    error the command reports as exit 4, not a traceback from inside a task group."""
    import veo4k

    def broken(self: Journal, *args: object, **kwargs: object) -> None:
        raise JournalError(f"cannot write the journal {self.path}: database or disk is full")

    async with veo4k.Veo4kClient(kie.api_key, base_url=kie.base_url, rate_limit=None,
                                 poll_policy=veo4k.testing.FAST_POLICY) as client:  # fmt: skip
        with Journal(tmp_path / "j.sqlite") as journal:
            monkeypatch.setattr(Journal, "record", broken)
            with pytest.raises(JournalError, match="database or disk is full"):
                await run_batch(client, [("veo_a", 0), ("veo_b", 0)], journal,
                                BatchOptions(out_dir=tmp_path), _Quiet())  # fmt: skip


def test_reasons_name_no_classes() -> None:
    """A timeout is not a file error; a library class name inside a message is dropped."""
    import veo4k

    timeout = veo4k.WaitTimeoutError("veo_a", 0, timeout=5.0, attempts=3)
    assert not describe(timeout).startswith("cannot write")
    transport = veo4k.TransportError("connection failed (ClientConnectorError: refused)")
    assert describe(transport) == "connection failed (refused)"
    assert describe(OSError(28, "No space left on device", "/x")) == (
        "cannot write /x: No space left on device"
    )


def test_listen_port_in_use(folder: pathlib.Path) -> None:
    """--listen on a port another program holds: one line, exit 2, no journal left behind."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run(["upscale", "t", "--out", "o", "--listen", f"127.0.0.1:{port}"])
    assert code == 2
    assert err.startswith(f"veo4k: error: cannot listen on 127.0.0.1:{port}: ")
    assert err.count("\n") == 1
    assert not (folder / "o" / "veo4k-journal.sqlite").exists()
