"""The "Many workers" multiprocessing batch (docs/many-workers.md), as written, with a real Redis
and the fake Kie over HTTP: four spawned processes share one account and upscale every task once."""

from __future__ import annotations

import asyncio
import os
import pathlib
import re
import sys

from ._procs import ROOT, Proc, fake_stats
from ._server import RedisServer


def readme_batch() -> str:
    section = (ROOT / "docs" / "many-workers.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return next(b for b in blocks if "multiprocessing" in b)


async def test_readme_batch_over_four_processes(
    redis_server: RedisServer, namespace: str, tmp_path: pathlib.Path
) -> None:
    """Every task of tasks.txt is upscaled, each submitted once, under one shared budget."""
    fake = await Proc.start("-m", "veo4k.testing", "--ready-after", "0", "--rate-limit", "20/10")
    try:
        base_url, api_key = (await fake.line("READY")).split()
        ids = [f"veo_task_batch{n}" for n in range(12)]
        (tmp_path / "tasks.txt").write_text("\n".join(ids) + "\n")
        (tmp_path / "batch.py").write_text(readme_batch().replace('"myapp"', repr(namespace)))
        env = {
            **os.environ, "KIE_API_KEY": api_key, "KIE_BASE_URL": base_url,
            "REDIS_URL": redis_server.url,
        }  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "batch.py", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, out.decode()
        assert out.decode().strip().splitlines()[-1] == f"{len(ids)} upscaled"
        stats = await fake_stats(base_url)
        assert stats["rate_limited"] == 0
        assert stats["submissions"] == len(ids)
        assert stats["max_submissions_per_task"] == 1
    finally:
        await fake.stop()
