"""The Python client package (`client/`, `upscaling_client`) against a real stack: every method, resuming a
watch across a gateway restart, watching through a service without WatchTaskBatches, errors carrying the server's
message, STAC results, downloads and mosaics."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pystac
import pytest
import rasterio
import requests
from rich.console import Console
from shapely.geometry import shape
from upscaling_client import Client, InvalidArgumentError, NotFoundError, TaskEvent, UpscalingError
from upscaling_client.download import Asset, fetch

from tests import client_support
from tests.client_support import AOI, ClientStack, assert_mosaic_matches

pytestmark = pytest.mark.timeout(240)

client_stack = client_support.client_stack  # one stack per module


@pytest.fixture
def client(client_stack: ClientStack):
    client_stack.backend.reset()
    with Client(client_stack.grpc) as client:
        yield client


@pytest.fixture(scope="module")
def finished(client_stack: ClientStack):
    """One task over AOI run to its end (shared by the results tests)."""
    with Client(client_stack.grpc) as client:
        task = client.run(client_stack.udp, backend=client_stack.backend.endpoint, aoi=AOI, grid="5x5km",
                          parameters={"year": 2024}, progress=False)
        assert task.status == "finished", task.info
        yield task


def test_grids_and_tiles(client: Client) -> None:
    assert "20x20km" in client.grids()
    tiles = client.tiles(AOI, "5x5km")
    assert len(tiles) >= 4 and {t.zone for t in tiles} == {"31N", "32N"}
    assert all(t.id.startswith(t.zone) and t.epsg in (32631, 32632) for t in tiles)
    covered = shape(AOI).difference(shape({"type": "GeometryCollection", "geometries": tiles.geometries}))
    assert covered.area < 1e-9
    assert tiles.to_geojson()["features"][0]["properties"]["id"] == tiles[0].id


def test_errors_carry_the_server_message(client: Client, client_stack: ClientStack) -> None:
    with pytest.raises(InvalidArgumentError) as bad_grid:
        client.tiles(AOI, "7x3km")
    assert "7x3km" in bad_grid.value.message and bad_grid.value.code == "INVALID_ARGUMENT"
    with pytest.raises(NotFoundError) as missing:
        client.task(987654321)
    assert "987654321" in missing.value.message
    with pytest.raises(InvalidArgumentError) as bad_udp:
        client.submit(client_stack.backend.udp("no_such_udp"), backend=client_stack.backend.endpoint, aoi=AOI,
                      grid="5x5km")
    assert "no_such_udp" in bad_udp.value.message
    with pytest.raises(UpscalingError):
        client.tasks(status="sleeping")
    with pytest.raises(ValueError):
        client.submit(client_stack.udp, backend=client_stack.backend.endpoint)


def test_run_with_progress_then_list_and_show(client: Client, client_stack: ClientStack) -> None:
    console = Console(file=io.StringIO(), force_terminal=False, width=200)
    events: list[TaskEvent] = []
    task = client.submit(client_stack.udp, backend=client_stack.backend.endpoint, aoi=AOI, grid="5x5km",
                         parameters={"year": 2024}, title="client run")
    info = task.wait(progress=True, console=console, on_event=lambda e, s: events.append(e))
    assert info.status == "finished" and info.job_counts["finished"] == info.total == len(info.jobs) >= 4
    assert events[0].kind == "snapshot" and events[-1].kind == "task" and events[-1].status == "finished"
    printed = console.file.getvalue()
    assert f"task {task.id} finished: {info.total}/{info.total} jobs done" in printed, printed
    assert task.id in [t.id for t in client.tasks(limit=5)]
    assert task.id in [t.id for t in client.tasks(status="finished")]
    assert task.id not in [t.id for t in client.tasks(status=["running", "queued"])]
    again = client.task(task.id)
    assert again.info.title == "client run" and again.info.parameters["year"] in (2024, "2024")
    assert [p["name"] for p in client.describe(client_stack.udp, client_stack.backend.endpoint)]


def test_watch_resumes_after_the_gateway_restarts(client: Client, client_stack: ClientStack) -> None:
    client_stack.backend.configure(run_seconds=4.0)
    task = client.submit(client_stack.udp, backend=client_stack.backend.endpoint, aoi=AOI, grid="5x5km")
    events: list[TaskEvent] = []
    first = threading.Event()
    failure: list[BaseException] = []

    def follow() -> None:
        try:
            for event in task.watch():
                events.append(event)
                first.set()
        except BaseException as exc:
            failure.append(exc)
        first.set()

    watcher = threading.Thread(target=follow)
    watcher.start()
    assert first.wait(60)
    assert task.refresh().status != "finished"  # the restart happens while the task runs
    client_stack.restart_gateway()
    watcher.join(180)
    assert not watcher.is_alive() and not failure, failure
    assert events[0].kind == "snapshot"
    sequences = [e.sequence for e in events[1:]]
    assert sequences == list(range(events[0].sequence + 1, events[0].sequence + 1 + len(sequences))), sequences
    assert events[-1].kind == "task" and events[-1].status == "finished"
    assert task.refresh().status == "finished"


SERVICE = "upscaling.v1.UpscalingService"


@contextmanager
def older_gateway(target: str) -> Iterator[str]:
    """A gRPC server in front of the gateway that forwards every UpscalingService method except
    WatchTaskBatches, which it answers UNIMPLEMENTED, as a gateway from before WatchTaskBatches does."""
    channel = grpc.insecure_channel(target)

    class Forward(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
            method: str = details.method  # type: ignore[attr-defined]
            if not method.startswith(f"/{SERVICE}/") or method.endswith("/WatchTaskBatches"):
                return None
            if method.endswith("/WatchTask"):
                stream = channel.unary_stream(method)

                def watch(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
                    call = stream(request, metadata=_auth(context))
                    context.add_callback(call.cancel)
                    yield from call
                return grpc.unary_stream_rpc_method_handler(watch)
            unary = channel.unary_unary(method)
            return grpc.unary_unary_rpc_method_handler(
                lambda request, context: unary(request, metadata=_auth(context)))

    server = grpc.server(futures.ThreadPoolExecutor(8), handlers=[Forward()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)
        channel.close()


def _auth(context: grpc.ServicerContext) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in context.invocation_metadata() if k == "authorization"]


def test_watch_uses_batches_and_falls_back_to_watch_task_on_an_older_service(
        client: Client, client_stack: ClientStack) -> None:
    task = client.submit(client_stack.udp, backend=client_stack.backend.endpoint, aoi=AOI, grid="5x5km")
    assert client.watch_batches is None
    direct = list(task.watch())
    assert client.watch_batches is True  # WatchTaskBatches, the default
    with older_gateway(client_stack.grpc) as address, Client(address) as old:
        older = list(old.task(task.id).watch(after_sequence=0))
        assert old.watch_batches is False  # UNIMPLEMENTED: WatchTask, remembered for the next watch
        resumed = list(old.task(task.id).watch(after_sequence=2))
    with Client(client_stack.grpc, watch_batches=False) as plain:
        assert [e.sequence for e in plain.task(task.id).watch(after_sequence=2)] == [e.sequence for e in resumed]
        assert plain.watch_batches is False
    for events in (direct, older):
        assert events[0].kind == "snapshot" and events[-1].status == "finished"
    sequences = [e.sequence for e in direct[1:]]
    assert sequences == list(range(direct[0].sequence + 1, direct[0].sequence + 1 + len(sequences)))
    assert older[0].sequence == sequences[-1] and len(older) == 1  # the finished task: its final snapshot
    assert [e.sequence for e in resumed] == list(range(3, sequences[-1] + 1))


def test_cancel_and_retry_failed(client: Client, client_stack: ClientStack) -> None:
    client_stack.backend.configure(run_seconds=60)
    task = client.submit(client_stack.udp, backend=client_stack.backend.endpoint, aoi=AOI, grid="5x5km")
    assert task.cancel().status in ("canceled", "queued", "running", "created")
    assert task.wait(progress=False).status == "canceled"

    client_stack.backend.configure(run_seconds=0.3, job_error_fraction=1.0)
    task = client.submit(client_stack.udp, backend=client_stack.backend.endpoint, aoi=AOI, grid="5x5km")
    failed = task.wait(progress=False)
    assert failed.status == "failed" and failed.job_counts["failed"] == failed.total
    assert all(j.message for j in failed.jobs)
    client_stack.backend.configure(job_error_fraction=0)
    assert task.retry_failed() == failed.total
    assert task.wait(progress=False).status == "finished"
    with pytest.raises(UpscalingError):
        client.task(task.id + 10_000).retry_failed()


def test_results_are_one_valid_stac_collection(finished, client_stack: ClientStack) -> None:
    items = finished.results()
    assert len(items) == finished.info.total
    for item in items:
        pystac.Item.from_dict(item).validate()
        assert item["assets"]["openEO.tif"]["href"].startswith(client_stack.backend.url)
    grpc_collection = pystac.Collection.from_dict(finished.collection())
    grpc_collection.validate()
    # over HTTP: the Collection links every Item, each served by the gateway
    body = requests.get(f"{client_stack.http}/upscale_tasks/{finished.id}/results", timeout=30).json()
    collection = pystac.Collection.from_dict(body)
    collection.validate()
    linked = list(collection.get_items())
    assert sorted(i.id for i in linked) == sorted(i["id"] for i in items)
    for item in linked:
        item.validate()
    west, south, east, north = collection.extent.spatial.bboxes[0]
    assert all(west <= i["bbox"][0] and south <= i["bbox"][1] and i["bbox"][2] <= east and i["bbox"][3] <= north
               for i in items)
    listed = requests.get(f"{client_stack.http}/upscale_tasks/{finished.id}/results/items", timeout=30).json()
    assert listed["numberMatched"] == len(items)
    assert requests.get(f"{client_stack.http}/upscale_tasks/{finished.id}/results/items/1", timeout=30
                        ).status_code == 404


def test_download_parallel_resumable_verified(finished, tmp_path: Path) -> None:
    files = finished.download(tmp_path / "tiles", workers=4)
    assert len(files) == finished.info.total
    sizes = {f: f.stat().st_size for f in files}
    for path in files:
        with rasterio.open(path) as src:
            assert src.count == 3
    # complete files are kept, a partial one is resumed from where it stopped
    victim = files[0]
    content = victim.read_bytes()
    victim.unlink()
    victim.with_name(victim.name + ".part").write_bytes(content[: len(content) // 2])
    stamps = {f: f.stat().st_mtime_ns for f in files[1:]}
    again = finished.download(tmp_path / "tiles", workers=4)
    assert {f: f.stat().st_size for f in again} == sizes and victim.read_bytes() == content
    assert {f: f.stat().st_mtime_ns for f in files[1:]} == stamps
    # a size the item promises but the server does not deliver is refused
    href = finished.results()[0]["assets"]["openEO.tif"]["href"]
    with pytest.raises(UpscalingError, match="bytes"):
        import httpx

        with httpx.Client() as http:
            fetch(http, Asset(href, tmp_path / "wrong.tif", size=len(content) + 1))
    assert not (tmp_path / "wrong.tif").exists()


def test_mosaic_covers_every_tile_with_its_pixels(finished, tmp_path: Path) -> None:
    out = finished.mosaic(tmp_path / "region.tif", tmp_path / "tiles")
    order = [i["id"] for i in finished.results()]
    tiles = sorted((tmp_path / "tiles").glob("job-*/openEO.tif"), key=lambda p: order.index(p.parent.name))
    assert len(tiles) == finished.info.total
    with rasterio.open(out) as cog:
        assert cog.driver == "GTiff" and cog.profile.get("tiled") and cog.count == 3
    for path in (out, out.with_suffix(".vrt")):
        assert assert_mosaic_matches(path, tiles) > 100


def test_vector_mosaic_and_geodataframe(client: Client, client_stack: ClientStack, finished, tmp_path: Path) -> None:
    frame = finished.to_geodataframe()
    assert len(frame) == finished.info.total and set(frame["status"]) == {"finished"}
    assert frame["href"].str.startswith(client_stack.backend.url).all() and frame.crs.to_epsg() == 4326
    task = client.run(client_stack.udp, backend=client_stack.backend.endpoint, aoi=AOI, grid="5x5km",
                      format="geojson", progress=False)
    merged = json.loads(task.mosaic(tmp_path / "points.geojson").read_text())
    items = {i["id"] for i in task.results()}
    assert merged["features"] and {f["properties"]["item"] for f in merged["features"]} == items
    import geopandas

    parquet = geopandas.read_parquet(task.mosaic(tmp_path / "points.parquet", tmp_path / "points_tiles"))
    assert len(parquet) == len(merged["features"])
