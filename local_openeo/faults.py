"""Seeded fault injection: per-endpoint HTTP faults, delays, lost responses and failing jobs."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping

# Endpoint names usable in fault specifications ("*" applies to all of them).
ENDPOINTS = (
    "well_known",
    "capabilities",
    "credentials_basic",
    "credentials_oidc",
    "me",
    "file_formats",
    "processes",
    "collections",
    "validation",
    "compute_result",
    "create_job",
    "list_jobs",
    "get_job",
    "update_job",
    "delete_job",
    "start_job",
    "cancel_job",
    "get_results",
    "get_logs",
    "download_asset",
    "udp_catalogue",
)

# Plain error answers: nothing is done, the request is answered with this status.
STATUS_KINDS = {"500": 500, "502": 502, "503": 503, "504": 504, "429": 429}
# "delay": wait `fault_delay` seconds, then handle the request normally (it still takes effect).
# "lost": handle the request (it takes effect), then drop the connection without an answer.
# "lost_5xx": handle the request (it takes effect), then answer with that 5xx status instead.
LOST_KINDS = {"lost": None, "lost_500": 500, "lost_502": 502, "lost_503": 503, "lost_504": 504}
KINDS = (*STATUS_KINDS, "delay", *LOST_KINDS)

ERROR_CODES = {
    429: "TooManyRequests",
    500: "Internal",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}

FaultSpec = dict[str, dict[str, float]]


def parse_fault_spec(value: str | Mapping | None) -> FaultSpec:
    """Parse faults from JSON (``{"create_job": {"503": 0.1}}``) or shorthand (``create_job:503=0.1,...``)."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            value = json.loads(text)
        else:
            spec: dict[str, dict[str, float]] = {}
            for item in filter(None, (part.strip() for part in text.split(","))):
                try:
                    target, fraction = item.split("=", 1)
                    endpoint, kind = target.split(":", 1)
                except ValueError:
                    raise ValueError(f"invalid fault {item!r}: expected endpoint:kind=fraction") from None
                spec.setdefault(endpoint.strip(), {})[kind.strip()] = float(fraction)
            value = spec
    if not isinstance(value, Mapping):
        raise ValueError("faults must be an object {endpoint: {kind: fraction}}")
    result: FaultSpec = {}
    for endpoint, kinds in value.items():
        if endpoint != "*" and endpoint not in ENDPOINTS:
            raise ValueError(f"unknown fault endpoint {endpoint!r}; known: *, {', '.join(ENDPOINTS)}")
        if not isinstance(kinds, Mapping):
            raise ValueError(f"faults for {endpoint!r} must be an object {{kind: fraction}}")
        parsed: dict[str, float] = {}
        for kind, fraction in kinds.items():
            if kind not in KINDS:
                raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
            share = float(fraction)
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"fault fraction for {endpoint}:{kind} must be within [0, 1]")
            if share > 0:
                parsed[kind] = share
        if sum(parsed.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault fractions for {endpoint!r} add up to more than 1")
        if parsed:
            result[endpoint] = parsed
    return result


class FaultInjector:
    """Draws faults from independent seeded random streams (one per endpoint, one for job outcomes).

    With the same seed and configuration, the n-th request to an endpoint always gets the same fault,
    whatever the interleaving with other endpoints.
    """

    def __init__(self, seed: int, faults: FaultSpec, job_error_fraction: float) -> None:
        self.configure(seed, faults, job_error_fraction)

    def configure(self, seed: int, faults: FaultSpec, job_error_fraction: float) -> None:
        """Apply a (new) configuration and restart all random streams from the seed."""
        self.seed = seed
        self.faults = faults
        self.job_error_fraction = job_error_fraction
        self._plans: dict[str, tuple[tuple[float, str], ...]] = {}
        for endpoint in ENDPOINTS:
            kinds = dict(faults.get("*", {}))
            kinds.update(faults.get(endpoint, {}))
            if kinds:
                cumulative, plan = 0.0, []
                for kind in sorted(kinds):
                    cumulative += kinds[kind]
                    plan.append((cumulative, kind))
                self._plans[endpoint] = tuple(plan)
        self._rngs: dict[str, random.Random] = {}
        self._job_rng = random.Random(f"{seed}/job_outcome")

    def draw(self, endpoint: str) -> str | None:
        """The fault kind to inject for this request to `endpoint`, or None."""
        plan = self._plans.get(endpoint)
        if plan is None:
            return None
        rng = self._rngs.get(endpoint)
        if rng is None:
            rng = self._rngs[endpoint] = random.Random(f"{self.seed}/{endpoint}")
        u = rng.random()
        for cumulative, kind in plan:
            if u < cumulative:
                return kind
        return None

    def job_fails(self) -> bool:
        """Whether a job being started now is going to end in ``error``."""
        if self.job_error_fraction <= 0:
            return False
        return self._job_rng.random() < self.job_error_fraction
