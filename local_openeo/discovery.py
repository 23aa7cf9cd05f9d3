"""Discovery and account handlers: well-known, capabilities, credentials, formats, processes,
collections, validation, and the UDP catalogue at ``/udp/``."""

from __future__ import annotations

import json

from aiohttp import web

from local_openeo import __version__
from local_openeo.backend import BACKEND, Backend, endpoint
from local_openeo.catalog import COLLECTIONS, FILE_FORMATS, PROCESSES
from local_openeo.config import API_PREFIX, API_VERSION
from local_openeo.errors import ApiError
from local_openeo.graph import analyze_process
from local_openeo.jsonio import json_response, read_json
from local_openeo.stac import STAC_VERSION


async def root(request: web.Request) -> web.Response:
    """Server root (outside the versioned base): where things are."""
    base = request.app[BACKEND].base_url(request)
    return json_response(
        {
            "title": "Local openEO backend (development, tests, benchmarks)",
            "api": f"{base}{API_PREFIX}/",
            "well_known": f"{base}/.well-known/openeo",
            "udp_catalogue": f"{base}/udp/",
        }
    )


@endpoint("well_known")
async def well_known(backend: Backend, request: web.Request) -> web.Response:
    url = f"{backend.base_url(request)}{API_PREFIX}/"
    return json_response({"versions": [{"url": url, "api_version": API_VERSION, "production": False}]})


@endpoint("capabilities")
async def capabilities(backend: Backend, request: web.Request) -> web.Response:
    base = backend.base_url(request)
    body = backend.capabilities_cache.get(base)
    if body is None:
        api = f"{base}{API_PREFIX}"
        document = {
            "api_version": API_VERSION,
            "backend_version": f"local-openeo {__version__}",
            "stac_version": STAC_VERSION,
            "type": "Catalog",
            "id": "local-openeo",
            "title": "Local openEO backend",
            "description": "openEO API subset for development and tests; results are synthetic.",
            "production": False,
            "endpoints": backend.endpoints,
            "billing": {
                "currency": "credits",
                "default_plan": "free",
                "plans": [{"name": "free", "description": "Local backend", "paid": False}],
            },
            "links": [
                {"rel": "self", "href": f"{api}/", "type": "application/json"},
                {"rel": "version-history", "href": f"{base}/.well-known/openeo", "type": "application/json"},
                {"rel": "data", "href": f"{api}/collections", "type": "application/json"},
                {"rel": "related", "href": f"{base}/udp/", "title": "UDP catalogue", "type": "application/json"},
            ],
        }
        body = backend.capabilities_cache[base] = json.dumps(document).encode()
    return web.Response(body=body, content_type="application/json")


@endpoint("credentials_basic")
async def credentials_basic(backend: Backend, request: web.Request) -> web.Response:
    return json_response({"access_token": backend.auth.issue_token(request.headers.get("Authorization"))})


@endpoint("credentials_oidc")
async def credentials_oidc(backend: Backend, request: web.Request) -> web.Response:
    return json_response({"providers": [backend.oidc.provider()] if backend.settings.oidc_issuer else []})


@endpoint("me")
async def me(backend: Backend, request: web.Request) -> web.Response:
    user = backend.user(request)
    return json_response({"user_id": user, "name": user, "links": []})


@endpoint("file_formats")
async def file_formats(backend: Backend, request: web.Request) -> web.Response:
    return json_response(FILE_FORMATS)


@endpoint("processes")
async def processes(backend: Backend, request: web.Request) -> web.Response:
    return json_response({"processes": PROCESSES, "links": []})


@endpoint("collections")
async def collections(backend: Backend, request: web.Request) -> web.Response:
    collection_id = request.match_info.get("collection_id")
    if collection_id is None:
        return json_response({"collections": COLLECTIONS, "links": []})
    for collection in COLLECTIONS:
        if collection["id"] == collection_id:
            return json_response(collection)
    raise ApiError(404, "CollectionNotFound", f"Collection '{collection_id}' does not exist.")


@endpoint("validation")
async def validation(backend: Backend, request: web.Request) -> web.Response:
    """The same checks as job creation, answered as a list of errors."""
    body = await read_json(request)
    try:
        await analyze_process(body, backend.resolver, request.host)
    except ApiError as exc:
        return json_response({"errors": [{"code": exc.code, "message": exc.message}]})
    return json_response({"errors": []})


@endpoint("udp_catalogue")
async def udp_listing(backend: Backend, request: web.Request) -> web.Response:
    base = backend.base_url(request)
    listing = []
    for name in backend.catalogue.names():
        try:
            document = json.loads(backend.catalogue.read_bytes(name) or b"{}")
        except ValueError:
            continue
        if isinstance(document, dict):
            url = f"{base}/udp/{name}.json"
            listing.append({"id": document.get("id", name), "summary": document.get("summary"), "url": url})
    return json_response({"processes": listing, "links": []})


@endpoint("udp_catalogue")
async def udp_document(backend: Backend, request: web.Request) -> web.Response:
    name = request.match_info["name"]
    raw = backend.catalogue.read_bytes(name)
    if raw is None:
        raise ApiError(404, "ProcessNotFound", f"No UDP '{name}' in the catalogue.")
    return web.Response(body=raw, content_type="application/json")
