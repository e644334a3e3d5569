"""The documentation's promises: every code example in the README and in ``docs/`` runs as
written, against the fake Kie server, and the API reference covers every public name.

Examples that would need a real key run with ``KIE_API_KEY``/``KIE_BASE_URL`` pointed at a
:class:`FakeKie` whose 4Ks are ready at once. The README's first bash block (install +
``veo4k demo``) is what ``.ci/run`` does; the second is CI's test command, verbatim. The
"Many workers" examples need Redis: ``tests/redis`` runs them; the CLI's exit-code table is
checked against ``--help`` by ``tests/test_cli_inputs.py``. ``mkdocs build --strict`` (in CI)
checks the site's links and cross-references.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import json
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
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.S | re.M)


def blocks(language: str) -> list[tuple[str, str]]:
    """(where, code) of every fenced block in that language, README first."""
    found = []
    for page in PAGES:
        for number, (lang, code) in enumerate(FENCE.findall(page.read_text()), 1):
            if lang == language:
                found.append((f"{page.relative_to(ROOT)} block {number}", code))
    return found


PYTHON = [(where, code) for where, code in blocks("python") if "RedisCoordinator" not in code]
BASH = [code for _, code in blocks("bash")]


@pytest_asyncio.fixture
async def ready_kie(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeKie]:
    """A fake whose 4Ks are done at the first request; callbacks are swallowed (the docs'
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


def test_every_code_block_is_run_somewhere() -> None:
    """No example escapes the tests: each fenced block is one of the kinds a test runs."""
    every = [
        (page.relative_to(ROOT), lang, code)
        for page in PAGES
        for lang, code in FENCE.findall(page.read_text())
    ]
    for where, lang, code in every:
        if lang == "python":
            continue  # test_python_examples_run, or tests/redis for the "Many workers" two
        if lang == "bash":
            assert "veo4k upscale" in code or code.strip() in README, where
        elif lang == "json":
            assert where == pathlib.Path("docs/cli.md"), where  # test_the_batch_json_example
        else:
            assert (lang, where) == ("text", pathlib.Path("docs/cli.md")), (where, lang)
    redis_examples = [code for _, code in blocks("python") if "RedisCoordinator" in code]
    assert len(redis_examples) == 2  # the app (test_uvicorn.py) and the batch (test_readme_batch)
    assert all(b in (ROOT / "docs" / "many-workers.md").read_text() for b in redis_examples)
    assert len([b for b in BASH if "veo4k upscale" in b]) == 1


def test_the_batch_json_example_is_what_the_cli_writes() -> None:
    """The ``batch`` object shown in docs/cli.md is what ``--json`` writes for those numbers:
    the same fields, in the same order, with the same rounding."""
    from veo4k.cli._tally import BatchStatus

    (shown,) = [
        json.loads(code) for lang, code in FENCE.findall(_page("docs/cli.md")) if lang == "json"
    ]
    fields = {k: v for k, v in shown.items() if k != "event"}
    written = BatchStatus(**fields).as_json()
    assert list(written) == list(shown)
    assert written == shown


def _page(name: str) -> str:
    return (ROOT / name).read_text()


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


async def test_python_examples_run(
    ready_kie: FakeKie, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole programs run as scripts, the pytest example passes under plain pytest (strict
    asyncio mode, no config), fragments run with a client, task ids and an app in scope."""
    monkeypatch.chdir(tmp_path)  # examples download into relative folders
    assert len(PYTHON) >= 9
    kinds = []
    for where, block in PYTHON:
        if "asyncio.run(" in block:
            kinds.append("script")
            code, out = await _script(block, tmp_path)
            assert code == 0, f"{where}: {out}"
        elif "def test_" in block:
            kinds.append("pytest")
            (tmp_path / "test_docs_example.py").write_text(block)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                "test_docs_example.py", cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 0, f"{where}: {out.decode()}"
            assert "1 passed" in out.decode()
        else:
            kinds.append("fragment")
            async with veo4k.Veo4kClient(rate_limit=None) as client:
                scope: dict[str, Any] = {
                    "veo4k": veo4k, "asyncio": asyncio, "client": client,
                    "task_id": "veo_task_readme", "task_ids": ["veo_task_r1", "veo_task_r2"],
                    **_framework_stubs(),
                }  # fmt: skip
                compiled = compile(block, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
                result = eval(compiled, scope)  # the docs' own code, on purpose
                if asyncio.iscoroutine(result):
                    await result
    assert {"script", "pytest", "fragment"} <= set(kinds)


async def test_cli_examples_run(ready_kie: FakeKie, tmp_path: pathlib.Path) -> None:
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


def test_reference_covers_every_public_name() -> None:
    """Each name in the ``__all__`` of veo4k, veo4k.redis and veo4k.testing has one ``:::``
    entry in docs/reference (rendered from its docstring), and no entry names anything else."""
    entries = [
        name
        for page in sorted((ROOT / "docs" / "reference").glob("*.md"))
        for name in re.findall(r"^::: ([\w.]+)$", page.read_text(), flags=re.M)
    ]
    public = [
        f"{module}.{name}"
        for module in ("veo4k", "veo4k.redis", "veo4k.testing")
        for name in importlib.import_module(module).__all__
    ]
    assert sorted(entries) == sorted(public)


def test_every_page_is_in_the_nav_and_every_link_resolves() -> None:
    """mkdocs only warns about a page left out of the nav; the README is no mkdocs page, so
    its relative links are checked here."""
    config = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").rglob("*.md"):
        assert f" {page.relative_to(ROOT / 'docs')}\n" in config, page
    for target in re.findall(r"\]\(([^)#:]+)(?:#[\w-]+)?\)", README):
        assert (ROOT / target).is_file(), target


def test_changelog_keeps_a_changelog() -> None:
    """CHANGELOG.md has an [Unreleased] section first and only Keep a Changelog's headings."""
    text = (ROOT / "CHANGELOG.md").read_text()
    versions = re.findall(r"^## (.+)$", text, flags=re.M)
    assert versions[0] == "[Unreleased]"
    assert all(re.fullmatch(r"\[\d+\.\d+\.\d+\] - \d{4}-\d\d-\d\d", v) for v in versions[1:])
    kinds = set(re.findall(r"^### (.+)$", text, flags=re.M))
    assert kinds <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
