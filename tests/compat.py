"""Test-only shims for third-party test tools."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import aioresponses.core
import pytest
from aiohttp import ClientResponse


class _Aiohttp314Response(ClientResponse):
    """ClientResponse that tolerates aioresponses not passing ``stream_writer``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)


def aioresponses_compat(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioresponses 0.7.9 builds responses without aiohttp 3.14's required ``stream_writer``
    (pnuckowski/aioresponses#289, open). Pinning aiohttp < 3.14 would hold users back from a
    security release, so the tests swap in a response class that supplies it (only where
    aiohttp has the argument: the version floor, 3.13.4, does not)."""
    if "stream_writer" in inspect.signature(ClientResponse.__init__).parameters:
        monkeypatch.setattr(aioresponses.core, "ClientResponse", _Aiohttp314Response)
