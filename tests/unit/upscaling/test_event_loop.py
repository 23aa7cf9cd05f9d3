"""A service's main coroutine runs with the garbage collector's thresholds of a long-running service."""

from __future__ import annotations

import gc

import pytest

from upscaling import event_loop


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_service_runs_with_the_service_gc_thresholds(loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_LOOP", loop)
    before = gc.get_threshold()
    seen: list[tuple[int, ...]] = []

    async def main() -> None:
        seen.append(gc.get_threshold())

    try:
        event_loop.run(main())
    finally:
        gc.set_threshold(*before)
    assert seen == [event_loop.GC_THRESHOLDS] and event_loop.GC_THRESHOLDS[0] > before[0]
