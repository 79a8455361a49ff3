from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor
FIELD_FIELD_NUMBER: _ClassVar[int]
field: _descriptor.FieldDescriptor

class FieldRules(_message.Message):
    __slots__ = ("multiline", "max_length")
    MULTILINE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    multiline: bool
    max_length: int
    def __init__(self, multiline: _Optional[bool] = ..., max_length: _Optional[int] = ...) -> None: ...
