"""The agent runtime: everything between a :class:`~ferry_sdk.Source` and the control plane.

:meth:`Agent.run` dials the control plane (mTLS), opens the one long-lived
``AgentService/Session`` stream, says ``Hello`` with the connectors it serves and
their configuration schemas, then serves the control plane's requests until it is
stopped: configuration checks, job assignments, cancels and acknowledgements. When
the stream breaks it reconnects forever with capped exponential backoff and full
jitter. Jobs running when the stream breaks are stopped; the control plane resumes
them from their last acknowledged checkpoint once an agent is back.

Threads: the session reads the stream on the caller's thread; heartbeats, each
configuration check and each job run on their own threads and talk back through one
bounded outbound queue.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

# gRPC core prints its own lines for every failed TLS handshake, in a loop;
# the runtime explains a failure once instead (GRPC_VERBOSITY=ERROR to see them).
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc  # noqa: E402

from ferry_sdk.proto.ferry.v1 import agent_pb2, agent_pb2_grpc, sync_job_pb2
from ferry_sdk.source import (
    BasicRule,
    DocumentSender,
    Job,
    JobKind,
    RuleError,
    Source,
    SyncRules,
    SyncStopped,
    failure_of,
)
from ferry_sdk.values import from_value, values_from_proto

log = logging.getLogger("ferry_sdk")

#: The protocol version this SDK speaks.
PROTOCOL_VERSION = agent_pb2.PROTOCOL_VERSION_1
#: Largest gRPC message either way (same as the control plane).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Outbound queue depth: batches are bounded by the window already.
OUTBOUND_QUEUE = 64
#: How long jobs get to stop when their session ends.
JOB_STOP_GRACE_S = 10.0
AGENT_VERSION = "ferry-sdk-python/0.1.0"


class SettingsError(ValueError):
    """The agent's settings are incomplete or wrong; the message lists every problem."""


@dataclass
class AgentSettings:
    """Everything the runtime needs to know."""

    #: ``https://host:port`` of the control plane's agents listener (``http://`` only for tests).
    control_plane_url: str
    #: ``(connector_id, service_type)`` pairs this agent serves.
    connectors: List[Tuple[str, str]]
    #: PEM files: the CA that signed the control plane's certificate, this agent's
    #: certificate (Subject CN = agent id) and its key.
    tls_ca: Optional[str] = None
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    #: Host name checked against the server certificate, when it differs from the URL's.
    server_name: Optional[str] = None
    max_concurrent_jobs: int = 1
    agent_version: str = AGENT_VERSION

    @classmethod
    def from_env(cls, service_type: str, env: Optional[Mapping[str, str]] = None) -> "AgentSettings":
        """Reads the variables every Ferry agent reads.

        ``FERRY_CONTROL_PLANE_URL``, ``FERRY_TLS_CA``, ``FERRY_TLS_CERT``, ``FERRY_TLS_KEY``,
        ``FERRY_CONNECTOR_ID`` (comma-separated for several), plus
        ``FERRY_CONTROL_PLANE__SERVER_NAME`` and ``FERRY_MAX_CONCURRENT_JOBS``.
        """
        env = os.environ if env is None else env
        errors = []
        url = env.get("FERRY_CONTROL_PLANE_URL", "").strip()
        if not url:
            errors.append("FERRY_CONTROL_PLANE_URL is required, e.g. https://cp.example.com:50051")
        elif not url.startswith(("https://", "http://")):
            errors.append(f"FERRY_CONTROL_PLANE_URL {url!r} must start with https://")
        tls = [env.get(k) or None for k in ("FERRY_TLS_CA", "FERRY_TLS_CERT", "FERRY_TLS_KEY")]
        if url.startswith("http://") and any(tls):
            errors.append(
                f"FERRY_CONTROL_PLANE_URL {url!r} is not https:// but TLS files are set: use https:// "
                "(the control plane's agents listener only speaks TLS)"
            )
        if url.startswith("https://") and not all(tls):
            errors.append(
                "FERRY_TLS_CA, FERRY_TLS_CERT and FERRY_TLS_KEY are all required: "
                "the control plane only accepts agents with a client certificate"
            )
        ids = [c.strip() for c in env.get("FERRY_CONNECTOR_ID", "").split(",") if c.strip()]
        if not ids:
            errors.append("FERRY_CONNECTOR_ID is required: the connector this agent serves")
        try:
            jobs = int(env.get("FERRY_MAX_CONCURRENT_JOBS", "1"))
        except ValueError:
            errors.append("FERRY_MAX_CONCURRENT_JOBS must be a whole number")
            jobs = 1
        if errors:
            raise SettingsError("invalid agent settings:\n  - " + "\n  - ".join(errors))
        return cls(
            control_plane_url=url,
            connectors=[(i, service_type) for i in ids],
            tls_ca=tls[0],
            tls_cert=tls[1],
            tls_key=tls[2],
            server_name=env.get("FERRY_CONTROL_PLANE__SERVER_NAME") or None,
            max_concurrent_jobs=max(jobs, 1),
        )


def explain_session_failure(reason: str, settings: AgentSettings) -> Optional[str]:
    """What to do about a session that failed before Welcome, when the reason says TLS or a plain-text
    peer; ``None`` when there is nothing better to say than the reason itself."""
    low = reason.lower()
    tls_words = ("handshake", "ssl", "tls", "certificate", "alert", "wrong_version_number")
    if not any(w in low for w in tls_words) and "socket closed" not in low:
        return None
    return (
        f"the TLS handshake with the control plane at {settings.control_plane_url} failed ({reason}). Check: "
        f"FERRY_TLS_CERT ({settings.tls_cert}) is this agent's client certificate (extended key usage clientAuth, "
        "signed by the control plane's agents.tls.client_ca; `ferry-control-plane certs agent --id AGENT` makes one), "
        "not the control plane's server certificate; FERRY_TLS_KEY is its key; FERRY_TLS_CA "
        f"({settings.tls_ca}) is the CA that signed the control plane's server certificate; the URL is https:// "
        "and names the agents listener (agents.listen), not the admin API. The control plane's log says why it "
        "refused the handshake. Retrying with backoff; this is logged once"
    )


class Backoff:
    """Capped exponential backoff with full jitter: delays are drawn from ``[0, min(max, initial * 2^n)]``."""

    def __init__(self, initial: float = 0.25, maximum: float = 30.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0

    def ceiling(self) -> float:
        return float(min(self.initial * (2 ** min(self.attempt, 20)), self.maximum))

    def next_delay(self) -> float:
        ceiling = self.ceiling()
        self.attempt += 1
        return random.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def _read(what: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise SettingsError(f"cannot read {what} {path}: {e}") from e


def open_channel(settings: AgentSettings) -> grpc.Channel:
    """The channel to the control plane: TLS with a client certificate, keep-alives, 64 MiB messages."""
    parts = urlsplit(settings.control_plane_url)
    if not parts.hostname:
        raise SettingsError(f"control plane URL {settings.control_plane_url!r} has no host")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    target = f"{host}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    options: List[Tuple[str, object]] = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    if parts.scheme == "http":
        return grpc.insecure_channel(target, options=options)
    assert settings.tls_ca and settings.tls_cert and settings.tls_key
    creds = grpc.ssl_channel_credentials(
        root_certificates=_read("CA certificate", settings.tls_ca),
        private_key=_read("key", settings.tls_key),
        certificate_chain=_read("certificate", settings.tls_cert),
    )
    if settings.server_name:
        options.append(("grpc.ssl_target_name_override", settings.server_name))
    return grpc.secure_channel(target, creds, options=options)


def sync_rules_from_proto(p: Optional[agent_pb2.SyncRules]) -> SyncRules:
    """The rules of a ``ValidateFiltering``: the catch-all ``DEFAULT`` rule dropped, empty
    advanced rules as ``None`` (as the Rust SDK reads them)."""
    if p is None:
        return SyncRules()
    basic = [BasicRule(id=r.id, policy=r.policy, field=r.field, rule=r.rule, value=r.value)
             for r in p.rules
             if not (r.id == "DEFAULT" or (r.field == "_" and r.rule == "regex" and r.value == ".*"))]
    advanced = from_value(p.advanced_snippet) if p.HasField("advanced_snippet") else None
    if advanced in ({}, [], "") or (isinstance(advanced, str) and not advanced.strip()):
        advanced = None
    return SyncRules(basic=basic, advanced=advanced)


@dataclass
class _RunningJob:
    job: Job
    lease_id: str
    sender: Optional[DocumentSender] = None
    thread: Optional[threading.Thread] = None


_JOB_KINDS = {
    # UNSPECIFIED is a full sync (as the control plane's CreateSyncJob reads it).
    sync_job_pb2.JOB_TYPE_UNSPECIFIED: JobKind.FULL,
    sync_job_pb2.JOB_TYPE_FULL: JobKind.FULL,
    sync_job_pb2.JOB_TYPE_INCREMENTAL: JobKind.INCREMENTAL,
    sync_job_pb2.JOB_TYPE_ACCESS_CONTROL: JobKind.ACCESS_CONTROL,
}
_JOB_TYPES = {
    JobKind.FULL: sync_job_pb2.JOB_TYPE_FULL,
    JobKind.INCREMENTAL: sync_job_pb2.JOB_TYPE_INCREMENTAL,
    JobKind.ACCESS_CONTROL: sync_job_pb2.JOB_TYPE_ACCESS_CONTROL,
}


class _Session:
    """One ``AgentService/Session`` stream, from Hello to loss."""

    def __init__(self, agent: "Agent") -> None:
        self.agent = agent
        self.outbound: "queue.Queue[Optional[agent_pb2.AgentMessage]]" = queue.Queue(OUTBOUND_QUEUE)
        self.lost = threading.Event()
        self.jobs: Dict[str, _RunningJob] = {}
        self.lock = threading.Lock()
        self.threads: List[threading.Thread] = []
        self.welcome: Optional[agent_pb2.Welcome] = None

    def enqueue(self, msg: agent_pb2.AgentMessage) -> bool:
        """Queues a message for the control plane; False once the session is gone."""
        while not self.lost.is_set():
            try:
                self.outbound.put(msg, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _requests(self) -> Iterator[agent_pb2.AgentMessage]:
        while True:
            msg = self.outbound.get()
            if msg is None:
                return
            yield msg

    def _spawn(self, target, *args, name: str) -> threading.Thread:  # type: ignore[no-untyped-def]
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        self.threads.append(t)
        t.start()
        return t

    def hello(self) -> agent_pb2.Hello:
        hello = agent_pb2.Hello(
            protocol_version=PROTOCOL_VERSION,
            agent_version=self.agent.settings.agent_version,
            hostname=socket.gethostname(),
            max_concurrent_jobs=self.agent.settings.max_concurrent_jobs,
        )
        for connector_id, service_type in self.agent.settings.connectors:
            served = hello.connectors.add(connector_id=connector_id, service_type=service_type)
            source = self.agent.source_for_type(service_type)
            if source is not None:
                for key, f in source.configuration_schema().items():
                    served.configuration_schema[key].CopyFrom(f.to_proto())
                served.capabilities.CopyFrom(
                    agent_pb2.SourceCapabilities(
                        job_types=[_JOB_TYPES[k] for k in source.job_kinds],
                        basic_rules=False,
                        advanced_rules=False,
                    )
                )
        return hello

    def run(self, channel: grpc.Channel) -> str:
        """Serves the session; returns why it ended."""
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        self.enqueue(agent_pb2.AgentMessage(hello=self.hello()))
        call = stub.Session(self._requests())
        self.agent._set_call(call)
        try:
            first = next(call, None)
            if first is None:
                return "the control plane closed the session before Welcome"
            if first.WhichOneof("message") != "welcome":
                return f"expected Welcome, got {first.WhichOneof('message')}"
            self.welcome = first.welcome
            log.info("connected to the control plane as %r (session %s)", first.welcome.agent_id,
                     first.welcome.session_id)
            self._spawn(self._heartbeats, name="ferry-heartbeat")
            for msg in call:
                self._handle(msg)
            return "the control plane closed the session"
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None  # type: ignore[attr-defined]
            details = e.details() if hasattr(e, "details") else str(e)  # type: ignore[attr-defined]
            return f"{code.name if code else 'error'}: {details}"
        finally:
            self._end(call)

    def _end(self, call: grpc.Future) -> None:
        self.lost.set()
        with self.lock:
            running = list(self.jobs.values())
        for r in running:
            r.job.cancel_event.set()
        try:
            self.outbound.put_nowait(None)
        except queue.Full:
            pass
        call.cancel()
        deadline = time.monotonic() + JOB_STOP_GRACE_S
        for t in self.threads:
            t.join(max(deadline - time.monotonic(), 0.0))
        if any(t.is_alive() for t in self.threads):
            log.warning("jobs did not stop within %.0f s of the session ending", JOB_STOP_GRACE_S)

    def _heartbeats(self) -> None:
        assert self.welcome is not None
        every = min(max(self.welcome.heartbeat_interval_ms, 200), 60_000) / 1000.0
        while True:
            with self.lock:
                ids = list(self.jobs)
            if not self.enqueue(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(running_job_ids=ids))):
                return
            if self.lost.wait(every):
                return

    def _handle(self, msg: agent_pb2.ControlMessage) -> None:
        kind = msg.WhichOneof("message")
        if kind == "validate_configuration":
            self._spawn(self._validate, msg.validate_configuration, name="ferry-validate")
        elif kind == "validate_filtering":
            self._spawn(self._validate_filtering, msg.validate_filtering, name="ferry-validate-rules")
        elif kind == "assign_job":
            self._assign(msg.assign_job)
        elif kind == "batch_ack":
            ack = msg.batch_ack
            with self.lock:
                r = self.jobs.get(ack.job_id)
            if r is not None and r.lease_id == ack.lease_id and r.sender is not None:
                r.sender.acknowledged(ack.sequence)
        elif kind == "cancel_job":
            with self.lock:
                r = self.jobs.get(msg.cancel_job.job_id)
            if r is not None:
                log.info("canceling job %s: %s", msg.cancel_job.job_id, msg.cancel_job.reason)
                r.job.cancel_event.set()
        elif kind == "connector_refused":
            log.error("the control plane refuses this agent for connector %r: %s",
                      msg.connector_refused.connector_id, msg.connector_refused.reason)
        elif kind == "welcome":
            log.warning("ignoring a second Welcome")
        # Anything else is a message from a newer protocol version: ignored.

    def _validate(self, v: agent_pb2.ValidateConfiguration) -> None:
        source = self.agent.source_for_connector(v.connector_id)
        if source is None:
            log.warning("asked to validate connector %r, which this agent does not serve", v.connector_id)
            return
        error = ""
        try:
            source.validate(values_from_proto(v.values))
        except Exception as e:  # noqa: BLE001 - every failure is an answer for the user
            error = failure_of(e)[1]
            log.warning("configuration check of %r failed: %s", v.connector_id, error)
        result = agent_pb2.ValidationResult(connector_id=v.connector_id, revision=v.revision, ok=not error,
                                            error=error)
        self.enqueue(agent_pb2.AgentMessage(validation_result=result))

    def _validate_filtering(self, v: agent_pb2.ValidateFiltering) -> None:
        """Answers a draft of sync rules; without an answer it would stay ``edited`` forever."""
        source = self.agent.source_for_connector(v.connector_id)
        if source is None:
            log.warning("asked to check sync rules of connector %r, which this agent does not serve", v.connector_id)
            return
        rules = sync_rules_from_proto(v.rules if v.HasField("rules") else None)
        try:
            errors = source.validate_rules(values_from_proto(v.configuration), rules)
        except Exception as e:  # noqa: BLE001 - a failing check is an answer for the user
            errors = [RuleError(["advanced_snippet" if rules.advanced is not None else "rules"],
                                f"checking the sync rules failed: {failure_of(e)[1]}")]
        log.info("sync rules of %r checked: %d error(s)", v.connector_id, len(errors))
        result = agent_pb2.FilteringResult(connector_id=v.connector_id, revision=v.revision)
        for e in errors:
            result.errors.add(ids=list(e.ids), messages=[e.message])
        self.enqueue(agent_pb2.AgentMessage(filtering_result=result))

    def _assign(self, a: agent_pb2.AssignJob) -> None:
        source = self.agent.source_for_connector(a.connector_id)
        if source is None:
            message = f"this agent does not serve connector {a.connector_id!r}"
            log.warning("assigned job %s: %s", a.job_id, message)
            finished = agent_pb2.JobFinished(job_id=a.job_id, lease_id=a.lease_id)
            finished.failed.kind = agent_pb2.FAILURE_KIND_CONFIGURATION
            finished.failed.message = message
            self.enqueue(agent_pb2.AgentMessage(job_finished=finished))
            return
        kind = _JOB_KINDS.get(a.job_type)
        if kind is None or kind not in source.job_kinds:
            # Never run a job as another kind (an incremental job run as a full sync would
            # delete every document the stream did not send).
            message = (
                f"this agent's {source.service_type!r} source does not run job type {a.job_type} "
                f"(it runs {', '.join(k.value for k in source.job_kinds)}): upgrade the agent or use a supported job type"
            )
            log.warning("assigned job %s: %s", a.job_id, message)
            finished = agent_pb2.JobFinished(job_id=a.job_id, lease_id=a.lease_id)
            finished.failed.kind = agent_pb2.FAILURE_KIND_CONFIGURATION
            finished.failed.message = message
            self.enqueue(agent_pb2.AgentMessage(job_finished=finished))
            return
        with self.lock:
            if a.job_id in self.jobs:
                log.warning("job %s assigned twice in one session; ignoring the second", a.job_id)
                return
            incremental = kind is JobKind.INCREMENTAL
            job = Job(
                id=a.job_id,
                connector_id=a.connector_id,
                kind=kind,
                index_name=a.index_name,
                config=values_from_proto(a.configuration),
                resume_checkpoint=a.resume_checkpoint or None,
                sync_cursor=(a.sync_cursor or None) if incremental else None,
                incremental_mode=(
                    ("continuous" if a.incremental_mode == agent_pb2.INCREMENTAL_MODE_CONTINUOUS else "drain")
                    if incremental
                    else None
                ),
            )
            flow = a.flow_control if a.HasField("flow_control") else self.welcome.flow_control  # type: ignore[union-attr]
            r = _RunningJob(job=job, lease_id=a.lease_id)
            r.sender = DocumentSender(job, a.lease_id, self.enqueue, flow, self.lost)
            self.jobs[a.job_id] = r
        r.thread = self._spawn(self._run_job, source, r, name=f"ferry-job-{a.job_id}")

    def _run_job(self, source: Source, r: _RunningJob) -> None:
        job, out = r.job, r.sender
        assert out is not None
        log.info("job %s started (resumed: %s)", job.id, job.resume_checkpoint is not None)
        finished = agent_pb2.JobFinished(job_id=job.id, lease_id=r.lease_id)
        try:
            source.sync(job, out)
            out.finish()
            finished.completed.SetInParent()
            log.info("job %s completed: %d documents", job.id, out.documents_sent)
        except SyncStopped as e:
            if not e.canceled:
                log.info("job %s stopped with the session", job.id)
            finished.canceled.SetInParent()
        except Exception as e:  # noqa: BLE001 - a source failure is the job's outcome
            if job.canceled:
                finished.canceled.SetInParent()
            else:
                kind, message = failure_of(e)
                log.warning("job %s failed: %s", job.id, message)
                finished.failed.kind = kind
                finished.failed.message = message
        finally:
            with self.lock:
                self.jobs.pop(job.id, None)
        if self.lost.is_set():
            # Nobody can hear the outcome; the control plane resumes the job from its checkpoint.
            return
        finished.last_sequence = out.last_sequence
        finished.metadata.CopyFrom(out.metadata_struct())
        self.enqueue(agent_pb2.AgentMessage(job_finished=finished))


class Agent:
    """An agent: the sources it can read plus its settings (default: from the environment)."""

    def __init__(self, sources: Sequence[Source], settings: Optional[AgentSettings] = None) -> None:
        if not sources:
            raise SettingsError("an agent needs at least one Source")
        self.sources = list(sources)
        self.settings: AgentSettings = settings or AgentSettings.from_env(self.sources[0].service_type)
        self._stop = threading.Event()
        self._call: Optional[grpc.Future] = None
        for connector_id, service_type in self.settings.connectors:
            if self.source_for_type(service_type) is None:
                raise SettingsError(
                    f"connector {connector_id!r} has service_type {service_type!r}, but this agent only serves "
                    f"{[s.service_type for s in self.sources]}"
                )

    def source_for_type(self, service_type: str) -> Optional[Source]:
        return next((s for s in self.sources if s.service_type == service_type), None)

    def source_for_connector(self, connector_id: str) -> Optional[Source]:
        for cid, service_type in self.settings.connectors:
            if cid == connector_id:
                return self.source_for_type(service_type)
        return None

    def _set_call(self, call: grpc.Future) -> None:
        self._call = call
        if self._stop.is_set():
            call.cancel()

    def stop(self) -> None:
        """Ends the current session and makes :meth:`run` return (thread- and signal-safe)."""
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()

    def run(self, install_signal_handlers: bool = True) -> None:
        """Runs sessions until :meth:`stop` (or SIGTERM/SIGINT); reconnects forever."""
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        backoff = Backoff()
        explained = False
        while not self._stop.is_set():
            started = time.monotonic()
            channel = open_channel(self.settings)
            try:
                reason = _Session(self).run(channel)
            finally:
                channel.close()
            if self._stop.is_set():
                break
            if time.monotonic() - started > 30:
                backoff.reset()
            delay = backoff.next_delay()
            explanation = explain_session_failure(reason, self.settings) if not explained else None
            if explanation:
                explained = True
                log.error("%s", explanation)
            elif explained and explain_session_failure(reason, self.settings):
                log.debug("control plane session failed again: %s; reconnecting in %.2f s", reason, delay)
                self._stop.wait(delay)
                continue
            log.warning("control plane session ended: %s; reconnecting in %.2f s", reason, delay)
            self._stop.wait(delay)
        log.info("agent stopped")


def run_agent(*sources: Source) -> None:
    """The usual ``main``: settings from the environment, logging to stderr, run until SIGTERM."""
    level = os.environ.get("FERRY_LOG", "info").split(",")[0].strip().upper()
    logging.basicConfig(level=level if isinstance(logging.getLevelName(level), int) else "INFO",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        agent = Agent(list(sources))
    except SettingsError as e:
        raise SystemExit(f"ferry agent: {e}") from None
    agent.run()
