//! One agent cannot hurt another (issue 15), probed with hand-written agents
//! speaking the raw protocol (valid certificates, none of the SDK's manners)
//! against the real control plane and osmem:
//! - a stalled agent (stops reading its stream while holding a job) delays
//!   neither another tenant's dispatch nor `CancelSyncJob` (each < 2 s), and
//!   its session is closed and its job handed back after the send deadline.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use ferry_sdk::proto::{self, agent_message::Message as Out, control_message::Message as In};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use ferry_tests::process::{wait_until, ControlPlane};
use ferry_tests::scenario::{Admin, World, CONNECTORS, SYNC_JOBS};

/// A raw protocol client.
struct RawAgent {
    tx: mpsc::Sender<proto::AgentMessage>,
    inbound: tonic::Streaming<proto::ControlMessage>,
}

fn field(label: &str, sensitive: bool) -> proto::ConfigField {
    proto::ConfigField {
        label: label.into(),
        r#type: "str".into(),
        display: "text".into(),
        sensitive,
        ..Default::default()
    }
}

fn offer(connector: &str, service_type: &str) -> proto::ServedConnector {
    proto::ServedConnector {
        connector_id: connector.into(),
        service_type: service_type.into(),
        configuration_schema: [("anything".to_string(), field("Anything", false))].into(),
        capabilities: None,
    }
}

fn hello(connectors: Vec<proto::ServedConnector>) -> proto::Hello {
    proto::Hello {
        protocol_version: 1,
        agent_version: "raw".into(),
        hostname: "raw".into(),
        connectors,
        max_concurrent_jobs: 2,
    }
}

impl RawAgent {
    /// Connects as `cn` and says `hello`. `stream_window`: the HTTP/2 window
    /// the agent grants the control plane (small: a stall shows at once).
    async fn connect(
        world: &World,
        cp: &ControlPlane,
        cn: &str,
        hello: proto::Hello,
        stream_window: Option<u32>,
    ) -> anyhow::Result<RawAgent> {
        let tls = world.agent_tls(cn)?;
        let cfg = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(&tls.ca)?))
            .identity(Identity::from_pem(std::fs::read(&tls.cert)?, std::fs::read(&tls.key)?));
        let channel = Endpoint::from_shared(cp.agents_url())?
            .tls_config(cfg)?
            .initial_stream_window_size(stream_window)
            .connect()
            .await?;
        let mut client = proto::agent_service_client::AgentServiceClient::new(channel)
            .max_encoding_message_size(256 * 1024 * 1024);
        let (tx, rx) = mpsc::channel::<proto::AgentMessage>(64);
        tx.send(proto::AgentMessage { message: Some(Out::Hello(hello)) }).await?;
        let inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
        let mut agent = RawAgent { tx, inbound };
        ensure!(matches!(agent.next().await?, In::Welcome(_)), "no Welcome");
        Ok(agent)
    }

    async fn send(&self, m: Out) -> anyhow::Result<()> {
        self.tx.send(proto::AgentMessage { message: Some(m) }).await.context("session gone")
    }

    async fn next(&mut self) -> anyhow::Result<In> {
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

    /// Reads messages, answering every configuration check `ok`, until
    /// `until` picks one.
    async fn serve_until<T>(&mut self, mut until: impl FnMut(&In) -> Option<T>) -> anyhow::Result<T> {
        loop {
            let m = self.next().await?;
            if let Some(t) = until(&m) {
                return Ok(t);
            }
            if let In::ValidateConfiguration(v) = m {
                self.send(Out::ValidationResult(proto::ValidationResult {
                    connector_id: v.connector_id,
                    revision: v.revision,
                    ok: true,
                    error: String::new(),
                }))
                .await?;
            }
        }
    }

    /// Serves until the next `AssignJob`.
    async fn assignment(&mut self) -> anyhow::Result<proto::AssignJob> {
        self.serve_until(|m| match m {
            In::AssignJob(a) => Some(a.clone()),
            _ => None,
        })
        .await
    }
}

fn batch(a: &proto::AssignJob, sequence: u64, docs: u32) -> Out {
    Out::Batch(proto::DocumentBatch {
        job_id: a.job_id.clone(),
        lease_id: a.lease_id.clone(),
        sequence,
        documents: (0..docs)
            .map(|i| proto::Document {
                id: format!("doc-{sequence}-{i}"),
                source: format!("{{\"n\":{i}}}").into_bytes().into(),
                ..Default::default()
            })
            .collect(),
        checkpoint: format!("{sequence}").into_bytes(),
    })
}

async fn answer_ok(agent: &RawAgent, v: &proto::ValidateConfiguration) -> anyhow::Result<()> {
    agent
        .send(Out::ValidationResult(proto::ValidationResult {
            connector_id: v.connector_id.clone(),
            revision: v.revision.clone(),
            ok: true,
            error: String::new(),
        }))
        .await
}

/// Registers, configures and connects `connector` through `agent`.
async fn connect_connector(admin: &Admin, agent: &mut RawAgent, connector: &str) -> anyhow::Result<()> {
    wait_until("the agent to register the connector", Duration::from_secs(30), || async {
        let c = admin.connector(connector).await?;
        Ok((c["status"] != "CONNECTOR_STATUS_CREATED").then_some(()))
    })
    .await?;
    admin
        .call(
            &format!("{CONNECTORS}/UpdateConfiguration"),
            json!({"connector_id": connector, "values": {"anything": "x"}}),
        )
        .await?;
    // Answer every check (a check of values that changed since is stale
    // and followed by another) until the connector is connected.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        ensure!(Instant::now() < deadline, "{connector} not connected within 30 s");
        tokio::select! {
            m = agent.next() => {
                if let In::ValidateConfiguration(v) = m? {
                    answer_ok(agent, &v).await?;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(300)) => {
                if admin.connector(connector).await?["status"] == "CONNECTOR_STATUS_CONNECTED" {
                    return Ok(());
                }
            }
        }
    }
}

async fn job_status(admin: &Admin, id: &str) -> anyhow::Result<String> {
    Ok(admin.job(id).await?["status"].as_str().unwrap_or_default().to_owned())
}

async fn agents_listed(admin: &Admin) -> anyhow::Result<Value> {
    admin.call("ferry.v1.FleetService/ListAgents", json!({})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_agent_delays_no_other_tenant() {
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    let mut config = world.control_plane_config(world.es.url()).expect("config");
    config.env.push(("FERRY_AGENTS__SEND_TIMEOUT_S".into(), "8".into()));
    let mut cp = ControlPlane::start(config).expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    let result = async {
        admin.put_connector("stall", "stall").await?;
        admin.put_connector("tenant", "tenant").await?;
        // The stalled agent grants the control plane a 1 KiB window: once it
        // stops reading, a dozen acks fill it.
        let mut stalled = RawAgent::connect(
            &world,
            &cp,
            "agent-stall",
            hello(vec![offer("stall", "postgresql")]),
            Some(1024),
        )
        .await?;
        let mut healthy =
            RawAgent::connect(&world, &cp, "agent-tenant", hello(vec![offer("tenant", "postgresql")]), None)
                .await?;
        connect_connector(&admin, &mut stalled, "stall").await?;
        let stall_job = admin.create_job("stall").await?;
        let a = stalled.assignment().await?;
        ensure!(a.job_id == stall_job, "{a:?}");
        // From now on the stalled agent never reads; it keeps sending small
        // batches (slowly enough to stay within its window of 8), whose acks
        // pile up in front of it.
        let sender = {
            let tx = stalled.tx.clone();
            let a = a.clone();
            tokio::spawn(async move {
                for seq in 1..=80u64 {
                    if tx.send(proto::AgentMessage { message: Some(batch(&a, seq, 1)) }).await.is_err() {
                        return seq;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                81
            })
        };
        connect_connector(&admin, &mut healthy, "tenant").await?;
        tokio::time::sleep(Duration::from_secs(2)).await;

        // Another tenant's job is dispatched at once.
        let t0 = Instant::now();
        let tenant_job = admin.create_job("tenant").await?;
        let ta = healthy.assignment().await?;
        let dispatch = t0.elapsed();
        ensure!(ta.job_id == tenant_job, "{ta:?}");
        eprintln!("another tenant's job was assigned {} ms after CreateSyncJob", dispatch.as_millis());
        ensure!(dispatch < Duration::from_secs(2), "dispatch took {dispatch:?} while an agent stalls");

        // Canceling the stalled agent's job answers at once.
        let t1 = Instant::now();
        admin.call(&format!("{SYNC_JOBS}/CancelSyncJob"), json!({"sync_job_id": stall_job})).await?;
        let cancel = t1.elapsed();
        eprintln!("CancelSyncJob of the stalled agent's job answered in {} ms", cancel.as_millis());
        ensure!(cancel < Duration::from_secs(2), "CancelSyncJob took {cancel:?}");
        // And so does the healthy tenant's.
        let t2 = Instant::now();
        admin.call(&format!("{SYNC_JOBS}/CancelSyncJob"), json!({"sync_job_id": tenant_job})).await?;
        ensure!(t2.elapsed() < Duration::from_secs(2), "CancelSyncJob (healthy) took {:?}", t2.elapsed());
        let c = healthy
            .serve_until(|m| match m {
                In::CancelJob(c) => Some(c.clone()),
                _ => None,
            })
            .await?;
        ensure!(c.job_id == tenant_job, "{c:?}");
        healthy
            .send(Out::JobFinished(proto::JobFinished {
                job_id: ta.job_id.clone(),
                lease_id: ta.lease_id.clone(),
                last_sequence: 0,
                outcome: Some(proto::job_finished::Outcome::Canceled(proto::JobCanceled {})),
                metadata: None,
            }))
            .await?;

        // The stalled session is closed after the send deadline (8 s) and
        // its job handed back: canceling → canceled.
        let t3 = Instant::now();
        wait_until("the stalled agent's job to be canceled", Duration::from_secs(40), || async {
            Ok((job_status(&admin, &stall_job).await? == "SYNC_STATUS_CANCELED").then_some(()))
        })
        .await?;
        eprintln!("the stalled agent's job was canceled {} s after the cancel", t3.elapsed().as_secs());
        wait_until("the stalled agent to leave ListAgents", Duration::from_secs(30), || async {
            let l = agents_listed(&admin).await?;
            Ok((!l.to_string().contains("agent-stall")).then_some(()))
        })
        .await?;
        ensure!(agents_listed(&admin).await?.to_string().contains("agent-tenant"), "healthy agent gone");
        let logs = cp.logs();
        ensure!(
            logs.contains("did not read its stream for 8 s"),
            "the stalled session was not closed for its stall"
        );
        wait_until("the healthy tenant's job to be canceled", Duration::from_secs(30), || async {
            Ok((job_status(&admin, &tenant_job).await? == "SYNC_STATUS_CANCELED").then_some(()))
        })
        .await?;
        let sent = sender.await?;
        eprintln!("the stalled agent got {sent} batches in before its session ended");
        if !cp.service.is_running() {
            bail!("the control plane died");
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e:?}");
    }
}
