"""The test matrix. ``nox -l`` lists the sessions, ``nox`` runs them all, ``nox -s NAME``
one (``pip install -e '.[dev]'`` brings nox and uv).

- ``tests-3.11``, ``tests-3.12``, ``tests-3.13``: the whole suite on every Python the
  classifiers in pyproject.toml claim (``nox -s tests-3.12 -- tests/test_poll.py`` for part,
  ``-- fast`` for the subset ``.ci/run`` runs on the other Pythons).
- ``lowest``: the whole suite on the lowest version of every direct dependency that
  pyproject.toml allows (``uv pip install --resolution lowest-direct``) and the lowest
  Python: a floor that does not hold fails here.
- ``lint`` (ruff), ``typecheck`` (mypy --strict), ``docs`` (``mkdocs build --strict``),
  ``dist`` (build, ``twine check``, the contents of both files, ``veo4k demo`` from the wheel).

Interpreters are found on PATH or in pyenv's versions folder; none is ever downloaded.
"""

from __future__ import annotations

import os
import pathlib
import re
import tempfile
import tomllib

import nox

ROOT = pathlib.Path(__file__).resolve().parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PYTHONS = [
    c.rsplit(" :: ", 1)[1]
    for c in PROJECT["classifiers"]
    if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
]

# What CI runs beside the whole suite on the default Python: the parts where the interpreter and
# the dependency versions matter most (event loop, cancellation and timeouts, aiohttp on both
# sides of the wire, attrs/cattrs models, redis-py), about a fifth of the suite's time.
FAST = [
    "tests/test_client.py",
    "tests/test_poll.py",
    "tests/test_wire.py",
    "tests/test_config.py",
    "tests/test_codes.py",
    "tests/test_limiter.py",
    "tests/test_listeners.py",
    "tests/test_callbacks.py",
    "tests/test_download.py",
    "tests/test_secrets.py",
    "tests/test_untrusted_input.py",
    "tests/test_testing_plugin.py",
    "tests/redis/test_redis_coordinator.py",
]

nox.options.default_venv_backend = "uv"
nox.options.download_python = "never"
nox.options.sessions = ["tests", "lowest", "lint", "typecheck", "docs", "dist"]


def _pyenv_on_path() -> None:
    """pyenv's shims answer only for the selected version: put each installed version's own
    bin folder on PATH (newest patch release first) so ``python3.12`` is the real one."""
    versions = pathlib.Path(os.environ.get("PYENV_ROOT", pathlib.Path.home() / ".pyenv"))
    found = []
    for minor in PYTHONS:
        patches = sorted(
            (versions / "versions").glob(f"{minor}.*/bin/python{minor}"),
            key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.parent.name)],
        )
        found += [str(patches[-1].parent)] if patches else []
    os.environ["PATH"] = os.pathsep.join([*found, os.environ.get("PATH", "")])


_pyenv_on_path()


def _pytest(session: nox.Session) -> None:
    args = FAST if session.posargs == ["fast"] else session.posargs
    session.run("python", "-m", "pytest", *args)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The suite (or the test paths given after ``--``, or ``fast``) on one Python."""
    session.install("-e", ".[test]")
    _pytest(session)


@nox.session(python=PYTHONS[0])
def lowest(session: nox.Session) -> None:
    """The suite, lint and type check on the lowest direct dependency versions pyproject.toml
    allows (ruff and mypy have floors too: ``fast`` keeps them, they take seconds)."""
    session.install("--resolution=lowest-direct", "-e", ".[test]")
    session.run("uv", "pip", "freeze", silent=False, external=True)  # what "lowest" was
    _lint_and_types(session)
    _pytest(session)


def _lint(session: nox.Session) -> None:
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


def _types(session: nox.Session) -> None:
    session.run("mypy", "--strict", "veo4k")
    session.run("mypy", "--strict", "tests/typing")


def _lint_and_types(session: nox.Session) -> None:
    _lint(session)
    _types(session)


@nox.session(python=PYTHONS[0])
def lint(session: nox.Session) -> None:
    """ruff's lint and format checks."""
    session.install("-e", ".[test]")
    _lint(session)


@nox.session(python=PYTHONS[0])
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package and on the public API's typing examples."""
    session.install("-e", ".[test]")
    _types(session)


@nox.session(python=PYTHONS[0])
def docs(session: nox.Session) -> None:
    """The site, strictly: a broken link or cross-reference fails."""
    session.install("-e", ".[docs]")
    with tempfile.TemporaryDirectory() as site:
        # mkdocs-material's banner about its end of life (2027) would fill every CI log
        quiet = {"NO_MKDOCS_2_WARNING": "1"}
        session.run("mkdocs", "build", "--strict", "--site-dir", site, env=quiet)


@nox.session(python=PYTHONS[0])
def dist(session: nox.Session) -> None:
    """Wheel and sdist as a release would make them, checked, and the wheel's demo run."""
    session.install("build", "twine")
    with tempfile.TemporaryDirectory() as out:
        session.run("python", "-m", "build", "--outdir", out, ".")
        files = sorted(str(p) for p in pathlib.Path(out).iterdir())
        session.run("twine", "check", "--strict", *files)
        session.run("python", ".ci/check_dist.py", *files)
        wheel = next(f for f in files if f.endswith(".whl"))
        session.install(wheel)
        session.run("veo4k", "demo", "--tasks", "3", silent=True)
