"""devtools.launcher's demo AOI: shipped with the repository, or the user's file; a missing file stops at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import shapely
from shapely.geometry import shape

from devtools import launcher


def test_the_default_aoi_ships_with_the_repository() -> None:
    root = Path(launcher.__file__).resolve().parents[1]
    assert launcher.DEMO_AOI.is_relative_to(root) and launcher.DEMO_AOI.is_file()
    feature = json.loads(launcher.DEMO_AOI.read_text())["features"][0]
    belgium = shape(feature["geometry"])
    assert feature["properties"]["name"] == "Belgium" and shapely.is_valid(belgium)
    west, south, east, north = belgium.bounds
    assert 2.5 < west < 2.6 and 49.4 < south < 49.6 and 6.1 < east < 6.2 and 51.4 < north < 51.6


def test_a_missing_aoi_file_is_refused_before_anything_starts(capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        launcher.main(["--aoi", str(tmp_path / "nowhere.geojson"), "--exit-after-demo"])
    assert exit_info.value.code == 2
    assert "nowhere.geojson: no such file" in capsys.readouterr().err


def test_the_ogc_demo_runs_only_with_an_ogc_backend() -> None:
    from devtools.ogc_demo import ogc_endpoint

    both = json.dumps([{"endpoint": "http://o/openeo/1.2"},
                       {"endpoint": "http://127.0.0.1:8082", "platform": "ogc_api_process"}])
    assert ogc_endpoint(both) == "http://127.0.0.1:8082"
    assert ogc_endpoint(json.dumps([{"endpoint": "http://o/openeo/1.2"}])) is None
    assert ogc_endpoint(None) is None and ogc_endpoint("not json") is None and ogc_endpoint("{}") is None
