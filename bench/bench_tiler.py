"""Benchmark: our vectorised tiler vs the obvious cell-by-cell loop, at 20x20km.

Run: ``python bench/bench_tiler.py`` (from the repository root; ``--runs N`` for best-of-N, default 10).

AOIs, from shared/data/countries_naturalearth_110m.geojson:

1. Germany, its outline segmentised (in lon/lat) to ~17,000 vertices.
2. Europe: all eight countries of that file (Austria, Belgium, France, Germany, Italy, Netherlands,
   Poland, Spain: a contiguous block of mainland western/central Europe with Corsica, Sardinia and
   Sicily) with France's non-European part (French Guiana) dropped (only parts north of 30°N), every
   outline segmentised with the same spacing as the Germany case (~0.002°), as one MultiPolygon
   (``parse_aoi`` dissolves the shared borders: about 86,000 vertices).

Our time: best of N runs of ``tile_aoi(parsed_aoi, grid)`` (everything: zone split, projection, cell
classification, clipping, back-projection to lon/lat, Tile objects).

Naive time: the obvious implementation in the same process: cut the AOI at the UTM zone borders and the
equator (``shapely.intersection``), densify and project each zone part, build every cell of the part's
projected bounding grid and call ``part.intersection(cell)`` one cell at a time, unprepared, in projected
coordinates, keeping non-empty results. It does no back-projection, so it is a lower bound of a real
naive tiler. If a full naive run is projected to take more than 3 minutes, it is timed on a
deterministic sample instead (every k-th cell of each part's bounding grid, in row-major order) and
extrapolated to all cells; the output says so.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import MultiPolygon, shape

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.shared_data import countries_file  # noqa: E402
from upscaling.grids import parse_aoi, parse_grid, tile_aoi  # noqa: E402

COUNTRIES = countries_file()
NAIVE_BUDGET_S = 180.0


def _countries() -> dict:
    if COUNTRIES.exists():
        return {
            f["properties"]["name"]: shape(f["geometry"]) for f in json.loads(COUNTRIES.read_text())["features"]
        }
    raise SystemExit(f"countries file not found: {COUNTRIES}")


def _spacing(countries: dict) -> float:
    """Vertex spacing (degrees) that gives the Germany outline ~17,000 vertices."""
    return countries["Germany"].exterior.length / 17_000


def germany_aoi(countries: dict) -> dict:
    return shapely.geometry.mapping(shapely.segmentize(countries["Germany"], _spacing(countries)))


def europe_aoi(countries: dict) -> dict:
    parts = []
    for name in sorted(countries):
        for p in shapely.get_parts(countries[name]):
            if p.bounds[1] > 30.0:  # drops French Guiana
                parts.append(shapely.segmentize(p, _spacing(countries)))
    return shapely.geometry.mapping(MultiPolygon(parts))


# ----------------------------------------------------------------------------------------- naive loop


def _naive_parts(geom, size_m: float):
    """Zone parts of the AOI, densified and projected, with their bounding grid ranges."""
    out = []
    xmin, _, xmax, _ = geom.bounds
    for zone in range(int((xmin + 180) // 6) + 1, int((xmax + 180) // 6) + 2):
        west = -180 + 6 * (zone - 1)
        for north in (True, False):
            box = shapely.box(west, 0, west + 6, 84) if north else shapely.box(west, -80, west + 6, 0)
            part = geom.intersection(box)
            if part.is_empty or part.area == 0:
                continue
            tr = Transformer.from_crs(4326, (32600 if north else 32700) + zone, always_xy=True)
            def project(c: np.ndarray, tr: Transformer = tr) -> np.ndarray:
                return np.column_stack(tr.transform(c[:, 0], c[:, 1]))

            part = shapely.transform(shapely.segmentize(part, 0.01), project)
            px0, py0, px1, py1 = part.bounds
            cols = range(math.floor(px0 / size_m), math.floor(px1 / size_m) + 1)
            rows = range(math.floor(py0 / size_m), math.floor(py1 / size_m) + 1)
            out.append((part, cols, rows))
    return out


def naive_tiles(geom, size_m: float, every: int = 1) -> tuple[int, int, int]:
    """The naive loop; returns (non-empty tiles found, cells intersected, cells in all bounding grids)."""
    found = done = total = 0
    for part, cols, rows in _naive_parts(geom, size_m):
        k = 0
        for c in cols:
            for r in rows:
                total += 1
                k += 1
                if (k - 1) % every:
                    continue
                cell = shapely.box(c * size_m, r * size_m, (c + 1) * size_m, (r + 1) * size_m)
                piece = part.intersection(cell)
                done += 1
                if not piece.is_empty and piece.area > 0:
                    found += 1
    return found, done, total


def time_naive(geom, size_m: float) -> tuple[float, int, str]:
    """(seconds for all cells, tiles found, note)."""
    t0 = time.perf_counter()
    _, probe_done, total = naive_tiles(geom, size_m, every=max(1, 50))
    probe = time.perf_counter() - t0
    projected = probe / max(probe_done, 1) * total
    if projected <= NAIVE_BUDGET_S:
        t0 = time.perf_counter()
        found, _, _ = naive_tiles(geom, size_m)
        return time.perf_counter() - t0, found, "full run"
    every = max(1, math.ceil(projected / 60.0 * 1.0))
    t0 = time.perf_counter()
    found, done, total = naive_tiles(geom, size_m, every=every)
    elapsed = time.perf_counter() - t0
    return elapsed / done * total, -1, f"EXTRAPOLATED from every {every}th cell ({done} of {total} cells)"


def best_of(fn: Callable[[], list[Any]], runs: int) -> tuple[float, list[Any]]:
    best, result = math.inf, []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="best of N runs of our tiler")
    ap.add_argument("--grid", default="20x20km")
    args = ap.parse_args()
    grid = parse_grid(args.grid)
    countries = _countries()
    rows = []
    for name, raw in (
        ("Germany (~17k vertices)", germany_aoi(countries)),
        ("Europe (8 countries)", europe_aoi(countries)),
    ):
        aoi = parse_aoi(raw)
        nverts = int(shapely.get_num_coordinates(aoi.geometry))
        tile_aoi(aoi, grid)  # warm-up (transformer caches)
        ours, tiles = best_of(functools.partial(tile_aoi, aoi, grid), args.runs)
        naive, found, note = time_naive(aoi.geometry, grid.size_m)
        rows.append((name, nverts, len(tiles), found, ours, naive, note))
        print(
            f"{name}: {len(tiles)} tiles, ours {ours * 1000:.1f} ms, naive {naive:.2f} s ({note})", flush=True
        )
    print()
    print(
        f"Tiling at {grid.name} (ours: best of {args.runs}; naive: cell-by-cell intersection, same process)"
    )
    head = (
        f"{'AOI':26s} {'vertices':>8s} {'tiles':>7s} {'naive tiles':>11s} {'ours [ms]':>10s} "
        f"{'naive [s]':>10s} {'speed-up':>9s}"
    )
    print(head)
    print("-" * len(head))
    for name, nverts, ntiles, found, ours, naive, note in rows:
        shown = str(found) if found >= 0 else "n/a"
        flag = "" if note == "full run" else "  *"
        print(
            f"{name:26s} {nverts:8d} {ntiles:7d} {shown:>11s} {ours * 1000:10.1f} {naive:10.2f} "
            f"{naive / ours:8.0f}x{flag}"
        )
    if any(r[6] != "full run" for r in rows):
        print("* naive time extrapolated from a deterministic sample of cells (see above)")
    ok = all(r[5] / r[4] >= 50 for r in rows)
    print(f"target >= 50x: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
