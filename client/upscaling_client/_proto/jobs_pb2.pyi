import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from upscaling_client._proto import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubmitJobMessage(_message.Message):
    __slots__ = ("job_id", "task_id", "service", "parameters_json", "format", "title", "tag", "correlation_id", "attempt", "process_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PROCESS_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    task_id: int
    service: _common_pb2.ServiceRef
    parameters_json: str
    format: str
    title: str
    tag: str
    correlation_id: str
    attempt: int
    process_id: str
    def __init__(self, job_id: _Optional[int] = ..., task_id: _Optional[int] = ..., service: _Optional[_Union[_common_pb2.ServiceRef, _Mapping]] = ..., parameters_json: _Optional[str] = ..., format: _Optional[str] = ..., title: _Optional[str] = ..., tag: _Optional[str] = ..., correlation_id: _Optional[str] = ..., attempt: _Optional[int] = ..., process_id: _Optional[str] = ...) -> None: ...

class JobStatusEvent(_message.Message):
    __slots__ = ("job_id", "task_id", "status", "backend_job_id", "progress", "message", "time", "sequence", "correlation_id", "costs", "usage", "backend")
    class UsageEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.UsageMetric
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.UsageMetric, _Mapping]] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    COSTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    task_id: int
    status: _common_pb2.JobStatus
    backend_job_id: str
    progress: float
    message: str
    time: _timestamp_pb2.Timestamp
    sequence: int
    correlation_id: str
    costs: float
    usage: _containers.MessageMap[str, _common_pb2.UsageMetric]
    backend: str
    def __init__(self, job_id: _Optional[int] = ..., task_id: _Optional[int] = ..., status: _Optional[_Union[_common_pb2.JobStatus, str]] = ..., backend_job_id: _Optional[str] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sequence: _Optional[int] = ..., correlation_id: _Optional[str] = ..., costs: _Optional[float] = ..., usage: _Optional[_Mapping[str, _common_pb2.UsageMetric]] = ..., backend: _Optional[str] = ...) -> None: ...

class TaskStatusEvent(_message.Message):
    __slots__ = ("task_id", "status", "job_counts", "time", "sequence", "correlation_id", "costs", "usage", "stop_reason")
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
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    JOB_COUNTS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    COSTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    status: _common_pb2.TaskStatus
    job_counts: _containers.ScalarMap[str, int]
    time: _timestamp_pb2.Timestamp
    sequence: int
    correlation_id: str
    costs: float
    usage: _containers.MessageMap[str, _common_pb2.UsageMetric]
    stop_reason: str
    def __init__(self, task_id: _Optional[int] = ..., status: _Optional[_Union[_common_pb2.TaskStatus, str]] = ..., job_counts: _Optional[_Mapping[str, int]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sequence: _Optional[int] = ..., correlation_id: _Optional[str] = ..., costs: _Optional[float] = ..., usage: _Optional[_Mapping[str, _common_pb2.UsageMetric]] = ..., stop_reason: _Optional[str] = ...) -> None: ...
