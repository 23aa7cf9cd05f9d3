"""Counting a monitor cycle's backend HTTP calls by kind, so a cycle can report its cost."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class CallCounter:
    """Backend HTTP calls of one cycle, by kind (thread-safe)."""

    listing: int = 0
    job_gets: int = 0
    results: int = 0
    logs: int = 0
    stops: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, kind: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, kind, getattr(self, kind) + n)

    @property
    def total(self) -> int:
        return self.listing + self.job_gets + self.results + self.logs + self.stops

    def by_kind(self) -> dict[str, int]:
        return {"listing": self.listing, "job_gets": self.job_gets, "results": self.results, "logs": self.logs,
                "stops": self.stops}

    def as_log(self) -> dict[str, int]:
        return {"backend_calls": self.total, "listing_calls": self.listing, "job_gets": self.job_gets,
                "result_fetches": self.results, "log_fetches": self.logs, "stop_calls": self.stops}
