"""Per-request and per-caller limits, read from the environment, and the helpers that enforce them.

Request size limits already in `Settings`: HTTP_MAX_BODY_BYTES, GRPC_MAX_MESSAGE_BYTES, MAX_TILES,
MAX_DIMENSION_VALUES. Every error message names the limit: "limit NAME=value exceeded: ...".
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

from upscaling.config import from_env
from upscaling.errors import ResourceExhausted, TooManyRequests


@dataclass(frozen=True)
class Limits:
    """Limits not in `Settings`; 0 switches a limit off. Each field names its variable in `ENV`."""

    max_aoi_vertices: int = 100_000
    max_tasks_in_flight_per_user: int = 1000
    max_watches_per_user: int = 100
    requests_per_s_per_user: float = 0.0
    requests_burst_per_user: int = 0
    ws_messages_per_s: float = 5.0
    ws_messages_burst: int = 20


ENV: dict[str, str] = {
    "max_aoi_vertices": "MAX_AOI_VERTICES",
    "max_tasks_in_flight_per_user": "MAX_TASKS_IN_FLIGHT_PER_USER",
    "max_watches_per_user": "MAX_WATCHES_PER_USER",
    "requests_per_s_per_user": "MAX_REQUESTS_PER_S_PER_USER",
    "requests_burst_per_user": "MAX_REQUESTS_BURST_PER_USER",
    "ws_messages_per_s": "WS_MAX_MESSAGES_PER_S",
    "ws_messages_burst": "WS_MAX_MESSAGES_BURST",
}


def load_limits() -> Limits:
    """Read the limits; ValueError naming the variable when one is wrong or negative."""
    limits = from_env(Limits, ENV)
    for f in fields(Limits):
        if getattr(limits, f.name) < 0:
            raise ValueError(f"{ENV[f.name]} must not be negative")
    return limits


def exceeded(name: str, value: Any, detail: str) -> str:
    """The message of an exceeded limit: `limit NAME=value exceeded: detail`."""
    return f"limit {name}={value} exceeded: {detail}"


def count_vertices(document: Any, stop_after: int | None = None) -> int:
    """The positions in every `coordinates` array of a GeoJSON document (iteratively, any nesting), counted
    up to `stop_after` + 1 at most."""
    count = 0
    stack: list[Any] = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(v for k, v in item.items() if k in ("coordinates", "geometry", "geometries", "features"))
        elif isinstance(item, list):
            if item and isinstance(item[0], int | float) and not isinstance(item[0], bool):
                count += 1
                if stop_after is not None and count > stop_after:
                    return count
            else:
                stack.extend(item)
    return count


def check_aoi_vertices(document: Any, limit: int, what: str = "the AOI") -> None:
    """ResourceExhausted (TOO_MANY_VERTICES) when a GeoJSON document has more than `limit` vertices (0: off)."""
    if limit <= 0:
        return
    n = count_vertices(document, stop_after=limit)
    if n > limit:
        raise ResourceExhausted(exceeded("MAX_AOI_VERTICES", limit, f"{what} has more than {limit} vertices"),
                                error_code="TOO_MANY_VERTICES")


class TokenBucket:
    """`rate` tokens per second up to `burst`; `take` says whether one was available."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst or int(rate * 2) or 1)
        self.tokens = float(self.burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class RateLimiter:
    """A token bucket per key (e.g. user id); rate 0: no limit. Idle full buckets are forgotten."""

    def __init__(self, name: str, rate: float, burst: int) -> None:
        self.name = name
        self.rate = rate
        self.burst = burst
        self._buckets: dict[Hashable, TokenBucket] = {}

    def check(self, key: Hashable) -> None:
        """TooManyRequests (RATE_LIMITED) when `key` has no token left."""
        if self.rate <= 0:
            return
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 10_000:
                self._forget_idle()
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
        if not bucket.take():
            raise TooManyRequests(exceeded(self.name, f"{self.rate:g}", "too many requests per second; slow down"),
                                  error_code="RATE_LIMITED")

    def _forget_idle(self) -> None:
        now = time.monotonic()
        for key, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.stamp) * bucket.rate >= bucket.burst:
                del self._buckets[key]


class SubscriptionCounter:
    """Open watches (gRPC WatchTask, WebSockets) per user, at most `limit` each (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}

    @contextmanager
    def hold(self, user: str) -> Iterator[None]:
        """One subscription of `user` for the duration of the block; TooManyRequests when at the limit."""
        current = self.open.get(user, 0)
        if self.limit and current >= self.limit:
            raise TooManyRequests(exceeded("MAX_WATCHES_PER_USER", self.limit,
                                           f"{current} watches of this user are open"),
                                  error_code="TOO_MANY_SUBSCRIPTIONS")
        self.open[user] = current + 1
        try:
            yield
        finally:
            left = self.open.get(user, 1) - 1
            if left > 0:
                self.open[user] = left
            else:
                self.open.pop(user, None)
