"""The ``veo4k`` command: ``veo4k demo``, ``veo4k upscale``, ``veo4k status``."""

from __future__ import annotations

from ._main import main

__all__ = ["main"]
