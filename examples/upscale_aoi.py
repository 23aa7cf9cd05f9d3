"""Upscale a UDP over a country with the Python client (`pip install ./client[geo]`): what `make run` demos.

    python examples/upscale_aoi.py --address localhost:50051 --country Belgium --grid 20x20km --out demo

Tiles the country's outline, creates the task, follows it with the `upscale` CLI's progress display until it
ends, then downloads every tile's result and assembles them into one Cloud-Optimised GeoTIFF (and a VRT).
Exits non-zero unless the task finished.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import rasterio
from rich.console import Console
from upscaling_client import Client
from upscaling_client.progress import counts_text

from upscaling.shared_data import countries_file


def country_geometry(name: str) -> dict:
    """The geometry of a country of the Natural Earth file."""
    for feature in json.loads(countries_file().read_text())["features"]:
        if feature["properties"].get("name") == name:
            return feature["geometry"]
    raise SystemExit(f"no country named {name!r} in {countries_file()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="localhost:50051", help="the gateway's gRPC address")
    parser.add_argument("--openeo", default="http://127.0.0.1:8081", help="openEO backend (the local one)")
    parser.add_argument("--country", default="Belgium")
    parser.add_argument("--grid", default="20x20km")
    parser.add_argument("--udp", default="wind_turbine_detection", help="UDP name in the backend's catalogue")
    parser.add_argument("--out", type=Path, default=Path("demo"), help="folder of the tiles and the mosaic")
    args = parser.parse_args(argv)

    console = Console(highlight=False)
    started = time.monotonic()
    with Client(args.address) as client:
        tiles = client.tiles(country_geometry(args.country), args.grid)
        zones = sorted({t.zone for t in tiles})
        console.print(f"{args.country}: {len(tiles)} tiles of {args.grid} in zones {', '.join(zones)}")
        task = client.submit(f"{args.openeo}/udp/{args.udp}.json", backend=f"{args.openeo}/openeo/1.2",
                             tiles=tiles, parameters={"year": 2024}, title=f"{args.udp} over {args.country}")
        console.print(f"task {task.id} created: {task.info.total} jobs")
        info = task.wait(progress=True, console=console)
        console.print(f"task {task.id} {info.status}: {counts_text(info.job_counts)}")
        if info.status != "finished":
            return 1
        mosaic = task.mosaic(args.out / f"{args.country.lower().replace(' ', '_')}.tif")
        with rasterio.open(mosaic) as src:
            bounds = ", ".join(f"{v:.3f}" for v in src.bounds)
            console.print(f"mosaic {mosaic}: {src.width}x{src.height} px, {src.count} bands, bounds {bounds} "
                          f"(VRT: {mosaic.with_suffix('.vrt')})")
        console.print(f"Job finished with status {info.status}: {len(task.results())} tiles in "
                      f"{time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
