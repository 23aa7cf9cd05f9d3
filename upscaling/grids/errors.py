"""Exceptions raised by the grid library."""

from __future__ import annotations

__all__ = ["AoiError", "GridError", "TooManyTilesError"]


class AoiError(ValueError):
    """The area of interest is unusable; the message says exactly what is wrong with it."""


class GridError(ValueError):
    """Unknown or invalid grid name."""


class TooManyTilesError(Exception):
    """Tiling the AOI would produce more tiles than allowed.

    Attributes:
        estimated: the estimated (or, when raised after tiling, the actual) number of tiles.
        cap: the limit that was exceeded.
    """

    def __init__(
        self, estimated: int, cap: int, grid_name: str = "this grid", *, exact: bool = False
    ) -> None:
        self.estimated = int(estimated)
        self.cap = int(cap)
        self.grid_name = grid_name
        what = "" if exact else "about "
        super().__init__(
            f"AOI would produce {what}{self.estimated} tiles at {grid_name}, "
            f"more than the limit of {self.cap}"
        )
