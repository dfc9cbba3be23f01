//! `ferry-conformance --agent-cmd '<command line>'`: checks an agent against Ferry's agent
//! protocol from the outside, whatever language it is written in.
//!
//! The suite starts osmem-server (Elasticsearch-compatible) behind a proxy that can stall or
//! slow `_bulk`, the real `ferry-control-plane` (found next to this binary or in
//! `target/debug`), a TCP proxy in front of the control plane's agent listener, certificates
//! (the agent's Subject CN is `conformance-agent`), and seeds the agent's source with test rows
//! (see `seed.rs`). It runs the agent command with `sh -c` and only these variables to find
//! its way: `FERRY_CONTROL_PLANE_URL`, `FERRY_TLS_CA`, `FERRY_TLS_CERT`, `FERRY_TLS_KEY`,
//! `FERRY_CONNECTOR_ID`. Then it drives the admin API and prints each check with PASS/FAIL.
//! Exit status 0 only when every check passes.

mod proxies;
mod seed;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use clap::Parser;
use ferry_sdk::proto::{
    self, connector_service_client::ConnectorServiceClient, sync_job_service_client::SyncJobServiceClient,
    ConnectorStatus, SyncStatus,
};
use serde_json::{Map, Value};
use tonic::transport::Channel;

use ferry_tests::certs::TestPki;
use ferry_tests::osmem::Osmem;
use ferry_tests::process::{ControlPlaneConfig, ServerTls, Service};

use proxies::{EsProxy, LinkProxy};

const CONNECTOR: &str = "conformance";
const INDEX: &str = "conformance";
const AGENT_ID: &str = "conformance-agent";
/// The control plane's window (its default) and a small batch so a job has many batches.
const WINDOW: u64 = 4;
const BATCH_DOCUMENTS: u64 = 10;
/// How long the control plane may take to relay a cancel (its progress loop) on top of the
/// 5 s an agent has to stop.
const CANCEL_RELAY: Duration = Duration::from_secs(2);
const AGENT_STOP_BUDGET: Duration = Duration::from_secs(5);
/// Checks in a full run.
const CHECKS: usize = 9;

/// Checks an agent against Ferry's agent protocol. Prints each check; exit 0 only if all pass.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The agent's command line (run with `sh -c`). It gets FERRY_CONTROL_PLANE_URL,
    /// FERRY_TLS_CA, FERRY_TLS_CERT, FERRY_TLS_KEY and FERRY_CONNECTOR_ID.
    #[arg(long)]
    agent_cmd: String,
    /// Built-in source adapter (when no --seed-cmd): postgresql.
    #[arg(long, default_value = "postgresql")]
    source: String,
    /// A seed adapter command for any other source: prints {"service_type",
    /// "configuration", "broken_configuration"} (see sdk/PROTOCOL.md, "Conformance").
    #[arg(long)]
    seed_cmd: Option<String>,
    /// Rows in the test source (about 1 KiB each).
    #[arg(long, default_value_t = 1000)]
    rows: u64,
    /// Path of ferry-control-plane (default: next to this binary, then target/debug).
    #[arg(long)]
    control_plane_bin: Option<PathBuf>,
    /// Delete the logs even when a check fails (they are kept and their place printed otherwise).
    #[arg(long)]
    discard_logs: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => std::process::exit(0),
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("ferry-conformance: could not set up the suite: {e:#}");
            std::process::exit(2);
        }
    }
}

struct Report {
    results: Vec<(String, bool)>,
}

impl Report {
    fn record(&mut self, name: &str, started: Instant, r: anyhow::Result<String>) -> bool {
        let secs = started.elapsed().as_secs_f64();
        let ok = r.is_ok();
        match r {
            Ok(detail) => println!("PASS  {name} ({secs:.1} s): {detail}"),
            Err(e) => println!("FAIL  {name} ({secs:.1} s): {e:#}"),
        }
        self.results.push((name.to_owned(), ok));
        ok
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let work = tempfile::Builder::new().prefix("ferry-conformance-").tempdir()?;
    let t0 = Instant::now();
    println!("ferry-conformance: agent `{}`", args.agent_cmd);

    let es = Osmem::start().context("start osmem-server (pip install osmem-server)")?;
    let es_proxy = EsProxy::start(es.url()).await?;
    let pki = TestPki::new()?;
    let ca = pki.write_ca()?;
    let server = pki.write_server_cert()?;
    let client = pki.write_client_cert(AGENT_ID)?;
    let mut cp_config = ControlPlaneConfig::new(
        &es_proxy.url(),
        ServerTls { cert: server.cert, key: server.key, client_ca: ca.clone() },
    )?;
    cp_config.env = vec![
        ("FERRY_JOBS__MAX_BATCH_DOCUMENTS".into(), BATCH_DOCUMENTS.to_string()),
        ("FERRY_JOBS__MAX_UNACKED_BATCHES".into(), WINDOW.to_string()),
        ("FERRY_JOBS__POLL_INTERVAL_MS".into(), "200".into()),
    ];
    let cp_bin = control_plane_bin(args.control_plane_bin.as_deref())?;
    let mut cp = Service::spawn(&cp_bin, &cp_config.to_yaml(), &cp_config.env)?;
    cp.wait_for_port(cp_config.admin_listen, Duration::from_secs(60))?;
    cp.wait_for_port(cp_config.agents_listen, Duration::from_secs(60))?;
    let link = LinkProxy::start(cp_config.agents_listen).await?;

    let seeded = match &args.seed_cmd {
        Some(cmd) => seed::command(cmd, args.rows, work.path())?,
        None if args.source == "postgresql" => seed::postgresql(args.rows).await?,
        None => bail!("unknown --source {:?}: use postgresql or --seed-cmd", args.source),
    };
    let admin = Admin::connect(&cp_config.admin_listen.to_string()).await?;
    admin.put_connector(&seeded.service_type).await?;

    let mut agent = AgentProcess::start(
        &args.agent_cmd,
        work.path(),
        &[
            ("FERRY_CONTROL_PLANE_URL", format!("https://{}", link.addr())),
            ("FERRY_TLS_CA", ca.display().to_string()),
            ("FERRY_TLS_CERT", client.cert.display().to_string()),
            ("FERRY_TLS_KEY", client.key.display().to_string()),
            ("FERRY_CONNECTOR_ID", CONNECTOR.to_owned()),
        ],
    )?;
    println!("setup done in {:.1} s (work directory {})", t0.elapsed().as_secs_f64(), work.path().display());

    let w = World { admin, es: &es, es_proxy: &es_proxy, link: &link, rows: args.rows, seeded: &seeded };
    let mut report = Report { results: vec![] };
    let t = Instant::now();
    let registered = report.record("registration and schema", t, w.registration().await);
    if registered {
        let t = Instant::now();
        report.record("heartbeats and last_seen", t, w.heartbeats().await);
        let t = Instant::now();
        report.record("clean error for a broken source", t, w.broken_source(&mut agent).await);
        let t = Instant::now();
        report.record("full sync with exact counts", t, w.full_sync().await);
        let t = Instant::now();
        report.record("draft sync rules answered", t, w.sync_rules().await);
        let t = Instant::now();
        let (job_id, r) = w.window().await;
        report.record("never more unacknowledged data than the window", t, r);
        let t = Instant::now();
        report.record("cancellation honoured within 5 s", t, w.cancel(job_id).await);
        let t = Instant::now();
        report.record("resume from the checkpoint after the link drops", t, w.resume().await);
    }
    let t = Instant::now();
    report.record("the agent is still running", t, agent.alive());
    agent.stop();
    let failed: Vec<_> = report.results.iter().filter(|(_, ok)| !ok).map(|(n, _)| n.clone()).collect();
    let not_run = CHECKS.saturating_sub(report.results.len());
    if failed.is_empty() && not_run == 0 {
        println!(
            "ferry-conformance: all {} checks passed in {:.0} s",
            report.results.len(),
            t0.elapsed().as_secs_f64()
        );
        return Ok(true);
    }
    cp.stop(Duration::from_secs(5));
    if args.discard_logs {
        println!(
            "ferry-conformance: {} of {CHECKS} checks failed ({}), {not_run} not run",
            failed.len(),
            failed.join(", ")
        );
        return Ok(false);
    }
    // Keep the logs for whoever reads the failure.
    let kept = work.keep();
    for f in ["stdout.log", "stderr.log"] {
        let _ = std::fs::copy(cp.dir().join(f), kept.join(format!("control-plane-{f}")));
    }
    println!(
        "ferry-conformance: {} of {CHECKS} checks failed ({}), {not_run} not run; logs (agent.log, control-plane-*.log) in {}",
        failed.len(),
        failed.join(", "),
        kept.display()
    );
    Ok(false)
}

fn control_plane_bin(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_owned)) {
        let p = dir.join("ferry-control-plane");
        if p.is_file() {
            return Ok(p);
        }
    }
    ferry_tests::process::workspace_bin("ferry-control-plane")
}

/// The agent under test: `sh -c <cmd>` in its own process group, output in `agent.log`.
struct AgentProcess {
    child: Option<Child>,
}

impl AgentProcess {
    fn start(cmd: &str, dir: &Path, env: &[(&str, String)]) -> anyhow::Result<AgentProcess> {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(dir.join("agent.log"))?;
        let mut c = Command::new("sh");
        c.arg("-c").arg(cmd).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).process_group(0);
        // Hermetic: the agent learns its connection from the five variables below only.
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("FERRY_")) {
                c.env_remove(&k);
            }
        }
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().with_context(|| format!("start the agent {cmd:?}"))?;
        Ok(AgentProcess { child: Some(child) })
    }

    fn alive(&mut self) -> anyhow::Result<String> {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => Ok("no crash, no exit".into()),
            Some(Ok(Some(status))) => bail!("the agent exited: {status}"),
            Some(Err(e)) => bail!("cannot tell: {e}"),
            None => bail!("the agent was never started"),
        }
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let group = format!("-{}", child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The admin API, as an operator (or grpcurl) uses it.
#[derive(Clone)]
struct Admin {
    connectors: ConnectorServiceClient<Channel>,
    jobs: SyncJobServiceClient<Channel>,
}

impl Admin {
    async fn connect(addr: &str) -> anyhow::Result<Admin> {
        let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
        Ok(Admin {
            connectors: ConnectorServiceClient::new(channel.clone()),
            jobs: SyncJobServiceClient::new(channel),
        })
    }

    async fn put_connector(&self, service_type: &str) -> anyhow::Result<()> {
        self.connectors
            .clone()
            .put_connector(proto::PutConnectorRequest {
                connector_id: CONNECTOR.into(),
                name: "Conformance".into(),
                index_name: INDEX.into(),
                service_type: service_type.into(),
                ..Default::default()
            })
            .await
            .context("PutConnector")?;
        Ok(())
    }

    async fn connector(&self) -> anyhow::Result<proto::Connector> {
        let r = self
            .connectors
            .clone()
            .get_connector(proto::GetConnectorRequest { connector_id: CONNECTOR.into() })
            .await
            .context("GetConnector")?;
        r.into_inner().connector.context("GetConnector without a connector")
    }

    async fn configure(&self, values: &Map<String, Value>) -> anyhow::Result<()> {
        let values: BTreeMap<String, Value> = values.clone().into_iter().collect();
        self.connectors
            .clone()
            .update_configuration(proto::UpdateConfigurationRequest {
                connector_id: CONNECTOR.into(),
                values: ferry_sdk::config_schema::values_to_proto(&values),
            })
            .await
            .context("UpdateConfiguration")?;
        Ok(())
    }

    async fn create_job(&self) -> anyhow::Result<String> {
        let r = self
            .jobs
            .clone()
            .create_sync_job(proto::CreateSyncJobRequest {
                connector_id: CONNECTOR.into(),
                job_type: proto::JobType::Full as i32,
                ..Default::default()
            })
            .await
            .context("CreateSyncJob")?;
        Ok(r.into_inner().sync_job.context("CreateSyncJob without a job")?.id)
    }

    async fn job(&self, id: &str) -> anyhow::Result<proto::SyncJob> {
        let r = self
            .jobs
            .clone()
            .get_sync_job(proto::GetSyncJobRequest {
                sync_job_id: id.into(),
                view: proto::SyncJobView::Full as i32,
            })
            .await
            .context("GetSyncJob")?;
        r.into_inner().sync_job.context("GetSyncJob without a job")
    }

    async fn cancel(&self, id: &str) -> anyhow::Result<()> {
        self.jobs
            .clone()
            .cancel_sync_job(proto::CancelSyncJobRequest { sync_job_id: id.into() })
            .await
            .context("CancelSyncJob")?;
        Ok(())
    }

    /// Polls the job until `done` says so (Some) or `timeout`.
    async fn wait_job(
        &self,
        id: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&proto::SyncJob) -> Option<anyhow::Result<()>>,
    ) -> anyhow::Result<proto::SyncJob> {
        let deadline = Instant::now() + timeout;
        loop {
            let j = self.job(id).await?;
            if let Some(r) = done(&j) {
                r?;
                return Ok(j);
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}; job is {} ({})",
                    status_name(j.status),
                    j.error
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_connector(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&proto::Connector) -> bool,
    ) -> anyhow::Result<proto::Connector> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.connector().await?;
            if done(&c) {
                return Ok(c);
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}; connector is {:?} ({})",
                    ConnectorStatus::try_from(c.status).unwrap_or_default(),
                    c.error
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn status_name(s: i32) -> String {
    format!("{:?}", SyncStatus::try_from(s).unwrap_or_default())
}

fn metadata(j: &proto::SyncJob) -> Map<String, Value> {
    j.metadata.as_ref().map(ferry_sdk::config_schema::struct_to_json).unwrap_or_default()
}

/// Waits for a terminal status; `want` decides whether it is the right one.
fn terminal(want: SyncStatus) -> impl Fn(&proto::SyncJob) -> Option<anyhow::Result<()>> {
    move |j| {
        let s = SyncStatus::try_from(j.status).unwrap_or_default();
        match s {
            SyncStatus::Completed | SyncStatus::Error | SyncStatus::Canceled if s == want => Some(Ok(())),
            SyncStatus::Completed | SyncStatus::Error | SyncStatus::Canceled => Some(Err(anyhow::anyhow!(
                "the job ended {:?} instead of {want:?}: {}",
                s,
                if j.error.is_empty() { "(no error message)" } else { &j.error }
            ))),
            _ => None,
        }
    }
}

struct World<'a> {
    admin: Admin,
    es: &'a Osmem,
    es_proxy: &'a EsProxy,
    link: &'a LinkProxy,
    rows: u64,
    seeded: &'a seed::Seeded,
}

impl World<'_> {
    /// The agent connects with its certificate, says Hello with the connector and a schema;
    /// the control plane merges the schema and moves the connector to needs_configuration.
    async fn registration(&self) -> anyhow::Result<String> {
        let c = self
            .admin
            .wait_connector(Duration::from_secs(60), "the connector to show the agent's schema", |c| {
                c.status == ConnectorStatus::NeedsConfiguration as i32 && !c.configuration.is_empty()
            })
            .await?;
        let mut keys: Vec<_> = c.configuration.keys().cloned().collect();
        keys.sort();
        for (k, f) in &c.configuration {
            ensure!(!f.label.is_empty(), "schema field {k:?} has no label");
            ensure!(
                ["str", "int", "bool", "list"].contains(&f.r#type.as_str()),
                "schema field {k:?} has type {:?}; expected str, int, bool or list",
                f.r#type
            );
        }
        for k in self.seeded.configuration.keys() {
            ensure!(
                c.configuration.contains_key(k),
                "the seed adapter configures {k:?}, which the agent's schema lacks ({keys:?})"
            );
        }
        ensure!(self.link.connections() >= 1, "the agent never connected through the link");
        Ok(format!("connector needs_configuration with {} schema fields: {}", keys.len(), keys.join(", ")))
    }

    /// Heartbeats are inside TLS: the suite watches the agent's writes on the link while it is
    /// idle. A heartbeating agent writes at least every heartbeat interval (5 s); HTTP/2
    /// keep-alive answers alone would leave 20 s gaps.
    async fn heartbeats(&self) -> anyhow::Result<String> {
        let c = self.admin.connector().await?;
        let seen = c.last_seen.context("the connector has no last_seen")?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
        ensure!((now - seen.seconds).abs() <= 90, "last_seen is {} s old", now - seen.seconds);
        let from = Instant::now();
        tokio::time::sleep(Duration::from_secs(12)).await;
        let silence = self.link.longest_silence(from, Instant::now());
        ensure!(
            silence <= Duration::from_secs(7),
            "the agent was silent for {:.1} s while idle: heartbeats are due every 5 s (Welcome.heartbeat_interval_ms)",
            silence.as_secs_f64()
        );
        Ok(format!(
            "last_seen {} s ago; longest silence of the idle agent {:.1} s (heartbeat interval 5 s)",
            now - seen.seconds,
            silence.as_secs_f64()
        ))
    }

    /// A broken source: the configuration check puts the connector in error with a message,
    /// a job fails with a message, and the agent keeps running.
    async fn broken_source(&self, agent: &mut AgentProcess) -> anyhow::Result<String> {
        self.admin.configure(&self.seeded.broken_configuration).await?;
        let c = self
            .admin
            .wait_connector(Duration::from_secs(60), "the connector to go to error", |c| {
                c.status == ConnectorStatus::Error as i32
            })
            .await?;
        ensure!(!c.error.trim().is_empty(), "the connector is in error without a message");
        let job = self.admin.create_job().await?;
        let j = self
            .admin
            .wait_job(&job, Duration::from_secs(90), "the job to fail", terminal(SyncStatus::Error))
            .await?;
        ensure!(!j.error.trim().is_empty(), "the job failed without a message");
        agent.alive()?;
        Ok(format!("connector error {:?}; job error {:?}", c.error, j.error))
    }

    /// Good configuration → connected; a full sync indexes exactly every row; a second full
    /// sync writes the same ids (nothing deleted, same count).
    async fn full_sync(&self) -> anyhow::Result<String> {
        self.admin.configure(&self.seeded.configuration).await?;
        self.admin
            .wait_connector(Duration::from_secs(60), "the connector to be connected", |c| {
                c.status == ConnectorStatus::Connected as i32
            })
            .await?;
        let mut details = vec![];
        for round in 1..=2 {
            let job = self.admin.create_job().await?;
            let j = self
                .admin
                .wait_job(&job, Duration::from_secs(180), "the full sync", terminal(SyncStatus::Completed))
                .await?;
            let count = self.es.count(INDEX).await?;
            ensure!(
                j.indexed_document_count == self.rows as i64 && count == self.rows,
                "sync {round}: indexed_document_count {} and index count {count}, expected {} each",
                j.indexed_document_count,
                self.rows
            );
            ensure!(
                j.deleted_document_count == 0,
                "sync {round} deleted {} documents: the agent's ids are not stable",
                j.deleted_document_count
            );
            details.push(format!(
                "sync {round}: {} indexed, {count} in the index, 0 deleted",
                j.indexed_document_count
            ));
        }
        Ok(details.join("; "))
    }

    /// Draft sync rules are answered (`FilteringResult`): a draft with a rule on a field no
    /// source has leaves `edited` (valid or invalid, as the source decides), an empty draft
    /// becomes valid. An agent that ignores `ValidateFiltering` leaves drafts `edited`
    /// forever, and sync rules can never be used with it.
    async fn sync_rules(&self) -> anyhow::Result<String> {
        let draft_state = |c: &proto::Connector| {
            c.filtering
                .iter()
                .find(|f| f.domain == "DEFAULT")
                .and_then(|f| f.draft.as_ref())
                .and_then(|d| d.validation.as_ref())
                .map(|v| {
                    (v.state.clone(), v.errors.iter().flat_map(|e| e.messages.clone()).collect::<Vec<_>>())
                })
                .unwrap_or_default()
        };
        let rule = proto::FilteringRule {
            id: "conformance".into(),
            policy: "exclude".into(),
            field: "conformance_no_such_field".into(),
            rule: "equals".into(),
            value: "x".into(),
            ..Default::default()
        };
        let mut details = vec![];
        for (what, rules) in [("a rule on an unknown field", vec![rule]), ("an empty draft", vec![])] {
            let empty = rules.is_empty();
            self.admin
                .connectors
                .clone()
                .update_filtering(proto::UpdateFilteringRequest {
                    connector_id: CONNECTOR.into(),
                    rules,
                    advanced_snippet: None,
                })
                .await
                .context("UpdateFiltering")?;
            let c = self
                .admin
                .wait_connector(Duration::from_secs(30), &format!("the agent to answer {what}"), |c| {
                    draft_state(c).0 != "edited"
                })
                .await
                .context("the draft stayed `edited`: the agent does not answer ValidateFiltering with FilteringResult")?;
            let (state, errors) = draft_state(&c);
            if empty {
                ensure!(state == "valid", "an empty draft is {state:?} ({errors:?}); no rules must be valid");
            } else {
                ensure!(
                    state == "valid" || (state == "invalid" && !errors.is_empty()),
                    "draft {state:?} with errors {errors:?}: expected valid, or invalid with a message"
                );
            }
            details.push(format!("{what}: {state} {errors:?}"));
        }
        Ok(details.join("; "))
    }

    /// Elasticsearch stalls: no acknowledgements. The agent must stop at the window: the
    /// control plane holds at most `WINDOW` batches, the agent's uploads stop, and the control
    /// plane never had to end the session for exceeding the window.
    async fn window(&self) -> (Option<String>, anyhow::Result<String>) {
        self.es_proxy.hold();
        let sessions = self.link.connections();
        let job = match self.admin.create_job().await {
            Ok(j) => j,
            Err(e) => return (None, Err(e)),
        };
        let r = self.watch_window(sessions).await;
        (Some(job), r)
    }

    async fn watch_window(&self, sessions: u64) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.es_proxy.bulk_in_flight() == 0 {
            ensure!(Instant::now() < deadline, "no batch reached Elasticsearch within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let the agent fill its window, then watch it.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = self.link.bytes_up();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let uploaded = self.link.bytes_up() - before;
        let held = self.es_proxy.bulk_in_flight();
        ensure!(held <= WINDOW, "{held} batches in flight with a window of {WINDOW}");
        ensure!(
            self.link.connections() == sessions,
            "the agent's session was ended (and it reconnected) while Elasticsearch stalled: exceeding the window \
             ends the session"
        );
        // One batch is ten ~1 KiB documents; heartbeats are a few hundred bytes.
        ensure!(
            uploaded < 4096,
            "the agent uploaded {uploaded} bytes in 4 s with the window full and no acknowledgements"
        );
        Ok(format!(
            "{held} batches held by a stalled Elasticsearch (window {WINDOW}); agent uploaded {uploaded} bytes in the next 4 s"
        ))
    }

    /// CancelSyncJob on the running (stalled) job: the control plane relays CancelJob within
    /// its 2 s progress tick; the agent must stop and answer JobFinished{canceled} within 5 s.
    async fn cancel(&self, job: Option<String>) -> anyhow::Result<String> {
        let job = match job {
            Some(j) => j,
            None => {
                self.es_proxy.release();
                bail!("not run: the window check did not start a job")
            }
        };
        let t = Instant::now();
        self.admin.cancel(&job).await?;
        // Acknowledgements resume, slowly, so the agent is busy sending when the cancel comes.
        self.es_proxy.set_delay_ms(1000);
        self.es_proxy.release();
        let budget = CANCEL_RELAY + AGENT_STOP_BUDGET + Duration::from_secs(1);
        let j = self
            .admin
            .wait_job(&job, Duration::from_secs(60), "the job to be canceled", terminal(SyncStatus::Canceled))
            .await;
        self.es_proxy.set_delay_ms(0);
        let j = j?;
        let took = t.elapsed();
        ensure!(
            took <= budget,
            "canceled after {:.1} s; allowed {:.0} s (2 s control-plane relay + 5 s agent + 1 s)",
            took.as_secs_f64(),
            budget.as_secs_f64()
        );
        ensure!(
            (j.indexed_document_count as u64) < self.rows,
            "the job indexed all {} documents: the agent did not stop",
            self.rows
        );
        Ok(format!(
            "canceled {:.1} s after CancelSyncJob (budget {:.0} s), {} of {} documents indexed",
            took.as_secs_f64(),
            budget.as_secs_f64(),
            j.indexed_document_count,
            self.rows
        ))
    }

    /// The link drops mid-sync: the control plane hands the job back with its checkpoint, the
    /// agent reconnects, and the next attempt resumes (receives fewer than all rows), ending
    /// with exactly every row in the index.
    async fn resume(&self) -> anyhow::Result<String> {
        self.es_proxy.set_delay_ms(250);
        let job = self.admin.create_job().await?;
        let enough = (self.rows / 4).max(1) as i64;
        let r = self
            .admin
            .wait_job(&job, Duration::from_secs(120), "a quarter of the rows to be indexed", |j| {
                let s = SyncStatus::try_from(j.status).unwrap_or_default();
                if s == SyncStatus::InProgress && j.indexed_document_count >= enough {
                    Some(Ok(()))
                } else if matches!(s, SyncStatus::Completed | SyncStatus::Error | SyncStatus::Canceled) {
                    Some(Err(anyhow::anyhow!(
                        "the job ended {s:?} before the link could be cut: {}",
                        j.error
                    )))
                } else {
                    None
                }
            })
            .await;
        if let Err(e) = r {
            self.es_proxy.set_delay_ms(0);
            return Err(e);
        }
        let before = self.link.connections();
        self.link.cut(Duration::from_secs(1));
        self.es_proxy.set_delay_ms(0);
        let j = self
            .admin
            .wait_job(
                &job,
                Duration::from_secs(180),
                "the resumed job to complete",
                terminal(SyncStatus::Completed),
            )
            .await?;
        ensure!(self.link.connections() > before, "the agent did not reconnect");
        let count = self.es.count(INDEX).await?;
        ensure!(
            count == self.rows,
            "{count} documents in the index after the resumed sync, expected {}",
            self.rows
        );
        ensure!(
            j.deleted_document_count == 0,
            "the resumed sync deleted {} documents",
            j.deleted_document_count
        );
        let md = metadata(&j);
        let per_attempt: Vec<u64> = md
            .get("documents_per_attempt")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        ensure!(
            per_attempt.len() >= 2,
            "the job ran in {} attempt(s): the link cut did not interrupt it ({md:?})",
            per_attempt.len()
        );
        let last = *per_attempt.last().unwrap_or(&0);
        ensure!(
            last < self.rows,
            "the last attempt received {last} documents, all {} rows: the agent restarted from scratch instead of the checkpoint",
            self.rows
        );
        Ok(format!(
            "link cut after {} documents; documents per attempt {per_attempt:?}; {count} in the index",
            per_attempt.first().copied().unwrap_or_default()
        ))
    }
}
