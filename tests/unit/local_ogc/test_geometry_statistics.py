"""The local OGC server's `geometry-statistics` process: geodesic area, centroid, bounds, vertex count."""

from __future__ import annotations

import pytest

from local_ogc.geometry_statistics import statistics


def test_one_degree_square_at_the_equator() -> None:
    square = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}
    result = statistics(square, 2024)
    assert result["area_km2"] == pytest.approx(12308.8, rel=1e-3)  # 111.32 km x 110.57 km
    assert result["centroid"] == pytest.approx([0.5, 0.5]) and result["bounds"] == [0, 0, 1, 1]
    assert result["vertex_count"] == 5 and result["year"] == 2024


@pytest.mark.parametrize("geometry", [{"type": "Point", "coordinates": [1, 2]}, {"type": "Polygon"},
                                      {"type": "Polygon", "coordinates": []}])
def test_what_has_no_area_is_refused(geometry: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        statistics(geometry)
