"""services.dispatcher.backend_choice (pure): a job's candidates, and the order in which the dispatcher tries them
(free capacity, then fewest active jobs, ties in turns, drained backends left out)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from services.dispatcher.backend_choice import candidates, free_capacity, rank
from upscaling.backends import Backends, parse_backend

A = "https://a.example/openeo/1.2"
B = "https://b.example/openeo/1.2"
C = "https://c.example/openeo/1.2"


def _backends(*limits: int) -> Backends:
    return Backends([parse_backend({"endpoint": e, "max_running_jobs": n, "groups": ["all"]})
                     for e, n in zip((A, B, C), limits, strict=False)])


def _row(candidates: list[str] | None = None, backend: str | None = A, endpoint: Any = None) -> dict[str, Any]:
    return {"candidates": candidates, "backend": backend,
            "service": {"endpoint": endpoint or backend, "application": "https://udp"}}


def test_candidates_from_the_column_else_the_endpoint() -> None:
    backends = _backends(2, 2, 2)
    assert [b.endpoint for b in candidates(backends, _row([B, A]), "").backends] == [B, A]
    assert [b.endpoint for b in candidates(backends, _row(None, A + "/"), "").backends] == [A]
    assert [b.endpoint for b in candidates(backends, _row(None, None), C).backends] == [C]
    single = candidates(backends, _row(None, A), "")
    assert not single.several and single.missing is None
    # a group of one backend: the job was stored with that backend, its service keeps the group's name
    one = candidates(backends, _row(None, B, endpoint="solo"), "")
    assert [b.endpoint for b in one.backends] == [B] and one.missing is None


def test_a_candidate_no_longer_configured_is_reported() -> None:
    found = candidates(_backends(2, 2), _row([A, "https://gone.example"]), "")
    assert found.missing == "https://gone.example" and found.backends == []


def test_free_capacity() -> None:
    backends = _backends(3, 0)
    assert free_capacity(backends.configs[0], 1) == 2
    assert free_capacity(backends.configs[0], 5) == -2
    assert free_capacity(backends.configs[1], 100) == math.inf


def test_most_free_capacity_first() -> None:
    backends = _backends(4, 2).configs
    ordered = rank(backends, {A: 3, B: 0}, lambda e: True, turn=0)
    assert [b.endpoint for b in ordered] == [B, A]  # B: 2 free, A: 1 free
    ordered = rank(backends, {A: 0, B: 1}, lambda e: True, turn=0)
    assert [b.endpoint for b in ordered] == [A, B]


def test_full_backends_come_last_and_unlimited_first() -> None:
    backends = _backends(2, 2, 0).configs
    ordered = rank(backends, {A: 2, B: 1, C: 50}, lambda e: True, turn=0)
    assert [b.endpoint for b in ordered] == [C, B, A]


def test_drained_backends_are_left_out() -> None:
    backends = _backends(2, 2).configs
    assert [b.endpoint for b in rank(backends, {}, lambda e: e != A, turn=0)] == [B]
    assert rank(backends, {}, lambda e: False, turn=0) == []


def test_ties_take_turns() -> None:
    backends = _backends(5, 5, 5).configs
    firsts = Counter(rank(backends, {}, lambda e: True, turn=job_id)[0].endpoint for job_id in range(300))
    assert firsts == {A: 100, B: 100, C: 100}


def test_ties_by_fewest_active_when_unlimited() -> None:
    backends = _backends(0, 0).configs
    assert [b.endpoint for b in rank(backends, {A: 7, B: 3}, lambda e: True, turn=0)] == [B, A]
