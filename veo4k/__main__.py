"""``python -m veo4k``: the same as the ``veo4k`` command."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
