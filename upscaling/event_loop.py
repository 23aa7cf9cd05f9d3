"""Running a service's main coroutine on uvloop (a faster event loop: transports, timers and callbacks in C),
or on the standard asyncio loop when EVENT_LOOP=asyncio or uvloop is not installed; with the garbage collector's
thresholds of a long-running service."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Coroutine
from typing import Any

# CPython's defaults (700, 10, 10) suit scripts. A service keeps many long-lived objects (a gateway worker with a
# thousand watchers: about a million), and with the defaults the short-lived objects of the requests and messages
# in flight get promoted often enough to start a full collection every few seconds: 120 to 180 ms with the event
# loop stopped, for nothing found. Young collections that wait for more allocations let those objects die first;
# full collections still happen, rarely (and the gateway runs one whenever watchers have left).
GC_THRESHOLDS = (50_000, 20, 20)


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` to completion on a new event loop (uvloop unless EVENT_LOOP=asyncio), with GC_THRESHOLDS."""
    gc.set_threshold(*GC_THRESHOLDS)
    if os.environ.get("EVENT_LOOP", "uvloop").lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(main)
            return
    asyncio.run(main)
