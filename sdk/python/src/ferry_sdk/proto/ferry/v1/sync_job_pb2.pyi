import datetime

from ferry_sdk.proto.ferry.v1 import connector_pb2 as _connector_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SyncJobView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYNC_JOB_VIEW_UNSPECIFIED: _ClassVar[SyncJobView]
    SYNC_JOB_VIEW_SUMMARY: _ClassVar[SyncJobView]
    SYNC_JOB_VIEW_FULL: _ClassVar[SyncJobView]

class JobType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_TYPE_UNSPECIFIED: _ClassVar[JobType]
    JOB_TYPE_FULL: _ClassVar[JobType]
    JOB_TYPE_INCREMENTAL: _ClassVar[JobType]
    JOB_TYPE_ACCESS_CONTROL: _ClassVar[JobType]

class TriggerMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRIGGER_METHOD_UNSPECIFIED: _ClassVar[TriggerMethod]
    TRIGGER_METHOD_ON_DEMAND: _ClassVar[TriggerMethod]
    TRIGGER_METHOD_SCHEDULED: _ClassVar[TriggerMethod]
SYNC_JOB_VIEW_UNSPECIFIED: SyncJobView
SYNC_JOB_VIEW_SUMMARY: SyncJobView
SYNC_JOB_VIEW_FULL: SyncJobView
JOB_TYPE_UNSPECIFIED: JobType
JOB_TYPE_FULL: JobType
JOB_TYPE_INCREMENTAL: JobType
JOB_TYPE_ACCESS_CONTROL: JobType
TRIGGER_METHOD_UNSPECIFIED: TriggerMethod
TRIGGER_METHOD_ON_DEMAND: TriggerMethod
TRIGGER_METHOD_SCHEDULED: TriggerMethod

class SyncJobConnector(_message.Message):
    __slots__ = ("id", "index_name", "service_type", "language", "configuration", "filtering", "pipeline")
    class ConfigurationEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _connector_pb2.ConfigField
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_connector_pb2.ConfigField, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    CONFIGURATION_FIELD_NUMBER: _ClassVar[int]
    FILTERING_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    id: str
    index_name: str
    service_type: str
    language: str
    configuration: _containers.MessageMap[str, _connector_pb2.ConfigField]
    filtering: _containers.RepeatedCompositeFieldContainer[_connector_pb2.Filtering]
    pipeline: _connector_pb2.Pipeline
    def __init__(self, id: _Optional[str] = ..., index_name: _Optional[str] = ..., service_type: _Optional[str] = ..., language: _Optional[str] = ..., configuration: _Optional[_Mapping[str, _connector_pb2.ConfigField]] = ..., filtering: _Optional[_Iterable[_Union[_connector_pb2.Filtering, _Mapping]]] = ..., pipeline: _Optional[_Union[_connector_pb2.Pipeline, _Mapping]] = ...) -> None: ...

class SyncJob(_message.Message):
    __slots__ = ("id", "connector_id", "job_type", "trigger_method", "status", "error", "created_at", "started_at", "last_seen", "completed_at", "cancelation_requested_at", "canceled_at", "indexed_document_count", "indexed_document_volume", "deleted_document_count", "total_document_count", "worker_hostname", "metadata", "connector", "docs_per_second")
    ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_METHOD_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    CANCELATION_REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    CANCELED_AT_FIELD_NUMBER: _ClassVar[int]
    INDEXED_DOCUMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    INDEXED_DOCUMENT_VOLUME_FIELD_NUMBER: _ClassVar[int]
    DELETED_DOCUMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_DOCUMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    WORKER_HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CONNECTOR_FIELD_NUMBER: _ClassVar[int]
    DOCS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    id: str
    connector_id: str
    job_type: JobType
    trigger_method: TriggerMethod
    status: _connector_pb2.SyncStatus
    error: str
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    last_seen: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    cancelation_requested_at: _timestamp_pb2.Timestamp
    canceled_at: _timestamp_pb2.Timestamp
    indexed_document_count: int
    indexed_document_volume: int
    deleted_document_count: int
    total_document_count: int
    worker_hostname: str
    metadata: _struct_pb2.Struct
    connector: SyncJobConnector
    docs_per_second: float
    def __init__(self, id: _Optional[str] = ..., connector_id: _Optional[str] = ..., job_type: _Optional[_Union[JobType, str]] = ..., trigger_method: _Optional[_Union[TriggerMethod, str]] = ..., status: _Optional[_Union[_connector_pb2.SyncStatus, str]] = ..., error: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancelation_requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., canceled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., indexed_document_count: _Optional[int] = ..., indexed_document_volume: _Optional[int] = ..., deleted_document_count: _Optional[int] = ..., total_document_count: _Optional[int] = ..., worker_hostname: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., connector: _Optional[_Union[SyncJobConnector, _Mapping]] = ..., docs_per_second: _Optional[float] = ...) -> None: ...

class CreateSyncJobRequest(_message.Message):
    __slots__ = ("connector_id", "job_type", "continuous")
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTINUOUS_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    job_type: JobType
    continuous: bool
    def __init__(self, connector_id: _Optional[str] = ..., job_type: _Optional[_Union[JobType, str]] = ..., continuous: _Optional[bool] = ...) -> None: ...

class CreateSyncJobResponse(_message.Message):
    __slots__ = ("sync_job",)
    SYNC_JOB_FIELD_NUMBER: _ClassVar[int]
    sync_job: SyncJob
    def __init__(self, sync_job: _Optional[_Union[SyncJob, _Mapping]] = ...) -> None: ...

class GetSyncJobRequest(_message.Message):
    __slots__ = ("sync_job_id", "view")
    SYNC_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    sync_job_id: str
    view: SyncJobView
    def __init__(self, sync_job_id: _Optional[str] = ..., view: _Optional[_Union[SyncJobView, str]] = ...) -> None: ...

class GetSyncJobResponse(_message.Message):
    __slots__ = ("sync_job",)
    SYNC_JOB_FIELD_NUMBER: _ClassVar[int]
    sync_job: SyncJob
    def __init__(self, sync_job: _Optional[_Union[SyncJob, _Mapping]] = ...) -> None: ...

class ListSyncJobsRequest(_message.Message):
    __slots__ = ("connector_id", "size", "status", "job_type", "view", "page_token")
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    size: int
    status: _connector_pb2.SyncStatus
    job_type: JobType
    view: SyncJobView
    page_token: str
    def __init__(self, connector_id: _Optional[str] = ..., size: _Optional[int] = ..., status: _Optional[_Union[_connector_pb2.SyncStatus, str]] = ..., job_type: _Optional[_Union[JobType, str]] = ..., view: _Optional[_Union[SyncJobView, str]] = ..., page_token: _Optional[str] = ..., **kwargs) -> None: ...

class ListSyncJobsResponse(_message.Message):
    __slots__ = ("sync_jobs", "count", "next_page_token")
    SYNC_JOBS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sync_jobs: _containers.RepeatedCompositeFieldContainer[SyncJob]
    count: int
    next_page_token: str
    def __init__(self, sync_jobs: _Optional[_Iterable[_Union[SyncJob, _Mapping]]] = ..., count: _Optional[int] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelSyncJobRequest(_message.Message):
    __slots__ = ("sync_job_id",)
    SYNC_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    sync_job_id: str
    def __init__(self, sync_job_id: _Optional[str] = ...) -> None: ...

class CancelSyncJobResponse(_message.Message):
    __slots__ = ("sync_job",)
    SYNC_JOB_FIELD_NUMBER: _ClassVar[int]
    sync_job: SyncJob
    def __init__(self, sync_job: _Optional[_Union[SyncJob, _Mapping]] = ...) -> None: ...

class DeleteSyncJobRequest(_message.Message):
    __slots__ = ("sync_job_id",)
    SYNC_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    sync_job_id: str
    def __init__(self, sync_job_id: _Optional[str] = ...) -> None: ...

class DeleteSyncJobResponse(_message.Message):
    __slots__ = ("acknowledged",)
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    acknowledged: bool
    def __init__(self, acknowledged: _Optional[bool] = ...) -> None: ...

class WatchSyncJobRequest(_message.Message):
    __slots__ = ("sync_job_id", "view")
    SYNC_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    sync_job_id: str
    view: SyncJobView
    def __init__(self, sync_job_id: _Optional[str] = ..., view: _Optional[_Union[SyncJobView, str]] = ...) -> None: ...

class WatchSyncJobResponse(_message.Message):
    __slots__ = ("sync_job",)
    SYNC_JOB_FIELD_NUMBER: _ClassVar[int]
    sync_job: SyncJob
    def __init__(self, sync_job: _Optional[_Union[SyncJob, _Mapping]] = ...) -> None: ...
