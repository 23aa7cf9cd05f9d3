"""Which allocator the gateway re-executes itself with (gateway.workers.use_system_allocator)."""

from __future__ import annotations

import pytest

from gateway import workers


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """The environments the gateway would re-execute itself with (nothing is executed)."""
    seen: list[dict[str, str]] = []
    monkeypatch.setattr(workers.os, "execv", lambda *_: seen.append(dict(workers.os.environ)))
    monkeypatch.setattr(workers.ctypes.util, "find_library", lambda name: "libjemalloc.so.2")
    for name in ("PYTHONMALLOC", "LD_PRELOAD", "MALLOC_CONF", workers.ALLOCATOR_ENV, workers.JEMALLOC_ENV):
        monkeypatch.delenv(name, raising=False)
    return seen


def test_glibc_malloc_and_jemalloc_by_default_once(execs: list[dict[str, str]]) -> None:
    workers.use_system_allocator()
    assert len(execs) == 1
    env = execs[0]
    assert env["PYTHONMALLOC"] == "malloc" and env["LD_PRELOAD"] == "libjemalloc.so.2"
    assert env["MALLOC_CONF"] == workers.JEMALLOC_CONF
    workers.use_system_allocator()  # the re-executed process: nothing more to change
    assert len(execs) == 1


def test_switches(execs: list[dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(workers.JEMALLOC_ENV, "false")
    workers.use_system_allocator()
    assert execs[-1]["PYTHONMALLOC"] == "malloc" and "LD_PRELOAD" not in execs[-1]
    monkeypatch.delenv("PYTHONMALLOC")
    monkeypatch.setenv(workers.ALLOCATOR_ENV, "true")
    monkeypatch.delenv(workers.JEMALLOC_ENV)
    before = len(execs)
    workers.use_system_allocator()  # pymalloc kept: no C allocator to preload
    assert len(execs) == before


def test_no_jemalloc_on_the_machine(execs: list[dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers.ctypes.util, "find_library", lambda name: None)
    workers.use_system_allocator()
    assert execs[-1]["PYTHONMALLOC"] == "malloc" and "LD_PRELOAD" not in execs[-1]
