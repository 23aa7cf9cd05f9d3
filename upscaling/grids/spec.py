"""Grid names: ``"NxNkm"`` for an integer N in 1..1000, e.g. ``"20x20km"``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import GridError

__all__ = ["MAX_GRID_KM", "STANDARD_GRIDS", "Grid", "parse_grid"]

STANDARD_GRIDS: tuple[str, ...] = (
    "5x5km",
    "10x10km",
    "20x20km",
    "25x25km",
    "50x50km",
    "100x100km",
    "250x250km",
)
MAX_GRID_KM = 1000
_GRID_RE = re.compile(r"([0-9]+)x([0-9]+)km")


@dataclass(frozen=True)
class Grid:
    """A square grid of ``size_km`` x ``size_km`` kilometre cells; ``name`` is its canonical name."""

    size_km: int
    name: str

    def __post_init__(self) -> None:
        if (
            isinstance(self.size_km, bool)
            or not isinstance(self.size_km, int)
            or not 1 <= self.size_km <= MAX_GRID_KM
        ):
            raise GridError(
                f"grid size must be an integer number of km in 1..{MAX_GRID_KM}, got {self.size_km!r}"
            )
        if self.name != f"{self.size_km}x{self.size_km}km":
            raise GridError(f"grid name {self.name!r} does not match size {self.size_km} km")

    @property
    def size_m(self) -> float:
        """Cell size in metres."""
        return self.size_km * 1000.0


def parse_grid(name: str) -> Grid:
    """Parse a grid name like ``"20x20km"`` (NxN km, integer N in 1..1000, both numbers equal)."""
    if not isinstance(name, str):
        raise GridError(f"grid name must be a string like '20x20km', got {type(name).__name__}")
    m = _GRID_RE.fullmatch(name)
    if m is None:
        raise GridError(
            f"unknown grid {name!r}: expected 'NxNkm' with an integer N in 1..{MAX_GRID_KM}, "
            f"e.g. one of {', '.join(STANDARD_GRIDS)}"
        )
    a, b = m.group(1), m.group(2)
    if a != b:
        raise GridError(f"invalid grid {name!r}: cells must be square (NxNkm with both numbers equal)")
    if len(a) > 1 and a.startswith("0"):
        raise GridError(f"invalid grid {name!r}: write the size without leading zeros, e.g. '20x20km'")
    size = int(a)
    if not 1 <= size <= MAX_GRID_KM:
        raise GridError(f"invalid grid {name!r}: the cell size must be between 1 and {MAX_GRID_KM} km")
    return Grid(size_km=size, name=f"{size}x{size}km")
