"""How long a dispatcher's lease on a unit job lasts (`unit_jobs.submitted_at`): the dispatcher takes and renews
leases, the monitor's reconciler treats a job whose lease ran out as abandoned."""

from __future__ import annotations

from upscaling.config import Settings

# A create request is sent within this long of its lease's last renewal (a queue of creates waiting for worker
# threads does not renew every lease).
START_WINDOW_S = 5.0


def lease_seconds(settings: Settings) -> float:
    """How long a try's lease on a job lasts after its last renewal: no create request of that try can still take
    effect on the backend once it expired (the request is sent within START_WINDOW_S, the client gives up after
    OPENEO_TIMEOUT_S, and a backend still acts on it at most SUBMIT_SETTLE_S later)."""
    return START_WINDOW_S + settings.openeo_timeout_s + settings.submit_settle_s
