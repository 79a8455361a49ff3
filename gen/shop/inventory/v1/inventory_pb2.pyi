import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from shop.api.v1 import access_pb2 as _access_pb2
from shop.api.v1 import http_pb2 as _http_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Stock(_message.Message):
    __slots__ = ("product_id", "tenant_id", "available", "reserved", "low_stock_threshold", "version", "updated_at")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    LOW_STOCK_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    tenant_id: str
    available: int
    reserved: int
    low_stock_threshold: int
    version: int
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, product_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., available: _Optional[int] = ..., reserved: _Optional[int] = ..., low_stock_threshold: _Optional[int] = ..., version: _Optional[int] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SyncStockRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SyncStockResponse(_message.Message):
    __slots__ = ("products", "changed")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    products: int
    changed: int
    def __init__(self, products: _Optional[int] = ..., changed: _Optional[int] = ...) -> None: ...

class GetStockRequest(_message.Message):
    __slots__ = ("product_id",)
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    def __init__(self, product_id: _Optional[str] = ...) -> None: ...

class WatchStockRequest(_message.Message):
    __slots__ = ("product_id",)
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    def __init__(self, product_id: _Optional[str] = ...) -> None: ...

class ListLowStockRequest(_message.Message):
    __slots__ = ("limit", "cursor")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    limit: int
    cursor: str
    def __init__(self, limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListLowStockResponse(_message.Message):
    __slots__ = ("items", "next_cursor")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Stock]
    next_cursor: str
    def __init__(self, items: _Optional[_Iterable[_Union[Stock, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class RestockRequest(_message.Message):
    __slots__ = ("product_id", "available", "low_stock_threshold")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    LOW_STOCK_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    available: int
    low_stock_threshold: int
    def __init__(self, product_id: _Optional[str] = ..., available: _Optional[int] = ..., low_stock_threshold: _Optional[int] = ...) -> None: ...

class ReservationLine(_message.Message):
    __slots__ = ("product_id", "quantity")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    quantity: int
    def __init__(self, product_id: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class Reservation(_message.Message):
    __slots__ = ("id", "tenant_id", "status", "lines", "expires_at", "created_at", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    status: str
    lines: _containers.RepeatedCompositeFieldContainer[ReservationLine]
    expires_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., status: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[ReservationLine, _Mapping]]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ("reservation_id", "lines", "ttl_seconds")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    lines: _containers.RepeatedCompositeFieldContainer[ReservationLine]
    ttl_seconds: int
    def __init__(self, reservation_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[ReservationLine, _Mapping]]] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("reservation_id",)
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    def __init__(self, reservation_id: _Optional[str] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("reservation_id",)
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    def __init__(self, reservation_id: _Optional[str] = ...) -> None: ...

class ExtendRequest(_message.Message):
    __slots__ = ("reservation_id", "ttl_seconds")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    ttl_seconds: int
    def __init__(self, reservation_id: _Optional[str] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class GetReservationRequest(_message.Message):
    __slots__ = ("reservation_id",)
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    def __init__(self, reservation_id: _Optional[str] = ...) -> None: ...
