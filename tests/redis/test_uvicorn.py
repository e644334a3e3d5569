"""The "Many workers" app (docs/many-workers.md), as written, under ``uvicorn --workers 4`` with a
real Redis and the fake Kie over HTTP: every wait ends by a callback, wherever it lands."""

from __future__ import annotations

import asyncio
import os
import pathlib
import re
import socket
import sys

import aiohttp

from ._procs import fake_stats
from ._server import RedisServer, free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]


def readme_app() -> str:
    section = (ROOT / "docs" / "many-workers.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return next(b for b in blocks if "uvicorn app:app --workers 4" in b)


async def _listening(port: int, proc: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(30):
        while proc.returncode is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                await asyncio.sleep(0.05)  # polling a child's port: there is no event to await
    raise AssertionError("uvicorn ended before it listened")


async def test_readme_app_under_four_uvicorn_workers(
    http_fake: tuple[str, str], redis_server: RedisServer, namespace: str, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "app.py").write_text(readme_app().replace('"myapp"', repr(namespace)))
    base_url, api_key = http_fake
    port = free_port()
    env = {
        **os.environ,
        "KIE_API_KEY": api_key,
        "KIE_BASE_URL": base_url,
        "REDIS_URL": redis_server.url,
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "VEO4K_CALLBACK_TOKEN": "same-in-every-worker",
        "PYTHONPATH": str(tmp_path),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uvicorn", "app:app", "--workers", "4", "--port", str(port),
        "--log-level", "warning", cwd=tmp_path, env=env,
    )  # fmt: skip
    try:
        await _listening(port, proc)
        async with aiohttp.ClientSession() as session:

            async def upscale(task_id: str) -> dict[str, object]:
                url = f"http://127.0.0.1:{port}/upscale/{task_id}"
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
                    assert resp.status == 200, await resp.text()
                    data: dict[str, object] = await resp.json()
                    return data

            answers = await asyncio.gather(*(upscale(f"uv{i}") for i in range(8)))
    finally:
        proc.terminate()
        await proc.wait()
    # the safety-net poll is 15 minutes away: only callbacks can have ended these waits
    assert all(a["via_callback"] for a in answers), answers
    assert all(str(a["url"]).endswith(".mp4") for a in answers)
    stats = await fake_stats(base_url)
    assert stats["max_submissions_per_task"] == 1
    assert stats["rate_limited"] == 0
