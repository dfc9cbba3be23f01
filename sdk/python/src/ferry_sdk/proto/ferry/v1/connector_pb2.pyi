import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConnectorStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONNECTOR_STATUS_UNSPECIFIED: _ClassVar[ConnectorStatus]
    CONNECTOR_STATUS_CREATED: _ClassVar[ConnectorStatus]
    CONNECTOR_STATUS_NEEDS_CONFIGURATION: _ClassVar[ConnectorStatus]
    CONNECTOR_STATUS_CONFIGURED: _ClassVar[ConnectorStatus]
    CONNECTOR_STATUS_CONNECTED: _ClassVar[ConnectorStatus]
    CONNECTOR_STATUS_ERROR: _ClassVar[ConnectorStatus]

class SyncStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYNC_STATUS_UNSPECIFIED: _ClassVar[SyncStatus]
    SYNC_STATUS_PENDING: _ClassVar[SyncStatus]
    SYNC_STATUS_IN_PROGRESS: _ClassVar[SyncStatus]
    SYNC_STATUS_CANCELING: _ClassVar[SyncStatus]
    SYNC_STATUS_CANCELED: _ClassVar[SyncStatus]
    SYNC_STATUS_SUSPENDED: _ClassVar[SyncStatus]
    SYNC_STATUS_COMPLETED: _ClassVar[SyncStatus]
    SYNC_STATUS_ERROR: _ClassVar[SyncStatus]
CONNECTOR_STATUS_UNSPECIFIED: ConnectorStatus
CONNECTOR_STATUS_CREATED: ConnectorStatus
CONNECTOR_STATUS_NEEDS_CONFIGURATION: ConnectorStatus
CONNECTOR_STATUS_CONFIGURED: ConnectorStatus
CONNECTOR_STATUS_CONNECTED: ConnectorStatus
CONNECTOR_STATUS_ERROR: ConnectorStatus
SYNC_STATUS_UNSPECIFIED: SyncStatus
SYNC_STATUS_PENDING: SyncStatus
SYNC_STATUS_IN_PROGRESS: SyncStatus
SYNC_STATUS_CANCELING: SyncStatus
SYNC_STATUS_CANCELED: SyncStatus
SYNC_STATUS_SUSPENDED: SyncStatus
SYNC_STATUS_COMPLETED: SyncStatus
SYNC_STATUS_ERROR: SyncStatus

class ConfigOption(_message.Message):
    __slots__ = ("label", "value")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    label: str
    value: _struct_pb2.Value
    def __init__(self, label: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class ConfigDependency(_message.Message):
    __slots__ = ("field", "value")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    field: str
    value: _struct_pb2.Value
    def __init__(self, field: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class ConfigValidation(_message.Message):
    __slots__ = ("type", "constraint")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINT_FIELD_NUMBER: _ClassVar[int]
    type: str
    constraint: _struct_pb2.Value
    def __init__(self, type: _Optional[str] = ..., constraint: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class ConfigField(_message.Message):
    __slots__ = ("label", "type", "display", "sensitive", "required", "order", "tooltip", "options", "depends_on", "validations", "ui_restrictions", "value", "default_value")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_FIELD_NUMBER: _ClassVar[int]
    SENSITIVE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    TOOLTIP_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    VALIDATIONS_FIELD_NUMBER: _ClassVar[int]
    UI_RESTRICTIONS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    label: str
    type: str
    display: str
    sensitive: bool
    required: bool
    order: int
    tooltip: str
    options: _containers.RepeatedCompositeFieldContainer[ConfigOption]
    depends_on: _containers.RepeatedCompositeFieldContainer[ConfigDependency]
    validations: _containers.RepeatedCompositeFieldContainer[ConfigValidation]
    ui_restrictions: _containers.RepeatedScalarFieldContainer[str]
    value: _struct_pb2.Value
    default_value: _struct_pb2.Value
    def __init__(self, label: _Optional[str] = ..., type: _Optional[str] = ..., display: _Optional[str] = ..., sensitive: _Optional[bool] = ..., required: _Optional[bool] = ..., order: _Optional[int] = ..., tooltip: _Optional[str] = ..., options: _Optional[_Iterable[_Union[ConfigOption, _Mapping]]] = ..., depends_on: _Optional[_Iterable[_Union[ConfigDependency, _Mapping]]] = ..., validations: _Optional[_Iterable[_Union[ConfigValidation, _Mapping]]] = ..., ui_restrictions: _Optional[_Iterable[str]] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., default_value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class Connector(_message.Message):
    __slots__ = ("id", "name", "description", "index_name", "service_type", "language", "is_native", "status", "error", "last_seen", "configuration", "last_sync_status", "last_sync_error", "last_synced", "last_indexed_document_count", "last_deleted_document_count", "sync_cursor", "deleted", "api_key_id", "scheduling", "filtering", "pipeline", "last_sync_scheduled_at", "last_incremental_sync_scheduled_at", "allowed_agents", "refused_agents")
    class ConfigurationEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ConfigField
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ConfigField, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INDEX_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    IS_NATIVE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    CONFIGURATION_FIELD_NUMBER: _ClassVar[int]
    LAST_SYNC_STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_SYNC_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_SYNCED_FIELD_NUMBER: _ClassVar[int]
    LAST_INDEXED_DOCUMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_DELETED_DOCUMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    SYNC_CURSOR_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULING_FIELD_NUMBER: _ClassVar[int]
    FILTERING_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    LAST_SYNC_SCHEDULED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_INCREMENTAL_SYNC_SCHEDULED_AT_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_AGENTS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_AGENTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    index_name: str
    service_type: str
    language: str
    is_native: bool
    status: ConnectorStatus
    error: str
    last_seen: _timestamp_pb2.Timestamp
    configuration: _containers.MessageMap[str, ConfigField]
    last_sync_status: SyncStatus
    last_sync_error: str
    last_synced: _timestamp_pb2.Timestamp
    last_indexed_document_count: int
    last_deleted_document_count: int
    sync_cursor: _struct_pb2.Struct
    deleted: bool
    api_key_id: str
    scheduling: Scheduling
    filtering: _containers.RepeatedCompositeFieldContainer[Filtering]
    pipeline: Pipeline
    last_sync_scheduled_at: _timestamp_pb2.Timestamp
    last_incremental_sync_scheduled_at: _timestamp_pb2.Timestamp
    allowed_agents: _containers.RepeatedScalarFieldContainer[str]
    refused_agents: _containers.RepeatedCompositeFieldContainer[RefusedAgent]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., index_name: _Optional[str] = ..., service_type: _Optional[str] = ..., language: _Optional[str] = ..., is_native: _Optional[bool] = ..., status: _Optional[_Union[ConnectorStatus, str]] = ..., error: _Optional[str] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., configuration: _Optional[_Mapping[str, ConfigField]] = ..., last_sync_status: _Optional[_Union[SyncStatus, str]] = ..., last_sync_error: _Optional[str] = ..., last_synced: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_indexed_document_count: _Optional[int] = ..., last_deleted_document_count: _Optional[int] = ..., sync_cursor: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., deleted: _Optional[bool] = ..., api_key_id: _Optional[str] = ..., scheduling: _Optional[_Union[Scheduling, _Mapping]] = ..., filtering: _Optional[_Iterable[_Union[Filtering, _Mapping]]] = ..., pipeline: _Optional[_Union[Pipeline, _Mapping]] = ..., last_sync_scheduled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_incremental_sync_scheduled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., allowed_agents: _Optional[_Iterable[str]] = ..., refused_agents: _Optional[_Iterable[_Union[RefusedAgent, _Mapping]]] = ...) -> None: ...

class RefusedAgent(_message.Message):
    __slots__ = ("agent_id", "reason", "at")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    reason: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, agent_id: _Optional[str] = ..., reason: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PutConnectorRequest(_message.Message):
    __slots__ = ("connector_id", "name", "description", "index_name", "service_type", "language")
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INDEX_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    name: str
    description: str
    index_name: str
    service_type: str
    language: str
    def __init__(self, connector_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., index_name: _Optional[str] = ..., service_type: _Optional[str] = ..., language: _Optional[str] = ...) -> None: ...

class PutConnectorResponse(_message.Message):
    __slots__ = ("connector", "result")
    CONNECTOR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    connector: Connector
    result: str
    def __init__(self, connector: _Optional[_Union[Connector, _Mapping]] = ..., result: _Optional[str] = ...) -> None: ...

class CreateConnectorRequest(_message.Message):
    __slots__ = ("name", "description", "index_name", "service_type", "language")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INDEX_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    index_name: str
    service_type: str
    language: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., index_name: _Optional[str] = ..., service_type: _Optional[str] = ..., language: _Optional[str] = ...) -> None: ...

class CreateConnectorResponse(_message.Message):
    __slots__ = ("connector",)
    CONNECTOR_FIELD_NUMBER: _ClassVar[int]
    connector: Connector
    def __init__(self, connector: _Optional[_Union[Connector, _Mapping]] = ...) -> None: ...

class GetConnectorRequest(_message.Message):
    __slots__ = ("connector_id",)
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    def __init__(self, connector_id: _Optional[str] = ...) -> None: ...

class GetConnectorResponse(_message.Message):
    __slots__ = ("connector",)
    CONNECTOR_FIELD_NUMBER: _ClassVar[int]
    connector: Connector
    def __init__(self, connector: _Optional[_Union[Connector, _Mapping]] = ...) -> None: ...

class WatchConnectorRequest(_message.Message):
    __slots__ = ("connector_id",)
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    def __init__(self, connector_id: _Optional[str] = ...) -> None: ...

class WatchConnectorResponse(_message.Message):
    __slots__ = ("connector",)
    CONNECTOR_FIELD_NUMBER: _ClassVar[int]
    connector: Connector
    def __init__(self, connector: _Optional[_Union[Connector, _Mapping]] = ...) -> None: ...

class ListConnectorsRequest(_message.Message):
    __slots__ = ("size", "service_type", "index_name", "include_deleted", "page_token")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    INDEX_NAME_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DELETED_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    size: int
    service_type: str
    index_name: str
    include_deleted: bool
    page_token: str
    def __init__(self, size: _Optional[int] = ..., service_type: _Optional[str] = ..., index_name: _Optional[str] = ..., include_deleted: _Optional[bool] = ..., page_token: _Optional[str] = ..., **kwargs) -> None: ...

class ListConnectorsResponse(_message.Message):
    __slots__ = ("connectors", "count", "next_page_token")
    CONNECTORS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    connectors: _containers.RepeatedCompositeFieldContainer[Connector]
    count: int
    next_page_token: str
    def __init__(self, connectors: _Optional[_Iterable[_Union[Connector, _Mapping]]] = ..., count: _Optional[int] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteConnectorRequest(_message.Message):
    __slots__ = ("connector_id", "delete_sync_jobs")
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    DELETE_SYNC_JOBS_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    delete_sync_jobs: bool
    def __init__(self, connector_id: _Optional[str] = ..., delete_sync_jobs: _Optional[bool] = ...) -> None: ...

class DeleteConnectorResponse(_message.Message):
    __slots__ = ("acknowledged", "deleted_sync_jobs")
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    DELETED_SYNC_JOBS_FIELD_NUMBER: _ClassVar[int]
    acknowledged: bool
    deleted_sync_jobs: int
    def __init__(self, acknowledged: _Optional[bool] = ..., deleted_sync_jobs: _Optional[int] = ...) -> None: ...

class UpdateConfigurationRequest(_message.Message):
    __slots__ = ("connector_id", "values")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    values: _containers.MessageMap[str, _struct_pb2.Value]
    def __init__(self, connector_id: _Optional[str] = ..., values: _Optional[_Mapping[str, _struct_pb2.Value]] = ...) -> None: ...

class UpdateConfigurationResponse(_message.Message):
    __slots__ = ("connector",)
    CONNECTOR_FIELD_NUMBER: _ClassVar[int]
    connector: Connector
    def __init__(self, connector: _Optional[_Union[Connector, _Mapping]] = ...) -> None: ...

class ScheduleEntry(_message.Message):
    __slots__ = ("enabled", "interval")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    interval: str
    def __init__(self, enabled: _Optional[bool] = ..., interval: _Optional[str] = ...) -> None: ...

class Scheduling(_message.Message):
    __slots__ = ("full", "incremental", "access_control")
    FULL_FIELD_NUMBER: _ClassVar[int]
    INCREMENTAL_FIELD_NUMBER: _ClassVar[int]
    ACCESS_CONTROL_FIELD_NUMBER: _ClassVar[int]
    full: ScheduleEntry
    incremental: ScheduleEntry
    access_control: ScheduleEntry
    def __init__(self, full: _Optional[_Union[ScheduleEntry, _Mapping]] = ..., incremental: _Optional[_Union[ScheduleEntry, _Mapping]] = ..., access_control: _Optional[_Union[ScheduleEntry, _Mapping]] = ...) -> None: ...

class Pipeline(_message.Message):
    __slots__ = ("name", "extract_binary_content", "reduce_whitespace", "run_ml_inference")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXTRACT_BINARY_CONTENT_FIELD_NUMBER: _ClassVar[int]
    REDUCE_WHITESPACE_FIELD_NUMBER: _ClassVar[int]
    RUN_ML_INFERENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    extract_binary_content: bool
    reduce_whitespace: bool
    run_ml_inference: bool
    def __init__(self, name: _Optional[str] = ..., extract_binary_content: _Optional[bool] = ..., reduce_whitespace: _Optional[bool] = ..., run_ml_inference: _Optional[bool] = ...) -> None: ...

class FilteringRule(_message.Message):
    __slots__ = ("id", "policy", "field", "rule", "value", "order", "created_at", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    policy: str
    field: str
    rule: str
    value: str
    order: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., policy: _Optional[str] = ..., field: _Optional[str] = ..., rule: _Optional[str] = ..., value: _Optional[str] = ..., order: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FilteringValidationError(_message.Message):
    __slots__ = ("ids", "messages")
    IDS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    messages: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., messages: _Optional[_Iterable[str]] = ...) -> None: ...

class FilteringValidation(_message.Message):
    __slots__ = ("state", "errors")
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    state: str
    errors: _containers.RepeatedCompositeFieldContainer[FilteringValidationError]
    def __init__(self, state: _Optional[str] = ..., errors: _Optional[_Iterable[_Union[FilteringValidationError, _Mapping]]] = ...) -> None: ...

class FilteringRules(_message.Message):
    __slots__ = ("rules", "advanced_snippet", "validation")
    RULES_FIELD_NUMBER: _ClassVar[int]
    ADVANCED_SNIPPET_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[FilteringRule]
    advanced_snippet: _struct_pb2.Value
    validation: FilteringValidation
    def __init__(self, rules: _Optional[_Iterable[_Union[FilteringRule, _Mapping]]] = ..., advanced_snippet: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., validation: _Optional[_Union[FilteringValidation, _Mapping]] = ...) -> None: ...

class Filtering(_message.Message):
    __slots__ = ("domain", "active", "draft")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    domain: str
    active: FilteringRules
    draft: FilteringRules
    def __init__(self, domain: _Optional[str] = ..., active: _Optional[_Union[FilteringRules, _Mapping]] = ..., draft: _Optional[_Union[FilteringRules, _Mapping]] = ...) -> None: ...

class UpdateSchedulingRequest(_message.Message):
    __slots__ = ("connector_id", "scheduling")
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULING_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    scheduling: Scheduling
    def __init__(self, connector_id: _Optional[str] = ..., scheduling: _Optional[_Union[Scheduling, _Mapping]] = ...) -> None: ...

class UpdateSchedulingResponse(_message.Message):
    __slots__ = ("connector",)
    CONNECTOR_FIELD_NUMBER: _ClassVar[int]
    connector: Connector
    def __init__(self, connector: _Optional[_Union[Connector, _Mapping]] = ...) -> None: ...

class UpdateFilteringRequest(_message.Message):
    __slots__ = ("connector_id", "rules", "advanced_snippet")
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    ADVANCED_SNIPPET_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    rules: _containers.RepeatedCompositeFieldContainer[FilteringRule]
    advanced_snippet: _struct_pb2.Value
    def __init__(self, connector_id: _Optional[str] = ..., rules: _Optional[_Iterable[_Union[FilteringRule, _Mapping]]] = ..., advanced_snippet: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class UpdateFilteringResponse(_message.Message):
    __slots__ = ("connector",)
    CONNECTOR_FIELD_NUMBER: _ClassVar[int]
    connector: Connector
    def __init__(self, connector: _Optional[_Union[Connector, _Mapping]] = ...) -> None: ...

class UpdatePipelineRequest(_message.Message):
    __slots__ = ("connector_id", "pipeline")
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    pipeline: Pipeline
    def __init__(self, connector_id: _Optional[str] = ..., pipeline: _Optional[_Union[Pipeline, _Mapping]] = ...) -> None: ...

class UpdatePipelineResponse(_message.Message):
    __slots__ = ("connector",)
    CONNECTOR_FIELD_NUMBER: _ClassVar[int]
    connector: Connector
    def __init__(self, connector: _Optional[_Union[Connector, _Mapping]] = ...) -> None: ...

class UpdateIndexNameRequest(_message.Message):
    __slots__ = ("connector_id", "index_name")
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_NAME_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    index_name: str
    def __init__(self, connector_id: _Optional[str] = ..., index_name: _Optional[str] = ...) -> None: ...

class UpdateIndexNameResponse(_message.Message):
    __slots__ = ("connector",)
    CONNECTOR_FIELD_NUMBER: _ClassVar[int]
    connector: Connector
    def __init__(self, connector: _Optional[_Union[Connector, _Mapping]] = ...) -> None: ...

class UpdateNameRequest(_message.Message):
    __slots__ = ("connector_id", "name", "description")
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    name: str
    description: str
    def __init__(self, connector_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class UpdateNameResponse(_message.Message):
    __slots__ = ("connector",)
    CONNECTOR_FIELD_NUMBER: _ClassVar[int]
    connector: Connector
    def __init__(self, connector: _Optional[_Union[Connector, _Mapping]] = ...) -> None: ...

class UpdateServiceTypeRequest(_message.Message):
    __slots__ = ("connector_id", "service_type")
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    service_type: str
    def __init__(self, connector_id: _Optional[str] = ..., service_type: _Optional[str] = ...) -> None: ...

class UpdateServiceTypeResponse(_message.Message):
    __slots__ = ("connector",)
    CONNECTOR_FIELD_NUMBER: _ClassVar[int]
    connector: Connector
    def __init__(self, connector: _Optional[_Union[Connector, _Mapping]] = ...) -> None: ...

class UpdateAllowedAgentsRequest(_message.Message):
    __slots__ = ("connector_id", "allowed_agents")
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_AGENTS_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    allowed_agents: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, connector_id: _Optional[str] = ..., allowed_agents: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateAllowedAgentsResponse(_message.Message):
    __slots__ = ("connector",)
    CONNECTOR_FIELD_NUMBER: _ClassVar[int]
    connector: Connector
    def __init__(self, connector: _Optional[_Union[Connector, _Mapping]] = ...) -> None: ...
