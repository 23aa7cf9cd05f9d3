"""Headless Chromium for page tests: Playwright (PyPI) driving Debian's `chromium` through `executable_path`
(Playwright's own browser downloads are not reachable here), and the folder screenshots are kept in."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra import ROOT

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    """Debian's chromium (installed by scripts/ensure-test-tools.sh)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: run scripts/ensure-test-tools.sh (apt-get install chromium)")
    return path


@pytest.fixture
def browser() -> Iterator[object]:
    """A Playwright Chromium browser for one test (function scope: Playwright's sync API runs an event loop in
    this thread while it is open, so fixtures that use asyncio.run must be set up before it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()


def artifact(name: str) -> Path:
    """A path in test-artifacts/ (gitignored), created on demand."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
