"""The fault matrix collects one row per case and prints them as a table at the end."""

from __future__ import annotations

from typing import Any

import pytest

MATRIX: list[tuple[str, str, str, str, str]] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not MATRIX:
        return
    terminalreporter.section("fault matrix: fault x position x persistence -> how the wait ended")
    header = ("fault", "position", "occurrences", "expected", "observed")
    rows = [header, *sorted(MATRIX)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        terminalreporter.write_line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


@pytest.fixture
def matrix() -> list[tuple[str, str, str, str, str]]:
    return MATRIX
