"""The README's promises: its test command is what CI runs, and its code examples parse."""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_test_command_is_what_ci_runs() -> None:
    """The second command near the top of the README appears verbatim in .ci/run."""
    commands = re.findall(r"```bash\n(.+?)\n```", README)
    assert "veo4k demo" in commands[0]
    assert "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_readme_python_examples_parse() -> None:
    """Every python block in the README is valid Python (top-level await allowed)."""
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(blocks) >= 6
    for block in blocks:
        compile(block, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_changelog_has_unreleased_section() -> None:
    """CHANGELOG.md keeps an [Unreleased] section for the next release."""
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()
