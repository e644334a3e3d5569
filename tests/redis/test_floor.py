"""The oldest redis-py that pyproject.toml allows runs the cluster fan-out, in a scratch venv.

The venv is cached in pytest's cache folder (``.pytest_cache/d/redis-floor-<version>``):
the first run installs redis-py from PyPI (a few seconds), later runs reuse it. It holds only
that redis-py; everything else comes from the running venv, after it on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import site
import subprocess
import sys

import pytest

from ._procs import ROOT
from ._server import RedisServer


def redis_floor() -> str:
    """The lowest redis-py version ``pyproject.toml`` allows (``redis>=X``)."""
    found = re.search(r'"redis>=([0-9][0-9.]*)"', (ROOT / "pyproject.toml").read_text())
    assert found, "pyproject.toml names no redis>= floor"
    return found.group(1)


def floor_python(cache: pathlib.Path, version: str) -> pathlib.Path:
    """A venv's python whose redis-py is ``version``; made once, reused from ``cache``."""
    venv = cache / f"redis-floor-{version}"
    python = venv / "bin" / "python"
    if (venv / ".ready").exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)],
                   check=True)  # fmt: skip
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "--target", purelib, f"redis=={version}"],
        check=True,
    )  # fmt: skip
    # After its own site-packages: this venv's (veo4k editable, aiohttp, ...), .pth included.
    parents = [p for p in site.getsitepackages() if pathlib.Path(p).is_dir()]
    lines = [f"import site; site.addsitedir({p!r})" for p in parents]
    (pathlib.Path(purelib) / "zz_veo4k_parent.pth").write_text("\n".join(lines) + "\n")
    (venv / ".ready").touch()
    return python


def test_the_redis_py_floor_runs_the_cluster_fan_out(
    request: pytest.FixtureRequest, cluster_redis: RedisServer
) -> None:
    """No ``RedisCluster.pubsub()`` before redis-py 8: the listener's node connection carries
    results and callbacks between processes on a cluster with the floor version too."""
    version = redis_floor()
    python = floor_python(request.config.cache.mkdir("redis-floor"), version)
    run = subprocess.run(
        [str(python), "-m", "tests.redis.floor_check", cluster_redis.url, version],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout.split("OK", 1)[1])
    assert report["redis_py"] == version
    assert report["followed_requests"] == 0  # the result came by pub/sub on the cluster
    assert report["callback_requests"] == 1  # the callback ended the wait in the other process
    assert report["via_callback"]
    assert report["outages"] == 0


def test_the_redis_py_floor_rejoins_a_cluster_that_restarted(
    request: pytest.FixtureRequest,
) -> None:
    """Before redis-py 8 a cluster client whose every node failed at once never connected
    again (its startup nodes were used up): with the floor version the coordinator still falls
    back while the cluster is down and shares again after it restarts (test_cluster.py, run
    in the floor's venv)."""
    version = redis_floor()
    python = floor_python(request.config.cache.mkdir("redis-floor"), version)
    run = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/redis/test_cluster.py::test_cluster_killed_and_restarted_falls_back_then_shares_again"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
