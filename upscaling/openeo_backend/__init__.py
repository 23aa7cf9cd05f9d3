"""The one client of openEO backends: every HTTP call to a backend goes through this package (and through the
`openeo` client). Synchronous and blocking: callers run it in worker threads.

- `errors`: typed errors (`BackendLimitError`, `BackendTransientError` (with `BackendTimeoutError`),
  `BackendAuthError`, `BackendPermanentError`, all `BackendError`s carrying the backend's code and HTTP status) and
  the one rule classifying a failed call.
- `connection`: authenticated connections cached per thread and backend, the correlation-id header, and `call`
  (errors become typed; an authentication error re-authenticates once).
- `paging`: the one `rel=next` pager of `GET /jobs`.
- `health`: the health check (`GET /`) of a backend.
- `jobs`: the batch-job operations (create, start, find by tag, status, describe, list, results, error logs, stop).

The submodules are imported by name (`from upscaling.openeo_backend import jobs`): importing `errors` alone does
not load the openeo client.
"""
