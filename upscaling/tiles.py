"""Conversions between grid tiles and their protobuf / GeoJSON forms."""

from __future__ import annotations

import json
from typing import Any

from upscaling.grids import Tile
from upscaling.v1 import common_pb2, tiler_pb2


def _bbox(values: tuple[float, float, float, float]) -> common_pb2.BoundingBox:
    west, south, east, north = values
    return common_pb2.BoundingBox(west=west, south=south, east=east, north=north)


def tile_to_proto(tile: Tile) -> tiler_pb2.Tile:
    """A grid tile as a protobuf message (geometry as compact GeoJSON text)."""
    return tiler_pb2.Tile(
        id=tile.id,
        zone=tile.zone,
        col=tile.col,
        row=tile.row,
        geometry_geojson=json.dumps(tile.to_geojson_geometry(), separators=(",", ":")),
        cell_bbox=_bbox(tile.cell_bbox),
        epsg=tile.epsg,
        projected_bounds=_bbox(tile.projected_bounds),
    )


def bbox_list(box: common_pb2.BoundingBox) -> list[float]:
    """[west, south, east, north] of a BoundingBox message."""
    return [box.west, box.south, box.east, box.north]


def tile_geometry(tile: tiler_pb2.Tile) -> dict[str, Any]:
    """The GeoJSON geometry of a tile message."""
    geometry: dict[str, Any] = json.loads(tile.geometry_geojson)
    return geometry


def tile_feature(tile: tiler_pb2.Tile, grid: str) -> dict[str, Any]:
    """A tile message as a GeoJSON Feature with its id, zone, cell and projection in the properties."""
    return {
        "type": "Feature",
        "id": tile.id,
        "geometry": tile_geometry(tile),
        "bbox": bbox_list(tile.cell_bbox),
        "properties": {
            "id": tile.id,
            "grid": grid,
            "zone": tile.zone,
            "col": tile.col,
            "row": tile.row,
            "epsg": tile.epsg,
            "projected_bounds": bbox_list(tile.projected_bounds),
            "cell_bbox": bbox_list(tile.cell_bbox),
        },
    }
