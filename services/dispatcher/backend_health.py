"""Whether a backend takes new jobs right now: one circuit breaker per backend in each dispatcher process.

- Closed (the backend takes jobs): `BACKEND_DRAIN_FAILURES` transient errors in a row (5xx, timeouts, connection
  errors of any backend call, or failed health checks) open it: the backend is **drained**.
- Open (drained): no job is sent there; `backend_choice.rank` leaves it out, and a try whose create never reached
  it goes to another candidate. After a cooldown (`BACKEND_DRAIN_COOLDOWN_S`, doubling on each failed probe up to
  8 times the first and at most `MAX_COOLDOWN_S`) the next health check is the half-open probe: `GET /` answered
  closes the breaker, a failure opens it again for the doubled cooldown. A successful job call resets the
  cooldown.
- Health checks (`run`) ask every configured backend `GET /` (capabilities, through `upscaling.openeo_backend`)
  every `BACKEND_HEALTH_INTERVAL_S`.

The breaker only steers the choice between several candidates: a job with one candidate backend is submitted
(retried, failed) exactly as before. Each replica keeps its own breakers (what it sees of a backend); the
running-job limits, which must hold across replicas, live in PostgreSQL (`backend_limits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from upscaling import metrics
from upscaling.backends import BackendConfig

log = logging.getLogger(__name__)

MAX_COOLDOWN_S = 60.0
# A drained backend's cooldown doubles up to this many times the first one (and MAX_COOLDOWN_S).
MAX_COOLDOWN_FACTOR = 8


@dataclass
class _Breaker:
    failures: int = 0               # transient errors in a row
    open_until: float | None = None  # None: closed; else drained, probed from then on
    cooldown_s: float = 0.0         # the current cooldown (0: the configured first one)
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # set while closed

    def __post_init__(self) -> None:
        self.closed.set()


class BackendHealth:
    """The breakers of one dispatcher process (used from its event loop only)."""

    def __init__(self, failures: int = 3, cooldown_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = max(1, failures)
        self.first_cooldown_s = max(0.0, cooldown_s)
        self.clock = clock
        self._breakers: dict[str, _Breaker] = {}

    def _of(self, endpoint: str) -> _Breaker:
        return self._breakers.setdefault(endpoint, _Breaker())

    def available(self, endpoint: str) -> bool:
        """Whether the backend takes new jobs (its breaker is closed)."""
        breaker = self._breakers.get(endpoint)
        return breaker is None or breaker.open_until is None

    def drained(self) -> list[str]:
        """The drained backends."""
        return sorted(e for e, b in self._breakers.items() if b.open_until is not None)

    def success(self, endpoint: str) -> None:
        """A job call to the backend succeeded: it is healthy."""
        breaker = self._of(endpoint)
        if breaker.open_until is not None:
            log.info("backend answers again; no longer drained", extra={"backend": endpoint})
        breaker.failures, breaker.open_until, breaker.cooldown_s = 0, None, 0.0
        self._close(endpoint, breaker)

    def failure(self, endpoint: str) -> bool:
        """A transient error of the backend; True when this one drained it."""
        breaker = self._of(endpoint)
        breaker.failures += 1
        if breaker.open_until is None and breaker.failures >= self.threshold:
            self._open(endpoint, breaker)
            return True
        return False

    def _open(self, endpoint: str, breaker: _Breaker) -> None:
        ceiling = min(MAX_COOLDOWN_S, MAX_COOLDOWN_FACTOR * self.first_cooldown_s)
        breaker.cooldown_s = (min(breaker.cooldown_s * 2, ceiling) if breaker.cooldown_s
                              else self.first_cooldown_s)
        breaker.open_until = self.clock() + breaker.cooldown_s
        breaker.closed.clear()
        metrics.BACKEND_DRAINED.labels(endpoint).set(1)
        log.warning("backend drained: no new jobs are sent to it until a health check answers",
                    extra={"backend": endpoint, "failures": breaker.failures, "cooldown_s": breaker.cooldown_s})

    @staticmethod
    def _close(endpoint: str, breaker: _Breaker) -> None:
        if not breaker.closed.is_set():
            breaker.closed.set()
            metrics.BACKEND_DRAINED.labels(endpoint).set(0)

    def probe_due(self, endpoint: str) -> bool:
        """Whether a health check should be made now: always while closed, after the cooldown while drained."""
        breaker = self._breakers.get(endpoint)
        return breaker is None or breaker.open_until is None or self.clock() >= breaker.open_until

    def probed(self, endpoint: str, ok: bool) -> None:
        """The outcome of a health check: a drained backend that answers is closed again (half-open probe), one
        that does not stays drained for a doubled cooldown; a closed one that does not answer counts a failure."""
        breaker = self._of(endpoint)
        if breaker.open_until is None:
            if not ok:
                self.failure(endpoint)
            return
        if ok:
            log.info("backend health check answered; no longer drained", extra={"backend": endpoint})
            breaker.failures, breaker.open_until = 0, None  # the cooldown stays until a job call succeeds
            self._close(endpoint, breaker)
        else:
            self._open(endpoint, breaker)

    async def wait_available(self, endpoint: str) -> None:
        """Return once the backend is no longer drained."""
        await self._of(endpoint).closed.wait()

    async def run(self, backends: list[BackendConfig], check: Callable[[BackendConfig], Awaitable[object]],
                  interval_s: float, stop: asyncio.Event) -> None:
        """Health-check every backend whose check is due every `interval_s` until `stop` (checks of a drained
        backend are its half-open probes)."""
        while not stop.is_set():
            due = [b for b in backends if self.probe_due(b.endpoint)]
            outcomes = await asyncio.gather(*(check(b) for b in due), return_exceptions=True)
            for backend, outcome in zip(due, outcomes, strict=True):
                ok = not isinstance(outcome, BaseException)
                if not ok:
                    log.debug("backend health check failed", extra={"backend": backend.endpoint,
                                                                    "error": str(outcome)})
                self.probed(backend.endpoint, ok)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.05, interval_s))
