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

class Order(_message.Message):
    __slots__ = ("id", "tenant_id", "status", "version", "total_cents", "created_at", "updated_at", "closed_at", "customer_ref", "items", "user_id", "failure_reason", "cancel_requested", "payment_status")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CENTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    CLOSED_AT_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_REF_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    status: str
    version: int
    total_cents: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    closed_at: _timestamp_pb2.Timestamp
    customer_ref: str
    items: _containers.RepeatedCompositeFieldContainer[LineItem]
    user_id: str
    failure_reason: str
    cancel_requested: bool
    payment_status: str
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., status: _Optional[str] = ..., version: _Optional[int] = ..., total_cents: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., closed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., customer_ref: _Optional[str] = ..., items: _Optional[_Iterable[_Union[LineItem, _Mapping]]] = ..., user_id: _Optional[str] = ..., failure_reason: _Optional[str] = ..., cancel_requested: _Optional[bool] = ..., payment_status: _Optional[str] = ...) -> None: ...

class LineItem(_message.Message):
    __slots__ = ("sku", "quantity", "unit_price_cents", "product_id", "name")
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_CENTS_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    sku: str
    quantity: int
    unit_price_cents: int
    product_id: str
    name: str
    def __init__(self, sku: _Optional[str] = ..., quantity: _Optional[int] = ..., unit_price_cents: _Optional[int] = ..., product_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class CreateOrderRequest(_message.Message):
    __slots__ = ("customer_ref", "items")
    CUSTOMER_REF_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    customer_ref: str
    items: _containers.RepeatedCompositeFieldContainer[LineItem]
    def __init__(self, customer_ref: _Optional[str] = ..., items: _Optional[_Iterable[_Union[LineItem, _Mapping]]] = ...) -> None: ...

class GetOrderRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ConfirmOrderRequest(_message.Message):
    __slots__ = ("id", "total_cents")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CENTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    total_cents: int
    def __init__(self, id: _Optional[str] = ..., total_cents: _Optional[int] = ...) -> None: ...

class CloseOrderRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelOrderRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetOrderStatusRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class WatchOrderRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class StatusChange(_message.Message):
    __slots__ = ("from_status", "to_status", "version", "at", "reason")
    FROM_STATUS_FIELD_NUMBER: _ClassVar[int]
    TO_STATUS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    from_status: str
    to_status: str
    version: int
    at: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, from_status: _Optional[str] = ..., to_status: _Optional[str] = ..., version: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class OrderStatusView(_message.Message):
    __slots__ = ("order_id", "status", "version", "updated_at", "history", "failure_reason", "cancel_requested", "payment_status")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    status: str
    version: int
    updated_at: _timestamp_pb2.Timestamp
    history: _containers.RepeatedCompositeFieldContainer[StatusChange]
    failure_reason: str
    cancel_requested: bool
    payment_status: str
    def __init__(self, order_id: _Optional[str] = ..., status: _Optional[str] = ..., version: _Optional[int] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., history: _Optional[_Iterable[_Union[StatusChange, _Mapping]]] = ..., failure_reason: _Optional[str] = ..., cancel_requested: _Optional[bool] = ..., payment_status: _Optional[str] = ...) -> None: ...

class OrderStatusEvent(_message.Message):
    __slots__ = ("order_id", "status", "version", "at", "failure_reason", "cancel_requested", "payment_status", "terminal")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    status: str
    version: int
    at: _timestamp_pb2.Timestamp
    failure_reason: str
    cancel_requested: bool
    payment_status: str
    terminal: bool
    def __init__(self, order_id: _Optional[str] = ..., status: _Optional[str] = ..., version: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., failure_reason: _Optional[str] = ..., cancel_requested: _Optional[bool] = ..., payment_status: _Optional[str] = ..., terminal: _Optional[bool] = ...) -> None: ...

class ListAllOrdersRequest(_message.Message):
    __slots__ = ("limit", "cursor", "status", "created_from", "created_to")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FROM_FIELD_NUMBER: _ClassVar[int]
    CREATED_TO_FIELD_NUMBER: _ClassVar[int]
    limit: int
    cursor: str
    status: str
    created_from: _timestamp_pb2.Timestamp
    created_to: _timestamp_pb2.Timestamp
    def __init__(self, limit: _Optional[int] = ..., cursor: _Optional[str] = ..., status: _Optional[str] = ..., created_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_to: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SetOrderStatusRequest(_message.Message):
    __slots__ = ("id", "status", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListOrdersRequest(_message.Message):
    __slots__ = ("limit", "cursor")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    limit: int
    cursor: str
    def __init__(self, limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListOrdersResponse(_message.Message):
    __slots__ = ("items", "next_cursor")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Order]
    next_cursor: str
    def __init__(self, items: _Optional[_Iterable[_Union[Order, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...
