"""Pure logic of the map page: which paths are open, which asset is previewed, the colour ramp, the cache."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from gateway.auth_http import OPEN_PATHS
from gateway.web import preview
from gateway.web.preview import RAMP, Preview, PreviewCache, colorize, raster_href
from gateway.web.routes import PageOpenPaths
from upscaling.errors import FailedPrecondition


@pytest.mark.parametrize(("path", "is_open"), [
    ("/", True), ("/tasks/12", True), ("/tasks/12/", True), ("/ui/static/task.js", True),
    ("/ui/vendor/leaflet/leaflet.js", True), ("/health", True), ("/openapi.json", True),
    ("/tasks/abc", False), ("/tasks/12/jobs", False), ("/tasks/1234567890123456789", False),
    ("/upscale_tasks", False), ("/unit_jobs/1/preview.png", False), ("/ws/upscale_tasks/1", False),
    ("/uix", False), ("", False),
])
def test_open_paths_are_the_page_shells_and_static_files(path: str, is_open: bool) -> None:
    assert (path in PageOpenPaths(OPEN_PATHS)) is is_open


def test_raster_href_picks_the_geotiff_asset() -> None:
    tif = {"href": "http://b/r/openEO.tif?sig=1", "type": "image/tiff; application=geotiff; profile=cloud-optimized"}
    assert raster_href({"assets": {"meta.json": {"href": "http://b/m.json", "type": "application/json"},
                                   "openEO.tif": tif}}) == tif["href"]
    assert raster_href({"assets": {"result": {"href": "http://b/x/result.TIF"}}}) == "http://b/x/result.TIF"
    assert raster_href({"assets": {"out.tiff": {"href": "http://b/download?id=7"}}}) == "http://b/download?id=7"
    for results in ({"assets": {"v": {"href": "http://b/v.geojson", "type": "application/geo+json"}}}, {},
                    {"assets": {"x.tif": {"type": "image/tiff"}}}, {"assets": []}):
        with pytest.raises(FailedPrecondition) as caught:
            raster_href(results)
        assert caught.value.error_code == "NO_RASTER_RESULT"


@pytest.mark.parametrize("href", ["/etc/passwd", "file:///etc/passwd", "/vsizip/x.zip/a.tif", "ftp://h/a.tif",
                                  "http:///a.tif"])
def test_render_reads_only_http_urls(href: str) -> None:
    with pytest.raises(FailedPrecondition):
        preview.render(href)


def test_colorize_stretches_onto_the_ramp_and_masks_missing_data() -> None:
    band = np.tile(np.arange(100, dtype=np.float64), (3, 1))
    valid = np.ones_like(band, dtype=bool)
    valid[2, :10] = False
    rgba = colorize(band, valid)
    assert rgba.shape == (4, 3, 100) and rgba.dtype == np.uint8
    assert (rgba[3, 2, :10] == 0).all() and (rgba[3, :2] == 255).all()
    assert tuple(rgba[:3, 0, 0]) == tuple(RAMP[0].astype(int))  # below the 2nd percentile: the first colour
    assert tuple(rgba[:3, 0, 99]) == tuple(RAMP[-1].astype(int))  # above the 98th: the last
    assert len({tuple(rgba[:3, 0, i]) for i in range(100)}) > 50
    flat = colorize(np.full((4, 4), 7.0), np.ones((4, 4), dtype=bool))
    assert (flat[3] == 255).all() and (flat[:3, 0, 0] == RAMP[0]).all()
    assert not colorize(band, np.zeros_like(valid)).any()


async def test_cache_renders_each_asset_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    gate = threading.Event()

    def fake_render(href: str) -> Preview:
        calls.append(href)
        rendering.set()
        gate.wait(5)
        return Preview(href.encode(), (0.0, 0.0, 1.0, 1.0))

    monkeypatch.setattr(preview, "render", fake_render)
    cache = PreviewCache(max_bytes=2 * len(b"http://b/a.tif"))
    rendering = threading.Event()
    waiting = [asyncio.ensure_future(cache.get("http://b/a.tif")) for _ in range(5)]
    # The first render is under way (the five gets started in one loop pass, before it): all five are waiting.
    assert await asyncio.to_thread(rendering.wait, 5)
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiting)
    gate.set()
    assert {p.png for p in await asyncio.gather(*waiting)} == {b"http://b/a.tif"}
    assert calls == ["http://b/a.tif"]
    await cache.get("http://b/b.tif")
    await cache.get("http://b/c.tif")  # evicts a
    await cache.get("http://b/a.tif")
    assert calls == ["http://b/a.tif", "http://b/b.tif", "http://b/c.tif", "http://b/a.tif"]
