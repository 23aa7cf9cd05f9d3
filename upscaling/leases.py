"""How long a dispatcher's lease on a unit job lasts (`unit_jobs.submitted_at`): the dispatcher takes and renews
leases, the monitor's reconciler treats a job whose lease ran out as abandoned."""

from __future__ import annotations

# Margin on top of the client timeout before an earlier try's create request is taken as landed or lost.
SETTLE_S = 1.0
# A create request is sent within this long of its lease's last renewal (a queue of creates waiting for worker
# threads does not renew every lease).
START_WINDOW_S = 5.0


def lease_seconds(openeo_timeout_s: float) -> float:
    """How long a try's lease on a job lasts after its last renewal: no create request of that try can still be
    in flight once it expired."""
    return START_WINDOW_S + openeo_timeout_s + SETTLE_S
