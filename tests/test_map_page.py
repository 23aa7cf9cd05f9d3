"""The gateway's live map page in headless Chromium (Playwright), following a real task through the whole stack
from created to finished; its PNG preview endpoint; and the page in AUTH_MODE=token."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import rasterio
import requests

from tests.auth_support import KEYS, AuthGateway, token_mode_gateway
from tests.browser import artifact, browser
from tests.full_stack import FullStack, full_stack

__all__ = ["browser"]

COLOURS = {"created": "#3b6fd8", "queued": "#f08c00", "running": "#f5d000", "finished": "#2f9e44"}
FAILED, CANCELED = "#e03131", "#868e96"
LIMIT_MS = 180_000
# Records every change of a tile's status and colour (SVG `fill`), with the value before it, from page start.
RECORD_TILES = """
window.__tileLog = [];
new MutationObserver((records) => {
  for (const r of records) {
    const node = r.target;
    if (!node.getAttribute || node.getAttribute("data-job-id") === null) continue;
    window.__tileLog.push({job: node.getAttribute("data-job-id"), attr: r.attributeName, old: r.oldValue,
                           now: node.getAttribute(r.attributeName)});
  }
}).observe(document, {subtree: true, attributes: true, attributeOldValue: true,
                      attributeFilter: ["fill", "data-status"]});
"""


@pytest.fixture(scope="module")
def slow_stack(infra: Any, service_env: dict[str, str], stack: Any,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullStack]:
    """Jobs queue 2 s and run 3 s, at most 3 at a time: every tile is seen in several states."""
    with full_stack(infra, service_env, stack.tiler_address, tmp_path_factory.mktemp("map-stack"),
                    queue_seconds=2, run_seconds=3, max_running_jobs=3, result_px=96) as s:
        yield s


@pytest.fixture(scope="module")
def token_gateway(infra: Any, service_env: dict[str, str], stack: Any,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthGateway]:
    """A gateway in AUTH_MODE=token for this module only (small pool: it is stopped after the module)."""
    with token_mode_gateway(stack, service_env, infra, tmp_path_factory.mktemp("map-token-gw"),
                            {"DB_POOL_MAX": "3"}) as gw:
        yield gw


def tile_fills(page: Any) -> dict[str, str]:
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll("path.tile")]
        .map((p) => [p.getAttribute("data-job-id"), p.getAttribute("fill")]))""")


def test_map_follows_a_task_from_created_to_finished(slow_stack: FullStack, browser: Any,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    tiles = slow_stack.tiles()
    assert 4 <= len(tiles) <= 30
    task_id = slow_stack.create_task("map page", tiles)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.add_init_script(RECORD_TILES)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{slow_stack.http}/tasks/{task_id}")

    # Every job's tile is drawn, coloured by its status; none is finished yet.
    page.wait_for_function(f"document.querySelectorAll('path.tile').length === {len(tiles)}", timeout=30_000)
    first = tile_fills(page)
    assert len(first) == len(tiles)
    assert COLOURS["finished"] not in first.values(), first
    assert set(first.values()) <= {COLOURS["created"], COLOURS["queued"], COLOURS["running"]}

    # Live: the summary reaches 100 % and every tile turns green.
    page.wait_for_function("document.getElementById('progress-text').textContent === '100 %'", timeout=LIMIT_MS)
    page.wait_for_selector("#summary[data-status='finished']", timeout=30_000)
    assert set(tile_fills(page).values()) == {COLOURS["finished"]}
    log = page.evaluate("window.__tileLog")
    seen: dict[str, list[str]] = {}
    for entry in log:
        if entry["attr"] == "fill":
            history = seen.setdefault(entry["job"], [])
            for value in (entry["old"], entry["now"]):
                if value and (not history or history[-1] != value):
                    history.append(value)
    assert set(seen) == set(first), "every tile changed colour"
    assert all(h[0] != COLOURS["finished"] and h[-1] == COLOURS["finished"] for h in seen.values()), seen
    assert any(COLOURS["running"] in h for h in seen.values()), seen
    statuses = {e["now"] for e in log if e["attr"] == "data-status"}
    assert {"running", "finished"} <= statuses, statuses
    assert "jobs finished" in page.inner_text("#counts")
    assert page.inner_text(".legend-row[data-status='finished'] .count") == str(len(tiles))

    # Each finished raster result is drawn over its tile (a loaded PNG preview).
    page.wait_for_function(
        f"""[...document.querySelectorAll('img.result-overlay')].filter((i) => i.complete && i.naturalWidth > 0)
            .length === {len(tiles)}""", timeout=60_000)

    # A click on a tile shows its job and the backend's job id.
    task = slow_stack.task(task_id)
    job = task["jobs"][len(tiles) // 2]
    page.locator(f"path.tile[data-job-id='{job['id']}']").click()
    popup = page.locator(f".job-popup[data-job-id='{job['id']}']")
    popup.wait_for(timeout=10_000)
    backend_id = requests.get(f"{slow_stack.http}/unit_jobs/{job['id']}", timeout=10).json()["backend_job_id"]
    assert backend_id
    shown = "document.querySelector(\".job-popup [data-field='backend_job_id']\").textContent"
    page.wait_for_function(f"{shown} === {json.dumps(backend_id)}", timeout=10_000)
    assert popup.locator("[data-field='job_id']").inner_text() == str(job["id"])
    assert popup.locator("[data-field='status']").inner_text() == "finished"

    page.wait_for_function("getComputedStyle(document.querySelector('.leaflet-popup')).opacity === '1'")
    shot = artifact("map-page-finished.png")
    page.screenshot(path=str(shot))
    with capsys.disabled():
        print(f"\nmap page screenshot (finished task {task_id}): {shot}")
    assert shot.stat().st_size > 10_000

    # The task list shows the task, finished, and links to its map.
    page.goto(f"{slow_stack.http}/")
    row = page.locator(f"tr[data-task-id='{task_id}']")
    row.wait_for(timeout=15_000)
    assert row.get_attribute("data-status") == "finished"
    assert row.locator("td.done").inner_text() == "100 %"
    row.locator("a").click()
    page.wait_for_url(f"**/tasks/{task_id}")
    page.wait_for_function("document.getElementById('progress-text').textContent === '100 %'", timeout=30_000)
    assert errors == [], errors
    page.close()


def test_task_list_updates_live(slow_stack: FullStack, browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{slow_stack.http}/")
    page.wait_for_selector("#connection.live", timeout=30_000)
    task_id = slow_stack.create_task("appears live", slow_stack.tiles()[:1])
    row = page.locator(f"tr[data-task-id='{task_id}']")
    row.wait_for(timeout=30_000)  # no reload: the jobs_status WebSocket announced it
    page.wait_for_selector(f"tr[data-task-id='{task_id}'][data-status='finished']", timeout=LIMIT_MS)
    page.close()


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_preview_png_of_a_finished_job(slow_stack: FullStack) -> None:
    task_id = slow_stack.create_task("preview", slow_stack.tiles()[:2])
    job_id = slow_stack.task(task_id)["jobs"][0]["id"]
    early = requests.get(f"{slow_stack.http}/unit_jobs/{job_id}/preview.png", timeout=30)
    assert early.status_code == 409 and early.json()["error_code"] == "JOB_NOT_FINISHED", early.text
    deadline = time.monotonic() + LIMIT_MS / 1000
    while slow_stack.task(task_id)["status"] != "finished":
        assert time.monotonic() < deadline, slow_stack.logs()
        time.sleep(0.5)
    reply = requests.get(f"{slow_stack.http}/unit_jobs/{job_id}/preview.png", timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "image/png"
    west, south, east, north = map(float, reply.headers["X-Bounds"].split(","))
    results = requests.get(f"{slow_stack.http}/unit_jobs/{job_id}/results", timeout=30).json()
    bbox = results["assets"]["openEO.tif"]["bbox"]
    # The corners are the result's own extent (reprojected to Web Mercator and back).
    assert np.allclose([west, south, east, north], bbox, atol=1e-3), ([west, south, east, north], bbox)
    with rasterio.MemoryFile(io.BytesIO(reply.content)) as memory, memory.open() as png:
        assert png.count == 4
        rgba = png.read()
    assert (rgba[3] == 255).mean() > 0.9  # opaque where the result has data
    assert len(np.unique(rgba[:3].reshape(3, -1), axis=1).T) > 10  # a colour ramp, not one flat colour
    assert requests.get(f"{slow_stack.http}/unit_jobs/999999999/preview.png", timeout=10).status_code == 404


def test_page_in_token_mode_shows_nothing_without_a_token(token_gateway: AuthGateway, browser: Any) -> None:
    gw = token_gateway
    mine = gw.create("alice", 2, title="alice's secret task")
    theirs = gw.create("bob", 1, title="bob's secret task")
    # The shells and static files are open and hold no data; the API behind them is not.
    for path in ("/", f"/tasks/{mine}", "/ui/static/task.js", "/ui/vendor/leaflet/leaflet.js"):
        reply = requests.get(f"{gw.http}{path}", timeout=10)
        assert reply.status_code == 200, (path, reply.text)
        assert "secret" not in reply.text
    for path in ("/upscale_tasks", f"/upscale_tasks/{mine}", f"/unit_jobs/{mine}/preview.png"):
        assert requests.get(f"{gw.http}{path}", timeout=10).status_code == 401, path

    page = browser.new_page()
    page.goto(f"{gw.http}/")
    page.wait_for_selector(".token-form", timeout=15_000)
    assert page.locator("tr[data-task-id]").count() == 0
    assert "secret" not in page.content()
    page.fill(".token-form input", "not-a-key-of-anyone")
    page.click(".token-form button")
    page.wait_for_selector(".token-form", timeout=15_000)  # refused: asked again, still nothing shown
    assert page.locator("tr[data-task-id]").count() == 0
    page.fill(".token-form input", KEYS["alice"])
    page.click(".token-form button")
    page.locator(f"tr[data-task-id='{mine}']").wait_for(timeout=15_000)
    assert page.locator(f"tr[data-task-id='{theirs}']").count() == 0
    page.wait_for_selector("#connection.live", timeout=15_000)  # the WebSocket took the token too

    # Another user's task: not found, nothing drawn.
    page.goto(f"{gw.http}/tasks/{theirs}")
    page.wait_for_selector("#error:not([hidden])", timeout=15_000)
    assert "not found" in page.inner_text("#error")
    assert page.locator("path.tile").count() == 0
    # Alice's own task is drawn live (the WebSocket authenticates with ?token=).
    page.goto(f"{gw.http}/tasks/{mine}")
    page.wait_for_function("document.querySelectorAll('path.tile').length === 2", timeout=15_000)
    page.wait_for_selector("#connection.live", timeout=15_000)
    page.close()


def test_failed_tiles_turn_red_and_the_retry_button_reruns_them(slow_stack: FullStack, browser: Any) -> None:
    slow_stack.backend.configure(job_error_fraction=1.0)
    try:
        task_id = slow_stack.create_task("fails first", slow_stack.tiles()[:2])
        page = browser.new_page()
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(f"{slow_stack.http}/tasks/{task_id}")
        page.wait_for_selector("#summary[data-status='failed']", timeout=LIMIT_MS)
        page.wait_for_function(f"""(() => {{ const tiles = [...document.querySelectorAll('path.tile')];
            return tiles.length === 2 && tiles.every((p) => p.getAttribute('fill') === '{FAILED}'); }})()""",
                               timeout=30_000)
        assert page.inner_text(".legend-row[data-status='failed'] .count") == "2"
        assert page.is_hidden("#cancel") and page.is_visible("#retry")
    finally:
        slow_stack.backend.configure(job_error_fraction=0.0)
    page.click("#retry")
    page.wait_for_function("document.getElementById('progress-text').textContent === '100 %'", timeout=LIMIT_MS)
    page.wait_for_selector("#summary[data-status='finished']", timeout=30_000)
    assert set(tile_fills(page).values()) == {COLOURS["finished"]}
    assert page.is_hidden("#retry")
    page.close()


def test_the_cancel_button_cancels_the_task(slow_stack: FullStack, browser: Any) -> None:
    task_id = slow_stack.create_task("canceled from the page", slow_stack.tiles())
    page = browser.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{slow_stack.http}/tasks/{task_id}")
    page.wait_for_selector("#cancel:not([hidden])", timeout=30_000)
    page.click("#cancel")
    page.wait_for_selector("#summary[data-status='canceled']", timeout=LIMIT_MS)
    assert slow_stack.task(task_id)["status"] == "canceled"
    page.wait_for_function(f"""[...document.querySelectorAll('path.tile')].some(
        (p) => p.getAttribute('fill') === '{CANCELED}')""", timeout=30_000)
    assert page.is_hidden("#cancel")
    page.close()
