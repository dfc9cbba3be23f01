from ferry_sdk.proto.ferry.v1 import connector_pb2 as _connector_pb2
from ferry_sdk.proto.ferry.v1 import sync_job_pb2 as _sync_job_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProtocolVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_VERSION_UNSPECIFIED: _ClassVar[ProtocolVersion]
    PROTOCOL_VERSION_1: _ClassVar[ProtocolVersion]

class IncrementalMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INCREMENTAL_MODE_UNSPECIFIED: _ClassVar[IncrementalMode]
    INCREMENTAL_MODE_DRAIN: _ClassVar[IncrementalMode]
    INCREMENTAL_MODE_CONTINUOUS: _ClassVar[IncrementalMode]

class DocumentOp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DOCUMENT_OP_UNSPECIFIED: _ClassVar[DocumentOp]
    DOCUMENT_OP_INDEX: _ClassVar[DocumentOp]
    DOCUMENT_OP_UPDATE: _ClassVar[DocumentOp]
    DOCUMENT_OP_DELETE: _ClassVar[DocumentOp]
    DOCUMENT_OP_DELETE_MATCHING: _ClassVar[DocumentOp]

class FailureKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_KIND_UNSPECIFIED: _ClassVar[FailureKind]
    FAILURE_KIND_SOURCE_UNREACHABLE: _ClassVar[FailureKind]
    FAILURE_KIND_CONFIGURATION: _ClassVar[FailureKind]
    FAILURE_KIND_INTERNAL: _ClassVar[FailureKind]
    FAILURE_KIND_UNSUPPORTED: _ClassVar[FailureKind]

class FieldKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FIELD_KIND_UNSPECIFIED: _ClassVar[FieldKind]
    FIELD_KIND_INTEGER: _ClassVar[FieldKind]
    FIELD_KIND_LONG: _ClassVar[FieldKind]
    FIELD_KIND_DOUBLE: _ClassVar[FieldKind]
    FIELD_KIND_DECIMAL: _ClassVar[FieldKind]
    FIELD_KIND_BOOLEAN: _ClassVar[FieldKind]
    FIELD_KIND_DATE: _ClassVar[FieldKind]
    FIELD_KIND_KEYWORD: _ClassVar[FieldKind]
    FIELD_KIND_TEXT: _ClassVar[FieldKind]
    FIELD_KIND_OBJECT: _ClassVar[FieldKind]
    FIELD_KIND_BINARY: _ClassVar[FieldKind]
    FIELD_KIND_IP: _ClassVar[FieldKind]
PROTOCOL_VERSION_UNSPECIFIED: ProtocolVersion
PROTOCOL_VERSION_1: ProtocolVersion
INCREMENTAL_MODE_UNSPECIFIED: IncrementalMode
INCREMENTAL_MODE_DRAIN: IncrementalMode
INCREMENTAL_MODE_CONTINUOUS: IncrementalMode
DOCUMENT_OP_UNSPECIFIED: DocumentOp
DOCUMENT_OP_INDEX: DocumentOp
DOCUMENT_OP_UPDATE: DocumentOp
DOCUMENT_OP_DELETE: DocumentOp
DOCUMENT_OP_DELETE_MATCHING: DocumentOp
FAILURE_KIND_UNSPECIFIED: FailureKind
FAILURE_KIND_SOURCE_UNREACHABLE: FailureKind
FAILURE_KIND_CONFIGURATION: FailureKind
FAILURE_KIND_INTERNAL: FailureKind
FAILURE_KIND_UNSUPPORTED: FailureKind
FIELD_KIND_UNSPECIFIED: FieldKind
FIELD_KIND_INTEGER: FieldKind
FIELD_KIND_LONG: FieldKind
FIELD_KIND_DOUBLE: FieldKind
FIELD_KIND_DECIMAL: FieldKind
FIELD_KIND_BOOLEAN: FieldKind
FIELD_KIND_DATE: FieldKind
FIELD_KIND_KEYWORD: FieldKind
FIELD_KIND_TEXT: FieldKind
FIELD_KIND_OBJECT: FieldKind
FIELD_KIND_BINARY: FieldKind
FIELD_KIND_IP: FieldKind

class AgentMessage(_message.Message):
    __slots__ = ("hello", "heartbeat", "validation_result", "batch", "job_finished", "filtering_result", "progress", "schema")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_RESULT_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    JOB_FINISHED_FIELD_NUMBER: _ClassVar[int]
    FILTERING_RESULT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    heartbeat: Heartbeat
    validation_result: ValidationResult
    batch: DocumentBatch
    job_finished: JobFinished
    filtering_result: FilteringResult
    progress: JobProgress
    schema: DocumentSchema
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., validation_result: _Optional[_Union[ValidationResult, _Mapping]] = ..., batch: _Optional[_Union[DocumentBatch, _Mapping]] = ..., job_finished: _Optional[_Union[JobFinished, _Mapping]] = ..., filtering_result: _Optional[_Union[FilteringResult, _Mapping]] = ..., progress: _Optional[_Union[JobProgress, _Mapping]] = ..., schema: _Optional[_Union[DocumentSchema, _Mapping]] = ...) -> None: ...

class ControlMessage(_message.Message):
    __slots__ = ("welcome", "validate_configuration", "assign_job", "batch_ack", "cancel_job", "connector_refused", "validate_filtering", "release_connector")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_CONFIGURATION_FIELD_NUMBER: _ClassVar[int]
    ASSIGN_JOB_FIELD_NUMBER: _ClassVar[int]
    BATCH_ACK_FIELD_NUMBER: _ClassVar[int]
    CANCEL_JOB_FIELD_NUMBER: _ClassVar[int]
    CONNECTOR_REFUSED_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_FILTERING_FIELD_NUMBER: _ClassVar[int]
    RELEASE_CONNECTOR_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    validate_configuration: ValidateConfiguration
    assign_job: AssignJob
    batch_ack: BatchAck
    cancel_job: CancelJob
    connector_refused: ConnectorRefused
    validate_filtering: ValidateFiltering
    release_connector: ReleaseConnector
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., validate_configuration: _Optional[_Union[ValidateConfiguration, _Mapping]] = ..., assign_job: _Optional[_Union[AssignJob, _Mapping]] = ..., batch_ack: _Optional[_Union[BatchAck, _Mapping]] = ..., cancel_job: _Optional[_Union[CancelJob, _Mapping]] = ..., connector_refused: _Optional[_Union[ConnectorRefused, _Mapping]] = ..., validate_filtering: _Optional[_Union[ValidateFiltering, _Mapping]] = ..., release_connector: _Optional[_Union[ReleaseConnector, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol_version", "agent_version", "hostname", "connectors", "max_concurrent_jobs")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    CONNECTORS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_JOBS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: ProtocolVersion
    agent_version: str
    hostname: str
    connectors: _containers.RepeatedCompositeFieldContainer[ServedConnector]
    max_concurrent_jobs: int
    def __init__(self, protocol_version: _Optional[_Union[ProtocolVersion, str]] = ..., agent_version: _Optional[str] = ..., hostname: _Optional[str] = ..., connectors: _Optional[_Iterable[_Union[ServedConnector, _Mapping]]] = ..., max_concurrent_jobs: _Optional[int] = ...) -> None: ...

class ServedConnector(_message.Message):
    __slots__ = ("connector_id", "service_type", "configuration_schema", "capabilities")
    class ConfigurationSchemaEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _connector_pb2.ConfigField
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_connector_pb2.ConfigField, _Mapping]] = ...) -> None: ...
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONFIGURATION_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    service_type: str
    configuration_schema: _containers.MessageMap[str, _connector_pb2.ConfigField]
    capabilities: SourceCapabilities
    def __init__(self, connector_id: _Optional[str] = ..., service_type: _Optional[str] = ..., configuration_schema: _Optional[_Mapping[str, _connector_pb2.ConfigField]] = ..., capabilities: _Optional[_Union[SourceCapabilities, _Mapping]] = ...) -> None: ...

class SourceCapabilities(_message.Message):
    __slots__ = ("job_types", "basic_rules", "advanced_rules")
    JOB_TYPES_FIELD_NUMBER: _ClassVar[int]
    BASIC_RULES_FIELD_NUMBER: _ClassVar[int]
    ADVANCED_RULES_FIELD_NUMBER: _ClassVar[int]
    job_types: _containers.RepeatedScalarFieldContainer[_sync_job_pb2.JobType]
    basic_rules: bool
    advanced_rules: bool
    def __init__(self, job_types: _Optional[_Iterable[_Union[_sync_job_pb2.JobType, str]]] = ..., basic_rules: _Optional[bool] = ..., advanced_rules: _Optional[bool] = ...) -> None: ...

class FlowControl(_message.Message):
    __slots__ = ("max_unacked_batches", "max_batch_bytes", "max_batch_documents")
    MAX_UNACKED_BATCHES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    max_unacked_batches: int
    max_batch_bytes: int
    max_batch_documents: int
    def __init__(self, max_unacked_batches: _Optional[int] = ..., max_batch_bytes: _Optional[int] = ..., max_batch_documents: _Optional[int] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("protocol_version", "agent_id", "session_id", "heartbeat_interval_ms", "flow_control")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    FLOW_CONTROL_FIELD_NUMBER: _ClassVar[int]
    protocol_version: ProtocolVersion
    agent_id: str
    session_id: str
    heartbeat_interval_ms: int
    flow_control: FlowControl
    def __init__(self, protocol_version: _Optional[_Union[ProtocolVersion, str]] = ..., agent_id: _Optional[str] = ..., session_id: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., flow_control: _Optional[_Union[FlowControl, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("running_job_ids",)
    RUNNING_JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    running_job_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, running_job_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ValidateConfiguration(_message.Message):
    __slots__ = ("connector_id", "values", "revision")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    values: _containers.MessageMap[str, _struct_pb2.Value]
    revision: str
    def __init__(self, connector_id: _Optional[str] = ..., values: _Optional[_Mapping[str, _struct_pb2.Value]] = ..., revision: _Optional[str] = ...) -> None: ...

class ValidationResult(_message.Message):
    __slots__ = ("connector_id", "revision", "ok", "error")
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    revision: str
    ok: bool
    error: str
    def __init__(self, connector_id: _Optional[str] = ..., revision: _Optional[str] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class AssignJob(_message.Message):
    __slots__ = ("job_id", "lease_id", "connector_id", "job_type", "configuration", "index_name", "resume_checkpoint", "flow_control", "filtering", "sync_cursor", "incremental_mode")
    class ConfigurationEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONFIGURATION_FIELD_NUMBER: _ClassVar[int]
    INDEX_NAME_FIELD_NUMBER: _ClassVar[int]
    RESUME_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    FLOW_CONTROL_FIELD_NUMBER: _ClassVar[int]
    FILTERING_FIELD_NUMBER: _ClassVar[int]
    SYNC_CURSOR_FIELD_NUMBER: _ClassVar[int]
    INCREMENTAL_MODE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease_id: str
    connector_id: str
    job_type: _sync_job_pb2.JobType
    configuration: _containers.MessageMap[str, _struct_pb2.Value]
    index_name: str
    resume_checkpoint: bytes
    flow_control: FlowControl
    filtering: SyncRules
    sync_cursor: bytes
    incremental_mode: IncrementalMode
    def __init__(self, job_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., connector_id: _Optional[str] = ..., job_type: _Optional[_Union[_sync_job_pb2.JobType, str]] = ..., configuration: _Optional[_Mapping[str, _struct_pb2.Value]] = ..., index_name: _Optional[str] = ..., resume_checkpoint: _Optional[bytes] = ..., flow_control: _Optional[_Union[FlowControl, _Mapping]] = ..., filtering: _Optional[_Union[SyncRules, _Mapping]] = ..., sync_cursor: _Optional[bytes] = ..., incremental_mode: _Optional[_Union[IncrementalMode, str]] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("id", "source", "op", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    source: bytes
    op: DocumentOp
    version: int
    def __init__(self, id: _Optional[str] = ..., source: _Optional[bytes] = ..., op: _Optional[_Union[DocumentOp, str]] = ..., version: _Optional[int] = ...) -> None: ...

class DocumentBatch(_message.Message):
    __slots__ = ("job_id", "lease_id", "sequence", "documents", "checkpoint")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease_id: str
    sequence: int
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    checkpoint: bytes
    def __init__(self, job_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., sequence: _Optional[int] = ..., documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., checkpoint: _Optional[bytes] = ...) -> None: ...

class BatchAck(_message.Message):
    __slots__ = ("job_id", "lease_id", "sequence", "indexed", "failed")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease_id: str
    sequence: int
    indexed: int
    failed: int
    def __init__(self, job_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., sequence: _Optional[int] = ..., indexed: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class JobFinished(_message.Message):
    __slots__ = ("job_id", "lease_id", "last_sequence", "completed", "failed", "canceled", "metadata")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELED_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease_id: str
    last_sequence: int
    completed: JobCompleted
    failed: JobFailed
    canceled: JobCanceled
    metadata: _struct_pb2.Struct
    def __init__(self, job_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., last_sequence: _Optional[int] = ..., completed: _Optional[_Union[JobCompleted, _Mapping]] = ..., failed: _Optional[_Union[JobFailed, _Mapping]] = ..., canceled: _Optional[_Union[JobCanceled, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class JobCompleted(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("job_id", "lease_id", "metadata")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease_id: str
    metadata: _struct_pb2.Struct
    def __init__(self, job_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class DocumentSchema(_message.Message):
    __slots__ = ("job_id", "lease_id", "source", "fields")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease_id: str
    source: str
    fields: _containers.RepeatedCompositeFieldContainer[FieldSchema]
    def __init__(self, job_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., source: _Optional[str] = ..., fields: _Optional[_Iterable[_Union[FieldSchema, _Mapping]]] = ...) -> None: ...

class FieldSchema(_message.Message):
    __slots__ = ("name", "kind", "array", "source_type", "precision", "scale")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: FieldKind
    array: bool
    source_type: str
    precision: int
    scale: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[FieldKind, str]] = ..., array: _Optional[bool] = ..., source_type: _Optional[str] = ..., precision: _Optional[int] = ..., scale: _Optional[int] = ...) -> None: ...

class JobFailed(_message.Message):
    __slots__ = ("kind", "message")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    kind: FailureKind
    message: str
    def __init__(self, kind: _Optional[_Union[FailureKind, str]] = ..., message: _Optional[str] = ...) -> None: ...

class JobCanceled(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CancelJob(_message.Message):
    __slots__ = ("job_id", "lease_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ConnectorRefused(_message.Message):
    __slots__ = ("connector_id", "reason")
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    reason: str
    def __init__(self, connector_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReleaseConnector(_message.Message):
    __slots__ = ("connector_id", "configuration")
    class ConfigurationEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIGURATION_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    configuration: _containers.MessageMap[str, _struct_pb2.Value]
    def __init__(self, connector_id: _Optional[str] = ..., configuration: _Optional[_Mapping[str, _struct_pb2.Value]] = ...) -> None: ...

class SyncRules(_message.Message):
    __slots__ = ("rules", "advanced_snippet")
    RULES_FIELD_NUMBER: _ClassVar[int]
    ADVANCED_SNIPPET_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[_connector_pb2.FilteringRule]
    advanced_snippet: _struct_pb2.Value
    def __init__(self, rules: _Optional[_Iterable[_Union[_connector_pb2.FilteringRule, _Mapping]]] = ..., advanced_snippet: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class ValidateFiltering(_message.Message):
    __slots__ = ("connector_id", "revision", "configuration", "rules")
    class ConfigurationEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CONFIGURATION_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    revision: str
    configuration: _containers.MessageMap[str, _struct_pb2.Value]
    rules: SyncRules
    def __init__(self, connector_id: _Optional[str] = ..., revision: _Optional[str] = ..., configuration: _Optional[_Mapping[str, _struct_pb2.Value]] = ..., rules: _Optional[_Union[SyncRules, _Mapping]] = ...) -> None: ...

class FilteringResult(_message.Message):
    __slots__ = ("connector_id", "revision", "errors")
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    revision: str
    errors: _containers.RepeatedCompositeFieldContainer[_connector_pb2.FilteringValidationError]
    def __init__(self, connector_id: _Optional[str] = ..., revision: _Optional[str] = ..., errors: _Optional[_Iterable[_Union[_connector_pb2.FilteringValidationError, _Mapping]]] = ...) -> None: ...
