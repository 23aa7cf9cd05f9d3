"""Local openEO backend for development, tests and benchmarks (not a production service).

Speaks the openEO API 1.2 subset that the unmodified ``openeo`` Python client uses for batch jobs,
resolves remote UDPs, simulates a time-driven job lifecycle, serves synthetic results and can be
configured to behave like a constrained, flaky real backend. Run it with ``python -m local_openeo``.
"""

__version__ = "0.1.0"
