//! Fleet simulator: one control plane (the real binary from `target/`),
//! osmem-server behind a counting proxy, and many agent sessions in this
//! one process, each with its own client certificate (rcgen, one CA).
//!
//!     cargo build --workspace --bins
//!     target/debug/ferry-fleet-sim --agents 1000 --connectors 10 --idle-s 300 --jobs 100
//!
//! Each simulated agent speaks the agent protocol: `Hello` with its
//! connectors (service_type `sim`, one optional field, so registration
//! configures them), `ValidationResult ok` to every check, a `Heartbeat`
//! every 5 s, and `JobFinished completed` at once for every `AssignJob`.
//! The connectors are written into osmem directly (as Kibana would) before
//! the agents connect.
//!
//! Measured and printed as JSON: Elasticsearch requests during the idle
//! window (total, per second, per connector, by route), the control
//! plane's CPU (% of one core, from /proc/<pid>/stat) and RSS over that
//! window, the time from `CreateSyncJob` answered to `AssignJob` received
//! for `--jobs` jobs created at once (p50/p99), and the time from
//! `UpdateConfiguration` answered to the agent's `ValidateConfiguration`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ferry_sdk::proto::{self, agent_message::Message as In, control_message::Message as Out};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use ferry_tests::certs::TestPki;
use ferry_tests::faults::{FaultPlan, FaultProxy};
use ferry_tests::osmem::Osmem;
use ferry_tests::process::{ControlPlane, ControlPlaneConfig, ServerTls};

struct Args {
    agents: usize,
    connectors: usize,
    idle: Duration,
    jobs: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args { agents: 3, connectors: 10, idle: Duration::from_secs(60), jobs: 3 };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).with_context(|| format!("{} needs a value", v[i]))?;
        match v[i].as_str() {
            "--agents" => a.agents = val.parse()?,
            "--connectors" => a.connectors = val.parse()?,
            "--idle-s" => a.idle = Duration::from_secs(val.parse()?),
            "--jobs" => a.jobs = val.parse()?,
            other => bail!("unknown argument {other}: use --agents N --connectors N --idle-s S --jobs N"),
        }
        i += 2;
    }
    Ok(a)
}

/// What the simulated agents saw, by job id / connector id.
#[derive(Default)]
struct Seen {
    assigned: HashMap<String, Instant>,
    validations: HashMap<String, Vec<Instant>>,
}

fn connector_id(agent: usize, c: usize) -> String {
    format!("sim-{agent:04}-{c:02}")
}

async fn run_agent(
    endpoint: Endpoint,
    agent: usize,
    connectors: usize,
    seen: Arc<Mutex<Seen>>,
) -> anyhow::Result<()> {
    let channel = endpoint.connect().await.context("connect")?;
    let mut client = proto::agent_service_client::AgentServiceClient::new(channel);
    let (tx, rx) = mpsc::channel::<proto::AgentMessage>(16);
    let schema: HashMap<String, proto::ConfigField> = [(
        "note".to_owned(),
        proto::ConfigField {
            label: "Note".into(),
            r#type: "str".into(),
            required: false,
            ..Default::default()
        },
    )]
    .into();
    let hello = proto::Hello {
        protocol_version: ferry_sdk::PROTOCOL_VERSION as i32,
        agent_version: "fleet-sim".into(),
        hostname: format!("sim-{agent}"),
        connectors: (0..connectors)
            .map(|c| proto::ServedConnector {
                connector_id: connector_id(agent, c),
                service_type: "sim".into(),
                configuration_schema: schema.clone(),
                ..Default::default()
            })
            .collect(),
        max_concurrent_jobs: 1,
    };
    tx.send(proto::AgentMessage { message: Some(In::Hello(hello)) }).await?;
    let mut inbound = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .context("session")?
        .into_inner();
    let hb = tx.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let m = proto::AgentMessage { message: Some(In::Heartbeat(proto::Heartbeat::default())) };
            if hb.send(m).await.is_err() {
                return;
            }
        }
    });
    while let Some(msg) = inbound.message().await? {
        match msg.message {
            Some(Out::ValidateConfiguration(v)) => {
                seen.lock()
                    .unwrap()
                    .validations
                    .entry(v.connector_id.clone())
                    .or_default()
                    .push(Instant::now());
                let r = proto::ValidationResult {
                    connector_id: v.connector_id,
                    revision: v.revision,
                    ok: true,
                    error: String::new(),
                };
                tx.send(proto::AgentMessage { message: Some(In::ValidationResult(r)) }).await?;
            }
            Some(Out::AssignJob(j)) => {
                seen.lock().unwrap().assigned.insert(j.job_id.clone(), Instant::now());
                let f = proto::JobFinished {
                    job_id: j.job_id,
                    lease_id: j.lease_id,
                    outcome: Some(proto::job_finished::Outcome::Completed(proto::JobCompleted {})),
                    ..Default::default()
                };
                tx.send(proto::AgentMessage { message: Some(In::JobFinished(f)) }).await?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// utime + stime of `pid`, in clock ticks, and VmRSS in KiB.
fn proc_stats(pid: u32) -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(") ").context("stat format")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("VmRSS")?
        .parse()?;
    Ok((ticks, rss))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn count_connected(es: &Osmem) -> anyhow::Result<u64> {
    let r = es
        .search(
            ".elastic-connectors",
            &json!({"size": 0, "track_total_hits": true,
        "query": {"term": {"status": "connected"}}}),
        )
        .await?;
    Ok(r["hits"]["total"]["value"].as_u64().unwrap_or(0))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let n = a.agents * a.connectors;
    let pki = TestPki::new()?;
    let ca = pki.write_ca()?;
    let server = pki.write_server_cert()?;
    let es = Osmem::start()?;
    let proxy = FaultProxy::start(es.url(), FaultPlan::default()).await?;
    let tls = ServerTls { cert: server.cert, key: server.key, client_ca: ca.clone() };
    let cp = ControlPlane::start(ControlPlaneConfig::new(&proxy.url(), tls)?)?;
    let pid = cp.service.pid().context("control plane pid")?;
    eprintln!("control plane pid {pid}; writing {n} connectors");

    // Connectors, written as Kibana would (not through the proxy).
    let http = reqwest::Client::new();
    let ids: Vec<String> =
        (0..a.agents).flat_map(|g| (0..a.connectors).map(move |c| connector_id(g, c))).collect();
    for chunk in ids.chunks(1000) {
        let mut body = String::new();
        for id in chunk {
            body.push_str(&json!({"index": {"_index": ".elastic-connectors", "_id": id}}).to_string());
            body.push('\n');
            body.push_str(
                &json!({"name": id, "index_name": format!("idx-{id}"), "service_type": "sim",
                "status": "created", "is_native": false, "configuration": {}, "filtering": [],
                "scheduling": {}, "deleted": false})
                .to_string(),
            );
            body.push('\n');
        }
        let r: Value = http
            .post(format!("{}/_bulk", es.url()))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await?
            .json()
            .await?;
        if r["errors"] != false {
            bail!("writing connectors failed: {r}");
        }
    }

    let ca_pem = std::fs::read(&ca)?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let t_connect = Instant::now();
    for g in 0..a.agents {
        let cert = pki.client_cert(&format!("sim-agent-{g:04}"))?;
        let ep = Endpoint::from_shared(cp.agents_url())?
            .connect_timeout(Duration::from_secs(30))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&ca_pem))
                    .identity(Identity::from_pem(cert.cert_pem, cert.key_pem)),
            )?;
        let (seen, connectors) = (seen.clone(), a.connectors);
        tokio::spawn(async move {
            if let Err(e) = run_agent(ep, g, connectors, seen).await {
                eprintln!("agent {g}: {e:#}");
            }
        });
        if g % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let c = count_connected(&es).await?;
        if c as usize >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {c} of {n} connectors connected after 30 min");
        }
        eprintln!("{c}/{n} connected after {:.0?}", t_connect.elapsed());
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let registered_in = t_connect.elapsed();
    eprintln!("all {n} connected after {registered_in:.0?}; settling 15 s, then idle {:?}", a.idle);
    tokio::time::sleep(Duration::from_secs(15)).await;

    let before = proxy.requests();
    let (ticks0, _) = proc_stats(pid)?;
    let t0 = Instant::now();
    let mut rss_max = 0;
    while t0.elapsed() < a.idle {
        tokio::time::sleep(Duration::from_secs(5)).await;
        rss_max = rss_max.max(proc_stats(pid)?.1);
    }
    let (ticks1, rss_end) = proc_stats(pid)?;
    let idle_s = t0.elapsed().as_secs_f64();
    let after = proxy.requests();
    let by_route: serde_json::Map<String, Value> = after
        .iter()
        .map(|(k, v)| (k.clone(), json!(v - before.get(k).copied().unwrap_or(0))))
        .filter(|(_, v)| v.as_u64() != Some(0))
        .collect();
    let idle_requests: u64 = by_route.values().filter_map(|v| v.as_u64()).sum();
    let clk_tck = 100.0; // Linux USER_HZ
    let cpu_pct = (ticks1 - ticks0) as f64 / clk_tck / idle_s * 100.0;

    let admin = format!("http://{}", cp.admin_addr());
    // Configuration change → the agent's ValidateConfiguration.
    let mut connectors =
        proto::connector_service_client::ConnectorServiceClient::connect(admin.clone()).await?;
    let target = connector_id(a.agents / 2, 0);
    let before_checks = seen.lock().unwrap().validations.get(&target).map(|v| v.len()).unwrap_or(0);
    let values = [(
        "note".to_owned(),
        prost_types::Value { kind: Some(prost_types::value::Kind::StringValue("changed".into())) },
    )]
    .into();
    connectors
        .update_configuration(proto::UpdateConfigurationRequest { connector_id: target.clone(), values })
        .await?;
    let t_change = Instant::now();
    let config_to_agent = loop {
        if let Some(v) = seen.lock().unwrap().validations.get(&target) {
            if v.len() > before_checks {
                break v[v.len() - 1].saturating_duration_since(t_change);
            }
        }
        if t_change.elapsed() > Duration::from_secs(60) {
            bail!("the configuration change did not reach the agent within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };

    // Jobs, all at once, one per agent (spread over the fleet).
    let mut created = Vec::new();
    let mut tasks = Vec::new();
    for j in 0..a.jobs {
        let admin = admin.clone();
        let id = connector_id((j * a.agents / a.jobs.max(1)) % a.agents, j % a.connectors);
        tasks.push(tokio::spawn(async move {
            let mut c = proto::sync_job_service_client::SyncJobServiceClient::connect(admin).await?;
            let r = c
                .create_sync_job(proto::CreateSyncJobRequest {
                    connector_id: id,
                    job_type: proto::JobType::Full as i32,
                    continuous: false,
                })
                .await?;
            let job = r.into_inner().sync_job.context("no sync_job")?;
            anyhow::Ok((job.id, Instant::now()))
        }));
    }
    for t in tasks {
        created.push(t.await??);
    }
    let mut lat = Vec::new();
    let wait = Instant::now();
    for (id, at) in &created {
        loop {
            if let Some(t) = seen.lock().unwrap().assigned.get(id) {
                lat.push(t.saturating_duration_since(*at).as_secs_f64());
                break;
            }
            if wait.elapsed() > Duration::from_secs(120) {
                bail!("job {id} not assigned within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    lat.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let uptime = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let out = json!({
        "agents": a.agents, "connectors": n, "idle_s": idle_s,
        "registration_s": registered_in.as_secs_f64(),
        "idle_requests": idle_requests,
        "idle_requests_per_s": idle_requests as f64 / idle_s,
        "idle_requests_per_s_per_connector": idle_requests as f64 / idle_s / n as f64,
        "idle_by_route": by_route,
        "control_plane_cpu_pct_idle": cpu_pct,
        "control_plane_rss_mib_idle_end": rss_end as f64 / 1024.0,
        "control_plane_rss_mib_idle_max": rss_max as f64 / 1024.0,
        "config_change_to_agent_ms": config_to_agent.as_secs_f64() * 1000.0,
        "jobs": a.jobs,
        "create_to_assign_p50_ms": percentile(&lat, 0.5) * 1000.0,
        "create_to_assign_p99_ms": percentile(&lat, 0.99) * 1000.0,
        "create_to_assign_max_ms": lat.last().copied().unwrap_or(f64::NAN) * 1000.0,
        "loadavg": uptime.trim(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    drop(cp);
    Ok(())
}
