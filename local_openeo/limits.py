"""Per-user start limits: maximum queued+running jobs and a token-bucket start rate."""

from __future__ import annotations

import math

from local_openeo.config import Settings
from local_openeo.errors import ApiError


class LimitRejection(ApiError):
    """A start refused by a limit; `reason` is ``concurrency`` or ``start_rate``."""

    def __init__(self, reason: str, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(status, code, message, headers)
        self.reason = reason


class StartLimiter:
    """Checks a job start against the (run-time changeable) limits of the settings."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._buckets: dict[str, tuple[float, float]] = {}  # user → (tokens, at)

    def clear(self) -> None:
        self._buckets.clear()

    def check(self, user: str, active: int, now: float) -> None:
        """Raise LimitRejection, or take one start token; `now` is a monotonic clock."""
        settings = self._settings
        if settings.max_concurrent and active >= settings.max_concurrent:
            message = (
                f"Job was not started because the concurrent job limit ({settings.max_concurrent} "
                f"queued or running jobs per user) is reached."
            )
            if settings.concurrency_status == 429:
                raise LimitRejection("concurrency", 429, "TooManyRequests", message)
            raise LimitRejection("concurrency", 400, "ConcurrentJobLimit", message)
        rate = settings.start_rate
        if rate <= 0:
            return
        burst = float(settings.start_burst)
        tokens, at = self._buckets.get(user, (burst, now))
        tokens = min(burst, tokens + (now - at) * rate)
        if tokens < 1.0:
            self._buckets[user] = (tokens, now)
            wait = (1.0 - tokens) / rate
            raise LimitRejection(
                "start_rate",
                429,
                "TooManyRequests",
                f"Too many job starts: at most {rate:g} per second per user. Retry in {wait:.2f} s.",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        self._buckets[user] = (tokens - 1.0, now)
