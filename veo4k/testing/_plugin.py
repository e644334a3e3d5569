"""pytest plugin (entry point ``pytest11``): the ``fake_kie`` fixture.

The fixture needs pytest-asyncio (``pip install veo4k[testing]``); without it this plugin
registers nothing, so installing veo4k never breaks an unrelated test suite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ._fake import FakeKie

__all__ = ["fake_kie"]

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - depends on the environment
    pass
else:

    @pytest_asyncio.fixture
    async def fake_kie() -> AsyncIterator[FakeKie]:
        """A started :class:`~veo4k.testing.FakeKie` on 127.0.0.1, closed after the test."""
        async with FakeKie() as kie:
            yield kie
