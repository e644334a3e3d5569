"""The README's promises: every code example runs as written, against the fake Kie server.

Examples that would need a real key run with ``KIE_API_KEY``/``KIE_BASE_URL`` pointed at a
:class:`FakeKie` whose 4Ks are ready at once. The first bash block (install + ``veo4k demo``)
is what ``.ci/run`` does; the second is CI's test command, verbatim.
"""

from __future__ import annotations

import ast
import asyncio
import os
import pathlib
import re
import sys
import types
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

import veo4k
from veo4k.testing import FakeKie

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PYTHON = [
    block
    for block in re.findall(r"```python\n(.*?)```", README, flags=re.S)
    # The "Many workers" examples need a Redis server: tests/redis runs them as written.
    if "RedisCoordinator" not in block
]
BASH = re.findall(r"```bash\n(.*?)```", README, flags=re.S)


@pytest_asyncio.fixture
async def ready_kie(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeKie]:
    """A fake whose 4Ks are done at the first request; callbacks are swallowed (the README's
    public URLs do not exist), and the environment points at it."""

    async def swallow(url: str, body: bytes, headers: dict[str, str]) -> None:
        return None

    async with FakeKie(ready_after=0.0, callback_sink=swallow) as kie:
        monkeypatch.setenv("KIE_API_KEY", kie.api_key)
        monkeypatch.setenv("KIE_BASE_URL", kie.base_url)
        yield kie


def test_readme_test_command_is_what_ci_runs() -> None:
    """The second command near the top of the README appears verbatim in .ci/run."""
    commands = re.findall(r"```bash\n(.+?)\n```", README)
    assert "veo4k demo" in commands[0]
    assert "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()
    assert "veo4k demo" in (ROOT / ".ci" / "run").read_text()


async def _script(code: str, tmp: pathlib.Path) -> tuple[int, str]:
    path = tmp / "example.py"
    path.write_text(code)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(path), cwd=tmp, env=dict(os.environ),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def _framework_stubs() -> dict[str, Any]:
    """Just enough of FastAPI/Starlette for the framework example to define its route."""

    def post(path: str) -> Callable[[Any], Any]:
        return lambda fn: fn

    return {"app": types.SimpleNamespace(post=post), "Request": object, "JSONResponse": dict}


async def test_readme_python_examples_run(
    ready_kie: FakeKie, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole programs run as scripts, the pytest example passes under plain pytest (strict
    asyncio mode, no config), fragments run with a client, task ids and an app in scope."""
    monkeypatch.chdir(tmp_path)  # examples download into relative folders
    assert len(PYTHON) >= 6
    kinds = []
    for number, block in enumerate(PYTHON, 1):
        if "asyncio.run(" in block:
            kinds.append("script")
            code, out = await _script(block, tmp_path)
            assert code == 0, f"example {number}: {out}"
        elif "def test_" in block:
            kinds.append("pytest")
            (tmp_path / "test_readme_example.py").write_text(block)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                "test_readme_example.py", cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 0, out.decode()
            assert "1 passed" in out.decode()
        else:
            kinds.append("fragment")
            async with veo4k.Veo4kClient(rate_limit=None) as client:
                scope: dict[str, Any] = {
                    "veo4k": veo4k, "asyncio": asyncio, "client": client,
                    "task_id": "veo_task_readme", "task_ids": ["veo_task_r1", "veo_task_r2"],
                    **_framework_stubs(),
                }  # fmt: skip
                compiled = compile(
                    block, f"README example {number}", "exec",
                    flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                )  # fmt: skip
                result = eval(compiled, scope)  # the README's own code, on purpose
                if asyncio.iscoroutine(result):
                    await result
    assert {"script", "pytest", "fragment"} <= set(kinds)


async def test_readme_cli_examples_run(ready_kie: FakeKie, tmp_path: pathlib.Path) -> None:
    """The `veo4k` command block runs as written in a shell (with tasks.csv present)."""
    block = next(b for b in BASH if "veo4k upscale" in b)
    ready_kie.add_task("veo_task_def", indices=2)
    (tmp_path / "tasks.csv").write_text("task_id,index\nveo_task_abc,0\nveo_task_def,1\n")
    env = {**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", block, cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()
    assert (tmp_path / "videos" / "veo_task_def_1.mp4").stat().st_size == ready_kie.file_size
    assert "Traceback" not in out.decode()


def test_changelog_has_unreleased_section() -> None:
    """CHANGELOG.md keeps an [Unreleased] section for the next release."""
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()
