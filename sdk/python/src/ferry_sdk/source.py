"""The contract between an agent's source code and the runtime.

A :class:`Source` knows one kind of data source. The runtime calls
:meth:`Source.validate` when a user sets a connector's configuration (the answer
decides ``connected`` vs ``error``) and :meth:`Source.sync` for every job assigned
to the agent, each in its own thread. ``sync`` pushes documents into a
:class:`DocumentSender`, which batches them by bytes and count and blocks whenever
the control plane has as many unacknowledged batches as the flow-control window
allows: a source that simply calls ``send`` runs exactly as fast as Elasticsearch
accepts documents, with bounded memory.

Checkpoints: after sending documents a source may call
:meth:`DocumentSender.checkpoint` with an opaque position ("everything up to here
was handed over"). The latest one rides on each batch; the control plane persists
the checkpoint of the last contiguously acknowledged batch, and a resumed attempt
of the job receives it in :attr:`Job.resume_checkpoint`. Documents between that
checkpoint and the failure are sent again; ids are deterministic, so they overwrite.

Cancellation: when the job is canceled (or the session to the control plane is
lost) ``send``/``flush`` raise :class:`SyncStopped`; let it propagate. Long work
that does not send can poll :attr:`Job.canceled`.
"""

from __future__ import annotations

import enum
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from ferry_sdk.proto.ferry.v1 import agent_pb2, connector_pb2
from ferry_sdk.values import to_struct, to_value

ConfigValues = Dict[str, Any]
"""Configuration values of one connector, key -> JSON value."""


class JobKind(enum.Enum):
    FULL = "full"
    INCREMENTAL = "incremental"
    ACCESS_CONTROL = "access_control"


class SourceError(Exception):
    """A failure of the source, shown to the user on the job and connector.

    Raise one of the subclasses; any other exception becomes ``FAILURE_KIND_INTERNAL``
    with ``str(exception)`` as the message.
    """

    kind: agent_pb2.FailureKind = agent_pb2.FAILURE_KIND_INTERNAL


class SourceUnreachable(SourceError):
    """The source cannot be reached or refused the credentials (puts the connector in ``error``)."""

    kind = agent_pb2.FAILURE_KIND_SOURCE_UNREACHABLE


class ConfigurationError(SourceError):
    """The configuration is wrong (a table that does not exist, a bad value...)."""

    kind = agent_pb2.FAILURE_KIND_CONFIGURATION


class SyncStopped(Exception):
    """Raised by :class:`DocumentSender` when the job must stop. Do not catch it."""

    def __init__(self, reason: str, canceled: bool) -> None:
        super().__init__(reason)
        #: True when the user (or the control plane) canceled the job; False when
        #: the session to the control plane was lost (the job will be resumed).
        self.canceled = canceled


@dataclass
class ConfigField:
    """One field of a configuration schema (Elastic's Connector Protocol shape)."""

    label: str
    type: str = "str"  # str | int | bool | list
    display: str = "text"  # text | textarea | numeric | toggle | dropdown
    required: bool = True
    sensitive: bool = False
    order: int = 0
    tooltip: str = ""
    default_value: Any = None
    advanced: bool = False

    @staticmethod
    def text(label: str, order: int, **kw: Any) -> "ConfigField":
        return ConfigField(label, "str", "text", order=order, **kw)

    @staticmethod
    def integer(label: str, order: int, **kw: Any) -> "ConfigField":
        return ConfigField(label, "int", "numeric", order=order, **kw)

    @staticmethod
    def toggle(label: str, order: int, **kw: Any) -> "ConfigField":
        kw.setdefault("required", False)
        kw.setdefault("default_value", False)
        return ConfigField(label, "bool", "toggle", order=order, **kw)

    def to_proto(self) -> connector_pb2.ConfigField:
        f = connector_pb2.ConfigField(
            label=self.label,
            type=self.type,
            display=self.display,
            sensitive=self.sensitive,
            required=self.required,
            order=self.order,
            tooltip=self.tooltip,
            ui_restrictions=["advanced"] if self.advanced else [],
        )
        if self.default_value is not None:
            f.default_value.CopyFrom(to_value(self.default_value))
        return f


@dataclass
class Job:
    """One job as the source sees it."""

    id: str
    connector_id: str
    kind: JobKind
    index_name: str
    config: ConfigValues
    #: Position to resume from, as this source wrote it in an earlier attempt; None = from the start.
    resume_checkpoint: Optional[bytes]
    #: Incremental jobs: the connector's position (its ``sync_cursor``, JSON as the source wrote
    #: it in a checkpoint of an earlier incremental job); None when the connector has none yet
    #: (the source then starts with a snapshot). A resumed attempt prefers ``resume_checkpoint``.
    sync_cursor: Optional[bytes] = None
    #: Incremental jobs: ``"drain"`` (apply what is there at start, then return) or
    #: ``"continuous"`` (stream until canceled); None for other kinds.
    incremental_mode: Optional[str] = None
    #: Set when the job is canceled or the session is lost.
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def canceled(self) -> bool:
        """True once the job must stop."""
        return self.cancel_event.is_set()


class Source:
    """One kind of data source. Subclass it and override the four members."""

    #: The ``service_type`` this source serves, e.g. ``"sqlite"``.
    service_type: str = ""
    #: Job kinds this source runs, announced in ``Hello`` (``ServedConnector.capabilities``);
    #: the control plane never assigns another kind. Python sources apply no sync rules.
    job_kinds: Tuple[JobKind, ...] = (JobKind.FULL,)

    def configuration_schema(self) -> Dict[str, ConfigField]:
        """The configuration schema registered on the connector, key -> field."""
        return {}

    def validate(self, config: ConfigValues) -> None:
        """Check the values and reach the source; raise :class:`SourceError` saying what to fix."""

    def sync(self, job: Job, out: "DocumentSender") -> None:
        """Read the source and ``out.send`` every document. Return only when all were sent."""
        raise NotImplementedError

    def validate_rules(self, config: ConfigValues, rules: "SyncRules") -> List["RuleError"]:
        """Check draft sync rules against the source; an empty list means valid.

        The control plane activates a draft only when its agent answers it, so every
        source answers. This default (a source that applies no rules, like the SDK's
        runtime announces in its capabilities) accepts an empty draft and refuses each
        basic rule and any advanced rules, saying so.
        """
        errors = [RuleError([r.id or "rule"], f"{self.service_type} sources do not apply basic sync rules")
                  for r in rules.basic]
        if rules.advanced is not None:
            errors.append(RuleError(["advanced_snippet"],
                                    f"{self.service_type} sources do not apply advanced sync rules"))
        return errors


@dataclass
class BasicRule:
    """One basic sync rule (``policy`` include/exclude, ``field``, ``rule``, ``value``)."""

    id: str
    policy: str
    field: str
    rule: str
    value: str


@dataclass
class SyncRules:
    """Draft sync rules: basic rules in order without the catch-all ``DEFAULT`` rule, and the
    advanced rules (JSON, ``None`` when there are none)."""

    basic: List[BasicRule] = field(default_factory=list)
    advanced: Any = None


@dataclass
class RuleError:
    """A problem with some rules (their ids, or ``advanced_snippet``), shown on the draft."""

    ids: List[str]
    message: str


Document = Union[bytes, str, Mapping[str, Any]]

# How a sender talks to its session: enqueue a message (False when the session is gone).
Enqueue = Callable[[agent_pb2.AgentMessage], bool]


class DocumentSender:
    """Batches documents into ``DocumentBatch`` messages under flow control."""

    def __init__(
        self,
        job: Job,
        lease_id: str,
        enqueue: Enqueue,
        flow: agent_pb2.FlowControl,
        session_lost: threading.Event,
    ) -> None:
        self._job = job
        self._lease_id = lease_id
        self._enqueue = enqueue
        self.window_size = max(flow.max_unacked_batches, 1)
        self.max_batch_bytes = max(flow.max_batch_bytes, 1024)
        self.max_batch_documents = max(flow.max_batch_documents, 1)
        self._unacked = 0
        # Bytes (id + source) of each unacknowledged batch, by sequence: the
        # control plane ends a run whose unacknowledged bytes exceed
        # max_unacked_batches x max_batch_bytes (a bigger batch only alone).
        self._unacked_bytes: Dict[int, int] = {}
        self.window_bytes = self.window_size * self.max_batch_bytes
        self._cond = threading.Condition()
        self._session_lost = session_lost
        self._batch: List[agent_pb2.Document] = []
        self._batch_bytes = 0
        self._checkpoint = b""
        self.last_sequence = 0
        self.documents_sent = 0
        self.metadata: Dict[str, Any] = {}

    # -- the source's side -------------------------------------------------

    def send(self, doc_id: str, document: Document) -> None:
        """Queue one document with a stable id.

        ``document`` is a dict (serialized as compact JSON) or already-encoded JSON
        (``bytes``/``str``, one object without newlines). Blocks while the window is full.
        """
        if isinstance(document, bytes):
            source = document
        elif isinstance(document, str):
            source = document.encode()
        else:
            source = json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=str).encode()
        if b"\n" in source:
            # Only possible with pre-encoded JSON: json.dumps escapes newlines in strings.
            source = json.dumps(json.loads(source), separators=(",", ":"), ensure_ascii=False).encode()
        self._check_stopped()
        size = len(doc_id) + len(source)
        if self._batch and (
            self._batch_bytes + size > self.max_batch_bytes or len(self._batch) >= self.max_batch_documents
        ):
            self.flush()
        self._batch.append(agent_pb2.Document(id=doc_id, source=source))
        self._batch_bytes += size
        self.documents_sent += 1

    def checkpoint(self, position: bytes) -> None:
        """Record the position that covers every document sent so far."""
        self._checkpoint = bytes(position)

    def set_metadata(self, key: str, value: Any) -> None:
        """Add a fact to the job's metadata (rows read, tables skipped...)."""
        self.metadata[key] = value

    @property
    def canceled(self) -> bool:
        return self._job.canceled

    def flush(self) -> None:
        """Send the current batch (if any) once the window has room."""
        if not self._batch:
            return
        with self._cond:
            while self._unacked >= self.window_size or (
                self._unacked_bytes and sum(self._unacked_bytes.values()) + self._batch_bytes > self.window_bytes
            ):
                self._check_stopped()
                self._cond.wait(0.1)
            self._check_stopped()
            self._unacked += 1
            self._unacked_bytes[self.last_sequence + 1] = self._batch_bytes
        self.last_sequence += 1
        batch = agent_pb2.DocumentBatch(
            job_id=self._job.id,
            lease_id=self._lease_id,
            sequence=self.last_sequence,
            documents=self._batch,
            checkpoint=self._checkpoint,
        )
        self._batch = []
        self._batch_bytes = 0
        if not self._enqueue(agent_pb2.AgentMessage(batch=batch)):
            raise SyncStopped("the connection to the control plane was lost", canceled=False)

    # -- the runtime's side ------------------------------------------------

    def acknowledged(self, sequence: Optional[int] = None) -> None:
        """A BatchAck for this job's lease arrived: one window slot (and its bytes) is free again."""
        with self._cond:
            self._unacked = max(self._unacked - 1, 0)
            if sequence is not None and sequence in self._unacked_bytes:
                del self._unacked_bytes[sequence]
            elif self._unacked_bytes:
                del self._unacked_bytes[min(self._unacked_bytes)]
            self._cond.notify_all()

    @property
    def unacked(self) -> int:
        with self._cond:
            return self._unacked

    def finish(self) -> int:
        """Flush, then wait until every batch sent was acknowledged; returns the last sequence."""
        self.flush()
        with self._cond:
            while self._unacked > 0:
                self._check_stopped()
                self._cond.wait(0.1)
        return self.last_sequence

    def metadata_struct(self) -> Any:
        return to_struct(self.metadata)

    def _check_stopped(self) -> None:
        if self._session_lost.is_set():
            raise SyncStopped("the connection to the control plane was lost", canceled=False)
        if self._job.canceled:
            raise SyncStopped("the job was canceled", canceled=True)


def failure_of(error: BaseException) -> Tuple[agent_pb2.FailureKind, str]:
    """(FailureKind, message) for an exception raised by a source."""
    kind = error.kind if isinstance(error, SourceError) else agent_pb2.FAILURE_KIND_INTERNAL
    message = str(error) or type(error).__name__
    return kind, message
