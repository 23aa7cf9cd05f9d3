"""Fixtures of the fuzz tests: hypothesis profiles ("ci": few derandomized examples, the `make test` default;
"fuzz": FUZZ_EXAMPLES examples per test, random, for `make fuzz`), one whole stack of real processes (tiler,
gateway, dispatcher, monitor, local openEO backend, own database and broker prefix), a health check after
every test, the stuck-task check at the end, and the count of generated inputs per interface."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.fuzz import counts
from tests.fuzz.stack import FuzzStack, start_fuzz_stack

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "500"))
_COMMON = {"deadline": None, "suppress_health_check": list(HealthCheck), "print_blob": True}
settings.register_profile("ci", max_examples=int(os.environ.get("FUZZ_CI_EXAMPLES", "25")), derandomize=True,
                          database=None, **_COMMON)
settings.register_profile("fuzz", max_examples=FUZZ_EXAMPLES, **_COMMON)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


@pytest.fixture(scope="session")
def fuzz_stack(infra: Any, service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[FuzzStack]:
    """Every service as a real process; at the end: all alive and no task left unfinished."""
    with start_fuzz_stack(infra, service_env, tmp_path_factory.mktemp("fuzz")) as stack:
        yield stack
        stack.assert_healthy()
        counts.STUCK.update(stack.settle_tasks())
        assert counts.STUCK["tasks left non-terminal"] == 0, counts.STUCK
        stack.assert_healthy()


@pytest.fixture(autouse=True)
def healthy_after(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each fuzz test: every process still alive and reporting healthy."""
    yield
    if "fuzz_stack" in request.fixturenames:
        request.getfixturevalue("fuzz_stack").assert_healthy()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not counts.INPUTS:
        return
    tr = terminalreporter
    tr.section(f"fuzz: generated inputs per interface (hypothesis profile {PROFILE!r})")
    for name, n in sorted(counts.INPUTS.items()):
        tr.write_line(f"{name:<48} {n:>7}")
    tr.write_line(f"{'total':<48} {sum(counts.INPUTS.values()):>7}")
    for name, n in sorted(counts.OUTCOMES.items()):
        tr.write_line(f"outcome: {name:<39} {n:>7}")
    for name, n in sorted(counts.STUCK.items()):
        tr.write_line(f"end: {name:<43} {n:>7}")
    tr.write_line("every answer checked: no 5xx/INTERNAL, every service healthy after each test (else a test fails)")
    report = os.environ.get("FUZZ_REPORT")
    if report:
        with open(report, "w") as out:
            json.dump({"profile": PROFILE, "inputs": dict(counts.INPUTS), "outcomes": dict(counts.OUTCOMES),
                       "stuck": counts.STUCK, "time": time.time()}, out, indent=1)
