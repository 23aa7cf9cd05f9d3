"""Costs and usage, pure: what backends report of a job (openEO `costs`: a number; `usage`: `{"cpu": {"value",
"unit"}, ...}`), what a change of them adds to its task's totals, and the task's cost limit (`max_costs`).

The one rule of spending: a job's reported costs/usage replacing earlier ones of the same backend job add the
difference to the task; a change that forgets them (a resubmission clears the job's report) takes nothing back,
so what earlier attempts cost stays counted. The limit is reached once the task's costs are at or above it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The SQL form of `reached` over an `upscale_tasks` row aliased `t` (the dispatcher's lease refuses such tasks).
REACHED_SQL = "(t.max_costs IS NOT NULL AND t.costs >= t.max_costs)"


def as_costs(value: Any) -> float | None:
    """A backend's `costs` as a finite number (None: not reported or not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def metrics(usage: Any) -> dict[str, tuple[float, str]]:
    """The well-formed metrics of a backend's `usage` (name -> (value, unit)); anything else is left out."""
    out: dict[str, tuple[float, str]] = {}
    if not isinstance(usage, Mapping):
        return out
    for name, metric in usage.items():
        if not isinstance(name, str) or not isinstance(metric, Mapping):
            continue
        value, unit = as_costs(metric.get("value")), metric.get("unit")
        if value is not None:
            out[name] = (value, unit if isinstance(unit, str) else "")
    return out


def as_usage(usage: Any) -> dict[str, dict[str, Any]] | None:
    """A backend's `usage` as stored and shown: its well-formed metrics, or None when it has none."""
    found = metrics(usage)
    return {name: {"value": value, "unit": unit} for name, (value, unit) in found.items()} or None


@dataclass
class Spend:
    """What changes of jobs add to their task: costs, and usage per (metric, unit)."""

    costs: float = 0.0
    usage: dict[tuple[str, str], float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.costs != 0.0 or any(v != 0.0 for v in self.usage.values())

    def add(self, old: Mapping[str, Any], changed: Mapping[str, Any]) -> None:
        """Count one job's change (`old`: the job before it; `changed`: the columns it changes)."""
        if "costs" in changed:
            new = as_costs(changed["costs"])
            if new is not None:
                self.costs += new - (as_costs(old.get("costs")) or 0.0)
        if "usage" in changed and changed["usage"] is not None:
            for name, (value, unit) in metrics(changed["usage"]).items():
                self.usage[(name, unit)] = self.usage.get((name, unit), 0.0) + value
            for name, (value, unit) in metrics(old.get("usage")).items():
                self.usage[(name, unit)] = self.usage.get((name, unit), 0.0) - value


def add_usage(total: Any, spend: Spend) -> dict[str, dict[str, Any]] | None:
    """A task's usage totals plus what `spend` adds. A metric reported in another unit than its total's is kept
    apart as "<name> (<unit>)" (never summed across units)."""
    sums = dict(metrics(total))
    for (name, unit), value in sorted(spend.usage.items()):
        key = name if name not in sums or sums[name][1] == unit else f"{name} ({unit})"
        before = sums.get(key, (0.0, unit))[0]
        sums[key] = (round(before + value, 9), unit)
    return {name: {"value": value, "unit": unit} for name, (value, unit) in sums.items()} or None


def reached(max_costs: float | None, spent: float | None) -> bool:
    """Whether a task with this limit (None: none) and these costs may submit no further job."""
    return max_costs is not None and (spent or 0.0) >= max_costs


def stop_reason(max_costs: float, spent: float) -> str:
    """What a task whose limit was reached says, e.g. "max_costs 10 reached (spent 10.4)"."""
    return f"max_costs {_number(max_costs)} reached (spent {_number(spent)})"


def _number(value: float) -> str:
    return f"{round(value, 6)}".removesuffix(".0")
