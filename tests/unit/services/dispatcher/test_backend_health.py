"""services.dispatcher.backend_health (pure, with a fake clock): draining after consecutive transient errors,
cooldown, the half-open probe, doubling cooldowns, and the health-check loop."""

from __future__ import annotations

import asyncio

from services.dispatcher.backend_health import MAX_COOLDOWN_S, BackendHealth
from upscaling import metrics
from upscaling.backends import parse_backend

A = "https://a.example/openeo/1.2"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_consecutive_failures_drain() -> None:
    health = BackendHealth(failures=3, cooldown_s=5, clock=Clock())
    assert health.available(A)
    assert not health.failure(A) and not health.failure(A)
    assert health.failure(A)
    assert not health.available(A) and health.drained() == [A]
    assert metrics.BACKEND_DRAINED.labels(A)._value.get() == 1
    health.probed(A, ok=True)
    assert health.available(A) and metrics.BACKEND_DRAINED.labels(A)._value.get() == 0


def test_a_success_in_between_resets_the_count() -> None:
    health = BackendHealth(failures=3, cooldown_s=5, clock=Clock())
    health.failure(A)
    health.failure(A)
    health.success(A)
    health.failure(A)
    health.failure(A)
    assert health.available(A)


def test_half_open_probe_after_the_cooldown() -> None:
    clock = Clock()
    health = BackendHealth(failures=1, cooldown_s=5, clock=clock)
    health.failure(A)
    assert not health.probe_due(A)
    clock.now += 5
    assert health.probe_due(A)
    health.probed(A, ok=False)  # still down: drained for twice as long
    assert not health.available(A)
    clock.now += 9.9
    assert not health.probe_due(A)
    clock.now += 0.1
    health.probed(A, ok=True)
    assert health.available(A)


def test_cooldown_doubles_up_to_a_maximum_and_resets_on_a_job_success() -> None:
    clock = Clock()
    health = BackendHealth(failures=1, cooldown_s=5, clock=clock)
    health.failure(A)
    breaker = health._of(A)
    seen = []
    for _ in range(10):
        clock.now += MAX_COOLDOWN_S
        health.probed(A, ok=False)
        seen.append(breaker.cooldown_s)
    assert seen[:4] == [10, 20, 40, 40] and max(seen) == 40  # 8 x the first cooldown
    fast = BackendHealth(failures=1, cooldown_s=30, clock=clock)
    fast.failure(A)
    for _ in range(5):
        clock.now += MAX_COOLDOWN_S
        fast.probed(A, ok=False)
    assert fast._of(A).cooldown_s == MAX_COOLDOWN_S
    health.success(A)
    assert health.available(A) and breaker.cooldown_s == 0
    health.failure(A)
    assert breaker.cooldown_s == 5


def test_failed_health_checks_drain_a_closed_backend() -> None:
    health = BackendHealth(failures=2, cooldown_s=5, clock=Clock())
    health.probed(A, ok=False)
    assert health.available(A)
    health.probed(A, ok=False)
    assert not health.available(A)


async def test_wait_available_returns_when_closed() -> None:
    health = BackendHealth(failures=1, cooldown_s=0)
    health.failure(A)
    waiter = asyncio.create_task(health.wait_available(A))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    health.probed(A, ok=True)
    await asyncio.wait_for(waiter, 1)


async def test_run_probes_and_restores() -> None:
    backend = parse_backend({"endpoint": A})
    health = BackendHealth(failures=1, cooldown_s=0)
    answers = [RuntimeError("down"), RuntimeError("down"), None]
    stop = asyncio.Event()

    async def check(_: object) -> None:
        answer = answers.pop(0) if answers else None
        if answer is not None:
            raise answer
        stop.set()

    await asyncio.wait_for(health.run([backend], check, 0.01, stop), 5)
    assert health.available(A) and answers == []
