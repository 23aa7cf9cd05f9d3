"""Which of a job's candidate backends it is submitted to.

A job's candidates are the backends its task named (`unit_jobs.candidates`: a list or a group, resolved when the
task was created), else the one backend of its `service.endpoint`. With several, the dispatcher ranks them when it
leases the job (`rank`, pure): drained backends (`backend_health`) are left out; the others go by free capacity
(`max_running_jobs` minus the jobs counting against it, counted in PostgreSQL by `backend_limits.active_counts`;
no limit is more free capacity than any limit), then by fewest active jobs, and backends still equal take turns by
job id, so ties spread evenly. The dispatcher reserves the first one whose running-job slot is free
(`backend_limits.running_slot_free`, the check that holds across replicas).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from upscaling.backends import BackendConfig, Backends
from upscaling.db import Row


@dataclass(frozen=True)
class Candidates:
    """A job's candidate backends (configuration objects, in the task's order), or why there are none."""

    backends: list[BackendConfig]
    missing: str | None = None  # the first candidate that is not configured (any more)

    @property
    def several(self) -> bool:
        return len(self.backends) > 1


def candidates(backends: Backends, row: Row, message_endpoint: str) -> Candidates:
    """The candidates of a job row: `candidates`, else the one backend stored when the job was (`backend`: what
    its `service.endpoint` resolved to, a one-backend group included), else the message's endpoint."""
    names = list(row["candidates"] or ())
    if not names:
        names = [row["backend"] or message_endpoint]
    found: list[BackendConfig] = []
    for name in names:
        config = backends.find(name) if isinstance(name, str) else None
        if config is None:
            return Candidates([], str(name))
        if config not in found:
            found.append(config)
    return Candidates(found)


def free_capacity(backend: BackendConfig, active: int) -> float:
    """How many more jobs the backend may run now (infinite without a running-jobs limit)."""
    if backend.max_running_jobs <= 0:
        return math.inf
    return float(backend.max_running_jobs - active)


def rank(backends: Sequence[BackendConfig], active: Mapping[str, int], available: Callable[[str], bool],
         turn: int) -> list[BackendConfig]:
    """The available backends in the order to try them: most free capacity first, then fewest active jobs, then
    in turns (`turn`, e.g. the job id, rotates equal backends). Backends without free capacity come last (a
    reservation may still find a slot freed meanwhile)."""
    n = len(backends)
    order = {b.endpoint: i for i, b in enumerate(backends)}

    def key(b: BackendConfig) -> tuple[float, int, int]:
        count = active.get(b.endpoint, 0)
        return -free_capacity(b, count), count, (order[b.endpoint] - turn) % n

    return sorted((b for b in backends if available(b.endpoint)), key=key)
