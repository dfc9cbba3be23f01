"""The runtime against a scripted, in-process control plane (plaintext gRPC).

Each test starts a fake ``AgentService`` whose sessions hand every agent message to
the test (``inbox``) and send whatever the test puts in ``outbox``.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from concurrent import futures
from typing import Iterator, List, Optional

import grpc
import pytest

from ferry_sdk import (
    Agent,
    AgentSettings,
    Backoff,
    ConfigField,
    DocumentSender,
    Job,
    JobKind,
    SettingsError,
    Source,
    SourceUnreachable,
)
from ferry_sdk.proto.ferry.v1 import agent_pb2, agent_pb2_grpc, connector_pb2, sync_job_pb2
from ferry_sdk.values import from_value, to_value

FLOW = agent_pb2.FlowControl(max_unacked_batches=2, max_batch_bytes=16 * 1024, max_batch_documents=10)


class FakeControlPlane(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self) -> None:
        self.inbox: "queue.Queue[agent_pb2.AgentMessage]" = queue.Queue()
        self.outbox: "queue.Queue[Optional[agent_pb2.ControlMessage]]" = queue.Queue()
        self.sessions = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        agent_pb2_grpc.add_AgentServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Session(self, request_iterator: Iterator[agent_pb2.AgentMessage], context: grpc.ServicerContext):  # noqa: N802
        self.sessions += 1
        hello = next(request_iterator)
        self.inbox.put(hello)
        yield agent_pb2.ControlMessage(welcome=agent_pb2.Welcome(
            protocol_version=1, agent_id="test-agent", session_id=f"s{self.sessions}",
            heartbeat_interval_ms=200, flow_control=FLOW))

        def read() -> None:
            try:
                for m in request_iterator:
                    self.inbox.put(m)
            except grpc.RpcError:
                pass

        threading.Thread(target=read, daemon=True).start()
        while context.is_active():
            try:
                m = self.outbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if m is None:  # end this session
                return
            yield m

    def expect(self, kind: str, timeout: float = 10.0) -> agent_pb2.AgentMessage:
        """The next message of `kind` (heartbeats and others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} within {timeout} s")
            try:
                m = self.inbox.get(timeout=left)
            except queue.Empty:
                continue
            if m.WhichOneof("message") == kind:
                return m

    def send(self, **kw: object) -> None:
        self.outbox.put(agent_pb2.ControlMessage(**kw))

    def assign(self, job_id: str = "j1", lease: str = "L1", checkpoint: bytes = b"") -> None:
        a = agent_pb2.AssignJob(job_id=job_id, lease_id=lease, connector_id="c1", index_name="idx",
                                resume_checkpoint=checkpoint, flow_control=FLOW)
        a.configuration["rows"].CopyFrom(to_value(35))
        self.send(assign_job=a)

    def ack(self, b: agent_pb2.DocumentBatch) -> None:
        self.send(batch_ack=agent_pb2.BatchAck(job_id=b.job_id, lease_id=b.lease_id, sequence=b.sequence,
                                               indexed=len(b.documents)))


class Counting(Source):
    """Sends `rows` documents 0..rows-1, checkpointing the next row; resumes after its checkpoint."""

    service_type = "counting"

    def __init__(self) -> None:
        self.fail: Optional[Exception] = None
        self.started = threading.Event()

    def configuration_schema(self):  # type: ignore[no-untyped-def]
        return {"rows": ConfigField.integer("Rows", 1), "secret": ConfigField.text("Secret", 2, sensitive=True,
                                                                                  required=False)}

    def validate(self, config):  # type: ignore[no-untyped-def]
        if config.get("rows", 0) < 0:
            raise SourceUnreachable("rows must not be negative")

    def sync(self, job: Job, out: DocumentSender) -> None:
        self.started.set()
        if self.fail:
            raise self.fail
        start = int(job.resume_checkpoint or b"0")
        for i in range(start, int(job.config["rows"])):
            out.send(f"doc-{i}", {"n": i})
            out.checkpoint(str(i + 1).encode())
        out.set_metadata("rows_read", int(job.config["rows"]) - start)


@pytest.fixture
def cp() -> Iterator[FakeControlPlane]:
    c = FakeControlPlane()
    yield c
    c.server.stop(0)


def start_agent(cp: FakeControlPlane, source: Source) -> Agent:
    settings = AgentSettings(control_plane_url=f"http://127.0.0.1:{cp.port}", connectors=[("c1", "counting")])
    agent = Agent([source], settings)
    threading.Thread(target=agent.run, kwargs={"install_signal_handlers": False}, daemon=True).start()
    return agent


def test_hello_carries_schema_and_heartbeats_flow(cp: FakeControlPlane) -> None:
    agent = start_agent(cp, Counting())
    try:
        hello = cp.expect("hello").hello
        assert hello.protocol_version == agent_pb2.PROTOCOL_VERSION_1
        assert [c.connector_id for c in hello.connectors] == ["c1"]
        schema = hello.connectors[0].configuration_schema
        assert schema["rows"].type == "int" and schema["rows"].display == "numeric" and schema["rows"].required
        assert schema["secret"].sensitive and not schema["secret"].required
        cp.expect("heartbeat")
        cp.expect("heartbeat", timeout=2)
    finally:
        agent.stop()


def test_validation_answers_with_revision_and_message(cp: FakeControlPlane) -> None:
    agent = start_agent(cp, Counting())
    try:
        cp.expect("hello")
        v = agent_pb2.ValidateConfiguration(connector_id="c1", revision="r7")
        v.values["rows"].CopyFrom(to_value(-1))
        cp.send(validate_configuration=v)
        r = cp.expect("validation_result").validation_result
        assert (r.revision, r.ok, r.error) == ("r7", False, "rows must not be negative")
    finally:
        agent.stop()


def test_sync_rules_are_answered(cp: FakeControlPlane) -> None:
    """ValidateFiltering gets a FilteringResult: an empty draft is valid, rules a source does not
    apply are refused by id (without an answer the draft would stay `edited`)."""
    agent = start_agent(cp, Counting())
    try:
        cp.expect("hello")
        default = connector_pb2.FilteringRule(id="DEFAULT", policy="include", field="_", rule="regex", value=".*")
        empty = agent_pb2.ValidateFiltering(connector_id="c1", revision="d1",
                                            rules=agent_pb2.SyncRules(rules=[default]))
        cp.send(validate_filtering=empty)
        r = cp.expect("filtering_result").filtering_result
        assert (r.connector_id, r.revision, list(r.errors)) == ("c1", "d1", [])
        rule = connector_pb2.FilteringRule(id="r1", policy="exclude", field="n", rule="<", value="3")
        some = agent_pb2.ValidateFiltering(connector_id="c1", revision="d2",
                                           rules=agent_pb2.SyncRules(rules=[rule, default],
                                                                     advanced_snippet=to_value([{"q": 1}])))
        cp.send(validate_filtering=some)
        r = cp.expect("filtering_result").filtering_result
        assert r.revision == "d2"
        assert [list(e.ids) for e in r.errors] == [["r1"], ["advanced_snippet"]]
        assert "counting sources do not apply basic sync rules" in r.errors[0].messages[0]
    finally:
        agent.stop()


def test_full_sync_respects_the_window_and_finishes_after_acks(cp: FakeControlPlane) -> None:
    agent = start_agent(cp, Counting())
    try:
        cp.expect("hello")
        cp.assign()
        batches: List[agent_pb2.DocumentBatch] = []
        acked = 0
        while sum(len(b.documents) for b in batches) < 35:
            batches.append(cp.expect("batch").batch)
            assert len(batches) - acked <= FLOW.max_unacked_batches
            if len(batches) == 2:
                # The window is full: nothing more may come until an ack.
                with pytest.raises(AssertionError):
                    cp.expect("batch", timeout=0.5)
                for b in batches:
                    cp.ack(b)
                acked = 2
            elif len(batches) > 2:
                cp.ack(batches[-1])
                acked += 1
        assert [b.sequence for b in batches] == [1, 2, 3, 4]
        assert all(len(b.documents) <= FLOW.max_batch_documents for b in batches)
        assert batches[0].documents[0].id == "doc-0" and json.loads(batches[0].documents[0].source) == {"n": 0}
        assert batches[-1].checkpoint == b"35"
        f = cp.expect("job_finished").job_finished
        assert f.WhichOneof("outcome") == "completed" and f.last_sequence == 4 and f.lease_id == "L1"
        assert from_value(f.metadata.fields["rows_read"]) == 35
    finally:
        agent.stop()


def test_resume_starts_after_the_checkpoint(cp: FakeControlPlane) -> None:
    agent = start_agent(cp, Counting())
    try:
        cp.expect("hello")
        cp.assign(checkpoint=b"30")
        b = cp.expect("batch").batch
        assert [d.id for d in b.documents] == [f"doc-{i}" for i in range(30, 35)]
        cp.ack(b)
        assert cp.expect("job_finished").job_finished.WhichOneof("outcome") == "completed"
    finally:
        agent.stop()


def test_cancel_stops_a_blocked_job_quickly(cp: FakeControlPlane) -> None:
    agent = start_agent(cp, Counting())
    try:
        cp.expect("hello")
        cp.assign()
        cp.expect("batch")
        cp.expect("batch")  # window full, never acked: the source is blocked in send
        t = time.monotonic()
        cp.send(cancel_job=agent_pb2.CancelJob(job_id="j1", lease_id="L1", reason="user"))
        f = cp.expect("job_finished").job_finished
        assert f.WhichOneof("outcome") == "canceled"
        assert time.monotonic() - t < 1.0
    finally:
        agent.stop()


def test_source_failure_is_reported_with_its_kind(cp: FakeControlPlane) -> None:
    source = Counting()
    source.fail = SourceUnreachable("database is down")
    agent = start_agent(cp, source)
    try:
        cp.expect("hello")
        cp.assign()
        f = cp.expect("job_finished").job_finished
        assert f.failed.kind == agent_pb2.FAILURE_KIND_SOURCE_UNREACHABLE
        assert f.failed.message == "database is down"
    finally:
        agent.stop()


def test_reconnects_after_the_session_ends_and_stale_acks_are_ignored(cp: FakeControlPlane) -> None:
    agent = start_agent(cp, Counting())
    try:
        cp.expect("hello")
        cp.assign()
        cp.expect("batch")
        cp.outbox.put(None)  # the control plane ends the session
        cp.expect("hello", timeout=15)  # a new session (backoff is at most 250 ms the first time)
        assert cp.sessions == 2
        cp.assign(lease="L2", checkpoint=b"10")
        b = cp.expect("batch").batch
        assert b.lease_id == "L2" and b.sequence == 1 and b.documents[0].id == "doc-10"
    finally:
        agent.stop()


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    b = Backoff(0.1, 2.0)
    ceilings = []
    for _ in range(8):
        ceilings.append(b.ceiling())
        assert 0 <= b.next_delay() <= 2.0
    assert ceilings == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    b.reset()
    assert b.ceiling() == 0.1


def test_settings_come_from_the_environment() -> None:
    env = {"FERRY_CONTROL_PLANE_URL": "https://cp:50051", "FERRY_TLS_CA": "ca.pem", "FERRY_TLS_CERT": "a.pem",
           "FERRY_TLS_KEY": "a-key.pem", "FERRY_CONNECTOR_ID": "c1"}
    s = AgentSettings.from_env("sqlite", env)
    assert (s.control_plane_url, s.connectors, s.tls_cert) == ("https://cp:50051", [("c1", "sqlite")], "a.pem")
    with pytest.raises(SettingsError) as e:
        AgentSettings.from_env("sqlite", {"FERRY_CONTROL_PLANE_URL": "https://cp:50051"})
    assert "FERRY_TLS_CA" in str(e.value) and "FERRY_CONNECTOR_ID" in str(e.value)


def test_a_job_for_a_connector_not_served_fails_cleanly(cp: FakeControlPlane) -> None:
    agent = start_agent(cp, Counting())
    try:
        cp.expect("hello")
        cp.send(assign_job=agent_pb2.AssignJob(job_id="j9", lease_id="L9", connector_id="other"))
        f = cp.expect("job_finished").job_finished
        assert (f.job_id, f.lease_id, f.failed.kind) == ("j9", "L9", agent_pb2.FAILURE_KIND_CONFIGURATION)
        assert "'other'" in f.failed.message
    finally:
        agent.stop()


class Streaming(Counting):
    """Runs incremental jobs too; records what the job said about its position."""

    job_kinds = (JobKind.FULL, JobKind.INCREMENTAL)

    def __init__(self) -> None:
        super().__init__()
        self.seen: "queue.Queue[Job]" = queue.Queue()

    def sync(self, job: Job, out: DocumentSender) -> None:
        self.seen.put(job)
        if job.kind is JobKind.INCREMENTAL:
            out.send("changed", {"n": 1})
            out.checkpoint(b'{"lsn": "0/20"}')
            return
        super().sync(job, out)


def test_incremental_jobs_get_the_cursor_and_mode(cp: FakeControlPlane) -> None:
    source = Streaming()
    agent = start_agent(cp, source)
    try:
        cp.expect("hello")
        a = agent_pb2.AssignJob(job_id="j1", lease_id="L1", connector_id="c1", index_name="idx",
                                job_type=sync_job_pb2.JOB_TYPE_INCREMENTAL, sync_cursor=b'{"lsn": "0/10"}',
                                incremental_mode=agent_pb2.INCREMENTAL_MODE_CONTINUOUS, flow_control=FLOW)
        a.configuration["rows"].CopyFrom(to_value(1))
        cp.send(assign_job=a)
        job = source.seen.get(timeout=10)
        assert (job.kind, job.sync_cursor, job.incremental_mode) == (
            JobKind.INCREMENTAL, b'{"lsn": "0/10"}', "continuous")
        b = cp.expect("batch").batch
        assert b.checkpoint == b'{"lsn": "0/20"}'
        cp.ack(b)
        assert cp.expect("job_finished").job_finished.HasField("completed")

    finally:
        agent.stop()


def test_a_job_type_the_source_does_not_run_is_refused_never_run_as_a_full_sync(cp: FakeControlPlane) -> None:
    source = Counting()  # full syncs only
    agent = start_agent(cp, source)
    try:
        cp.expect("hello")
        a = agent_pb2.AssignJob(job_id="j2", lease_id="L2", connector_id="c1", index_name="idx",
                                job_type=sync_job_pb2.JOB_TYPE_INCREMENTAL, flow_control=FLOW)
        a.configuration["rows"].CopyFrom(to_value(3))
        cp.send(assign_job=a)
        f = cp.expect("job_finished").job_finished
        assert (f.job_id, f.lease_id, f.failed.kind) == ("j2", "L2", agent_pb2.FAILURE_KIND_CONFIGURATION)
        assert "does not run job type" in f.failed.message
        assert not source.started.is_set(), "the source must not have run"
    finally:
        agent.stop()

def test_tls_mistakes_are_explained() -> None:
    """http:// with TLS files is refused up front; a failed handshake gets one explanation that names
    the client certificate and the CA (as the Rust agent does), not gRPC-core noise."""
    from ferry_sdk.runtime import explain_session_failure

    env = {"FERRY_CONTROL_PLANE_URL": "http://cp:50051", "FERRY_TLS_CA": "ca.pem", "FERRY_TLS_CERT": "c.pem",
           "FERRY_TLS_KEY": "k.pem", "FERRY_CONNECTOR_ID": "c1"}
    with pytest.raises(SettingsError, match="is not https:// but TLS files are set: use https://"):
        AgentSettings.from_env("counting", env)
    settings = AgentSettings.from_env("counting", {**env, "FERRY_CONTROL_PLANE_URL": "https://cp:50051"})
    why = explain_session_failure("UNAVAILABLE: failed to connect to all addresses; last error: UNKNOWN: "
                                  "ipv4:127.0.0.1:50051: Ssl handshake failed: SSL_ERROR_SSL: "
                                  "error:1000045c:SSL routines:OPENSSL_internal:TLSV1_ALERT_CERTIFICATE_REQUIRED",
                                  settings)
    assert why is not None
    assert "client certificate" in why and "not the control plane's server certificate" in why and "c.pem" in why
    assert explain_session_failure("UNAVAILABLE: Connection refused", settings) is None
