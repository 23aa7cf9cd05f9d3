"""Reading an OGC API - Processes process description into the parameter list (`/params`, validation), and the
process URL of a task's application."""

from __future__ import annotations

import pytest

from gateway.tasks import ogc_process_url
from gateway.udp import UdpError, coerce_value, describe, parse_ogc_process, validate_arguments
from local_ogc.geometry_statistics import PROCESS_METADATA
from upscaling.backends import parse_backend
from upscaling.errors import InvalidArgument

BACKEND = parse_backend({"endpoint": "https://ogc.example.org/api", "url": "http://ogc.internal:5000/api",
                         "platform": "ogc_api_process"})
POLYGON = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}


def test_the_process_inputs_become_parameters() -> None:
    udp = parse_ogc_process("u", PROCESS_METADATA)
    assert udp.id == "geometry-statistics"
    params = {p["name"]: p for p in describe(udp)}
    assert params["geometry"]["type"] == "polygon" and not params["geometry"]["optional"]
    assert params["year"] == {**params["year"], "type": "integer", "optional": True, "default": 2024}
    assert validate_arguments(udp, {"geometry": POLYGON, "year": "2023"}) == {"geometry": POLYGON, "year": 2023}
    with pytest.raises(InvalidArgument, match="missing required parameter 'geometry'"):
        validate_arguments(udp, {"year": 2023})
    with pytest.raises(ValueError, match="GeoJSON"):
        coerce_value(udp.by_name["geometry"], {"type": "Nowhere"})


def test_alternatives_and_references_are_flattened() -> None:
    udp = parse_ogc_process("u", {"id": "p", "inputs": {
        "aoi": {"schema": {"oneOf": [{"$ref": "https://schemas.opengis.net/ogcapi/geometryGeoJSON.yaml"},
                                     {"type": "string"}]}},
        "n": {"schema": {"type": "number"}, "minOccurs": 0}}})
    assert udp.by_name["aoi"].is_geojson and udp.by_name["aoi"].required
    assert not udp.by_name["n"].required


@pytest.mark.parametrize("document", [[], {"inputs": {}}, {"id": "p", "inputs": []}, {"id": "p", "inputs": {"a": 1}}])
def test_what_is_not_a_process_description_is_refused(document: object) -> None:
    with pytest.raises(UdpError):
        parse_ogc_process("u", document)


def test_the_process_url_of_an_application() -> None:
    assert ogc_process_url(BACKEND, "geometry-statistics") == "http://ogc.internal:5000/api/processes/geometry-statistics"
    assert ogc_process_url(BACKEND, "https://OGC.example.org/api/processes/p1") == \
        "http://ogc.internal:5000/api/processes/p1"
    for wrong in ("https://elsewhere.org/api/processes/p1", "https://ogc.example.org/api/processes/p1/execution",
                  "https://ogc.example.org/api/processes/p1?f=html", "https://ogc.example.org/api/processes/#x",
                  "a/b", " "):
        with pytest.raises(InvalidArgument):
            ogc_process_url(BACKEND, wrong)
