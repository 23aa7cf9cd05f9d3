import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from upscaling.v1 import common_pb2 as _common_pb2
from upscaling.v1 import jobs_pb2 as _jobs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Dimension(_message.Message):
    __slots__ = ("name", "values_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    values_json: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., values_json: _Optional[_Iterable[str]] = ...) -> None: ...

class UnitJob(_message.Message):
    __slots__ = ("id", "task_id", "title", "label", "status", "service", "parameters_json", "backend_job_id", "progress", "message", "created", "updated", "costs", "usage", "backend")
    class UsageEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.UsageMetric
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.UsageMetric, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    BACKEND_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    COSTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    id: int
    task_id: int
    title: str
    label: str
    status: _common_pb2.JobStatus
    service: _common_pb2.ServiceRef
    parameters_json: str
    backend_job_id: str
    progress: float
    message: str
    created: _timestamp_pb2.Timestamp
    updated: _timestamp_pb2.Timestamp
    costs: float
    usage: _containers.MessageMap[str, _common_pb2.UsageMetric]
    backend: str
    def __init__(self, id: _Optional[int] = ..., task_id: _Optional[int] = ..., title: _Optional[str] = ..., label: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.JobStatus, str]] = ..., service: _Optional[_Union[_common_pb2.ServiceRef, _Mapping]] = ..., parameters_json: _Optional[str] = ..., backend_job_id: _Optional[str] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., costs: _Optional[float] = ..., usage: _Optional[_Mapping[str, _common_pb2.UsageMetric]] = ..., backend: _Optional[str] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("id", "title", "label", "status", "service", "parameters_json", "format", "dimension", "job_counts", "jobs", "created", "updated", "costs", "usage", "max_costs", "stop_reason")
    class JobCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class UsageEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.UsageMetric
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.UsageMetric, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    JOB_COUNTS_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    COSTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    MAX_COSTS_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    id: int
    title: str
    label: str
    status: _common_pb2.TaskStatus
    service: _common_pb2.ServiceRef
    parameters_json: str
    format: str
    dimension: Dimension
    job_counts: _containers.ScalarMap[str, int]
    jobs: _containers.RepeatedCompositeFieldContainer[UnitJob]
    created: _timestamp_pb2.Timestamp
    updated: _timestamp_pb2.Timestamp
    costs: float
    usage: _containers.MessageMap[str, _common_pb2.UsageMetric]
    max_costs: float
    stop_reason: str
    def __init__(self, id: _Optional[int] = ..., title: _Optional[str] = ..., label: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.TaskStatus, str]] = ..., service: _Optional[_Union[_common_pb2.ServiceRef, _Mapping]] = ..., parameters_json: _Optional[str] = ..., format: _Optional[str] = ..., dimension: _Optional[_Union[Dimension, _Mapping]] = ..., job_counts: _Optional[_Mapping[str, int]] = ..., jobs: _Optional[_Iterable[_Union[UnitJob, _Mapping]]] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., costs: _Optional[float] = ..., usage: _Optional[_Mapping[str, _common_pb2.UsageMetric]] = ..., max_costs: _Optional[float] = ..., stop_reason: _Optional[str] = ...) -> None: ...

class CreateTaskRequest(_message.Message):
    __slots__ = ("title", "label", "service", "parameters_json", "format", "dimension", "max_attempts", "max_costs")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    MAX_COSTS_FIELD_NUMBER: _ClassVar[int]
    title: str
    label: str
    service: _common_pb2.ServiceRef
    parameters_json: str
    format: str
    dimension: Dimension
    max_attempts: int
    max_costs: float
    def __init__(self, title: _Optional[str] = ..., label: _Optional[str] = ..., service: _Optional[_Union[_common_pb2.ServiceRef, _Mapping]] = ..., parameters_json: _Optional[str] = ..., format: _Optional[str] = ..., dimension: _Optional[_Union[Dimension, _Mapping]] = ..., max_attempts: _Optional[int] = ..., max_costs: _Optional[float] = ...) -> None: ...

class CreateTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    def __init__(self, task_id: _Optional[int] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "statuses")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    statuses: _containers.RepeatedScalarFieldContainer[_common_pb2.TaskStatus]
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., statuses: _Optional[_Iterable[_Union[_common_pb2.TaskStatus, str]]] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    next_page_token: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    def __init__(self, task_id: _Optional[int] = ...) -> None: ...

class CancelTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class RetryFailedJobsRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    def __init__(self, task_id: _Optional[int] = ...) -> None: ...

class RetryFailedJobsResponse(_message.Message):
    __slots__ = ("task", "retried")
    TASK_FIELD_NUMBER: _ClassVar[int]
    RETRIED_FIELD_NUMBER: _ClassVar[int]
    task: Task
    retried: int
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., retried: _Optional[int] = ...) -> None: ...

class WatchTaskRequest(_message.Message):
    __slots__ = ("task_id", "after_sequence", "task_level_only")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TASK_LEVEL_ONLY_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    after_sequence: int
    task_level_only: bool
    def __init__(self, task_id: _Optional[int] = ..., after_sequence: _Optional[int] = ..., task_level_only: _Optional[bool] = ...) -> None: ...

class WatchTaskResponse(_message.Message):
    __slots__ = ("snapshot", "job_event", "task_event", "sequence")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    JOB_EVENT_FIELD_NUMBER: _ClassVar[int]
    TASK_EVENT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    snapshot: Task
    job_event: _jobs_pb2.JobStatusEvent
    task_event: _jobs_pb2.TaskStatusEvent
    sequence: int
    def __init__(self, snapshot: _Optional[_Union[Task, _Mapping]] = ..., job_event: _Optional[_Union[_jobs_pb2.JobStatusEvent, _Mapping]] = ..., task_event: _Optional[_Union[_jobs_pb2.TaskStatusEvent, _Mapping]] = ..., sequence: _Optional[int] = ...) -> None: ...

class WatchTaskBatchesRequest(_message.Message):
    __slots__ = ("task_id", "after_sequence", "task_level_only")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TASK_LEVEL_ONLY_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    after_sequence: int
    task_level_only: bool
    def __init__(self, task_id: _Optional[int] = ..., after_sequence: _Optional[int] = ..., task_level_only: _Optional[bool] = ...) -> None: ...

class WatchTaskBatchesResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[WatchTaskResponse]
    def __init__(self, events: _Optional[_Iterable[_Union[WatchTaskResponse, _Mapping]]] = ...) -> None: ...

class WatchTaskResponseBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[WatchTaskResponse]
    def __init__(self, events: _Optional[_Iterable[_Union[WatchTaskResponse, _Mapping]]] = ...) -> None: ...

class GetJobResultsRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    def __init__(self, job_id: _Optional[int] = ...) -> None: ...

class GetJobResultsResponse(_message.Message):
    __slots__ = ("stac_json",)
    STAC_JSON_FIELD_NUMBER: _ClassVar[int]
    stac_json: str
    def __init__(self, stac_json: _Optional[str] = ...) -> None: ...

class GetTaskResultsRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    def __init__(self, task_id: _Optional[int] = ...) -> None: ...

class GetTaskResultsResponse(_message.Message):
    __slots__ = ("stac_json", "collection_json")
    STAC_JSON_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_JSON_FIELD_NUMBER: _ClassVar[int]
    stac_json: str
    collection_json: str
    def __init__(self, stac_json: _Optional[str] = ..., collection_json: _Optional[str] = ...) -> None: ...

class GetJobLogsRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    def __init__(self, job_id: _Optional[int] = ...) -> None: ...

class JobLogEntry(_message.Message):
    __slots__ = ("id", "level", "message", "code", "time", "backend_job_id", "attempt")
    ID_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    BACKEND_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    id: str
    level: str
    message: str
    code: str
    time: str
    backend_job_id: str
    attempt: int
    def __init__(self, id: _Optional[str] = ..., level: _Optional[str] = ..., message: _Optional[str] = ..., code: _Optional[str] = ..., time: _Optional[str] = ..., backend_job_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class GetJobLogsResponse(_message.Message):
    __slots__ = ("job_id", "logs")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    logs: _containers.RepeatedCompositeFieldContainer[JobLogEntry]
    def __init__(self, job_id: _Optional[int] = ..., logs: _Optional[_Iterable[_Union[JobLogEntry, _Mapping]]] = ...) -> None: ...

class DescribeServiceRequest(_message.Message):
    __slots__ = ("label", "service")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    label: str
    service: _common_pb2.ServiceRef
    def __init__(self, label: _Optional[str] = ..., service: _Optional[_Union[_common_pb2.ServiceRef, _Mapping]] = ...) -> None: ...

class ServiceParameter(_message.Message):
    __slots__ = ("name", "type", "optional", "description", "default_json", "options_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OPTIONAL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_JSON_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    optional: bool
    description: str
    default_json: str
    options_json: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., optional: _Optional[bool] = ..., description: _Optional[str] = ..., default_json: _Optional[str] = ..., options_json: _Optional[str] = ...) -> None: ...

class DescribeServiceResponse(_message.Message):
    __slots__ = ("parameters",)
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    parameters: _containers.RepeatedCompositeFieldContainer[ServiceParameter]
    def __init__(self, parameters: _Optional[_Iterable[_Union[ServiceParameter, _Mapping]]] = ...) -> None: ...

class RunSyncJobRequest(_message.Message):
    __slots__ = ("title", "label", "service", "parameters_json", "format")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    title: str
    label: str
    service: _common_pb2.ServiceRef
    parameters_json: str
    format: str
    def __init__(self, title: _Optional[str] = ..., label: _Optional[str] = ..., service: _Optional[_Union[_common_pb2.ServiceRef, _Mapping]] = ..., parameters_json: _Optional[str] = ..., format: _Optional[str] = ...) -> None: ...

class RunSyncJobResponse(_message.Message):
    __slots__ = ("content_type", "size", "chunk")
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    content_type: str
    size: int
    chunk: bytes
    def __init__(self, content_type: _Optional[str] = ..., size: _Optional[int] = ..., chunk: _Optional[bytes] = ...) -> None: ...
