"""Dispatcher service: consumes job messages and submits unit jobs to openEO backends."""
