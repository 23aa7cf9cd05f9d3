"""Pure rules of synchronous jobs and `/params`: the AOI's area, the answer to each backend failure, the size and
time limits of reading a result, APEx's parameter types and options."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from gateway.sync_jobs import SyncLimits, _backend_failure, aoi_area_km2, load_sync_limits
from gateway.udp import Udp, describe, parse_udp
from upscaling.backends import BackendConfig
from upscaling.errors import InvalidArgument
from upscaling.openeo_backend import connection, sync
from upscaling.openeo_backend import errors as backend_errors
from upscaling.openeo_backend.jobs import JobSpec

CATALOGUE = Path(__file__).resolve().parents[3] / "local_openeo" / "catalogue"
DEGREE = {"type": "Polygon", "coordinates": [[[14, 47], [15, 47], [15, 48], [14, 48], [14, 47]]]}


def udp(name: str) -> Udp:
    return parse_udp(f"https://example.org/{name}.json", json.loads((CATALOGUE / f"{name}.json").read_text()))


# ---- the AOI's area -----------------------------------------------------------------------------------------


def test_area_of_bounding_boxes_and_geojson() -> None:
    wind = udp("wind_turbine_detection")
    box = aoi_area_km2(wind, {"spatial_extent": {"west": 14, "south": 47, "east": 15, "north": 48}})
    assert box is not None and 8350 < box < 8400  # 1° x 1° at 47.5° N
    utm = aoi_area_km2(wind, {"spatial_extent": {"west": 500000, "south": 5200000, "east": 510000, "north": 5210000,
                                                 "crs": 32633}})
    assert utm is not None and 99 < utm < 102  # 10 km x 10 km (its WGS84 bounds a little more)
    cropsar = udp("cropsar2d")
    assert aoi_area_km2(cropsar, {"geometry": DEGREE}) == pytest.approx(box)
    feature = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": DEGREE, "properties": {}}] * 2}
    assert aoi_area_km2(cropsar, {"geometry": feature}) == pytest.approx(2 * box)
    assert aoi_area_km2(cropsar, {"geometry": {"type": "Point", "coordinates": [14, 47]}}) == 0


def test_area_uses_defaults_and_ignores_non_spatial_calls() -> None:
    base = {"id": "p", "parameters": [{"name": "bbox", "schema": {"type": "object", "subtype": "bounding-box"},
                                       "default": {"west": 0, "south": 0, "east": 1, "north": 1}},
                                      {"name": "n", "schema": {"type": "integer"}}]}
    process = parse_udp("https://example.org/p.json", base)
    area = aoi_area_km2(process, {"n": 1})
    assert area is not None and 12300 < area < 12400
    assert aoi_area_km2(parse_udp("u", {"id": "q", "parameters": [{"name": "n", "schema": {"type": "integer"}}]}),
                        {"n": 1}) is None


def test_area_of_an_unknown_crs_is_a_clear_error() -> None:
    with pytest.raises(InvalidArgument, match=r"spatial_extent.*cannot compute the area"):
        aoi_area_km2(udp("wind_turbine_detection"),
                     {"spatial_extent": {"west": 0, "south": 0, "east": 1, "north": 1, "crs": "EPSG:999999"}})


def test_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SYNC_MAX_AREA_KM2", "SYNC_MAX_BYTES", "SYNC_TIMEOUT_S", "SYNC_MAX_PER_USER", "SYNC_MAX_RUNNING"):
        monkeypatch.delenv(name, raising=False)
    assert load_sync_limits() == SyncLimits(2500.0, 32 * 1024 * 1024, 300.0, 2, 16)
    monkeypatch.setenv("SYNC_MAX_AREA_KM2", "100.5")
    monkeypatch.setenv("SYNC_MAX_PER_USER", "0")
    assert load_sync_limits().max_area_km2 == 100.5 and load_sync_limits().max_per_user == 0
    for name, value in (("SYNC_MAX_RUNNING", "0"), ("SYNC_MAX_BYTES", "0"), ("SYNC_MAX_AREA_KM2", "-1"),
                        ("SYNC_TIMEOUT_S", "soon")):
        with monkeypatch.context() as env:
            env.setenv(name, value)
            with pytest.raises(ValueError, match=name):
                load_sync_limits()


# ---- backend failures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("error", "http", "code", "rpc"), [
    (backend_errors.BackendPermanentError("ProcessGraphInvalid: bad", code="ProcessGraphInvalid", http_status=400),
     422, "BACKEND_REJECTED", grpc.StatusCode.INVALID_ARGUMENT),
    (backend_errors.BackendTransientError("Internal: boom", code="Internal", http_status=500),
     502, "BACKEND_ERROR", grpc.StatusCode.UNAVAILABLE),
    (backend_errors.BackendAuthError("TokenInvalid: no", code="TokenInvalid", http_status=403),
     502, "BACKEND_AUTH_FAILED", grpc.StatusCode.UNAVAILABLE),
    (backend_errors.BackendLimitError("TooManyRequests: wait", code="TooManyRequests", http_status=429),
     429, "BACKEND_BUSY", grpc.StatusCode.RESOURCE_EXHAUSTED),
    (backend_errors.BackendTimeoutError("read timed out"), 504, "BACKEND_TIMEOUT", grpc.StatusCode.DEADLINE_EXCEEDED),
    (sync.ResultTooLarge(100, 150), 413, "RESULT_TOO_LARGE", grpc.StatusCode.RESOURCE_EXHAUSTED),
])
def test_backend_failures(error: backend_errors.BackendError, http: int, code: str, rpc: grpc.StatusCode) -> None:
    answer = _backend_failure(error, "https://openeo.example.org")
    assert (answer.http_status, answer.error_code, answer.grpc_code) == (http, code, rpc)
    assert "https://openeo.example.org" in answer.message
    quoted = "is 150 bytes; run it as a batch job" if isinstance(error, sync.ResultTooLarge) else str(error)
    assert quoted in answer.message


# ---- reading a result ---------------------------------------------------------------------------------------


class Answer:
    """A streamed `POST /result` answer."""

    def __init__(self, chunks: list[bytes], headers: dict[str, str], pause_s: float = 0.0) -> None:
        self.chunks = chunks
        self.headers = headers
        self.pause_s = pause_s
        self.closed = False

    def iter_content(self, size: int) -> Iterator[bytes]:
        for chunk in self.chunks:
            time.sleep(self.pause_s)
            yield chunk

    def close(self) -> None:
        self.closed = True


def run(monkeypatch: pytest.MonkeyPatch, answer: Answer, max_bytes: int, timeout_s: float = 10) -> Any:
    """`sync.compute_result` over a stand-in connection answering `answer`; returns (result, request body)."""
    sent: dict[str, Any] = {}

    class Cube:
        def __init__(self, graph: dict[str, Any]) -> None:
            self.graph = graph

        def save_result(self, format: str) -> Cube:
            return Cube({**self.graph, "save": {"process_id": "save_result", "arguments": {"format": format}}})

        def flat_graph(self) -> dict[str, Any]:
            return self.graph

    def post(path: str, json: Any, **options: Any) -> Answer:
        sent.update(path=path, json=json, **options)
        return answer

    conn = SimpleNamespace(
        datacube_from_process=lambda pid, namespace, **args: Cube({"udp": {"process_id": pid, "namespace": namespace,
                                                                           "arguments": args}}),
        post=post)
    monkeypatch.setattr(connection, "call", lambda backend, timeout, operation, account=None: operation(conn))
    spec = JobSpec(process_id="p", namespace="https://example.org/p.json", arguments={"x": 1}, title="t",
                   description="", format="geojson")
    return sync.compute_result(BackendConfig("https://b", "https://b"), timeout_s, spec, max_bytes), sent


def test_result_is_read_whole_with_its_media_type(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = Answer([b"ab", b"cd"], {"Content-Type": "application/geo+json", "Content-Length": "4"})
    result, sent = run(monkeypatch, answer, 4)
    assert result == sync.SyncResult(b"abcd", "application/geo+json") and answer.closed
    graph = sent["json"]["process"]["process_graph"]
    assert graph["save"]["arguments"]["format"] == "GeoJSON" and graph["udp"]["arguments"] == {"x": 1}
    assert sent["path"] == "/result" and sent["stream"] is True and sent["expected_status"] == 200


def test_result_over_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    declared = Answer([b"x" * 10], {"Content-Length": "10"})
    with pytest.raises(sync.ResultTooLarge) as caught:
        run(monkeypatch, declared, 9)
    assert caught.value.size == 10 and declared.closed
    streamed = Answer([b"x" * 6, b"x" * 6, b"x" * 6], {})  # no Content-Length: cut off while reading
    with pytest.raises(sync.ResultTooLarge) as caught:
        run(monkeypatch, streamed, 9)
    assert caught.value.size is None and "more than 9 bytes" in str(caught.value) and streamed.closed


def test_result_trickling_past_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    slow = Answer([b"x"] * 20, {}, pause_s=0.05)
    with pytest.raises(backend_errors.BackendTimeoutError, match=r"longer than 0\.3 s"):
        run(monkeypatch, slow, 100, timeout_s=0.3)
    assert slow.closed


# ---- /params ------------------------------------------------------------------------------------------------


def test_params_types_and_options() -> None:
    document = {"id": "p", "parameters": [
        {"name": "mode", "schema": {"type": "string", "enum": ["a", "b"]}, "default": "a"},
        {"name": "geometry", "schema": {"type": "object", "subtype": "geojson"}},
        {"name": "when", "schema": {"type": "string", "subtype": "date-time"}, "optional": True},
        {"name": "ratio", "schema": {"type": "number"}},
        {"name": "bands", "schema": {"type": "array", "items": {"type": "string"}}},
        {"name": "flag", "schema": [{"type": "boolean"}, {"type": "null"}]},
    ]}
    answered = {p["name"]: p for p in describe(parse_udp("u", document))}
    assert {name: p["type"] for name, p in answered.items()} == {
        "mode": "string", "geometry": "polygon", "when": "datetime", "ratio": "double", "bands": "array-string",
        "flag": "boolean"}
    assert answered["mode"]["options"] == ["a", "b"] and answered["mode"]["optional"]
    assert all(p["options"] == [] for name, p in answered.items() if name != "mode")
    assert not answered["geometry"]["optional"] and answered["when"]["optional"]
