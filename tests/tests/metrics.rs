//! Both binaries serve Prometheus metrics on `metrics.listen`, and the
//! counters move with a sync: scraped before the job (nothing indexed or
//! sent yet, one agent connected) and after it (every row sent by the agent
//! and indexed by the control plane, bulk requests timed, the job counted as
//! completed), and a refused TLS handshake counted by reason.

use anyhow::{ensure, Context};

use ferry_tests::process::{free_addr, wait_until, Agent, ControlPlane};
use ferry_tests::scenario::{Admin, World, STEP};

const ROWS: u64 = 4_000;

/// The value of the first sample named `name` (with `labels` exactly, e.g.
/// `{status="completed"}`, or "" for none); 0 when absent.
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    let prefix = format!("{name}{labels} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

async fn scrape(addr: &str) -> anyhow::Result<String> {
    let resp =
        reqwest::get(format!("http://{addr}/metrics")).await.with_context(|| format!("scrape {addr}"))?;
    ensure!(resp.status().is_success(), "scrape {addr}: {}", resp.status());
    let ctype = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    ensure!(ctype.starts_with("text/plain"), "content type {ctype:?}");
    Ok(resp.text().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_metrics_endpoints_count_a_sync() {
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    world.load_items("shop", ROWS).await.expect("load rows");
    let cp_metrics = free_addr().unwrap().to_string();
    let agent_metrics = free_addr().unwrap().to_string();
    let mut cfg = world.control_plane_config(world.es.url()).unwrap();
    cfg.env.push(("FERRY_METRICS__LISTEN".into(), cp_metrics.clone()));
    let cp = ControlPlane::start(cfg).expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());

    let result = async {
        admin.put_connector("shop", "shop").await?;
        let mut agent_cfg = world.agent_config(&cp.agents_url(), "agent-metrics", "shop")?;
        agent_cfg.env.push(("FERRY_METRICS__LISTEN".into(), agent_metrics.clone()));
        let agent = Agent::start(agent_cfg)?;
        admin.configure("shop", world.pg_values("shop")).await?;

        let before_cp = wait_until("the control plane to count the agent", STEP, || async {
            let t = scrape(&cp_metrics).await?;
            Ok((sample(&t, "ferry_agents_connected", "") == 1.0).then_some(t))
        })
        .await?;
        ensure!(sample(&before_cp, "ferry_documents_indexed_total", "") == 0.0, "{before_cp}");
        let before_agent = scrape(&agent_metrics).await?;
        ensure!(sample(&before_agent, "ferry_agent_connected", "") == 1.0, "{before_agent}");
        ensure!(sample(&before_agent, "ferry_agent_documents_sent_total", "") == 0.0, "{before_agent}");

        let job = admin.create_job("shop").await?;
        admin.wait_completed(&job, STEP).await?;

        let after_cp = scrape(&cp_metrics).await?;
        let rows = ROWS as f64;
        ensure!(sample(&after_cp, "ferry_documents_indexed_total", "") == rows, "{after_cp}");
        ensure!(sample(&after_cp, "ferry_bytes_indexed_total", "") > rows * 100.0, "{after_cp}");
        ensure!(sample(&after_cp, "ferry_documents_rejected_total", "") == 0.0, "{after_cp}");
        ensure!(sample(&after_cp, "ferry_bulk_request_duration_seconds_count", "") >= 1.0, "{after_cp}");
        ensure!(sample(&after_cp, "ferry_jobs_assigned_total", "") == 1.0, "{after_cp}");
        ensure!(
            sample(&after_cp, "ferry_jobs_finished_total", "{status=\"completed\"}") == 1.0,
            "{after_cp}"
        );
        ensure!(sample(&after_cp, "ferry_inflight_batches", "") == 0.0, "{after_cp}");

        // A client that speaks no TLS to the agents port is refused and counted.
        let agents_addr = cp.agents_url().trim_start_matches("https://").to_owned();
        let mut probe = tokio::net::TcpStream::connect(&agents_addr).await?;
        tokio::io::AsyncWriteExt::write_all(&mut probe, b"GET / HTTP/1.1\r\n\r\n").await?;
        drop(probe);
        wait_until("the refused handshake to be counted", STEP, || async {
            let t = scrape(&cp_metrics).await?;
            Ok((sample(&t, "ferry_tls_refusals_total", "{reason=\"handshake_failed\"}") == 1.0).then_some(()))
        })
        .await?;

        let after_agent = scrape(&agent_metrics).await?;
        ensure!(sample(&after_agent, "ferry_agent_documents_sent_total", "") == rows, "{after_agent}");
        let batches = sample(&after_agent, "ferry_agent_batches_sent_total", "");
        ensure!(batches >= 2.0, "{after_agent}");
        ensure!(
            sample(&after_agent, "ferry_agent_batches_acknowledged_total", "") == batches,
            "{after_agent}"
        );
        ensure!(
            sample(&after_agent, "ferry_agent_jobs_finished_total", "{outcome=\"completed\"}") == 1.0,
            "{after_agent}"
        );
        drop(agent);
        Ok(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e:?}");
    }
}
