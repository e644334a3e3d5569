"""The CLI's batch in process against hostile conditions (issue 18): one task's bug or a
journal that stops taking writes ends where the documentation says, never as a crash."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

import veo4k
from veo4k.cli._batch import BatchOptions, TaskReport, run_batch
from veo4k.cli._journal import Journal, JournalError, State
from veo4k.testing import FakeKie

from .conftest import ClientFactory


class Quiet:
    """A sink that keeps what it is given."""

    def __init__(self) -> None:
        self.reports: list[TaskReport] = []

    def event(self, event: Any) -> None:
        return None

    def done(self, result: Any) -> None:
        return None

    def report(self, report: TaskReport) -> None:
        self.reports.append(report)


async def test_an_unexpected_error_fails_only_its_task(
    kie: FakeKie,
    make_client: ClientFactory,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug (here a RuntimeError out of one task's download) fails that task, journaled and
    summarised with its type; the other tasks of the batch finish."""
    client = make_client()
    real = client.download

    async def buggy(result: veo4k.FourKResult, dest: Any, **kwargs: Any) -> pathlib.Path:
        if result.task_id == "veo_bug":
            raise RuntimeError("something nobody expected")
        return await real(result, dest, **kwargs)

    monkeypatch.setattr(client, "download", buggy)
    with Journal(tmp_path / "j.sqlite") as journal:
        reports = await run_batch(
            client, [("veo_a", 0), ("veo_bug", 0), ("veo_b", 0)], journal,
            BatchOptions(out_dir=tmp_path), Quiet(),
        )  # fmt: skip
        entries = journal.entries()
    assert [r.status for r in reports] == ["downloaded", "failed", "downloaded"]
    assert reports[1].error.startswith("unexpected RuntimeError: something nobody expected")
    assert entries[("veo_bug", 0)].error == reports[1].error
    assert entries[("veo_bug", 0)].kind == "retryable"


async def test_a_journal_write_failing_during_a_wait_stops_the_batch(
    make_client: ClientFactory, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 'submitted' transition is written from inside the wait (on_update), where the
    client would only log an error: a failing write there stops the batch with JournalError
    (exit 4), as documented, instead of running on without a journal."""
    async with FakeKie(ready_after=30.0) as kie:
        client = make_client(base_url=kie.base_url, api_key=kie.api_key)
        with Journal(tmp_path / "j.sqlite") as journal:
            real = journal.record

            def failing(task_id: str, index: int, state: str, **kwargs: Any) -> None:
                if state == State.SUBMITTED:
                    raise JournalError("cannot write the journal: disk I/O error")
                real(task_id, index, state, **kwargs)

            monkeypatch.setattr(journal, "record", failing)
            with pytest.raises(JournalError, match="disk I/O error"):
                await run_batch(
                    client, [("veo_a", 0), ("veo_b", 0)], journal,
                    BatchOptions(out_dir=tmp_path, timeout=20), Quiet(),
                )  # fmt: skip
