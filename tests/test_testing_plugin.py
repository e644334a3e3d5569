"""The public test helpers: the fake_kie fixture (pytest11 entry point) and the package metadata."""

from __future__ import annotations

import importlib.metadata

import veo4k
from veo4k.testing import FAST_POLICY, FakeKie, FaultKind, TaskOutcome


async def test_fake_kie_fixture_is_provided_by_the_plugin(fake_kie: FakeKie) -> None:
    """A user's test gets a started fake with no setup: tasks, failures and faults work."""
    fake_kie.add_task("veo_task_1", ready_after=0.05)
    fake_kie.add_task("veo_task_2", outcome=TaskOutcome.UNAVAILABLE, ready_after=0.05)
    fake_kie.inject(FaultKind.HTML, status=502)
    async with veo4k.Veo4kClient(fake_kie.api_key, base_url=fake_kie.base_url,
                                 poll_policy=FAST_POLICY, rate_limit=None) as client:  # fmt: skip
        assert (await client.wait_for_4k("veo_task_1")).video_url.endswith(".mp4")
        results = await client.wait_for_4k_many(["veo_task_2"], return_exceptions=True)
    assert isinstance(results[0], veo4k.FourKUnavailableError)
    assert fake_kie.stats.faults_fired["html"] == 1


def test_version_comes_from_metadata() -> None:
    """veo4k.__version__ is the installed distribution's version."""
    assert veo4k.__version__ == importlib.metadata.version("veo4k")


def test_public_names_are_sorted_and_exported() -> None:
    """Every name in veo4k.__all__ exists, and __all__ is sorted."""
    assert veo4k.__all__ == sorted(veo4k.__all__)
    assert all(hasattr(veo4k, name) for name in veo4k.__all__)
