import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BackendCredentials(_message.Message):
    __slots__ = ("endpoint", "method", "registered_at", "refreshed_at")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    REFRESHED_AT_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    method: str
    registered_at: _timestamp_pb2.Timestamp
    refreshed_at: _timestamp_pb2.Timestamp
    def __init__(self, endpoint: _Optional[str] = ..., method: _Optional[str] = ..., registered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., refreshed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RegisterBackendCredentialsRequest(_message.Message):
    __slots__ = ("endpoint", "refresh_token")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    REFRESH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    refresh_token: str
    def __init__(self, endpoint: _Optional[str] = ..., refresh_token: _Optional[str] = ...) -> None: ...

class RegisterBackendCredentialsResponse(_message.Message):
    __slots__ = ("credentials",)
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    credentials: BackendCredentials
    def __init__(self, credentials: _Optional[_Union[BackendCredentials, _Mapping]] = ...) -> None: ...

class ListBackendCredentialsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBackendCredentialsResponse(_message.Message):
    __slots__ = ("credentials",)
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    credentials: _containers.RepeatedCompositeFieldContainer[BackendCredentials]
    def __init__(self, credentials: _Optional[_Iterable[_Union[BackendCredentials, _Mapping]]] = ...) -> None: ...

class DeleteBackendCredentialsRequest(_message.Message):
    __slots__ = ("endpoint",)
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    def __init__(self, endpoint: _Optional[str] = ...) -> None: ...

class DeleteBackendCredentialsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
