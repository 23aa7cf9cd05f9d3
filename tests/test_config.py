"""Settings come from environment variables; a malformed value is refused with a message naming it."""

from __future__ import annotations

import pytest

from upscaling.config import Settings, load_settings


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_TILES", "5")
    monkeypatch.setenv("MIGRATE_ON_START", "off")
    monkeypatch.setenv("TILER_TIMEOUT_S", "2.5")
    monkeypatch.setenv("BROKER_PREFIX", "elsewhere")
    monkeypatch.setenv("GATEWAY_HTTP_PORT", "")
    settings = load_settings()
    assert (settings.max_tiles, settings.migrate_on_start, settings.tiler_timeout_s) == (5, False, 2.5)
    assert settings.broker_prefix == "elsewhere"
    assert settings.gateway_http_port == Settings().gateway_http_port


@pytest.mark.parametrize("name,value,kind", [("MAX_TILES", "many", "an integer"),
                                             ("MIGRATE_ON_START", "maybe", "a boolean"),
                                             ("TILER_TIMEOUT_S", "soon", "a number"),
                                             ("MAX_TILES", "0", ""),
                                             ("METRICS_PORT", "70000", "")])
def test_malformed_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str, kind: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name) as err:
        load_settings()
    assert kind in str(err.value)
