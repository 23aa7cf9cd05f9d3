"""Pure logic of the Python client: folding watch events, the progress summary, parameters of the CLI,
checksums, and raster mosaics of tiles in different CRSs and resolutions (synthetic GeoTIFFs)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_bounds
from rich.console import Console
from upscaling_client.cli import _parameters, task_exit
from upscaling_client.download import _verify_checksum
from upscaling_client.errors import DownloadError, MosaicError
from upscaling_client.models import JobInfo, TaskEvent, TaskInfo
from upscaling_client.mosaic import mosaic
from upscaling_client.progress import ProgressDisplay, format_duration, summary_line
from upscaling_client.state import TaskState

from tests.client_support import assert_mosaic_matches


def info(statuses: list[str], status: str = "running") -> TaskInfo:
    counts = {s: statuses.count(s) for s in ("created", "queued", "running", "finished", "canceled", "failed",
                                             "unknown")}
    jobs = tuple(JobInfo(i + 1, f"job {i + 1}", s, {}) for i, s in enumerate(statuses))
    return TaskInfo(7, "t", status, "e", "a", {}, "gtiff", "spatial_extent", counts, jobs)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_state_folds_snapshot_and_events_with_rate_and_eta() -> None:
    clock = Clock()
    state = TaskState(7, clock)
    state.apply(TaskEvent(10, "snapshot", "running", task=info(["queued"] * 4)))
    assert state.counts["queued"] == 4 and state.total == 4 and state.done == 0 and state.eta_s is None
    clock.now = 10
    state.apply(TaskEvent(11, "job", "finished", job_id=1))
    state.apply(TaskEvent(12, "job", "failed", job_id=2))
    state.apply(TaskEvent(12, "job", "finished", job_id=3))  # a repeated sequence changes nothing
    assert state.counts["finished"] == 1 and state.counts["failed"] == 1 and state.done == 2
    assert state.rate == pytest.approx(0.2) and state.eta_s == pytest.approx(10)
    clock.now = 20
    state.apply(TaskEvent(13, "job", "finished", job_id=3))
    state.apply(TaskEvent(14, "job", "finished", job_id=4))
    state.apply(TaskEvent(15, "task", "finished", job_counts={"finished": 3, "failed": 1}))
    assert state.status == "finished" and state.terminal and state.sequence == 15 and state.eta_s == 0
    assert summary_line(state) == "task 7 finished: 4/4 jobs done (finished 3 · failed 1), 0.20 jobs/s, ETA 0:00"


def test_progress_display_draws_in_a_terminal_and_prints_lines_elsewhere() -> None:
    for terminal in (True, False):
        state = TaskState(3)
        console = Console(file=io.StringIO(), force_terminal=terminal, width=150)
        with ProgressDisplay(state, console=console) as display:
            state.apply(TaskEvent(1, "snapshot", "running", task=info(["running", "finished"])))
            display.update()
            state.apply(TaskEvent(2, "job", "finished", job_id=1))
            display.update()
        text = console.file.getvalue()
        assert "task 3" in text and ("2/2" in text)
    assert format_duration(75) == "1:15" and format_duration(3725) == "1:02:05" and format_duration(None) == "?"


def test_cli_parameters_and_exit_codes() -> None:
    assert _parameters(["year=2024", "name=x", "bbox={\"west\": 1}", "flag=true"]) == {
        "year": 2024, "name": "x", "bbox": {"west": 1}, "flag": True}
    assert task_exit(info(["finished", "finished"], "finished")) == 0
    assert task_exit(info(["finished", "failed"], "finished")) == 3
    assert task_exit(info(["failed"], "failed")) == 4
    assert task_exit(info(["canceled"], "canceled")) == 5


def test_checksum_is_a_multihash(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"tile")
    good = "1220" + hashlib.sha256(b"tile").hexdigest()
    _verify_checksum(path, good)
    with pytest.raises(DownloadError, match="checksum"):
        _verify_checksum(path, "1220" + hashlib.sha256(b"other").hexdigest())


def write_tile(path: Path, crs: str, bounds: tuple[float, float, float, float], size: int, value: int) -> Path:
    data = np.arange(size * size, dtype=np.uint16).reshape(1, size, size) + value
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint16", crs=crs,
                       transform=from_bounds(*bounds, size, size)) as dst:
        dst.write(data)
    return path


def test_raster_mosaic_of_tiles_with_different_resolutions_and_crs(tmp_path: Path) -> None:
    a = write_tile(tmp_path / "t" / "a" / "x.tif", "EPSG:4326", (5.0, 50.0, 5.1, 50.1), 20, 0)
    b = write_tile(tmp_path / "t" / "b" / "x.tif", "EPSG:4326", (5.1, 50.0, 5.2, 50.1), 40, 1000)
    c = write_tile(tmp_path / "t" / "c" / "x.tif", "EPSG:32631", (700000, 5540000, 705000, 5545000), 10, 5000)
    out = mosaic([("a", a), ("b", b), ("c", c)], tmp_path / "m.tif")
    warped = tmp_path / "_warped" / "c_x.tif"
    assert assert_mosaic_matches(out, [a, b, warped], step=1) > 400
    with rasterio.open(out) as m, rasterio.open(a) as ta:
        assert m.crs.to_epsg() == 4326 and m.res == ta.res  # the median resolution of the three
        assert (m.read(1) >= 5000).any()  # the UTM tile was warped in
    assert (tmp_path / "m.vrt").exists()
    with pytest.raises(MosaicError):
        mosaic([("a", a)], tmp_path / "m.png")
