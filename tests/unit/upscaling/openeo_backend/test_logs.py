"""Normalizing a backend's error log entries (pure)."""

from __future__ import annotations

from upscaling.openeo_backend import jobs


def test_error_entries_only_normalized_and_bounded() -> None:
    entries = [{"id": "1", "level": "info", "message": "started"},
               {"id": "2", "level": "ERROR", "message": "x" * 5000, "code": "Boom", "time": "2026-01-01T00:00:00Z"},
               "not an entry", {"id": 3, "level": "error"}]
    out = jobs.log_entries(entries)
    assert [e["id"] for e in out] == ["2", "3"]
    assert out[0]["level"] == "error" and len(out[0]["message"]) == jobs.MAX_LOG_MESSAGE and out[0]["code"] == "Boom"
    assert jobs.last_error_message(out) == "x" * jobs.MAX_LOG_MESSAGE  # the last entry has no message
    many = [{"id": str(i), "level": "error", "message": f"m{i}"} for i in range(250)]
    kept = jobs.log_entries(many)
    assert kept[0]["id"] == "150" and len(kept) == 100
    assert jobs.log_entries(None) == [] and jobs.last_error_message([]) is None
