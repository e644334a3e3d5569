"""Many processes, one Kie account: a coordinator over Redis (or Valkey).

``pip install "veo4k[redis]"``, then in every process::

    coordinator = RedisCoordinator.from_url("redis://localhost:6379/0", namespace="myapp")
    client = veo4k.Veo4kClient(..., coordinator=coordinator)

All clients of one namespace share the rate budget, the callbacks and one request stream per
task. Guide: "Many workers" (docs/many-workers.md).
"""

from __future__ import annotations

try:
    import redis.asyncio  # noqa: F401  (checks the optional dependency is there)
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError('veo4k.redis needs redis-py: pip install "veo4k[redis]"') from exc

from ._coordinator import RedisCoordinator

__all__ = ["RedisCoordinator"]
