"""Upscale a UDP over a real AOI through the gateway, the way the seed notebook does it.

    python examples/upscale_aoi.py --gateway localhost:8000 --country Belgium --grid 20x20km

Tiles the AOI (`POST /tiles`), creates the upscaling task (`POST /upscale_tasks`), follows it over the
WebSocket (`/ws/upscale_tasks/{id}`) until it is finished, then opens every finished tile's `openEO.tif` with
rasterio. Exits non-zero unless the task finished.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter

import numpy as np
import rasterio
import requests
import websockets

from upscaling.shared_data import countries_file

COUNTRIES = countries_file()


def country_geometry(name: str) -> dict:
    """The geometry of a country of the Natural Earth file."""
    for feature in json.loads(COUNTRIES.read_text())["features"]:
        if feature["properties"].get("name") == name:
            return feature["geometry"]
    raise SystemExit(f"no country named {name!r} in {COUNTRIES}")


async def follow(gateway: str, task_id: int) -> dict:
    """Print the task's progress from the WebSocket until it reaches a terminal status; return the last body."""
    async with websockets.connect(f"ws://{gateway}/ws/upscale_tasks/{task_id}?interval=1") as ws:
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "error":
                raise SystemExit(f"task {task_id}: {message['message']}")
            body = message.get("data")
            if not body:
                continue
            counts = Counter(job["status"] for job in body["jobs"])
            print(f"  task {task_id}: {body['status']:<9} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
                  flush=True)
            if body["status"] in ("finished", "canceled", "failed"):
                return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", default="localhost:8000")
    parser.add_argument("--openeo", default="http://127.0.0.1:8081", help="openEO backend (the local one)")
    parser.add_argument("--country", default="Belgium")
    parser.add_argument("--grid", default="20x20km")
    parser.add_argument("--udp", default="wind_turbine_detection", help="UDP name in the backend's catalogue")
    args = parser.parse_args(argv)

    started = time.monotonic()
    aoi = country_geometry(args.country)
    tiles = requests.post(f"http://{args.gateway}/tiles", json={"grid": args.grid, "aoi": aoi}, timeout=120)
    tiles.raise_for_status()
    geometries = tiles.json()["geometries"]
    print(f"{args.country}: {len(geometries)} tiles of {args.grid}")
    task = requests.post(f"http://{args.gateway}/upscale_tasks", json={
        "title": f"{args.udp} over {args.country}",
        "label": "openeo",
        "service": {"endpoint": f"{args.openeo}/openeo/1.2", "application": f"{args.openeo}/udp/{args.udp}.json"},
        "parameters": {"year": 2024},
        "dimension": {"name": "spatial_extent", "values": geometries},
    }, timeout=120)
    if task.status_code != 201:
        raise SystemExit(f"POST /upscale_tasks answered {task.status_code}: {task.text}")
    task_id = task.json()["id"]
    print(f"task {task_id} created")
    body = asyncio.run(follow(args.gateway, task_id))
    opened = 0
    for job in body["jobs"]:
        if job["status"] != "finished":
            continue
        stac = requests.get(f"http://{args.gateway}/unit_jobs/{job['id']}/results", timeout=30).json()
        with rasterio.open(stac["assets"]["openEO.tif"]["href"]) as src:
            band = src.read(1).astype(np.float32)
            assert band.max() > band.min()
        opened += 1
    print(f"Job finished with status {body['status']}: {opened} tile rasters opened "
          f"in {time.monotonic() - started:.1f} s")
    return 0 if body["status"] == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
