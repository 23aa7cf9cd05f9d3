"""Counters of the fuzz run: generated inputs per interface and server errors seen (reported at the end)."""

from __future__ import annotations

import collections

INPUTS: collections.Counter[str] = collections.Counter()
SERVER_ERRORS = 0
STUCK: dict[str, int] = {}


def record(interface: str, n: int = 1) -> None:
    """Count `n` generated inputs sent to `interface`."""
    INPUTS[interface] += n
