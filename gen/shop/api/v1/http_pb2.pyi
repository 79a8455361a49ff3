from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
HTTP_CONTRACT_FIELD_NUMBER: _ClassVar[int]
http_contract: _descriptor.FieldDescriptor

class HttpContract(_message.Message):
    __slots__ = ("request_headers", "response_headers", "success_status", "other_successes", "response_content")
    REQUEST_HEADERS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_HEADERS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_STATUS_FIELD_NUMBER: _ClassVar[int]
    OTHER_SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_CONTENT_FIELD_NUMBER: _ClassVar[int]
    request_headers: _containers.RepeatedCompositeFieldContainer[HttpHeader]
    response_headers: _containers.RepeatedCompositeFieldContainer[HttpHeader]
    success_status: int
    other_successes: _containers.RepeatedCompositeFieldContainer[HttpSuccess]
    response_content: HttpContent
    def __init__(self, request_headers: _Optional[_Iterable[_Union[HttpHeader, _Mapping]]] = ..., response_headers: _Optional[_Iterable[_Union[HttpHeader, _Mapping]]] = ..., success_status: _Optional[int] = ..., other_successes: _Optional[_Iterable[_Union[HttpSuccess, _Mapping]]] = ..., response_content: _Optional[_Union[HttpContent, _Mapping]] = ...) -> None: ...

class HttpSuccess(_message.Message):
    __slots__ = ("status", "description")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    status: int
    description: str
    def __init__(self, status: _Optional[int] = ..., description: _Optional[str] = ...) -> None: ...

class HttpContent(_message.Message):
    __slots__ = ("media_type", "message")
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    media_type: str
    message: str
    def __init__(self, media_type: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class HttpHeader(_message.Message):
    __slots__ = ("name", "required", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    required: bool
    description: str
    def __init__(self, name: _Optional[str] = ..., required: _Optional[bool] = ..., description: _Optional[str] = ...) -> None: ...
