"""The local OGC API - Processes server for development and tests: pygeoapi with a process of our own
(`geometry-statistics`) and asynchronous execution through a TinyDB job manager in a temporary folder.

`python -m local_ogc --port N` (0: any free port) prints `local-ogc listening on <url>` once it serves.
Not a production service: it is the second backend platform (`ogc_api_process`) of `make run` and the tests.
"""
