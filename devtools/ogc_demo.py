"""The demo's OGC API - Processes part (`make run`): a small task with `label: ogc_api_process` on the local OGC
server (`local_ogc`, process `geometry-statistics`) over a few tiles of the demo AOI, through the gateway's HTTP
API, printing each tile's statistics."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from upscaling.backends import OGC_API_PROCESS

PROCESS = "geometry-statistics"
TILES = 4


def ogc_endpoint(backends_json: str | None) -> str | None:
    """The endpoint of the first `ogc_api_process` backend of an OPENEO_BACKENDS value, if any."""
    try:
        entries = json.loads(backends_json or "[]")
    except ValueError:
        return None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("platform") == OGC_API_PROCESS:
            return str(entry.get("endpoint") or "") or None
    return None


def _call(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())


def run(http: str, endpoint: str, aoi: Path, grid: str = "20x20km", limit_s: float = 180.0) -> int:
    """Run the OGC task; 0 when it finished with every job's statistics, 1 otherwise."""
    document = json.loads(aoi.read_text())
    tiles = _call("POST", f"{http}/tiles", {"aoi": document, "grid": grid})["geometries"][:TILES]
    task = _call("POST", f"{http}/upscale_tasks", {
        "title": "OGC demo: geometry statistics", "label": OGC_API_PROCESS,
        "service": {"endpoint": endpoint, "application": f"{endpoint}/processes/{PROCESS}"},
        "parameters": {"year": 2024}, "dimension": {"name": "geometry", "values": tiles}})
    print(f"\nOGC demo: task {task['id']} runs {PROCESS} on {endpoint} over {len(tiles)} tiles", flush=True)
    deadline = time.monotonic() + limit_s
    while True:
        body = _call("GET", f"{http}/upscale_tasks/{task['id']}")
        if body["status"] in ("finished", "failed", "canceled"):
            break
        if time.monotonic() > deadline:
            print(f"OGC demo: task {task['id']} still {body['status']} after {limit_s:g} s", flush=True)
            return 1
        time.sleep(0.5)
    finished = 0
    for job in body["jobs"]:
        if job["status"] != "finished":
            print(f"  job {job['id']}: {job['status']}", flush=True)
            continue
        stats = _call("GET", f"{http}/unit_jobs/{job['id']}/results").get("upscaling:outputs", {}).get("statistics")
        if stats:
            finished += 1
            print(f"  job {job['id']}: {stats['area_km2']:.1f} km², centroid {stats['centroid'][0]:.3f}, "
                  f"{stats['centroid'][1]:.3f}, {stats['vertex_count']} vertices", flush=True)
    print(f"OGC demo: task {task['id']} {body['status']} ({finished} of {len(tiles)} jobs with statistics)",
          flush=True)
    return 0 if body["status"] == "finished" and finished == len(tiles) else 1
