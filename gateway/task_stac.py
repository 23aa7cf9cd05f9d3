"""A task's results as one STAC product: a Collection of the task with one Item per finished job.

Items and the Collection are STAC 1.1.0 core (no extension is declared, so they validate without fetching a
schema); the backend's asset fields (`proj:*`, `eo:bands`, ...) are passed through as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from shapely.geometry import box, mapping, shape

from upscaling.db import Row

STAC_VERSION = "1.1.0"
WHOLE_WORLD = [-180.0, -90.0, 180.0, 90.0]


def item_id(job_id: int) -> str:
    return f"job-{job_id}"


def _geometry(value: Any, results: Mapping[str, Any]) -> dict[str, Any] | None:
    """The job's footprint: its dimension value when that is a GeoJSON geometry, else the results' geometry or
    spatial extent."""
    for candidate in (value, results.get("geometry")):
        if isinstance(candidate, dict) and "coordinates" in candidate:
            try:
                geometry = shape(candidate)
            except (ValueError, TypeError, AttributeError):
                continue
            if not geometry.is_empty:
                return mapping(geometry)
    bbox = results.get("bbox") or ((results.get("extent") or {}).get("spatial") or {}).get("bbox", [None])[0]
    if isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox):
        return mapping(box(*bbox))
    return None


def _interval(results: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(start, end) of the results' temporal extent, when the backend gave one."""
    try:
        start, end = results["extent"]["temporal"]["interval"][0]
    except (KeyError, IndexError, TypeError, ValueError):
        return None, None
    return (start if isinstance(start, str) else None), (end if isinstance(end, str) else None)


def _iso(value: datetime | None) -> str:
    return (value or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")


def _assets(results: Mapping[str, Any]) -> dict[str, Any]:
    assets = results.get("assets")
    if not isinstance(assets, dict):
        return {}
    return {name: dict(asset) for name, asset in assets.items() if isinstance(asset, dict) and asset.get("href")}


def results_url(base_url: str, task_id: int) -> str:
    """`GET /upscale_tasks/{id}/results` under the HTTP API's root."""
    return f"{base_url.rstrip('/')}/upscale_tasks/{task_id}/results"


def job_item(task: Row, job: Row, base_url: str | None = None) -> dict[str, Any]:
    """The STAC Item of one finished job: its footprint, time, assets and where it came from; with `base_url`
    (the HTTP API's root) it links itself and its Collection."""
    results = job["results"] or {}
    dimension = task["dimension_name"]
    value = (job["parameters"] or {}).get(dimension)
    geometry = _geometry(value, results)
    start, end = _interval(results)
    properties: dict[str, Any] = {"title": job["title"]}
    if start and end:
        properties.update(datetime=None, start_datetime=start, end_datetime=end)
    else:
        properties["datetime"] = _iso(job.get("updated"))
    properties.update({
        "upscaling:task_id": task["id"], "upscaling:job_id": job["id"],
        "upscaling:backend_job_id": job["backend_job_id"], "upscaling:backend": job.get("backend"),
        "upscaling:dimension": {"name": dimension, "value": value},
    })
    item: dict[str, Any] = {
        "type": "Feature", "stac_version": STAC_VERSION, "id": item_id(job["id"]), "geometry": geometry,
        "properties": properties, "assets": _assets(results), "links": [],
    }
    if base_url:
        root = results_url(base_url, task["id"])
        item["collection"] = collection_id(task["id"])
        item["links"] = [{"rel": "self", "href": f"{root}/items/{job['id']}", "type": "application/geo+json"},
                         *({"rel": rel, "href": root, "type": "application/json"}
                           for rel in ("collection", "parent", "root"))]
    if geometry is not None:
        item["bbox"] = list(shape(geometry).bounds)
    return item


def task_items(task: Row, jobs: Sequence[Row], base_url: str | None = None) -> list[dict[str, Any]]:
    """One Item per finished job with results, in job order."""
    return [job_item(task, job, base_url) for job in jobs if job["status"] == "finished" and job["results"]]


def collection_id(task_id: int) -> str:
    return f"task-{task_id}"


def item_collection(task: Row, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A STAC ItemCollection (GeoJSON FeatureCollection) of the items, with the task's id and status."""
    return {"type": "FeatureCollection", "task_id": task["id"], "status": task["status"],
            "numberMatched": len(items), "numberReturned": len(items), "features": list(items), "links": []}


def task_collection(task: Row, items: Sequence[dict[str, Any]], base_url: str | None = None) -> dict[str, Any]:
    """The STAC Collection of the task. With `base_url` (the HTTP API's root), it links itself, its items
    endpoint and every Item by absolute URL; without, the Items travel beside it (gRPC)."""
    bboxes = [i["bbox"] for i in items if i.get("bbox")]
    bbox = ([min(b[0] for b in bboxes), min(b[1] for b in bboxes), max(b[2] for b in bboxes),
             max(b[3] for b in bboxes)] if bboxes else WHOLE_WORLD)
    starts = [i["properties"].get("start_datetime") or i["properties"]["datetime"] for i in items]
    ends = [i["properties"].get("end_datetime") or i["properties"]["datetime"] for i in items]
    interval = [min(starts), max(ends)] if items else [_iso(task["created"]), None]
    links: list[dict[str, Any]] = []
    if base_url:
        root = results_url(base_url, task["id"])
        links = [{"rel": "self", "href": root, "type": "application/json"},
                 {"rel": "root", "href": root, "type": "application/json"},
                 {"rel": "items", "href": f"{root}/items", "type": "application/geo+json"},
                 *({"rel": "item", "href": f"{root}/items/{i['properties']['upscaling:job_id']}",
                    "type": "application/geo+json", "title": i["properties"]["title"]} for i in items)]
    return {
        "type": "Collection", "stac_version": STAC_VERSION, "id": collection_id(task["id"]),
        "title": task["title"],
        "description": f"Results of upscaling task {task['id']} ({task['title']}): one item per finished job.",
        "license": "other",
        "extent": {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [interval]}},
        "links": links,
        "upscaling:task_id": task["id"], "upscaling:status": task["status"], "upscaling:items": len(items),
    }
