//! The change-stream lag shows up where an operator looks for it, and
//! moves: through the real agent, control plane, osmem and a PostgreSQL
//! with `wal_level = logical`, a continuous incremental job
//! - exposes `ferry_agent_replication_lag_bytes`, `_lag_seconds` and
//!   `_last_commit_timestamp_seconds` (label `connector`) on the agent's
//!   `/metrics` while it streams;
//! - moves the last applied commit time forward past a commit made after
//!   the snapshot (to within seconds of that commit), in the metric and in
//!   the job's metadata (`last_commit_time`, `lag_seconds`, `lag_bytes`);
//! - removes the series once the job is canceled (a stale lag would
//!   mislead).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context};
use serde_json::json;

use ferry_tests::process::{free_addr, wait_until, Agent};
use ferry_tests::scenario::{Admin, World, STEP, SYNC_JOBS};

const CONNECTOR: &str = "shop";

/// The value of the sample `name{labels}`, if present.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{labels} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

async fn scrape(addr: &str) -> anyhow::Result<String> {
    let resp =
        reqwest::get(format!("http://{addr}/metrics")).await.with_context(|| format!("scrape {addr}"))?;
    ensure!(resp.status().is_success(), "scrape {addr}: {}", resp.status());
    Ok(resp.text().await?)
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_lag_metrics_appear_move_and_go() {
    let world = World::start_logical().expect("PostgreSQL (wal_level=logical), osmem, PKI");
    world.load_items(CONNECTOR, 20).await.expect("load rows");
    let cp = world.start_control_plane().expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    let metrics = free_addr().unwrap().to_string();
    let labels = format!("{{connector=\"{CONNECTOR}\"}}");

    let result = async {
        admin.put_connector(CONNECTOR, CONNECTOR).await?;
        let mut agent_cfg = world.agent_config(&cp.agents_url(), "agent-replication", CONNECTOR)?;
        agent_cfg.env.push(("FERRY_METRICS__LISTEN".into(), metrics.clone()));
        let _agent = Agent::start(agent_cfg)?;
        admin.configure(CONNECTOR, world.pg_values(CONNECTOR)).await?;
        let before = scrape(&metrics).await?;
        ensure!(
            sample(&before, "ferry_agent_replication_lag_seconds", &labels).is_none(),
            "no stream yet, no series: {before}"
        );

        let r = admin
            .call(
                &format!("{SYNC_JOBS}/CreateSyncJob"),
                json!({"connector_id": CONNECTOR, "job_type": "JOB_TYPE_INCREMENTAL", "continuous": true}),
            )
            .await?;
        let job = r["syncJob"]["id"].as_str().context("no job id")?.to_owned();
        admin.wait_indexed(&job, 20).await?;
        // All three series while the stream runs (lag_bytes is queried
        // from pg_replication_slots every few seconds).
        let streaming = wait_until("the replication series", STEP, || async {
            let t = scrape(&metrics).await?;
            Ok((sample(&t, "ferry_agent_replication_lag_bytes", &labels).is_some()
                && sample(&t, "ferry_agent_replication_lag_seconds", &labels).is_some())
            .then_some(t))
        })
        .await?;
        let lag_bytes = sample(&streaming, "ferry_agent_replication_lag_bytes", &labels).unwrap_or(-1.0);
        ensure!(lag_bytes >= 0.0, "{streaming}");
        let first_commit =
            sample(&streaming, "ferry_agent_replication_last_commit_timestamp_seconds", &labels);

        // A commit after the snapshot moves the last applied commit time to it.
        let t_commit = unix_now();
        world.pg.execute(CONNECTOR, "INSERT INTO item VALUES (1001, 'new', 1.00, 'x')").await?;
        let moved = wait_until("the last applied commit time to move", STEP, || async {
            let t = scrape(&metrics).await?;
            let c = sample(&t, "ferry_agent_replication_last_commit_timestamp_seconds", &labels);
            Ok(c.filter(|c| *c >= t_commit - 1.0 && first_commit.is_none_or(|f| *c > f)).map(|c| (c, t)))
        })
        .await?;
        ensure!(moved.0 <= unix_now() + 1.0, "a commit time in the future: {}", moved.1);
        ensure!(
            sample(&moved.1, "ferry_agent_replication_lag_seconds", &labels)
                .is_some_and(|l| (0.0..60.0).contains(&l)),
            "{}",
            moved.1
        );

        // The job's metadata says the same.
        let j = wait_until("the job's metadata to carry the commit", STEP, || async {
            let j = admin.job(&job).await?;
            let m = &j["metadata"];
            let t = m["last_commit_time"].as_str().unwrap_or("");
            let ok = !t.is_empty() && m["lag_seconds"].is_number() && m["lag_bytes"].is_number();
            Ok((ok && json_unix(t).is_some_and(|c| c >= t_commit - 1.0)).then_some(j))
        })
        .await?;
        ensure!(j["status"] == "SYNC_STATUS_IN_PROGRESS", "{j}");

        // Canceled: the series go.
        admin.call(&format!("{SYNC_JOBS}/CancelSyncJob"), json!({"sync_job_id": job})).await?;
        wait_until("the replication series to go", STEP, || async {
            let t = scrape(&metrics).await?;
            Ok(sample(&t, "ferry_agent_replication_lag_seconds", &labels).is_none().then_some(()))
        })
        .await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    drop(cp);
    if let Err(e) = result {
        panic!("{e:?}");
    }
}

/// Unix seconds of an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SS[.f]Z`.
fn json_unix(t: &str) -> Option<f64> {
    let d = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()?;
    Some(d.unix_timestamp_nanos() as f64 / 1e9)
}
