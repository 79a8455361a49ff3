import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LowStock(_message.Message):
    __slots__ = ("tenant_id", "product_id", "available", "reserved", "low_stock_threshold", "version", "occurred_at")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    LOW_STOCK_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    product_id: str
    available: int
    reserved: int
    low_stock_threshold: int
    version: int
    occurred_at: _timestamp_pb2.Timestamp
    def __init__(self, tenant_id: _Optional[str] = ..., product_id: _Optional[str] = ..., available: _Optional[int] = ..., reserved: _Optional[int] = ..., low_stock_threshold: _Optional[int] = ..., version: _Optional[int] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
