"""`Client` (a connection to the service's gRPC API) and `Task` (one upscaling task: watch, wait, cancel,
retry, results, download, mosaic)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from upscaling_client import download as downloads
from upscaling_client._proto import common_pb2, tiler_pb2, tiler_pb2_grpc, upscaling_pb2, upscaling_pb2_grpc
from upscaling_client.errors import UnavailableError, UpscalingError, from_rpc_error
from upscaling_client.models import (
    TERMINAL_TASK_STATUSES,
    SyncResult,
    TaskEvent,
    TaskInfo,
    Tile,
    Tiles,
    task_status_value,
)
from upscaling_client.state import TaskState

DEFAULT_ADDRESS = "localhost:50051"
# gRPC codes after which a watch reconnects and resumes (the gateway restarted, a proxy dropped the stream).
RESUMABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
             grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED}
MAX_MESSAGE = 1 << 28


class Client:
    """A connection to the upscaling service's gRPC API (the gateway, port 50051 by default).

    `address` is ``host:port`` (``https://host:port`` or `secure=True` for TLS); `token` is sent as a bearer
    token when the service authenticates. Watches receive several events per message (`WatchTaskBatches`) unless
    `watch_batches` is False or the service does not offer it (then `WatchTask`). Use it as a context manager, or
    call `close()`."""

    def __init__(self, address: str = DEFAULT_ADDRESS, token: str | None = None, *, secure: bool | None = None,
                 timeout_s: float = 120.0, watch_batches: bool = True) -> None:
        if address.startswith(("https://", "http://")):
            secure = address.startswith("https://") if secure is None else secure
            address = address.split("://", 1)[1].rstrip("/")
        self.address = address
        self.timeout_s = timeout_s
        self.watch_batches: bool | None = None if watch_batches else False  # None: not known yet
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
        self._channel = (grpc.secure_channel(address, grpc.ssl_channel_credentials(), options) if secure
                         else grpc.insecure_channel(address, options))
        self._tasks = upscaling_pb2_grpc.UpscalingServiceStub(self._channel)
        self._tiler = tiler_pb2_grpc.TilerServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.address!r})"

    def call(self, method: Callable[..., Any], request: Any, timeout_s: float | None = None) -> Any:
        """One unary call; a failure raises the `UpscalingError` subclass of its status, with the server's message."""
        try:
            return method(request, timeout=timeout_s or self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    # ---- tiling ------------------------------------------------------------------------------------------------
    def grids(self) -> list[str]:
        """The grid names the service advertises (any ``NxNkm`` with 1 ≤ N ≤ 1000 works)."""
        return [g.name for g in self.call(self._tiler.ListGrids, tiler_pb2.ListGridsRequest()).grids]

    def tiles(self, aoi: dict[str, Any] | str | Path, grid: str = "20x20km", *, full_cells: bool = False) -> Tiles:
        """The tiles of an AOI: a GeoJSON dict (Polygon, MultiPolygon, Feature, FeatureCollection), GeoJSON text,
        or the path of a GeoJSON file."""
        reply = self.call(self._tiler.TileAoi, tiler_pb2.TileAoiRequest(
            aoi_geojson=_geojson_text(aoi), grid=grid, full_cells=full_cells))
        return Tiles(reply.grid.name or grid, tuple(Tile.from_proto(t) for t in reply.tiles), tuple(reply.warnings))

    # ---- tasks -------------------------------------------------------------------------------------------------
    def submit(self, udp_url: str, *, backend: str, aoi: dict[str, Any] | str | Path | None = None,
               grid: str = "20x20km", tiles: Tiles | Sequence[dict[str, Any]] | None = None,
               parameters: dict[str, Any] | None = None, title: str | None = None, format: str | None = None,
               dimension: str = "spatial_extent", max_attempts: int | None = None,
               max_costs: float | None = None, label: str = "openeo") -> Task:
        """Create a task running the UDP at `udp_url` on the openEO `backend`, one job per tile: the tiles of `aoi`
        on `grid`, or `tiles` given (Tiles or GeoJSON geometries). `parameters` go to every job; each tile's
        geometry goes to the UDP parameter `dimension`; once the costs the backend reported of its jobs reach
        `max_costs`, no further job is submitted. Returns at once; see `Task.wait()`. On an OGC API - Processes
        backend: `label="ogc_api_process"`, `udp_url` the process URL, `dimension` its geometry input."""
        if (aoi is None) == (tiles is None):
            raise ValueError("give either aoi (tiled on grid) or tiles")
        if tiles is None:
            tiles = self.tiles(aoi, grid)  # type: ignore[arg-type]
        geometries = tiles.geometries if isinstance(tiles, Tiles) else list(tiles)
        name = udp_url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".json")
        request = upscaling_pb2.CreateTaskRequest(
            title=title or f"{name} ({len(geometries)} tiles)", label=label,
            service=common_pb2.ServiceRef(endpoint=backend, application=udp_url),
            parameters_json=json.dumps(parameters or {}), format=format or "",
            dimension=upscaling_pb2.Dimension(name=dimension, values_json=[json.dumps(g) for g in geometries]),
            max_attempts=max_attempts or 0, max_costs=max_costs)
        return Task(self, TaskInfo.from_proto(self.call(self._tasks.CreateTask, request).task))

    def job_logs(self, job_id: int) -> list[dict[str, Any]]:
        """The error log entries of a job's failed backend jobs (`{id, level, message, code, time,
        backend_job_id, attempt}`), oldest failure first."""
        reply = self.call(self._tasks.GetJobLogs, upscaling_pb2.GetJobLogsRequest(job_id=job_id))
        return [{"id": e.id, "level": e.level, "message": e.message, "code": e.code, "time": e.time,
                 "backend_job_id": e.backend_job_id, "attempt": e.attempt} for e in reply.logs]

    def run(self, udp_url: str, *, backend: str, progress: bool = True, **options: Any) -> Task:
        """`submit()` then `wait()`: the task once it is finished, failed or canceled."""
        task = self.submit(udp_url, backend=backend, **options)
        task.wait(progress=progress)
        return task

    def run_sync(self, udp_url: str, *, backend: str, parameters: dict[str, Any] | None = None,
                 title: str | None = None, format: str | None = None, timeout_s: float = 600.0) -> SyncResult:
        """Run the UDP once, synchronously, on the openEO `backend` and return its result file (small AOIs only:
        the service refuses AOIs above its SYNC_MAX_AREA_KM2 and results above SYNC_MAX_BYTES with
        `LimitExceededError`; run larger ones with `submit()`)."""
        name = udp_url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".json")
        request = upscaling_pb2.RunSyncJobRequest(
            title=title or name, label="openeo", service=common_pb2.ServiceRef(endpoint=backend, application=udp_url),
            parameters_json=json.dumps(parameters or {}), format=format or "")
        chunks: list[bytes] = []
        content_type = ""
        try:
            for reply in self._tasks.RunSyncJob(request, timeout=timeout_s, metadata=self._metadata):
                content_type = content_type or reply.content_type
                chunks.append(reply.chunk)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return SyncResult(b"".join(chunks), content_type)

    def task(self, task_id: int) -> Task:
        """The task with this id (`NotFoundError` if there is none, or it is not yours)."""
        task = Task(self, None, task_id)
        task.refresh()
        return task

    def tasks(self, status: str | Sequence[str] | None = None, limit: int | None = 50) -> list[TaskInfo]:
        """Your tasks, newest first (without their jobs), optionally only those in the given statuses."""
        statuses = [status] if isinstance(status, str) else list(status or [])
        try:
            values = [task_status_value(s) for s in statuses]
        except ValueError as exc:
            raise UpscalingError(f"unknown task status in {statuses}", "INVALID_ARGUMENT") from exc
        found: list[TaskInfo] = []
        token = ""
        while limit is None or len(found) < limit:
            size = 500 if limit is None else min(500, limit - len(found))
            reply = self.call(self._tasks.ListTasks, upscaling_pb2.ListTasksRequest(
                page_size=size, page_token=token, statuses=values))
            found += [TaskInfo.from_proto(t) for t in reply.tasks]
            token = reply.next_page_token
            if not token:
                break
        return found

    def describe(self, udp_url: str, backend: str = "", label: str = "openeo") -> list[dict[str, Any]]:
        """The UDP's parameters (an OGC process's inputs with `label="ogc_api_process"`): name, type, optional,
        description, default, options."""
        reply = self.call(self._tasks.DescribeService, upscaling_pb2.DescribeServiceRequest(
            label=label, service=common_pb2.ServiceRef(endpoint=backend, application=udp_url)))
        return [{"name": p.name, "type": p.type, "optional": p.optional, "description": p.description,
                 "default": json.loads(p.default_json) if p.default_json else None,
                 "options": json.loads(p.options_json) if p.options_json else []} for p in reply.parameters]

    def _watch_stream(self, task_id: int, after: int) -> _WatchStream:
        return _WatchStream(self, task_id, after)


class _WatchStream:
    """One watch call, read as single events: `WatchTaskBatches` (several events per message), or `WatchTask`
    when the service answers UNIMPLEMENTED to it (remembered per client). `cancel()` ends the call."""

    def __init__(self, client: Client, task_id: int, after: int) -> None:
        self.client = client
        self.task_id = task_id
        self.after = after
        self.call: Any = None

    def __iter__(self) -> Iterator[upscaling_pb2.WatchTaskResponse]:
        client = self.client
        if client.watch_batches is not False:
            self.call = client._tasks.WatchTaskBatches(
                upscaling_pb2.WatchTaskBatchesRequest(task_id=self.task_id, after_sequence=self.after),
                metadata=client._metadata)
            received = False
            try:
                for batch in self.call:
                    received = client.watch_batches = True
                    yield from batch.events
                return
            except grpc.RpcError as exc:
                if received or exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                client.watch_batches = False  # an older service: WatchTask from now on
        self.call = client._tasks.WatchTask(
            upscaling_pb2.WatchTaskRequest(task_id=self.task_id, after_sequence=self.after), metadata=client._metadata)
        yield from self.call

    def cancel(self) -> None:
        if self.call is not None:
            self.call.cancel()


class Task:
    """One upscaling task. `info` is what the service last said about it (`refresh()` reads it again)."""

    def __init__(self, client: Client, info: TaskInfo | None, task_id: int | None = None) -> None:
        self.client = client
        self.id = info.id if info is not None else int(task_id or 0)
        self._info = info

    def __repr__(self) -> str:
        status = self._info.status if self._info else "?"
        return f"<Task {self.id} {status}>"

    @property
    def info(self) -> TaskInfo:
        if self._info is None:
            self.refresh()
        assert self._info is not None
        return self._info

    @property
    def status(self) -> str:
        return self.info.status

    def refresh(self) -> TaskInfo:
        """Read the task (with its jobs) from the service."""
        reply = self.client.call(self.client._tasks.GetTask, upscaling_pb2.GetTaskRequest(task_id=self.id))
        self._info = TaskInfo.from_proto(reply.task)
        return self._info

    def watch(self, after_sequence: int = 0, *, reconnect_s: float = 300.0) -> Generator[TaskEvent, None, None]:
        """The task's events: a snapshot (unless resuming after `after_sequence`), then one event per change,
        ending after the event that makes the task terminal. A dropped stream (the gateway restarted, the network
        failed) is resumed after the last sequence received, so no event is missed or repeated; after
        `reconnect_s` seconds without success an `UnavailableError` is raised."""
        last = after_sequence
        failing_since: float | None = None
        delay = 0.2
        while True:
            received = 0
            call = None
            try:
                call = self.client._watch_stream(self.id, last)
                for item in call:
                    event = TaskEvent.from_proto(item)
                    failing_since, delay = None, 0.2
                    received += 1
                    if event.kind == "snapshot":
                        self._info = event.task
                    elif event.sequence <= last:
                        continue
                    last = max(last, event.sequence)
                    yield event
                    if event.status in TERMINAL_TASK_STATUSES and event.kind in ("snapshot", "task"):
                        return
                # The stream ended without a terminal event (a server shutting down may close it cleanly):
                # resume; nothing more after `last` means the task had already ended.
                if received == 0 and self._ended():
                    return
            except grpc.RpcError as exc:
                if exc.code() not in RESUMABLE:
                    raise from_rpc_error(exc) from None
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > reconnect_s:
                    raise UnavailableError(f"watching task {self.id}: {exc.details()} (gave up after "
                                           f"{reconnect_s:.0f} s)", exc.code().name) from None
            finally:
                if call is not None:
                    call.cancel()  # also when the caller stops early (Ctrl-C, break): the stream ends now
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _ended(self) -> bool:
        try:
            return self.refresh().terminal
        except UnavailableError:
            return False

    def wait(self, progress: bool = True, *, on_event: Callable[[TaskEvent, TaskState], None] | None = None,
             console: Any = None) -> TaskInfo:
        """Follow the task until it is terminal; with `progress`, show a live progress bar (terminal or
        Jupyter). Returns the final task (with jobs)."""
        state = TaskState(self.id)
        display = None
        if progress:
            from upscaling_client.progress import ProgressDisplay

            display = ProgressDisplay(state, console=console)
            display.__enter__()
        try:
            for event in self.watch():
                state.apply(event)
                if display is not None:
                    display.update()
                if on_event is not None:
                    on_event(event, state)
        finally:
            if display is not None:
                display.__exit__(None, None, None)
        return self.refresh()

    def cancel(self) -> TaskInfo:
        """Cancel the task: jobs not yet submitted never are, running ones are stopped on the backend."""
        reply = self.client.call(self.client._tasks.CancelTask, upscaling_pb2.CancelTaskRequest(task_id=self.id))
        self._info = TaskInfo.from_proto(reply.task)
        return self._info

    def retry_failed(self) -> int:
        """Submit the failed jobs again; returns how many."""
        reply = self.client.call(self.client._tasks.RetryFailedJobs,
                                 upscaling_pb2.RetryFailedJobsRequest(task_id=self.id))
        self._info = TaskInfo.from_proto(reply.task)
        return int(reply.retried)

    def collection(self) -> dict[str, Any]:
        """The task's results as a STAC Collection (dict)."""
        reply = self.client.call(self.client._tasks.GetTaskResults,
                                 upscaling_pb2.GetTaskResultsRequest(task_id=self.id))
        return json.loads(reply.collection_json)

    def results(self) -> list[dict[str, Any]]:
        """The STAC Items of the finished jobs (one per tile, with its assets), as dicts."""
        reply = self.client.call(self.client._tasks.GetTaskResults,
                                 upscaling_pb2.GetTaskResultsRequest(task_id=self.id))
        return json.loads(reply.stac_json)["features"]

    def download(self, folder: str | Path, *, workers: int = 8) -> list[Path]:
        """Download every asset of the results to `folder/<item id>/<asset name>` with `workers` parallel
        connections. Files already complete are kept; partial ones are resumed; sizes (and checksums where
        the items give them) are verified. Returns the files."""
        return downloads.download_all(downloads.assets_of(self.results(), Path(folder)), workers=workers)

    def mosaic(self, out: str | Path, folder: str | Path | None = None, *, workers: int = 8) -> Path:
        """Download the results (into `folder`, default `<out stem>_tiles` beside `out`) and assemble them:
        `.tif` → a COG (and the VRT beside it), `.vrt` → a VRT only, `.geojson` / `.parquet` → one vector file."""
        from upscaling_client.mosaic import mosaic

        out = Path(out)
        folder = Path(folder) if folder is not None else out.with_name(f"{out.stem}_tiles")
        items = self.results()
        assets = downloads.assets_of(items, folder)
        paths = downloads.download_all(assets, workers=workers)
        return mosaic([(a.path.parent.name, p) for a, p in zip(assets, paths, strict=True)], out)

    def to_geodataframe(self) -> Any:
        """A GeoDataFrame of the tiles (needs geopandas): job id, status, backend job id, progress, message, the
        result hrefs, geometry (EPSG:4326)."""
        try:
            import geopandas
            from shapely.geometry import shape
        except ImportError as exc:
            raise ImportError("to_geodataframe needs geopandas: pip install 'upscaling-client[geo]'") from exc
        info = self.refresh()
        hrefs = {i["properties"]["upscaling:job_id"]: [a["href"] for a in i["assets"].values()]
                 for i in self.results()} if info.job_counts.get("finished") else {}
        rows = []
        for job in info.jobs:
            value = job.parameters.get(info.dimension)
            geometry = shape(value) if isinstance(value, dict) and "coordinates" in value else None
            rows.append({"job_id": job.id, "title": job.title, "status": job.status,
                         "backend_job_id": job.backend_job_id, "progress": job.progress, "message": job.message,
                         "href": (hrefs.get(job.id) or [None])[0], "hrefs": hrefs.get(job.id, []),
                         "geometry": geometry})
        return geopandas.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")


def _geojson_text(aoi: dict[str, Any] | str | Path) -> str:
    if isinstance(aoi, dict):
        return json.dumps(aoi)
    if isinstance(aoi, Path) or (isinstance(aoi, str) and not aoi.lstrip().startswith("{")):
        return Path(aoi).read_text()
    return aoi
