"""Static backend metadata: file formats, predefined processes and collections."""

from __future__ import annotations

_RASTER = {"gis_data_types": ["raster"], "parameters": {}}
_VECTOR = {"gis_data_types": ["vector"], "parameters": {}}

FILE_FORMATS = {
    "input": {
        "GTiff": {"title": "GeoTiff", **_RASTER},
        "GeoJSON": {"title": "GeoJSON", **_VECTOR},
    },
    "output": {
        "GTiff": {"title": "GeoTiff (cloud-optimized)", **_RASTER},
        "GeoJSON": {"title": "GeoJSON", **_VECTOR},
        "netCDF": {"title": "Network Common Data Form", **_RASTER},
        "JSON": {"title": "JavaScript Object Notation", "gis_data_types": ["raster", "vector"], "parameters": {}},
    },
}

_DATA = {"type": "object", "subtype": "datacube"}
_ANY: dict = {}


def _param(name: str, description: str, schema: dict | list, optional: bool = False, **extra) -> dict:
    param = {"name": name, "description": description, "schema": schema, **extra}
    if optional:
        param["optional"] = True
    return param


def _process(pid: str, summary: str, parameters: list[dict], returns: dict, categories: list[str]) -> dict:
    return {
        "id": pid,
        "summary": summary,
        "description": f"{summary}. (Local openEO backend: processes are not evaluated, results are synthetic.)",
        "categories": categories,
        "parameters": parameters,
        "returns": {"description": "The result.", "schema": returns},
    }


_BBOX = {"type": "object", "subtype": "bounding-box", "required": ["west", "south", "east", "north"]}
_GEOJSON = {"type": "object", "subtype": "geojson"}
_INTERVAL = {"type": "array", "subtype": "temporal-interval", "minItems": 2, "maxItems": 2}

PROCESSES = [
    _process(
        "load_collection",
        "Load a collection",
        [
            _param("id", "The collection id.", {"type": "string", "subtype": "collection-id"}),
            _param("spatial_extent", "Spatial extent.", [_BBOX, _GEOJSON, {"type": "null"}]),
            _param("temporal_extent", "Temporal extent.", [_INTERVAL, {"type": "null"}]),
            _param("bands", "Bands to load.", [{"type": "array"}, {"type": "null"}], optional=True, default=None),
            _param("properties", "Metadata filters.", [{"type": "object"}, {"type": "null"}], optional=True),
        ],
        _DATA,
        ["cubes", "import"],
    ),
    _process(
        "save_result",
        "Save processed data",
        [
            _param("data", "The data to deliver.", _DATA),
            _param("format", "The file format (see /file_formats).", {"type": "string", "subtype": "output-format"}),
            _param("options", "Format options.", {"type": "object"}, optional=True, default={}),
        ],
        {"type": "boolean"},
        ["cubes", "export"],
    ),
    _process(
        "filter_bbox",
        "Spatial filter using a bounding box",
        [_param("data", "A data cube.", _DATA), _param("extent", "A bounding box.", _BBOX)],
        _DATA,
        ["cubes", "filter"],
    ),
    _process(
        "filter_temporal",
        "Temporal filter based on temporal intervals",
        [_param("data", "A data cube.", _DATA), _param("extent", "Temporal extent.", _INTERVAL)],
        _DATA,
        ["cubes", "filter"],
    ),
    _process(
        "reduce_dimension",
        "Reduce dimensions",
        [
            _param("data", "A data cube.", _DATA),
            _param("reducer", "A reducer.", {"type": "object", "subtype": "process-graph"}),
            _param("dimension", "The dimension.", {"type": "string"}),
        ],
        _DATA,
        ["cubes", "reducer"],
    ),
    _process(
        "ndvi",
        "Normalized Difference Vegetation Index",
        [_param("data", "A raster data cube.", _DATA)],
        _DATA,
        ["math > indices", "vegetation indices"],
    ),
    _process(
        "run_udf",
        "Run a UDF",
        [
            _param("data", "The data.", _ANY),
            _param("udf", "The UDF code.", {"type": "string"}),
            _param("runtime", "The UDF runtime.", {"type": "string"}),
        ],
        _ANY,
        ["cubes", "udf"],
    ),
]

COLLECTIONS = [
    {
        "stac_version": "1.0.0",
        "type": "Collection",
        "id": "SENTINEL2_L2A",
        "title": "Sentinel-2 L2A (synthetic)",
        "description": "Placeholder collection of the local openEO backend; results are synthetic.",
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [["2015-07-06T00:00:00Z", None]]},
        },
        "cube:dimensions": {
            "x": {"type": "spatial", "axis": "x", "extent": [-180, 180], "reference_system": 4326},
            "y": {"type": "spatial", "axis": "y", "extent": [-90, 90], "reference_system": 4326},
            "t": {"type": "temporal", "extent": ["2015-07-06T00:00:00Z", None]},
            "bands": {"type": "bands", "values": ["B02", "B03", "B04", "B08", "SCL"]},
        },
        "summaries": {"eo:bands": [{"name": b} for b in ("B02", "B03", "B04", "B08", "SCL")]},
        "links": [],
    }
]
