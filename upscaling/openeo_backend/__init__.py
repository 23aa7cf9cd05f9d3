"""The one client of openEO backends: every HTTP call to a backend goes through this package (and through the
`openeo` client). Synchronous and blocking: callers run it in worker threads.

- `errors`: typed errors (`BackendLimitError`, `BackendTransientError` (with `BackendTimeoutError`),
  `BackendAuthError`, `BackendPermanentError`, all `BackendError`s carrying the backend's code and HTTP status) and
  the one rule classifying a failed call.
- `connection`: authenticated connections cached per thread and backend *account* (`Account`: the service account,
  or a user's with their own token), the correlation-id header, and `call` (errors become typed; an authentication
  error of the service account re-authenticates once).
- `user_tokens`: users' backend tokens at the identity provider (RFC 8693 token exchange, refresh-token grant).
- `paging`: the one `rel=next` pager of `GET /jobs`.
- `health`: the health check (`GET /`) of a backend.
- `jobs`: the batch-job operations (create, start, find by tag, status, describe, list, results, error logs, stop).
- `sync`: synchronous processing (`POST /result`), with a size and time limit.

The submodules are imported by name (`from upscaling.openeo_backend import jobs`): importing `errors` alone does
not load the openeo client.
"""
