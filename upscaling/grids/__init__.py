"""Fixed global NxN km grids (UTM/UPS) and fast AOI tiling for the upscaling service.

Public API: ``parse_grid``/``Grid``/``STANDARD_GRIDS``, ``parse_aoi``/``ParsedAoi``, ``estimate_tile_count``,
``tile_aoi``/``Tile`` and the errors ``AoiError``, ``GridError``, ``TooManyTilesError``.

* A tile is a real N x N km cell of a fixed global grid: UTM zone (6°, north/south of the equator, no
  Norway/Svalbard exceptions) between 80°S and 84°N, UPS (cell step N x 0.994 km, the pole a grid corner)
  beyond; cells are aligned on multiples of N km of the zone's easting/northing. See ``zones``.
* Tile ids ``<zone>-<col>-<row>``, e.g. ``32N-0032-0264`` or ``UPSN-0101-0100``: see ``tiling``.
* Input parsing, antimeridian/pole handling and repairs: see ``aoi``; the cheap count estimate and the cap:
  ``estimate``; densification of cell edges and the way back to lon/lat: ``cells``.

Modules: ``errors``, ``spec`` (grid names), ``aoi``, ``zones``, ``estimate``, ``cells``, ``tiling``.
"""

from .aoi import ParsedAoi, parse_aoi
from .cells import EDGE_TOL_M, cell_polygon
from .errors import AoiError, GridError, TooManyTilesError
from .estimate import estimate_tile_count
from .spec import STANDARD_GRIDS, Grid, parse_grid
from .tiling import DENSIFY_DEG, Tile, geojson_geometry, tile_aoi
from .zones import UPS_SCALE

__all__ = [
    "DENSIFY_DEG",
    "EDGE_TOL_M",
    "STANDARD_GRIDS",
    "UPS_SCALE",
    "AoiError",
    "Grid",
    "GridError",
    "ParsedAoi",
    "Tile",
    "TooManyTilesError",
    "cell_polygon",
    "estimate_tile_count",
    "geojson_geometry",
    "parse_aoi",
    "parse_grid",
    "tile_aoi",
]
