"""Unit tests of the pure logic, mirroring the package paths (tests/unit/<package>/test_<module>.py)."""
