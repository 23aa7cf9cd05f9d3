"""Upscale a UDP over an AOI with the Python client (`pip install ./client[geo]`): what `make run` demos.

    python examples/upscale_aoi.py --address localhost:50051 --aoi examples/aoi/belgium.geojson --grid 20x20km

Tiles the AOI (a GeoJSON file; default Belgium's outline, shipped beside this script), creates the task, follows
it with the `upscale` CLI's progress display until it ends, then downloads every tile's result and assembles them
into one Cloud-Optimised GeoTIFF (and a VRT).
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

DEFAULT_AOI = Path(__file__).resolve().parent / "aoi" / "belgium.geojson"


def read_aoi(path: Path) -> dict:
    """The GeoJSON of an AOI file (Polygon, MultiPolygon, Feature or FeatureCollection); exits on a bad file."""
    try:
        aoi = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot read the AOI {path}: {exc}") from None
    if not isinstance(aoi, dict):
        raise SystemExit(f"the AOI {path} is not a GeoJSON object")
    return aoi


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="localhost:50051", help="the gateway's gRPC address")
    parser.add_argument("--openeo", default="http://127.0.0.1:8081", help="openEO backend (the local one)")
    parser.add_argument("--aoi", type=Path, default=DEFAULT_AOI, help="AOI GeoJSON file (default: Belgium)")
    parser.add_argument("--grid", default="20x20km")
    parser.add_argument("--udp", default="wind_turbine_detection", help="UDP name in the backend's catalogue")
    parser.add_argument("--out", type=Path, default=Path("demo"), help="folder of the tiles and the mosaic")
    args = parser.parse_args(argv)

    console = Console(highlight=False)
    started = time.monotonic()
    name = args.aoi.stem
    with Client(args.address) as client:
        tiles = client.tiles(read_aoi(args.aoi), args.grid)
        zones = sorted({t.zone for t in tiles})
        console.print(f"{name}: {len(tiles)} tiles of {args.grid} in zones {', '.join(zones)}")
        task = client.submit(f"{args.openeo}/udp/{args.udp}.json", backend=f"{args.openeo}/openeo/1.2",
                             tiles=tiles, parameters={"year": 2024}, title=f"{args.udp} over {name}")
        console.print(f"task {task.id} created: {task.info.total} jobs")
        info = task.wait(progress=True, console=console)
        console.print(f"task {task.id} {info.status}: {counts_text(info.job_counts)}")
        if info.status != "finished":
            return 1
        mosaic = task.mosaic(args.out / f"{name}.tif")
        with rasterio.open(mosaic) as src:
            bounds = ", ".join(f"{v:.3f}" for v in src.bounds)
            console.print(f"mosaic {mosaic}: {src.width}x{src.height} px, {src.count} bands, bounds {bounds} "
                          f"(VRT: {mosaic.with_suffix('.vrt')})")
        console.print(f"Job finished with status {info.status}: {len(task.results())} tiles in "
                      f"{time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
