"""Running a service's main coroutine on uvloop (a faster event loop: transports, timers and callbacks in C),
or on the standard asyncio loop when EVENT_LOOP=asyncio or uvloop is not installed."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` to completion on a new event loop (uvloop unless EVENT_LOOP=asyncio)."""
    if os.environ.get("EVENT_LOOP", "uvloop").lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(main)
            return
    asyncio.run(main)
