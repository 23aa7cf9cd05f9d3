"""Where the test data lives: the folder `shared/` beside the repository (Natural Earth countries, the seed
notebook), or `UPSCALING_SHARED_DIR`. Tests and benchmarks read it; the product never does."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The shared data folder."""
    configured = os.environ.get("UPSCALING_SHARED_DIR")
    return Path(configured) if configured else REPO_ROOT.parent / "shared"


def countries_file() -> Path:
    """Natural Earth countries (GeoJSON FeatureCollection, properties `name` and `iso_a3`)."""
    return shared_dir() / "data" / "countries_naturalearth_110m.geojson"


def seed_notebook() -> Path:
    """The notebook export that started the project."""
    return shared_dir() / "seed" / "upscaling_notebook.txt"
