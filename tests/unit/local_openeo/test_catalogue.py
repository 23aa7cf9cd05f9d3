"""The local backend's own UDP catalogue (local_openeo/catalogue): well-formed process definitions with the ids and
parameters of the APEx services the seed notebook and the tests use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local_openeo.config import DEFAULT_UDP_DIR
from local_openeo.errors import ApiError
from local_openeo.udp import Udp, UdpCatalogue

BBOX = {"west": 14.37, "south": 47.26, "east": 14.41, "north": 47.28}
POLYGON = {"type": "Polygon", "coordinates": [[[14.37, 47.26], [14.41, 47.26], [14.41, 47.28], [14.37, 47.26]]]}
# id -> (spatial parameter, its subtype, the other required parameters, returns a vector cube)
EXPECTED = {
    "wind_turbine_detection": ("spatial_extent", "bounding-box", set(), True),
    "max_ndvi": ("bbox", "bounding-box", {"temporal_extent"}, False),
    "eurac_pv_farm_detection": ("spatial_extent", "bounding-box", set(), False),
    "variabilitymap": ("spatial_extent", "geojson", {"temporal_extent"}, False),
    "cropsar2d": ("geometry", "geojson", {"startdate", "enddate"}, False),
}


def _udp(name: str) -> Udp:
    return Udp.from_document(json.loads((DEFAULT_UDP_DIR / f"{name}.json").read_text()), f"http://x/udp/{name}.json")


def test_the_catalogue_is_inside_the_repository() -> None:
    root = Path(__file__).resolve().parents[3]
    assert DEFAULT_UDP_DIR == root / "local_openeo" / "catalogue"
    assert UdpCatalogue(DEFAULT_UDP_DIR).names() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_udp_is_a_well_formed_process(name: str) -> None:
    document = json.loads((DEFAULT_UDP_DIR / f"{name}.json").read_text())
    assert document["id"] == name and document["summary"] and document["description"]
    graph = document["process_graph"]
    assert sum(bool(node.get("result")) for node in graph.values()) == 1
    declared = {p["name"] for p in document["parameters"]}
    used = {v["from_parameter"] for node in graph.values() for v in _references(node)}
    assert used <= declared, used - declared
    spatial, subtype, required, vector = EXPECTED[name]
    udp = _udp(name)
    assert udp.parameters[spatial].spatial and udp.returns_vector is vector
    assert subtype in json.dumps(udp.parameters[spatial].schemas)
    assert {p.name for p in udp.parameters.values() if p.required} == ({spatial} | required) - (
        {spatial} if udp.parameters[spatial].has_default else set())


def _references(value: object) -> list[dict]:
    if isinstance(value, dict):
        found = [value] if "from_parameter" in value else []
        # a callback's own parameters (`data` of a reducer) are not the UDP's
        return found + [r for k, v in value.items() if k != "process_graph" for r in _references(v)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


def test_the_seed_notebooks_arguments_are_accepted() -> None:
    wind = _udp("wind_turbine_detection")
    wind.check_arguments({"spatial_extent": BBOX, "year": 2024})  # the notebook sends the year as an integer
    wind.check_arguments({"spatial_extent": BBOX})  # year has a default
    for bad in ({"spatial_extent": POLYGON}, {"year": "2024"}, {"spatial_extent": BBOX, "colour": "red"}):
        with pytest.raises(ApiError):
            wind.check_arguments(bad)


def test_geometry_parameters_take_geojson_not_bounding_boxes() -> None:
    cropsar = _udp("cropsar2d")
    cropsar.check_arguments({"geometry": POLYGON, "startdate": "2024-01-01", "enddate": "2024-02-01"})
    with pytest.raises(ApiError):
        cropsar.check_arguments({"geometry": BBOX, "startdate": "2024-01-01", "enddate": "2024-02-01"})
    with pytest.raises(ApiError):
        cropsar.check_arguments({"geometry": POLYGON, "startdate": "2024-01-01", "enddate": "2024-02-01",
                                 "output": "LAI"})
