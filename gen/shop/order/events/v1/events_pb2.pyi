import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OrderClosed(_message.Message):
    __slots__ = ("order_id", "tenant_id", "total_cents", "closed_at")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CENTS_FIELD_NUMBER: _ClassVar[int]
    CLOSED_AT_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    tenant_id: str
    total_cents: int
    closed_at: _timestamp_pb2.Timestamp
    def __init__(self, order_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., total_cents: _Optional[int] = ..., closed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class OrderStatusChanged(_message.Message):
    __slots__ = ("order_id", "tenant_id", "user_id", "from_status", "to_status", "version", "total_cents", "at", "reason", "actor")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_STATUS_FIELD_NUMBER: _ClassVar[int]
    TO_STATUS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CENTS_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    tenant_id: str
    user_id: str
    from_status: str
    to_status: str
    version: int
    total_cents: int
    at: _timestamp_pb2.Timestamp
    reason: str
    actor: str
    def __init__(self, order_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., from_status: _Optional[str] = ..., to_status: _Optional[str] = ..., version: _Optional[int] = ..., total_cents: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class PaymentUnknown(_message.Message):
    __slots__ = ("payment_id", "order_id", "tenant_id")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    order_id: str
    tenant_id: str
    def __init__(self, payment_id: _Optional[str] = ..., order_id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class ReportExportRequested(_message.Message):
    __slots__ = ("job_id", "tenant_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tenant_id: str
    def __init__(self, job_id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...
