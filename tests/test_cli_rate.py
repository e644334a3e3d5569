"""The real ``veo4k upscale`` at the account's rate (issue 17.6): every task handed to the
client at once unless ``--concurrency``, counts and an ETA in ``--json``, tasks refused before
submission sent on the rerun, a big list killed mid-run that still pays once; and, in process,
downloads bounded on their own."""

from __future__ import annotations

import asyncio
import json
import pathlib
import signal
import sqlite3
from contextlib import closing
from typing import Any

import pytest

from veo4k import FourKResult
from veo4k.cli._batch import BatchOptions, run_batch
from veo4k.cli._journal import Journal, State
from veo4k.testing import FakeKie, FakeTask, fake_video_bytes

from .conftest import ClientFactory
from .test_cli_e2e import FAST, finish, journal_states, summary, veo4k
from .test_hostile_batch import Quiet

BATCH_FIELDS = {
    "event", "total", "queued", "submitted", "processing", "downloading", "done", "failed",
    "not_submitted", "eta", "rate", "elapsed",
}  # fmt: skip


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def most_in_flight(lines: list[dict[str, Any]]) -> int:
    """The most tasks between their ``submitted`` and their end, in NDJSON order."""
    now = best = 0
    for e in lines:
        if e["event"] == "submitted":
            now += 1
            best = max(best, now)
        elif e["event"] in ("done", "failed", "not_submitted"):
            now -= 1
    return best


def submitted_on(kie: FakeKie, count: int) -> asyncio.Event:
    """Set once the fake has started ``count`` paid jobs."""
    reached = asyncio.Event()

    def on_submission(task: FakeTask, index: int) -> None:
        if sum(sum(t.charges.values()) for t in kie.tasks.values()) >= count:
            reached.set()

    kie.on_submission = on_submission
    return reached


async def test_default_options_wait_on_every_task_at_once(tmp_path: pathlib.Path) -> None:
    """With default options 150 tasks are all submitted before the first one finishes (the
    old default waited on 100 at a time); then each finishes, downloaded, paid once."""
    ids = [f"veo_all{i:03d}" for i in range(150)]
    listing = tmp_path / "ids.txt"
    listing.write_text("\n".join(ids))
    async with FakeKie(ready_after=60.0) as kie:
        everyone = submitted_on(kie, len(ids))
        proc = await veo4k(kie, "upscale", "--from", str(listing), "--out", str(tmp_path / "o"),
                           "--json", *FAST)  # fmt: skip
        await asyncio.wait_for(everyone.wait(), 60)
        assert not list((tmp_path / "o").glob("*.mp4"))  # none finished yet
        for task in kie.tasks.values():
            task.ready_after = 0.0
        code, out, _ = await finish(proc)
        assert code == 0
        assert [kie.submissions(t) for t in ids] == [1] * len(ids)
    lines = events(out)
    assert most_in_flight(lines) == len(ids)
    assert summary(out)["counts"]["downloaded"] == len(ids)


async def test_concurrency_still_caps_the_waits(kie: FakeKie, tmp_path: pathlib.Path) -> None:
    """``--concurrency 10``: never more than 10 tasks between submission and result, and 10
    at once while the list lasts; the ETA counts the cap."""
    kie.ready_after = 1.0
    ids = [f"veo_cap{i:02d}" for i in range(30)]
    code, out, _ = await finish(await veo4k(
        kie, "upscale", *ids, "--out", str(tmp_path), "--json", "--concurrency", "10", *FAST
    ))  # fmt: skip
    assert code == 0
    lines = events(out)
    assert most_in_flight(lines) == 10
    assert summary(out)["counts"]["downloaded"] == len(ids)
    first = next(e for e in lines if e["event"] == "batch")
    # 19 or more tasks still wait for a place: the last of them starts 2 upscales from now
    # (U = 2 * first poll + poll interval = 0.15 s)
    assert first["queued"] >= 19
    assert first["eta"] >= round(first["queued"] / 10 * 0.15 + 0.15, 1)


async def test_json_batch_objects_carry_counts_and_an_eta(
    kie: FakeKie, tmp_path: pathlib.Path
) -> None:
    """--json writes a ``batch`` object when the first task is accepted and at the end: every
    count, the account's rate and an ETA of max((2q + p) / r, q / r + U) seconds."""
    kie.ready_after = 0.3
    ids = [f"veo_eta{i:02d}" for i in range(30)]
    argv = ["upscale", *ids, "--out", str(tmp_path), "--json", "--first-poll", "0.5",
            "--poll-every", "0.1", "--rate-limit", "20/1"]  # fmt: skip
    code, out, _ = await finish(await veo4k(kie, *argv))
    assert code == 0
    lines = events(out)
    batch = [e for e in lines if e["event"] == "batch"]
    assert len(batch) >= 2
    assert all(set(b) == BATCH_FIELDS for b in batch)
    assert lines.index(batch[0]) == 1  # right after the first submitted task
    first, last = batch[0], batch[-1]
    assert first["total"] == last["total"] == len(ids)
    assert first["rate"] == 19.0  # 20 per second with the pacer's 5 % headroom
    q, p, r = first["queued"], first["processing"], first["rate"]
    assert (first["submitted"], q + p) == (1, len(ids))
    upscale = 2 * 0.5 + 0.1  # the policy's guess until upscales are seen
    assert first["eta"] == pytest.approx(max((2 * q + p) / r, q / r + upscale), abs=0.06)
    assert last | {"rate": None, "elapsed": None} == {
        "event": "batch", "total": 30, "queued": 0, "submitted": 30, "processing": 0,
        "downloading": 0, "done": 30, "failed": 0, "not_submitted": 0, "eta": 0.0,
        "rate": None, "elapsed": None,
    }  # fmt: skip
    for key in ("submitted", "done", "elapsed"):
        assert [b[key] for b in batch] == sorted(b[key] for b in batch)


async def test_tasks_not_submitted_are_sent_on_the_rerun(
    kie: FakeKie, tmp_path: pathlib.Path
) -> None:
    """``--timeout 3`` over 20 tasks at 2 requests/s: the tasks that could no longer finish in
    time are refused before they are sent (0 submissions each), reported ``not submitted (no
    credits spent)``, journaled queued with the reason; the rerun submits each of them once."""
    kie.ready_after = 0.5
    ids = [f"veo_late{i:02d}" for i in range(20)]
    argv = ["upscale", *ids, "--out", str(tmp_path), "--json"]
    code, out, err = await finish(await veo4k(
        kie, *argv, "--timeout", "3", "--rate-limit", "2/1", "--first-poll", "0.5",
        "--poll-every", "0.5",
    ))  # fmt: skip
    assert code == 1
    counts = summary(out)["counts"]
    assert counts["downloaded"] >= 1
    assert counts["not_submitted"] >= 10
    assert counts["downloaded"] + counts["not_submitted"] == len(ids)
    refused = [e for e in events(out) if e["event"] == "not_submitted"]
    assert len(refused) == counts["not_submitted"]
    for e in refused:
        assert e["error"].startswith("not submitted (no credits spent): ")
        assert e["error_kind"] == "retryable"
        assert kie.posts(e["task_id"]) == 0
        assert journal_states(tmp_path)[e["task_id"]] == ("queued", "")
    assert "not submitted (no credits spent)" in err  # the closing note
    warnings = [line for line in err.splitlines() if line.startswith("veo4k: warning: ")]
    assert len(warnings) == 1  # the library's one warning, as the command's own line
    assert warnings[0].startswith("veo4k: warning: the deadline of this batch of 20 tasks")
    with closing(sqlite3.connect(tmp_path / "veo4k-journal.sqlite")) as db:
        logged = db.execute(
            "SELECT COUNT(*) FROM events WHERE state='queued' AND detail LIKE 'not submitted%'"
        ).fetchone()[0]
    assert logged == len(refused)
    code, out, _ = await finish(await veo4k(kie, *argv, *FAST))
    assert code == 0
    assert summary(out)["counts"]["downloaded"] == len(ids) - counts["downloaded"]
    assert [kie.submissions(t) for t in ids] == [1] * len(ids)


async def test_kill_9_twice_mid_big_batch_then_rerun_pays_once(tmp_path: pathlib.Path) -> None:
    """300 tasks (more than the old cap of 100 waits) killed with -9 twice: once while 200 are
    paid for and the rest not sent, once while files are being downloaded; the same command a
    third time finishes every task with one paid job each, every file complete, each task
    downloaded once in the journal's history."""
    ids = [f"veo_big{i:03d}" for i in range(300)]
    listing = tmp_path / "ids.txt"
    listing.write_text("\n".join(ids))
    out = tmp_path / "out"
    argv = ["upscale", "--from", str(listing), "--out", str(out), "--first-poll", "0.3",
            "--poll-every", "0.1", "--rate-limit", "200/1"]  # fmt: skip
    async with FakeKie(ready_after=0.4, file_size=8192) as kie:
        two_thirds = submitted_on(kie, 200)
        first = await veo4k(kie, *argv)
        await asyncio.wait_for(two_thirds.wait(), 60)
        first.send_signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        states = [s for s, _ in journal_states(out).values()]
        assert states.count("submitted") >= 50  # many waits at once when it died
        assert states.count("queued") >= 50  # and the rest not sent yet
        second = await veo4k(kie, *argv, "--json")
        assert second.stdout is not None
        downloaded = 0
        while downloaded < 30:  # NDJSON read while the run goes
            downloaded += json.loads(await second.stdout.readline())["event"] == "downloaded"
        second.send_signal(signal.SIGKILL)
        assert await second.wait() == -signal.SIGKILL
        states = [s for s, _ in journal_states(out).values()]
        assert states.count("downloaded") >= 30
        assert states.count("submitted") >= 50  # paid in the first run, not done yet
        code, _, err = await finish(await veo4k(kie, *argv))
        assert code == 0, err
        assert [kie.submissions(t) for t in ids] == [1] * len(ids)
        for task_id in ids:
            name = f"{task_id}_0.mp4"
            assert (out / name).read_bytes() == fake_video_bytes(name, kie.file_size)
    assert not list(out.glob("*.part"))
    assert {s for s, _ in journal_states(out).values()} == {"downloaded"}
    with closing(sqlite3.connect(out / "veo4k-journal.sqlite")) as db:
        once = db.execute("SELECT COUNT(DISTINCT task_id), COUNT(*) FROM events "
                          "WHERE state='downloaded'").fetchone()  # fmt: skip
    assert once == (len(ids), len(ids))


async def test_no_download_waits_only_and_a_rerun_downloads(
    kie: FakeKie, tmp_path: pathlib.Path
) -> None:
    """--no-download reports each task done with its URLs and writes no file; the same list
    without it only downloads (no request to Kie's API); with it again, a task whose file was
    deleted is done (its URLs known) and the others skipped, still without a request."""
    argv = ["upscale", "veo_n1", "veo_n2", "--out", str(tmp_path), "--json", *FAST]
    code, out, _ = await finish(await veo4k(kie, *argv, "--no-download"))
    assert code == 0
    tasks = summary(out)["tasks"]
    assert [(t["status"], len(t["result_urls"])) for t in tasks] == [("done", 1)] * 2
    assert not list(tmp_path.glob("*.mp4"))
    assert {s for s, _ in journal_states(tmp_path).values()} == {"done"}
    api = kie.stats.requests.total()
    code, out, _ = await finish(await veo4k(kie, *argv))
    assert code == 0
    assert summary(out)["counts"]["downloaded"] == 2
    assert kie.stats.requests.total() == api
    (tmp_path / "veo_n1_0.mp4").unlink()
    code, out, _ = await finish(await veo4k(kie, *argv, "--no-download"))
    assert code == 0
    assert [t["status"] for t in summary(out)["tasks"]] == ["done", "skipped"]
    assert kie.stats.requests.total() == api
    assert (kie.submissions("veo_n1"), kie.submissions("veo_n2")) == (1, 1)


async def test_downloads_are_bounded_on_their_own(
    kie: FakeKie,
    make_client: ClientFactory,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20 4Ks ready at once with ``downloads=3``: never more than 3 files fetched at once,
    all 3 places used, every task downloaded and journaled with its size."""
    client = make_client(rate_limit=None)
    real = client.download
    running: list[str] = []
    most = 0

    async def counted(result: FourKResult, dest: Any, **kwargs: Any) -> pathlib.Path:
        nonlocal most
        running.append(result.task_id)
        most = max(most, len(running))
        try:
            await asyncio.sleep(0.01)  # a file takes a moment: the others queue meanwhile
            return await real(result, dest, **kwargs)
        finally:
            running.remove(result.task_id)

    monkeypatch.setattr(client, "download", counted)
    pairs = [(f"veo_dl{i:02d}", 0) for i in range(20)]
    with Journal(tmp_path / "j.sqlite") as journal:
        reports = await run_batch(client, pairs, journal,
                                  BatchOptions(out_dir=tmp_path, downloads=3), Quiet())  # fmt: skip
        entries = journal.entries()
    assert most == 3
    assert [r.status for r in reports] == ["downloaded"] * 20
    assert {(e.state, e.size) for e in entries.values()} == {("downloaded", kie.file_size)}


async def test_a_rerun_asks_for_tasks_paid_earlier_before_new_ones(
    kie: FakeKie, make_client: ClientFactory, tmp_path: pathlib.Path
) -> None:
    """A rerun whose journal holds tasks paid in an earlier run (``submitted``) sends them
    before this run's new submissions, whatever their place in the list: asking again costs
    nothing, and they would otherwise queue behind every new task. Each is still paid once."""
    ids = [f"veo_rr{i}" for i in range(8)]
    paid = ids[4:]
    client = make_client(rate_limit=None)
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.enqueue([(t, 0) for t in ids])
        for task_id in paid:  # the earlier run: submitted, then killed
            await client.request_4k(task_id)
            journal.record(task_id, 0, State.SUBMITTED)
        asked: list[str] = []
        answer = kie._fourk_answer

        def recorded(body: Any) -> Any:
            asked.append(body["taskId"])
            return answer(body)

        kie._fourk_answer = recorded  # type: ignore[method-assign]
        reports = await run_batch(client, [(t, 0) for t in ids], journal,
                                  BatchOptions(out_dir=tmp_path), Quiet())  # fmt: skip
    first = {task_id: asked.index(task_id) for task_id in ids}
    assert max(first[t] for t in paid) < min(first[t] for t in ids[:4])
    assert [r.status for r in reports] == ["downloaded"] * len(ids)
    assert [kie.submissions(t) for t in ids] == [1] * len(ids)
