//! One agent cannot hurt another (issue 15), probed with hand-written agents
//! speaking the raw protocol (valid certificates, none of the SDK's manners)
//! against the real control plane and osmem:
//! - a stalled agent (stops reading its stream while holding a job) delays
//!   neither another tenant's dispatch nor `CancelSyncJob` (each < 2 s), and
//!   its session is closed and its job handed back after the send deadline;
//! - an agent refused for a connector (it offers it as another service_type)
//!   never receives its jobs nor its configuration;
//! - an agent serving another connector cannot validate or activate a
//!   connector's draft sync rules (`FilteringResult`);
//! - an agent re-registering a schema with `sensitive: false` does not
//!   un-redact a stored secret in `GetConnector`/`ListConnectors`;
//! - an agent that never sends sequence 1 (while sending many batches with
//!   4 MiB checkpoints) gets its run ended with a clear error, and the
//!   control plane's memory (VmRSS) stays bounded.

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
    connect_with(admin, agent, connector, json!({"anything": "x"})).await
}

/// [`connect_connector`] with these configuration values.
async fn connect_with(
    admin: &Admin,
    agent: &mut RawAgent,
    connector: &str,
    values: Value,
) -> anyhow::Result<()> {
    wait_until("the agent to register the connector", Duration::from_secs(30), || async {
        let c = admin.connector(connector).await?;
        Ok((c["status"] != "CONNECTOR_STATUS_CREATED").then_some(()))
    })
    .await?;
    admin
        .call(
            &format!("{CONNECTORS}/UpdateConfiguration"),
            json!({"connector_id": connector, "values": values}),
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

/// A schema with a secret and a plain field.
fn secret_offer(connector: &str, service_type: &str, sensitive: bool, label: &str) -> proto::ServedConnector {
    proto::ServedConnector {
        connector_id: connector.into(),
        service_type: service_type.into(),
        configuration_schema: [
            ("anything".to_string(), field("Anything", false)),
            ("password".to_string(), field(label, sensitive)),
        ]
        .into(),
        capabilities: None,
    }
}

async fn wait_gone(admin: &Admin, cn: &str) -> anyhow::Result<()> {
    wait_until(&format!("{cn} to leave ListAgents"), Duration::from_secs(30), || async {
        Ok((!agents_listed(admin).await?.to_string().contains(cn)).then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_agent_gets_neither_jobs_nor_configuration() {
    const SECRET: &str = "s3cret-pw-for-postgresql";
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    let mut cp = world.start_control_plane().expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    let result = async {
        // An unbound postgresql connector, configured through its real agent.
        admin.put_connector("pgconn", "pgconn").await?;
        let mut real = RawAgent::connect(
            &world,
            &cp,
            "agent-pg",
            hello(vec![secret_offer("pgconn", "postgresql", true, "Password")]),
            None,
        )
        .await?;
        connect_with(&admin, &mut real, "pgconn", json!({"anything": "x", "password": SECRET})).await?;
        drop(real);
        wait_gone(&admin, "agent-pg").await?;

        // Another agent offers it as mysql: refused, and then a job comes.
        let mut evil = RawAgent::connect(
            &world,
            &cp,
            "agent-mysql",
            hello(vec![secret_offer("pgconn", "mysql", true, "Password")]),
            None,
        )
        .await?;
        let job = admin.create_job("pgconn").await?;
        let mut seen = Vec::new();
        let until = Instant::now() + Duration::from_secs(8);
        while Instant::now() < until {
            match tokio::time::timeout(Duration::from_millis(500), evil.inbound.message()).await {
                Ok(Ok(Some(m))) => seen.extend(m.message),
                Ok(Ok(None)) => break,
                Ok(Err(e)) => bail!("stream error: {e}"),
                Err(_) => {}
            }
        }
        eprintln!("the refused agent received: {seen:?}");
        ensure!(
            seen.iter().any(|m| matches!(m, In::ConnectorRefused(r) if r.connector_id == "pgconn")),
            "no ConnectorRefused: {seen:?}"
        );
        ensure!(!seen.iter().any(|m| matches!(m, In::AssignJob(_))), "a refused agent was assigned a job");
        ensure!(
            !seen.iter().any(|m| matches!(m, In::ValidateConfiguration(_) | In::ValidateFiltering(_))),
            "a refused agent was sent the configuration: {seen:?}"
        );
        ensure!(!format!("{seen:?}").contains(SECRET), "the secret reached the refused agent");
        ensure!(job_status(&admin, &job).await? == "SYNC_STATUS_PENDING", "job left pending");

        // The real agent comes back and gets the job (with the secret).
        let mut real = RawAgent::connect(
            &world,
            &cp,
            "agent-pg",
            hello(vec![secret_offer("pgconn", "postgresql", true, "Password")]),
            None,
        )
        .await?;
        let a =
            tokio::time::timeout(Duration::from_secs(30), real.assignment()).await.context("no job")??;
        ensure!(a.job_id == job, "{a:?}");
        ensure!(format!("{:?}", a.configuration).contains(SECRET), "the real agent got no password");
        drop(evil);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_filtering_result_changes_nothing() {
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    let mut cp = world.start_control_plane().expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    let result = async {
        admin.put_connector("victim", "victim").await?;
        admin.put_connector("mine", "mine").await?;
        let mut owner =
            RawAgent::connect(&world, &cp, "agent-owner", hello(vec![offer("victim", "postgresql")]), None).await?;
        let mut other =
            RawAgent::connect(&world, &cp, "agent-other", hello(vec![offer("mine", "postgresql")]), None).await?;
        connect_connector(&admin, &mut owner, "victim").await?;
        connect_connector(&admin, &mut other, "mine").await?;
        admin
            .call(
                &format!("{CONNECTORS}/UpdateFiltering"),
                json!({"connector_id": "victim", "rules": [{"policy": "exclude", "field": "price", "rule": "<", "value": "10"}]}),
            )
            .await?;
        let check = tokio::time::timeout(
            Duration::from_secs(30),
            owner.serve_until(|m| match m {
                In::ValidateFiltering(v) => Some(v.clone()),
                _ => None,
            }),
        )
        .await
        .context("no ValidateFiltering for the owner")??;
        // The other agent answers the owner's question (it knows the rules,
        // so it can compute the revision): valid, no errors.
        other
            .send(Out::FilteringResult(proto::FilteringResult {
                connector_id: "victim".into(),
                revision: check.revision.clone(),
                errors: vec![],
            }))
            .await?;
        // And a configuration check of the victim, failed.
        other
            .send(Out::ValidationResult(proto::ValidationResult {
                connector_id: "victim".into(),
                revision: "whatever".into(),
                ok: false,
                error: "hijacked".into(),
            }))
            .await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let c = admin.connector("victim").await?;
        let f = &c["filtering"][0];
        ensure!(f["draft"]["validation"]["state"] == "edited", "a foreign answer validated the draft: {f}");
        ensure!(f["active"]["rules"].as_array().map(|a| a.len()) == Some(1), "a foreign answer activated rules: {f}");
        ensure!(c["status"] == "CONNECTOR_STATUS_CONNECTED", "a foreign check changed the status: {c}");

        // The owner's own answer is taken.
        owner
            .send(Out::FilteringResult(proto::FilteringResult {
                connector_id: "victim".into(),
                revision: check.revision,
                errors: vec![],
            }))
            .await?;
        wait_until("the owner's answer to activate the rules", Duration::from_secs(15), || async {
            let c = admin.connector("victim").await?;
            let f = &c["filtering"][0];
            Ok((f["draft"]["validation"]["state"] == "valid"
                && f["active"]["rules"].as_array().map(|a| a.len()) == Some(2))
            .then_some(()))
        })
        .await?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_lower_the_sensitivity_of_a_stored_secret() {
    const SECRET: &str = "s3cret-pw-kept-redacted";
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    let mut cp = world.start_control_plane().expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    let result = async {
        admin.put_connector("sens", "sens").await?;
        let mut agent = RawAgent::connect(
            &world,
            &cp,
            "agent-sens",
            hello(vec![secret_offer("sens", "postgresql", true, "Password")]),
            None,
        )
        .await?;
        connect_with(&admin, &mut agent, "sens", json!({"anything": "x", "password": SECRET})).await?;
        ensure!(!admin.connector("sens").await?.to_string().contains(SECRET), "redacted before");
        drop(agent);
        wait_gone(&admin, "agent-sens").await?;
        // The same (allowed) agent re-registers the field as not sensitive.
        let _agent = RawAgent::connect(
            &world,
            &cp,
            "agent-sens",
            hello(vec![secret_offer("sens", "postgresql", false, "Password (lowered)")]),
            None,
        )
        .await?;
        wait_until("the new schema to be merged", Duration::from_secs(30), || async {
            let c = admin.connector("sens").await?;
            Ok(c.to_string().contains("Password (lowered)").then_some(c))
        })
        .await?;
        let c = admin.connector("sens").await?;
        ensure!(!c.to_string().contains(SECRET), "GetConnector shows the secret: {c}");
        ensure!(c["configuration"]["password"]["sensitive"] == true, "sensitivity lowered: {c}");
        let l = admin.call(&format!("{CONNECTORS}/ListConnectors"), json!({})).await?;
        ensure!(l.to_string().contains("sens"), "ListConnectors: {l}");
        ensure!(!l.to_string().contains(SECRET), "ListConnectors shows the secret");
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

fn vm_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    line.split_whitespace().nth(1).context("VmRSS value")?.parse().context("VmRSS number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_sequence_ends_the_run_and_memory_stays_bounded() {
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    let mut cp = world.start_control_plane().expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    let result = async {
        let pid = cp.service.pid().context("control plane pid")?;
        admin.put_connector("gap", "gap").await?;
        let mut agent =
            RawAgent::connect(&world, &cp, "agent-gap", hello(vec![offer("gap", "postgresql")]), None).await?;
        connect_connector(&admin, &mut agent, "gap").await?;
        let job = admin.create_job("gap").await?;
        let a = agent.assignment().await?;
        ensure!(a.job_id == job, "{a:?}");
        let before = vm_rss_kib(pid)?;
        // Sequences 2..=61, never 1, each with a 4 MiB checkpoint.
        let checkpoint = vec![b'c'; 4 * 1024 * 1024];
        for seq in 2..=61u64 {
            let mut b = batch(&a, seq, 1);
            if let Out::Batch(b) = &mut b {
                b.checkpoint = checkpoint.clone();
            }
            agent.send(b).await?;
        }
        let cancel = tokio::time::timeout(
            Duration::from_secs(60),
            agent.serve_until(|m| match m {
                In::CancelJob(c) => Some(c.clone()),
                _ => None,
            }),
        )
        .await
        .context("the run was not ended")??;
        eprintln!("the agent was told: {}", cancel.reason);
        ensure!(cancel.reason.contains("sequence 2 where 1 was due"), "{cancel:?}");
        let j = wait_until("the job to fail", Duration::from_secs(30), || async {
            let j = admin.job(&job).await?;
            Ok((j["status"] == "SYNC_STATUS_ERROR").then_some(j))
        })
        .await?;
        ensure!(j["error"].as_str().unwrap_or_default().contains("without gaps"), "{j}");
        // The session goes on: the connector's next job runs.
        let next = admin.create_job("gap").await?;
        let b = tokio::time::timeout(Duration::from_secs(30), agent.assignment()).await.context("no job")??;
        ensure!(b.job_id == next, "{b:?}");
        agent.send(batch(&b, 1, 3)).await?;
        agent
            .serve_until(|m| match m {
                In::BatchAck(k) if k.job_id == next => Some(()),
                _ => None,
            })
            .await?;
        agent
            .send(Out::JobFinished(proto::JobFinished {
                job_id: b.job_id.clone(),
                lease_id: b.lease_id.clone(),
                last_sequence: 1,
                outcome: Some(proto::job_finished::Outcome::Completed(proto::JobCompleted {})),
                metadata: None,
            }))
            .await?;
        admin.wait_completed(&next, Duration::from_secs(30)).await?;
        // The stream is read in order: every batch of the attack was read
        // before the next job's batch was acknowledged.
        let after = vm_rss_kib(pid)?;
        eprintln!(
            "control plane VmRSS: {} MiB before, {} MiB after 60 batches with 4 MiB checkpoints (240 MiB sent)",
            before / 1024,
            after / 1024
        );
        ensure!(after < before + 100 * 1024, "VmRSS grew from {before} KiB to {after} KiB");
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
