"""Start-up helpers: wait for a dependency with backoff instead of crashing when it is not up yet."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


async def with_retry(what: str, attempt: Callable[[], Awaitable[T]], timeout_s: float = 60.0) -> T:
    """Call `attempt` until it succeeds, backing off up to 5 s between tries; re-raise after timeout_s."""
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s not reachable yet (%s); retrying in %.1f s", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
