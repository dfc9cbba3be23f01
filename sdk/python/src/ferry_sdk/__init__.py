"""Ferry's SDK for writing agents in Python.

Implement a :class:`Source` (``service_type``, ``configuration_schema``, ``validate``,
``sync``) and hand it to :func:`run_agent`; the runtime does the rest: mTLS
connection, reconnects with jittered backoff, heartbeats, flow control, checkpoints
and resume, cancellation. See ``sdk/PROTOCOL.md`` for the wire protocol and
``examples/sqlite_agent.py`` for a complete agent.

The generated protocol types live in ``ferry_sdk.proto.ferry.v1`` (``agent_pb2``,
``agent_pb2_grpc``, ...).
"""

from ferry_sdk.runtime import (
    PROTOCOL_VERSION,
    Agent,
    AgentSettings,
    Backoff,
    SettingsError,
    run_agent,
)
from ferry_sdk.source import (
    BasicRule,
    ConfigField,
    ConfigurationError,
    ConfigValues,
    DocumentSender,
    Job,
    JobKind,
    RuleError,
    Source,
    SourceError,
    SourceUnreachable,
    SyncRules,
    SyncStopped,
)

__all__ = [
    "PROTOCOL_VERSION",
    "Agent",
    "AgentSettings",
    "Backoff",
    "BasicRule",
    "ConfigField",
    "ConfigValues",
    "ConfigurationError",
    "DocumentSender",
    "Job",
    "JobKind",
    "RuleError",
    "SettingsError",
    "Source",
    "SourceError",
    "SourceUnreachable",
    "SyncRules",
    "SyncStopped",
    "run_agent",
]
