"""Client side of `make compose-test`, run on the host against the published ports of the compose stack.

    flow.py notebook --http 127.0.0.1:8000 --openeo http://local-openeo:8081   # the seed notebook, verbatim
    flow.py grpc --grpc 127.0.0.1:50051 --openeo http://local-openeo:8081      # CreateTask + WatchTask

`--openeo` is the local openEO backend as the services in the compose network see it (the gateway fetches the
UDP from there); result assets carry its public URL, reachable from the host. Exits non-zero on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.notebook import code_cells, replace_assignments  # noqa: E402

# A small AOI (the seed notebook's), split in two for the gRPC task.
WEST, SOUTH, EAST, NORTH = 14.3707, 47.2658, 14.4057, 47.2756


def _box(west: float, south: float, east: float, north: float) -> dict:
    return {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north], [west, north],
                                                [west, south]]]}


def run_notebook(http: str, openeo: str, timeout_s: float) -> int:
    """Run every code cell of the seed notebook with only the gateway and backend URLs replaced."""
    from IPython.core.interactiveshell import InteractiveShell

    cells = [replace_assignments(cell, {
        "dispatch_api": http,
        "endpoint": f"{openeo}/openeo/1.2",
        "application": f"{openeo}/udp/wind_turbine_detection.json",
    }) for cell in code_cells()]
    shell = InteractiveShell.instance()
    # The notebook calls `websocket.close()` without await (verbatim, so only its warning is silenced).
    warnings.filterwarnings("ignore", message="coroutine 'Connection.close' was never awaited")
    started = time.monotonic()
    out = io.StringIO()
    for cell in cells:
        with contextlib.redirect_stdout(out):
            result = shell.run_cell(cell)
        if not result.success:
            print(out.getvalue()[-3000:])
            print(f"cell failed: {result.error_before_exec or result.error_in_exec}\n{cell}", file=sys.stderr)
            return 1
        if time.monotonic() - started > timeout_s:
            print(f"notebook took longer than {timeout_s} s", file=sys.stderr)
            return 1
    text = out.getvalue()
    ns = shell.user_ns
    overlays = [layer for layer in ns["m"].layers if type(layer).__name__ == "ImageOverlay"]
    lines = [line for line in text.splitlines() if line.startswith(("Processing", "Job finished"))]
    print("   notebook: " + " | ".join(lines) + f" | task {ns['upscaling_task_id']}, "
          f"{len(ns['processed_jobs'])} job result(s), {len(overlays)} COG overlay(s)")
    ok = "Job finished with status finished" in text and overlays and len(overlays) == len(ns["processed_jobs"])
    return 0 if ok else 1


def run_grpc(address: str, openeo: str, timeout_s: float) -> int:
    """Create a two-tile task over gRPC and follow WatchTask until the task is finished."""
    import grpc

    from upscaling.v1 import common_pb2, upscaling_pb2, upscaling_pb2_grpc

    mid = (WEST + EAST) / 2
    tiles = [_box(WEST, SOUTH, mid, NORTH), _box(mid, SOUTH, EAST, NORTH)]
    started = time.monotonic()
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
        created = stub.CreateTask(upscaling_pb2.CreateTaskRequest(
            title="compose-test over gRPC", label="openeo",
            service=common_pb2.ServiceRef(endpoint=f"{openeo}/openeo/1.2",
                                          application=f"{openeo}/udp/wind_turbine_detection.json"),
            parameters_json=json.dumps({"year": 2024}),
            dimension=upscaling_pb2.Dimension(name="spatial_extent", values_json=[json.dumps(t) for t in tiles]),
        ), timeout=60).task
        events = 0
        status = created.status
        for update in stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=created.id), timeout=timeout_s):
            events += 1
            kind = update.WhichOneof("update")
            if kind == "snapshot":
                status = update.snapshot.status
            elif kind == "task_event":
                status = update.task_event.status
            if status in (common_pb2.TASK_STATUS_FINISHED, common_pb2.TASK_STATUS_FAILED,
                          common_pb2.TASK_STATUS_CANCELED):
                break
        name = common_pb2.TaskStatus.Name(status)
        print(f"   gRPC: task {created.id} ({len(tiles)} jobs) {name} after {events} WatchTask messages "
              f"in {time.monotonic() - started:.1f} s")
    return 0 if status == common_pb2.TASK_STATUS_FINISHED else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="flow", required=True)
    notebook = sub.add_parser("notebook")
    notebook.add_argument("--http", default="127.0.0.1:8000")
    watch = sub.add_parser("grpc")
    watch.add_argument("--grpc", default="127.0.0.1:50051")
    for p in (notebook, watch):
        p.add_argument("--openeo", default="http://local-openeo:8081")
        p.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    if args.flow == "notebook":
        return run_notebook(args.http, args.openeo, args.timeout)
    return run_grpc(args.grpc, args.openeo, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
