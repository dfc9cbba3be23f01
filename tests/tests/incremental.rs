//! Incremental jobs on the control plane, driven by a hand-written agent.
//!
//! A raw protocol client (real mTLS certificate, no SDK) plays a change
//! stream against the real control plane and osmem:
//! - a continuous incremental job (`CreateSyncJob{continuous: true}`) is
//!   assigned with `INCREMENTAL_MODE_CONTINUOUS` and keeps running;
//! - upserts, deletes, a partial `update` (the field it does not name keeps
//!   its value), `delete_matching` (a TRUNCATE: the table's documents go,
//!   a document of it indexed after the truncate in the same batch stays)
//!   land in the index;
//! - 300 batches each updating one hot document, sent as fast as the window
//!   allows, end on the last one (per-id ordering with concurrent bulks);
//! - updates/deletes of missing documents are counted as
//!   `changes_to_missing_documents`, not failures;
//! - the acknowledged checkpoint becomes the connector's `sync_cursor` and
//!   the job's `connector.sync_cursor`;
//! - `JobProgress` facts show up in the job's metadata and move;
//! - after a cancel, a drain job (`continuous: false`) is assigned with
//!   `INCREMENTAL_MODE_DRAIN` and the connector's cursor, and completes.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use ferry_sdk::proto::{self, agent_message::Message as Out, control_message::Message as In};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use ferry_tests::process::{json_i64, wait_until};
use ferry_tests::scenario::{metadata_u64, Admin, World, CONNECTORS, STEP, SYNC_JOBS};

const CONNECTOR: &str = "stream";
const JOBS_INDEX: &str = ".elastic-connectors-sync-jobs";

/// A hand-written agent session.
struct RawAgent {
    tx: mpsc::Sender<proto::AgentMessage>,
    inbound: tonic::Streaming<proto::ControlMessage>,
    /// Messages read while waiting for something else.
    backlog: VecDeque<In>,
    window: usize,
}

impl RawAgent {
    async fn connect(
        world: &World,
        url: String,
        cn: &str,
        job_types: Vec<proto::JobType>,
    ) -> anyhow::Result<Self> {
        let tls = world.agent_tls(cn)?;
        let cfg = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(&tls.ca)?))
            .identity(Identity::from_pem(std::fs::read(&tls.cert)?, std::fs::read(&tls.key)?));
        let channel = Endpoint::from_shared(url)?.tls_config(cfg)?.connect().await?;
        let mut client = proto::agent_service_client::AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::channel::<proto::AgentMessage>(64);
        let field = proto::ConfigField {
            label: "Anything".into(),
            r#type: "str".into(),
            display: "text".into(),
            ..Default::default()
        };
        let hello = proto::Hello {
            protocol_version: 1,
            agent_version: "raw".into(),
            hostname: "raw".into(),
            connectors: vec![proto::ServedConnector {
                connector_id: CONNECTOR.into(),
                service_type: "postgresql".into(),
                configuration_schema: [("anything".to_string(), field)].into(),
                capabilities: Some(proto::SourceCapabilities {
                    job_types: job_types.into_iter().map(|t| t as i32).collect(),
                    basic_rules: true,
                    advanced_rules: false,
                }),
            }],
            max_concurrent_jobs: 1,
        };
        tx.send(proto::AgentMessage { message: Some(Out::Hello(hello)) }).await?;
        let inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
        let mut agent = RawAgent { tx, inbound, backlog: VecDeque::new(), window: 1 };
        match agent.next().await? {
            In::Welcome(w) => {
                agent.window = w.flow_control.map(|f| f.max_unacked_batches as usize).unwrap_or(1).max(1)
            }
            other => bail!("expected Welcome, got {other:?}"),
        }
        Ok(agent)
    }

    async fn send(&self, m: Out) -> anyhow::Result<()> {
        self.tx.send(proto::AgentMessage { message: Some(m) }).await.context("session gone")
    }

    async fn read(&mut self) -> anyhow::Result<In> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(60), self.inbound.message())
                .await
                .context("no message from the control plane within 60 s")??
                .context("the control plane closed the session")?;
            if let Some(m) = msg.message {
                return Ok(m);
            }
        }
    }

    async fn next(&mut self) -> anyhow::Result<In> {
        match self.backlog.pop_front() {
            Some(m) => Ok(m),
            None => self.read().await,
        }
    }

    /// Answers configuration checks (ok) until a job is assigned.
    async fn wait_assignment(&mut self) -> anyhow::Result<proto::AssignJob> {
        loop {
            match self.next().await? {
                In::ValidateConfiguration(v) => {
                    self.send(Out::ValidationResult(proto::ValidationResult {
                        connector_id: v.connector_id,
                        revision: v.revision,
                        ok: true,
                        error: String::new(),
                    }))
                    .await?
                }
                In::AssignJob(a) => return Ok(a),
                _ => {}
            }
        }
    }

    /// Sends `batches` (documents, checkpoint) keeping at most `window`
    /// unacknowledged, then waits for every ack; returns the acks.
    async fn stream(
        &mut self,
        job: &proto::AssignJob,
        first_sequence: u64,
        batches: Vec<(Vec<proto::Document>, Vec<u8>)>,
    ) -> anyhow::Result<Vec<proto::BatchAck>> {
        let total = batches.len();
        let mut acks = Vec::with_capacity(total);
        let mut sent = 0usize;
        let mut batches = batches.into_iter();
        while acks.len() < total {
            while sent - acks.len() < self.window {
                let Some((documents, checkpoint)) = batches.next() else { break };
                self.send(Out::Batch(proto::DocumentBatch {
                    job_id: job.job_id.clone(),
                    lease_id: job.lease_id.clone(),
                    sequence: first_sequence + sent as u64,
                    documents,
                    checkpoint,
                }))
                .await?;
                sent += 1;
            }
            match self.read().await? {
                In::BatchAck(a) => acks.push(a),
                In::CancelJob(c) => bail!("the control plane canceled the job: {c:?}"),
                other => self.backlog.push_back(other),
            }
        }
        Ok(acks)
    }

    async fn progress(&self, job: &proto::AssignJob, facts: Value) -> anyhow::Result<()> {
        let serde_json::Value::Object(m) = facts else { bail!("facts must be an object") };
        self.send(Out::Progress(proto::JobProgress {
            job_id: job.job_id.clone(),
            lease_id: job.lease_id.clone(),
            metadata: Some(ferry_sdk::config_schema::json_to_struct(&m)),
        }))
        .await
    }

    async fn finish(
        &self,
        job: &proto::AssignJob,
        last_sequence: u64,
        outcome: proto::job_finished::Outcome,
    ) -> anyhow::Result<()> {
        self.send(Out::JobFinished(proto::JobFinished {
            job_id: job.job_id.clone(),
            lease_id: job.lease_id.clone(),
            last_sequence,
            outcome: Some(outcome),
            metadata: None,
        }))
        .await
    }
}

fn doc(op: proto::DocumentOp, id: &str, source: Value, version: u64) -> proto::Document {
    proto::Document {
        id: id.into(),
        source: if op == proto::DocumentOp::Delete { Vec::new() } else { source.to_string().into_bytes() }
            .into(),
        op: op as i32,
        version,
    }
}

fn cursor(lsn: u64) -> Vec<u8> {
    json!({"slot": "ferry_stream", "lsn": format!("0/{lsn:X}")}).to_string().into_bytes()
}

async fn create_incremental(admin: &Admin, continuous: bool) -> anyhow::Result<String> {
    let mut last = None;
    for _ in 0..50 {
        match admin
            .call(
                &format!("{SYNC_JOBS}/CreateSyncJob"),
                json!({"connector_id": CONNECTOR, "job_type": "JOB_TYPE_INCREMENTAL", "continuous": continuous}),
            )
            .await
        {
            Ok(r) => return Ok(r["syncJob"]["id"].as_str().context("no job id")?.to_owned()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last.unwrap()).context("CreateSyncJob")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_stream_lands_in_order_and_its_cursor_carries_over() {
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    let cp = world.start_control_plane().expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    let result = async {
        use proto::DocumentOp::{Delete, DeleteMatching, Index, Update};
        admin.put_connector(CONNECTOR, CONNECTOR).await?;
        let mut agent = RawAgent::connect(
            &world,
            cp.agents_url(),
            "agent-raw",
            vec![proto::JobType::Full, proto::JobType::Incremental],
        )
        .await?;
        admin
            .call(
                &format!("{CONNECTORS}/UpdateConfiguration"),
                json!({"connector_id": CONNECTOR, "values": {"anything": "x"}}),
            )
            .await?;
        // The check is answered inside wait_assignment; the job can be
        // created once the connector is connected.
        let creating = {
            let admin = admin.clone();
            tokio::spawn(async move { create_incremental(&admin, true).await })
        };
        let job = agent.wait_assignment().await?;
        let job_id = creating.await??;
        ensure!(job.job_id == job_id, "assigned {} but created {job_id}", job.job_id);
        ensure!(job.job_type == proto::JobType::Incremental as i32, "{job:?}");
        ensure!(job.incremental_mode == proto::IncrementalMode::Continuous as i32, "{job:?}");
        ensure!(job.sync_cursor.is_empty(), "no cursor yet: {job:?}");

        // 1. Upserts of two "tables", a big document, changes to missing ones.
        let lsn = std::cell::Cell::new(100u64);
        let v = || {
            lsn.set(lsn.get() + 1);
            lsn.get()
        };
        let mut first: Vec<proto::Document> = (0..10)
            .map(|i| doc(Index, &format!("items-{i}"), json!({"table": "items", "n": i}), v()))
            .collect();
        first.extend(
            (0..5).map(|i| doc(Index, &format!("other-{i}"), json!({"table": "other", "n": i}), v())),
        );
        first.push(doc(
            Index,
            "toast",
            json!({"table": "items", "title": "old", "body": "x".repeat(5000)}),
            v(),
        ));
        let second = vec![
            // Partial update (unchanged TOAST column not sent): body stays.
            doc(Update, "toast", json!({"title": "new"}), v()),
            doc(Update, "ghost", json!({"title": "nobody"}), v()),
            doc(Delete, "ghost-2", json!({}), v()),
            doc(Delete, "items-0", json!({}), v()),
            // TRUNCATE other, then a new row of it.
            doc(DeleteMatching, "", json!({"table": "other"}), v()),
            doc(Index, "other-new", json!({"table": "other", "n": 99}), v()),
        ];
        let acks = agent.stream(&job, 1, vec![(first, cursor(v())), (second, cursor(v()))]).await?;
        ensure!(acks.iter().all(|a| a.failed == 0), "{acks:?}");

        // 2. 300 updates of one hot document, one per batch, concurrently.
        let batches: Vec<_> = (1..=300u64)
            .map(|i| {
                let mut docs = vec![doc(Index, "hot", json!({"table": "items", "n": i}), v())];
                docs.push(doc(Index, &format!("cold-{i}"), json!({"table": "cold", "n": i}), v()));
                (docs, cursor(v()))
            })
            .collect();
        let acks = agent.stream(&job, 3, batches).await?;
        ensure!(acks.len() == 300 && acks.iter().all(|a| a.failed == 0), "hot acks");
        let last_cursor = cursor(lsn.get());
        agent
            .progress(
                &job,
                json!({"lag_bytes": 123, "changes_applied": 620, "last_commit_time": "2026-01-01T00:00:00Z"}),
            )
            .await?;

        world.es.refresh(CONNECTOR).await?;
        let hot = world.es.get_doc(CONNECTOR, "hot").await?.context("hot")?;
        ensure!(hot["n"] == 300, "300 updates of one id must end on the last: {hot}");
        let toast = world.es.get_doc(CONNECTOR, "toast").await?.context("toast")?;
        ensure!(
            toast["title"] == "new" && toast["body"].as_str().map(str::len) == Some(5000),
            "partial update: {}",
            toast["title"]
        );
        ensure!(world.es.get_doc(CONNECTOR, "items-0").await?.is_none(), "items-0 deleted");
        ensure!(world.es.get_doc(CONNECTOR, "items-1").await?.is_some(), "items-1 kept");
        ensure!(world.es.get_doc(CONNECTOR, "ghost").await?.is_none(), "no document from a partial update");
        for i in 0..5 {
            ensure!(
                world.es.get_doc(CONNECTOR, &format!("other-{i}")).await?.is_none(),
                "other-{i} truncated"
            );
        }
        ensure!(
            world.es.get_doc(CONNECTOR, "other-new").await?.is_some(),
            "a row inserted after the truncate stays"
        );
        // 9 items + toast + other-new + hot + 300 cold
        ensure!(world.es.count(CONNECTOR).await? == 312, "count {}", world.es.count(CONNECTOR).await?);

        // 3. The job's stats, cursor and progress facts.
        let expected_cursor: Value = serde_json::from_slice(&last_cursor)?;
        let j = wait_until("the job's stats and progress facts", STEP, || async {
            let j = admin.job(&job_id).await?;
            Ok((metadata_u64(&j, "lag_bytes") == Some(123)
                && metadata_u64(&j, "changes_to_missing_documents") == Some(2)
                && json_i64(&j["deletedDocumentCount"]) == 6)
                .then_some(j))
        })
        .await?;
        ensure!(j["status"] == "SYNC_STATUS_IN_PROGRESS", "a continuous job keeps running: {j}");
        ensure!(j["metadata"]["continuous"] == true, "{j}");
        wait_until("the connector's sync_cursor", STEP, || async {
            let c = admin.connector(CONNECTOR).await?;
            Ok((c["syncCursor"] == expected_cursor).then_some(()))
        })
        .await?;
        let raw = world.es.get_doc(JOBS_INDEX, &job_id).await?.context("job doc")?;
        ensure!(
            raw["connector"]["sync_cursor"] == expected_cursor,
            "job snapshot cursor: {}",
            raw["connector"]
        );

        // Stats keep moving.
        agent.progress(&job, json!({"lag_bytes": 456, "changes_applied": 621})).await?;
        wait_until("the progress facts to move", STEP, || async {
            let j = admin.job(&job_id).await?;
            Ok((metadata_u64(&j, "lag_bytes") == Some(456)).then_some(()))
        })
        .await?;

        // 4. Cancel the stream; the agent ends it canceled.
        admin.call(&format!("{SYNC_JOBS}/CancelSyncJob"), json!({"sync_job_id": job_id})).await?;
        loop {
            match agent.next().await? {
                In::CancelJob(c) if c.job_id == job_id => break,
                _ => {}
            }
        }
        agent.finish(&job, 302, proto::job_finished::Outcome::Canceled(proto::JobCanceled {})).await?;
        wait_until("the stream to be canceled", STEP, || async {
            let j = admin.job(&job_id).await?;
            Ok((j["status"] == "SYNC_STATUS_CANCELED").then_some(()))
        })
        .await?;

        // 5. A drain job continues from the cursor and completes.
        let drain_id = create_incremental(&admin, false).await?;
        let drain = agent.wait_assignment().await?;
        ensure!(drain.job_id == drain_id, "{drain:?}");
        ensure!(drain.incremental_mode == proto::IncrementalMode::Drain as i32, "{drain:?}");
        let got: Value = serde_json::from_slice(&drain.sync_cursor).context("AssignJob.sync_cursor")?;
        ensure!(got == expected_cursor, "the next job starts from the cursor: {got}");
        agent
            .stream(
                &drain,
                1,
                vec![(vec![doc(Index, "hot", json!({"table": "items", "n": 301}), v())], cursor(v()))],
            )
            .await?;
        agent.finish(&drain, 1, proto::job_finished::Outcome::Completed(proto::JobCompleted {})).await?;
        let done = admin.wait_completed(&drain_id, STEP).await?;
        ensure!(json_i64(&done["indexedDocumentCount"]) == 1, "{done}");
        let c = admin.connector(CONNECTOR).await?;
        ensure!(
            c["syncCursor"] == serde_json::from_slice::<Value>(&cursor(lsn.get()))?,
            "cursor after the drain: {}",
            c["syncCursor"]
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e:?}\n--- control plane log ---\n{}", {
            let l = cp.logs();
            l[l.len().saturating_sub(20_000)..].to_owned()
        });
    }
}
