"""Plain data of the service (tiles, tasks, jobs, watch events), converted from the gRPC messages."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from upscaling_client._proto import common_pb2, tiler_pb2, upscaling_pb2

JOB_STATUSES = ("created", "queued", "running", "finished", "canceled", "failed", "unknown")
TERMINAL_JOB_STATUSES = frozenset({"finished", "canceled", "failed"})
TERMINAL_TASK_STATUSES = frozenset({"finished", "canceled", "failed"})


def done_count(counts: dict[str, int]) -> int:
    """Number of jobs in a terminal status, from jobs per status."""
    return sum(n for s, n in counts.items() if s in TERMINAL_JOB_STATUSES)


def job_status_name(value: int) -> str:
    """`JOB_STATUS_FINISHED` → ``"finished"`` (an unknown number → ``"unknown"``)."""
    try:
        return common_pb2.JobStatus.Name(value).removeprefix("JOB_STATUS_").lower()
    except ValueError:
        return "unknown"


def task_status_name(value: int) -> str:
    """`TASK_STATUS_RUNNING` → ``"running"``."""
    try:
        return common_pb2.TaskStatus.Name(value).removeprefix("TASK_STATUS_").lower()
    except ValueError:
        return "unspecified"


def task_status_value(name: str) -> common_pb2.TaskStatus:
    """``"running"`` → `TASK_STATUS_RUNNING` (ValueError for an unknown name)."""
    # protoc's stubs type the enum's members as the enum class but Value() as a plain int
    return cast(common_pb2.TaskStatus, common_pb2.TaskStatus.Value(f"TASK_STATUS_{name.upper()}"))


def _time(stamp: Any) -> datetime | None:
    return stamp.ToDatetime().astimezone() if stamp.seconds or stamp.nanos else None


def _loads(text: str) -> Any:
    return json.loads(text) if text else None


@dataclass(frozen=True)
class Tile:
    """One grid cell of an AOI: id ``<zone>-<col>-<row>``, geometry (GeoJSON, clipped to the AOI), the whole
    cell's WGS84 bbox, its native EPSG code and projected bounds."""

    id: str
    zone: str
    col: int
    row: int
    geometry: dict[str, Any]
    cell_bbox: tuple[float, float, float, float]
    epsg: int
    projected_bounds: tuple[float, float, float, float]

    @classmethod
    def from_proto(cls, tile: tiler_pb2.Tile) -> Tile:
        box = tile.cell_bbox
        pbox = tile.projected_bounds
        return cls(tile.id, tile.zone, tile.col, tile.row, json.loads(tile.geometry_geojson),
                   (box.west, box.south, box.east, box.north), tile.epsg,
                   (pbox.west, pbox.south, pbox.east, pbox.north))

    def to_feature(self) -> dict[str, Any]:
        """The tile as a GeoJSON Feature (properties: id, zone, col, row, epsg, cell_bbox, projected_bounds)."""
        properties = {k: v for k, v in asdict(self).items() if k != "geometry"}
        return {"type": "Feature", "id": self.id, "geometry": self.geometry, "properties": properties}


@dataclass(frozen=True)
class Tiles:
    """The tiles of an AOI on a grid, with the tiler's warnings (e.g. a repaired self-intersection)."""

    grid: str
    tiles: tuple[Tile, ...]
    warnings: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.tiles)

    def __iter__(self):
        return iter(self.tiles)

    def __getitem__(self, index: int) -> Tile:
        return self.tiles[index]

    @property
    def geometries(self) -> list[dict[str, Any]]:
        """The tiles' GeoJSON geometries, in order (the dimension values of a task)."""
        return [t.geometry for t in self.tiles]

    def to_geojson(self) -> dict[str, Any]:
        """A GeoJSON FeatureCollection of the tiles."""
        return {"type": "FeatureCollection", "grid": self.grid, "features": [t.to_feature() for t in self.tiles]}


@dataclass(frozen=True)
class JobInfo:
    """A unit job of a task (one tile)."""

    id: int
    title: str
    status: str
    parameters: dict[str, Any]
    backend_job_id: str = ""
    progress: float = 0.0
    message: str = ""
    updated: datetime | None = None
    costs: float | None = None  # what the backend reported the job cost (None: not reported)
    backend: str = ""  # where the job was submitted (empty until chosen)

    @classmethod
    def from_proto(cls, job: upscaling_pb2.UnitJob) -> JobInfo:
        return cls(job.id, job.title, job_status_name(job.status), _loads(job.parameters_json) or {},
                   job.backend_job_id, job.progress, job.message, _time(job.updated),
                   job.costs if job.HasField("costs") else None, job.backend)

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["updated"] = self.updated.isoformat() if self.updated else None
        return body


@dataclass(frozen=True)
class TaskInfo:
    """An upscaling task as the service last reported it: status, counts per job status, jobs (when read one
    by one; listings carry no jobs)."""

    id: int
    title: str
    status: str
    endpoint: str
    application: str
    parameters: dict[str, Any]
    format: str
    dimension: str
    job_counts: dict[str, int]
    jobs: tuple[JobInfo, ...] = ()
    created: datetime | None = None
    updated: datetime | None = None
    costs: float = 0.0  # the sum of what the backends reported of the task's jobs
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)  # summed per metric: {"cpu": {value, unit}}
    max_costs: float | None = None
    stop_reason: str = ""  # why the task stopped submitting jobs (its max_costs reached), or ""

    @classmethod
    def from_proto(cls, task: upscaling_pb2.Task) -> TaskInfo:
        counts = {s: int(task.job_counts.get(s, 0)) for s in JOB_STATUSES}
        # A task over several backends names them in `endpoints`.
        endpoint = task.service.endpoint or ", ".join(task.service.endpoints)
        return cls(task.id, task.title, task_status_name(task.status), endpoint,
                   task.service.application, _loads(task.parameters_json) or {}, task.format, task.dimension.name,
                   counts, tuple(JobInfo.from_proto(j) for j in task.jobs), _time(task.created), _time(task.updated),
                   task.costs, {k: {"value": m.value, "unit": m.unit} for k, m in task.usage.items()},
                   task.max_costs if task.HasField("max_costs") else None, task.stop_reason)

    @property
    def total(self) -> int:
        """Number of jobs."""
        return sum(self.job_counts.values())

    @property
    def done(self) -> int:
        """Number of jobs in a terminal status."""
        return done_count(self.job_counts)

    @property
    def terminal(self) -> bool:
        """Whether the task has ended (finished, canceled or failed)."""
        return self.status in TERMINAL_TASK_STATUSES

    def to_dict(self, jobs: bool = True) -> dict[str, Any]:
        """JSON-ready dict (times as ISO 8601 text)."""
        body = {k: v for k, v in asdict(self).items() if k != "jobs"}
        body["created"] = self.created.isoformat() if self.created else None
        body["updated"] = self.updated.isoformat() if self.updated else None
        body["job_count"] = self.total
        if jobs:
            body["jobs"] = [j.to_dict() for j in self.jobs]
        return body


@dataclass(frozen=True)
class SyncResult:
    """The result file of a synchronous job (`Client.run_sync`): its bytes and media type."""

    content: bytes
    content_type: str

    def save(self, path: str | Path) -> Path:
        """Write the result to `path`; returns it."""
        target = Path(path)
        target.write_bytes(self.content)
        return target


@dataclass(frozen=True)
class TaskEvent:
    """One message of a task's watch stream: a full `snapshot`, a `job` status change or a `task` status change,
    each with its per-task sequence number (resume with it)."""

    sequence: int
    kind: str
    status: str
    job_id: int | None = None
    message: str = ""
    task: TaskInfo | None = None
    job_counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, item: upscaling_pb2.WatchTaskResponse) -> TaskEvent:
        which = item.WhichOneof("update")
        if which == "snapshot":
            task = TaskInfo.from_proto(item.snapshot)
            return cls(item.sequence, "snapshot", task.status, task=task, job_counts=task.job_counts)
        if which == "job_event":
            job_event = item.job_event
            return cls(item.sequence, "job", job_status_name(job_event.status), job_id=job_event.job_id,
                       message=job_event.message)
        if which == "task_event":
            task_event = item.task_event
            counts = {s: int(task_event.job_counts.get(s, 0)) for s in JOB_STATUSES}
            return cls(item.sequence, "task", task_status_name(task_event.status), job_counts=counts)
        return cls(item.sequence, "unknown", "unknown")

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"sequence": self.sequence, "kind": self.kind, "status": self.status}
        if self.job_id is not None:
            body["job_id"] = self.job_id
        if self.message:
            body["message"] = self.message
        if self.job_counts:
            body["job_counts"] = self.job_counts
        if self.task is not None:
            body["task"] = self.task.to_dict(jobs=False)
        return body
