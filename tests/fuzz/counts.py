"""Counters of the fuzz run: generated inputs per interface and server errors seen (reported at the end)."""

from __future__ import annotations

import collections

INPUTS: collections.Counter[str] = collections.Counter()
OUTCOMES: collections.Counter[str] = collections.Counter()
STUCK: dict[str, int] = {}


def record(interface: str, n: int = 1) -> None:
    """Count `n` generated inputs sent to `interface`."""
    INPUTS[interface] += n


def outcome(name: str) -> None:
    """Count one outcome (e.g. tasks created by fuzzed requests)."""
    OUTCOMES[name] += 1
