import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from shop.api.v1 import access_pb2 as _access_pb2
from shop.api.v1 import http_pb2 as _http_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetDailyReportRequest(_message.Message):
    __slots__ = ("to",)
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    to: str
    def __init__(self, to: _Optional[str] = ..., **kwargs) -> None: ...

class ProductSales(_message.Message):
    __slots__ = ("product_id", "name", "units", "revenue_cents")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    REVENUE_CENTS_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    name: str
    units: int
    revenue_cents: int
    def __init__(self, product_id: _Optional[str] = ..., name: _Optional[str] = ..., units: _Optional[int] = ..., revenue_cents: _Optional[int] = ...) -> None: ...

class DailySales(_message.Message):
    __slots__ = ("day", "orders", "revenue_cents", "by_status", "average_order_cents", "top_products")
    class ByStatusEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    DAY_FIELD_NUMBER: _ClassVar[int]
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    REVENUE_CENTS_FIELD_NUMBER: _ClassVar[int]
    BY_STATUS_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_ORDER_CENTS_FIELD_NUMBER: _ClassVar[int]
    TOP_PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    day: str
    orders: int
    revenue_cents: int
    by_status: _containers.ScalarMap[str, int]
    average_order_cents: int
    top_products: _containers.RepeatedCompositeFieldContainer[ProductSales]
    def __init__(self, day: _Optional[str] = ..., orders: _Optional[int] = ..., revenue_cents: _Optional[int] = ..., by_status: _Optional[_Mapping[str, int]] = ..., average_order_cents: _Optional[int] = ..., top_products: _Optional[_Iterable[_Union[ProductSales, _Mapping]]] = ...) -> None: ...

class DailyReport(_message.Message):
    __slots__ = ("to", "days", "total")
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    to: str
    days: _containers.RepeatedCompositeFieldContainer[DailySales]
    total: DailySales
    def __init__(self, to: _Optional[str] = ..., days: _Optional[_Iterable[_Union[DailySales, _Mapping]]] = ..., total: _Optional[_Union[DailySales, _Mapping]] = ..., **kwargs) -> None: ...

class CreateReportExportRequest(_message.Message):
    __slots__ = ("to",)
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    to: str
    def __init__(self, to: _Optional[str] = ..., **kwargs) -> None: ...

class GetReportExportRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DownloadReportExportRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ReportExport(_message.Message):
    __slots__ = ("id", "to", "status", "rows_done", "rows_total", "created_at", "finished_at", "error", "csv")
    ID_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ROWS_DONE_FIELD_NUMBER: _ClassVar[int]
    ROWS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CSV_FIELD_NUMBER: _ClassVar[int]
    id: str
    to: str
    status: str
    rows_done: int
    rows_total: int
    created_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    error: str
    csv: str
    def __init__(self, id: _Optional[str] = ..., to: _Optional[str] = ..., status: _Optional[str] = ..., rows_done: _Optional[int] = ..., rows_total: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ..., csv: _Optional[str] = ..., **kwargs) -> None: ...
