"""The monitor: tracks active unit jobs on their openEO backends and records every status change."""
