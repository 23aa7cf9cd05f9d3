"""Where the project's shared data lives (the folder `shared/` beside the repository: AOIs, UDPs, the seed
notebook). `UPSCALING_SHARED_DIR` overrides it; a checkout elsewhere falls back to /work/shared."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The shared data folder."""
    configured = os.environ.get("UPSCALING_SHARED_DIR")
    if configured:
        return Path(configured)
    beside = REPO_ROOT.parent / "shared"
    return beside if beside.is_dir() else Path("/work/shared")


def countries_file() -> Path:
    """Natural Earth countries (GeoJSON FeatureCollection, properties `name` and `iso_a3`)."""
    return shared_dir() / "data" / "countries_naturalearth_110m.geojson"


def udp_dir() -> Path:
    """The APEx UDPs served by the local openEO backend's catalogue."""
    return shared_dir() / "data" / "udps"


def seed_notebook() -> Path:
    """The notebook export that started the project."""
    return shared_dir() / "seed" / "upscaling_notebook.txt"
