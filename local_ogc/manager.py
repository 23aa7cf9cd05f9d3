"""pygeoapi's TinyDB job manager with two additions a client of many jobs needs:

- a job is `running` (progress 10) from the moment its process starts (pygeoapi's own manager reports
  `accepted` until the process returned);
- each job keeps the scalar inputs of its execution request as `parameters`, which pygeoapi's job listing
  returns: a client that lost the answer of an execution request finds its job again by a tag input.
"""

from __future__ import annotations

import threading
from typing import Any

from pygeoapi.process.manager.tinydb_ import TinyDBManager
from pygeoapi.util import JobStatus, get_current_datetime

_request = threading.local()


class LocalManager(TinyDBManager):
    """TinyDB job manager (asynchronous execution in threads) recording inputs and the running status."""

    def execute_process(self, process_id: str, data_dict: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        _request.parameters = {k: v for k, v in (data_dict or {}).items()
                               if isinstance(v, str | int | float | bool) or v is None}
        try:
            return super().execute_process(process_id, data_dict, *args, **kwargs)
        finally:
            _request.parameters = None

    def add_job(self, job_metadata: dict[str, Any]) -> Any:
        parameters = getattr(_request, "parameters", None)
        if parameters is not None:
            job_metadata = {**job_metadata, "parameters": parameters}
        return super().add_job(job_metadata)

    def _execute_handler_sync(self, p: Any, job_id: str, *args: Any, **kwargs: Any) -> Any:
        self.update_job(job_id, {"status": JobStatus.running.value, "message": "Job running", "progress": 10,
                                 "updated": get_current_datetime()})
        return super()._execute_handler_sync(p, job_id, *args, **kwargs)
