"""Test helpers: a fake Kie server over real sockets, and a pytest fixture for it.

``pip install veo4k[testing]`` and the ``fake_kie`` fixture is available in every test::

    async def test_upscale(fake_kie):
        fake_kie.add_task("veo_task_1", ready_after=0.05)
        async with veo4k.Veo4kClient(fake_kie.api_key, base_url=fake_kie.base_url,
                                     poll_policy=veo4k.testing.FAST_POLICY) as client:
            result = await client.wait_for_4k("veo_task_1")
        assert result.video_url.endswith(".mp4")
"""

from __future__ import annotations

from .._config import PollPolicy, RetryPolicy
from ._fake import FakeKie
from ._faults import Fault, FaultKind
from ._hostile import MARKUP_TEXT, Hostile
from ._inprocess import SIMULATED_BASE_URL, InProcessSession
from ._model import CallbackShape, FakeTask, TaskOutcome, fake_video_bytes

__all__ = [
    "FAST_POLICY",
    "FAST_RETRY",
    "MARKUP_TEXT",
    "SIMULATED_BASE_URL",
    "CallbackShape",
    "FakeKie",
    "FakeTask",
    "Fault",
    "FaultKind",
    "Hostile",
    "InProcessSession",
    "TaskOutcome",
    "fake_video_bytes",
]

FAST_POLICY = PollPolicy(
    first_delay=0.02,
    first_delay_jitter=0.5,
    wait_initial=0.02,
    wait_max=0.05,
    wait_jitter=0.2,
    timeout=10.0,
)
"""A policy for tests against :class:`FakeKie`: milliseconds instead of minutes."""

FAST_RETRY = RetryPolicy(attempts=5, wait_initial=0.01, wait_max=0.05, maintenance_wait=0.02)
"""A retry policy for tests: bounded like the default, in milliseconds."""
