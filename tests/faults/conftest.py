"""The fault matrix collects one row per case; it is printed at the end of the run only when
asked (``VEO4K_FAULT_MATRIX=1 pytest tests/faults``): 60 lines on every run are noise."""

from __future__ import annotations

import os
from typing import Any

import pytest

MATRIX: list[tuple[str, str, str, str, str]] = []
SHOW_MATRIX = "VEO4K_FAULT_MATRIX"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not MATRIX:
        return
    if os.environ.get(SHOW_MATRIX, "") in ("", "0"):
        terminalreporter.write_line(
            f"fault matrix: {len(MATRIX)} cases recorded; set {SHOW_MATRIX}=1 to print them"
        )
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
