"""Task and job rows as APEx JSON (HTTP, WebSocket) and as `upscaling.v1` protos (gRPC)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from upscaling.db import Row
from upscaling.jobs.costs import as_costs
from upscaling.jobs.events import fill_usage
from upscaling.statuses import JOB_STATUSES, TERMINAL_JOB_STATUSES, job_status_to_proto, task_status_to_proto
from upscaling.v1 import common_pb2, upscaling_pb2


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def proto_time(value: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp of a database time (None stays unset)."""
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _json(value: Any) -> str:
    return "" if value is None else json.dumps(value, separators=(",", ":"))


def service_view(service: Mapping[str, Any] | None) -> dict[str, Any]:
    """The public part of a service reference: endpoint, application (and namespace when set)."""
    service = service or {}
    view = {"endpoint": service.get("endpoint"), "application": service.get("application")}
    if service.get("namespace"):
        view["namespace"] = service["namespace"]
    return view


def job_counts(jobs: Sequence[Row]) -> dict[str, int]:
    """Number of jobs per status (every status present, zeros included)."""
    counts = Counter(j["status"] for j in jobs)
    return {s: counts.get(s, 0) for s in JOB_STATUSES}


def task_progress(jobs: Sequence[Row]) -> float:
    """Percentage of the task's work done: terminal jobs count 100, others their backend progress."""
    if not jobs:
        return 0.0
    done = sum(100.0 if j["status"] in TERMINAL_JOB_STATUSES else float(j["progress"] or 0.0) for j in jobs)
    return round(done / len(jobs), 1)


def _costs(value: Any) -> float | None:
    costs = as_costs(value)
    return None if costs is None else round(costs, 9)


def task_costs(task: Row) -> dict[str, Any]:
    """A task's costs so far (what the backends reported of its jobs, summed), usage totals, limit and stop reason."""
    return {"costs": _costs(task.get("costs")) or 0.0, "usage": task.get("usage"),
            "max_costs": _costs(task.get("max_costs")), "stop_reason": task.get("stop_reason")}


def task_summary(task: Row) -> dict[str, Any]:
    return {"id": task["id"], "title": task["title"], "label": task["label"], "status": task["status"]}


def task_list_item(task: Row, counts: Mapping[str, int] | None = None) -> dict[str, Any]:
    """A task in listings: summary, service, times, job count and counts per status."""
    return {**task_summary(task), "service": service_view(task["service"]), "format": task["format"],
            "created": _iso(task["created"]), "updated": _iso(task["updated"]), "job_count": task["job_count"],
            "job_counts": {s: (counts or {}).get(s, 0) for s in JOB_STATUSES}, **task_costs(task)}


def job_summary(job: Row) -> dict[str, Any]:
    return {"id": job["id"], "title": job["title"], "label": job["label"], "status": job["status"]}


def job_item(job: Row) -> dict[str, Any]:
    """A job inside a task body: `{id,title,label,status,service,parameters}` plus progress and message."""
    return {**job_summary(job), "service": service_view(job["service"]), "parameters": job["parameters"],
            "progress": job["progress"], "message": job["message"], "costs": _costs(job.get("costs")),
            "backend": job.get("backend")}


def job_logs_body(job_id: int, failures: Sequence[Row]) -> dict[str, Any]:
    """`GET /unit_jobs/{id}/logs`: the error entries of each failed backend job, oldest failure first."""
    return {"id": job_id, "logs": [{**entry, "backend_job_id": f["backend_job_id"], "attempt": f["attempt"]}
                                   for f in failures for entry in f["entries"]], "links": []}


def job_logs_proto(job_id: int, failures: Sequence[Row]) -> upscaling_pb2.GetJobLogsResponse:
    body = job_logs_body(job_id, failures)
    return upscaling_pb2.GetJobLogsResponse(job_id=job_id, logs=[
        upscaling_pb2.JobLogEntry(id=e.get("id") or "", level=e.get("level") or "", message=e.get("message") or "",
                                  code=e.get("code") or "", time=e.get("time") or "",
                                  backend_job_id=e["backend_job_id"], attempt=e["attempt"]) for e in body["logs"]])


def job_body(job: Row) -> dict[str, Any]:
    """`GET /unit_jobs/{id}`."""
    return {**job_item(job), "task_id": job["task_id"], "format": job["format"],
            "backend_job_id": job["backend_job_id"], "usage": job.get("usage"), "created": _iso(job["created"]),
            "updated": _iso(job["updated"])}


def task_body(task: Row, jobs: Sequence[Row]) -> dict[str, Any]:
    """`GET /upscale_tasks/{id}`: summary, service, parameters, times, jobs, counts per status, progress."""
    return {**task_summary(task), "service": service_view(task["service"]), "parameters": task["parameters"],
            "format": task["format"], "dimension": {"name": task["dimension_name"]},
            "max_attempts": task["max_attempts"], "created": _iso(task["created"]),
            "updated": _iso(task["updated"]), "job_counts": job_counts(jobs), "progress": task_progress(jobs),
            **task_costs(task), "jobs": [job_item(j) for j in jobs]}


def service_proto(service: Mapping[str, Any] | None) -> common_pb2.ServiceRef:
    view = service_view(service)
    endpoint = view["endpoint"]
    several = endpoint if isinstance(endpoint, list) else []  # a task over several backends: as the client sent
    return common_pb2.ServiceRef(endpoint="" if several else endpoint or "", endpoints=several,
                                 application=view["application"] or "", namespace=view.get("namespace") or "")


def job_proto(job: Row) -> upscaling_pb2.UnitJob:
    proto = upscaling_pb2.UnitJob(
        id=job["id"], task_id=job["task_id"] or 0, title=job["title"], label=job["label"],
        status=job_status_to_proto(job["status"]), service=service_proto(job["service"]),
        parameters_json=_json(job["parameters"]), backend_job_id=job["backend_job_id"] or "",
        progress=job["progress"] or 0.0, message=job["message"] or "", created=proto_time(job["created"]),
        updated=proto_time(job["updated"]), costs=_costs(job.get("costs")), backend=job.get("backend") or "")
    fill_usage(proto.usage, job.get("usage"))
    return proto


def task_proto(task: Row, jobs: Sequence[Row] | None = None, counts: Mapping[str, int] | None = None
               ) -> upscaling_pb2.Task:
    """A Task proto; with `jobs`, the jobs and the dimension values are included."""
    if jobs is not None:
        counts = job_counts(jobs)
    dimension = upscaling_pb2.Dimension(name=task["dimension_name"])
    if jobs:
        dimension.values_json.extend(_json((j["parameters"] or {}).get(task["dimension_name"])) for j in jobs)
    proto = upscaling_pb2.Task(
        id=task["id"], title=task["title"], label=task["label"],
        status=task_status_to_proto(task["status"]),
        service=service_proto(task["service"]), parameters_json=_json(task["parameters"]), format=task["format"],
        dimension=dimension, job_counts={k: v for k, v in (counts or {}).items() if v},
        jobs=[job_proto(j) for j in jobs or ()], created=proto_time(task["created"]),
        updated=proto_time(task["updated"]),
        costs=_costs(task.get("costs")) or 0.0, max_costs=_costs(task.get("max_costs")),
        stop_reason=task.get("stop_reason") or "")
    fill_usage(proto.usage, task.get("usage"))
    return proto

