"""Unit tests of a gateway worker's recycling decision (`gateway.workers.check_memory`) and its settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import workers

MB = 2**20


@pytest.fixture
def pipe(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, list[int]]]:
    """A worker's recycle pipe (read end returned) and the memory figures `private_memory` will report."""
    read, write = os.pipe()
    os.set_blocking(read, False)
    memory: list[int] = []
    monkeypatch.setattr(workers, "_recycle_fd", write)
    monkeypatch.setattr(workers, "_started", -1e9)  # running for long
    monkeypatch.setattr(workers, "_baseline", None)
    monkeypatch.setattr(workers, "_recycle_requested", False)
    monkeypatch.setattr(workers, "private_memory", lambda: memory.pop(0))
    monkeypatch.delenv(workers.RECYCLE_ENV, raising=False)
    yield read, memory
    os.close(read)
    os.close(write)


def requests(read: int) -> list[str]:
    try:
        return os.read(read, 4096).decode().split()
    except BlockingIOError:
        return []


def test_the_first_release_sets_the_baseline_and_growth_past_the_limit_asks_once(pipe: tuple[int, list[int]]
                                                                                   ) -> None:
    read, memory = pipe
    memory.extend([50 * MB, 57 * MB, 59 * MB, 70 * MB])
    workers.check_memory(0)  # baseline 50 MB
    workers.check_memory(0)  # +7 MB: within the default 8 MB
    assert requests(read) == []
    workers.check_memory(0)  # +9 MB
    assert requests(read) == [f"{os.getpid()}:{50 * MB}"]
    workers.check_memory(0)  # asked already
    assert requests(read) == [] and memory == [70 * MB]


def test_a_young_worker_does_not_ask(pipe: tuple[int, list[int]], monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    read, memory = pipe
    monkeypatch.setattr(workers, "_started", time.monotonic())  # a replacement that just started
    memory.extend([50 * MB, 90 * MB])
    workers.check_memory(0)
    workers.check_memory(0)
    assert requests(read) == [] and memory == []


def test_a_worker_with_watchers_or_recycling_off_never_asks(pipe: tuple[int, list[int]],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    read, memory = pipe
    memory.extend([50 * MB, 90 * MB, 90 * MB])
    workers.check_memory(0)
    workers.check_memory(3)  # watchers connected: not even measured
    assert memory == [90 * MB, 90 * MB]
    monkeypatch.setenv(workers.RECYCLE_ENV, "0")
    workers.check_memory(0)
    assert requests(read) == []
    monkeypatch.setattr(workers, "_recycle_fd", None)  # a single worker, no supervisor
    workers.check_memory(0)
    assert requests(read) == []


def test_the_limit_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(workers.RECYCLE_ENV, "2.5")
    assert workers.recycle_limit_mb() == 2.5
    for bad in ("-1", "lots", "inf", "nan"):
        monkeypatch.setenv(workers.RECYCLE_ENV, bad)
        with pytest.raises(ValueError, match=workers.RECYCLE_ENV):
            workers.recycle_limit_mb()


def test_private_memory_sums_clean_and_dirty_private_pages(tmp_path: Path) -> None:
    rollup = tmp_path / "smaps_rollup"
    rollup.write_text("Rss: 900 kB\nPss: 500 kB\nShared_Clean: 100 kB\nPrivate_Clean: 20 kB\n"
                      "Private_Dirty: 300 kB\n")
    assert workers.private_memory(rollup) == 320 * 1024
    assert workers.private_memory(tmp_path / "missing") is None


async def test_a_replaced_worker_stops_at_once_when_idle_else_once_its_watchers_left(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import signal

    monkeypatch.setattr(workers, "_retire", None)
    watchers = [2]
    stopped, asked = asyncio.Event(), asyncio.Event()

    def count() -> int:
        asked.set()
        return watchers[0]

    workers.install_retire(stopped.set, count)
    try:
        os.kill(os.getpid(), signal.SIGUSR2)  # the supervisor: a replacement serves now
        await asyncio.wait_for(asyncio.shield(asked.wait()), 5)  # (the signal is handled on the loop)
        assert workers._retire is not None and not stopped.is_set()  # two watchers still connected
        assert workers.retire_if_idle(1) is False and not stopped.is_set()
        assert workers.retire_if_idle(0) is True and stopped.is_set()
        stopped.clear()
        watchers[0] = 0
        os.kill(os.getpid(), signal.SIGUSR2)
        await asyncio.wait_for(stopped.wait(), 5)  # idle: at once
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR2)
