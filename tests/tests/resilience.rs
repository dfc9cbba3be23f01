//! Nothing lost, nothing doubled: full syncs survive a killed agent, a killed
//! control plane, a cut network link and an overloaded Elasticsearch.
//!
//! Real binaries, real PostgreSQL, osmem-server, SIGKILL, loopback. Each
//! test syncs a table, injects the fault in the middle of the sync and
//! asserts that the job completes, `_count` is exact and — for the
//! interruptions — that the resumed attempt read fewer rows than the table
//! holds (`metadata.documents_per_attempt` kept by the control plane, and
//! the agent's own `metadata.rows_read` of the last attempt): it resumed from
//! the checkpoint instead of starting over.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use serde_json::Value;

use ferry_tests::faults::{FaultPlan, FaultProxy};
use ferry_tests::netcut::NetCut;
use ferry_tests::process::{json_i64, wait_until, Agent, ControlPlane};
use ferry_tests::scenario::{documents_per_attempt, metadata_u64, Admin, World, STEP};

const ROWS: u64 = 20_000;
const CONNECTOR: &str = "shop";
const INDEX: &str = "shop";
/// Interrupt once this many documents are indexed (a quarter of the table).
const INTERRUPT_AT: i64 = 4_000;

/// The job completed, `_count` is exact, two attempts, and the second one
/// read fewer rows than the table holds.
async fn assert_resumed(world: &World, job: &Value) -> anyhow::Result<()> {
    ensure!(job["status"] == "SYNC_STATUS_COMPLETED", "{job}");
    let count = world.es.count(INDEX).await?;
    ensure!(count == ROWS, "{INDEX}/_count is {count}, expected {ROWS}");
    ensure!(json_i64(&job["totalDocumentCount"]) == ROWS as i64, "totalDocumentCount: {job}");
    ensure!(json_i64(&job["indexedDocumentCount"]) >= ROWS as i64, "indexedDocumentCount: {job}");
    let attempts = metadata_u64(job, "attempts").context("metadata.attempts")?;
    ensure!(attempts == 2, "expected 2 attempts (one interruption): {job}");
    let per_attempt = documents_per_attempt(job);
    ensure!(per_attempt.len() == 2, "documents_per_attempt: {per_attempt:?}");
    ensure!(per_attempt[0] > 0, "the first attempt indexed nothing before the fault: {per_attempt:?}");
    ensure!(
        per_attempt[1] < ROWS,
        "the resumed attempt re-read the whole table ({per_attempt:?}): it did not resume from the checkpoint"
    );
    ensure!(per_attempt[0] + per_attempt[1] >= ROWS, "rows missing: {per_attempt:?}");
    let rows_read = metadata_u64(job, "rows_read").context("metadata.rows_read from the agent")?;
    ensure!(
        rows_read == per_attempt[1],
        "agent's rows_read {rows_read} vs documents received {per_attempt:?}"
    );
    ensure!(job["error"].as_str().unwrap_or_default().is_empty(), "{job}");
    ensure!(metadata_u64(job, "rejected_document_count") == Some(0), "{job}");
    Ok(())
}

/// Starts the world with a 20,000-row table and the control plane.
async fn setup() -> (World, ControlPlane, Admin) {
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    world.load_items(CONNECTOR, ROWS).await.expect("load rows");
    let cp = world.start_control_plane().expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    admin.put_connector(CONNECTOR, INDEX).await.expect("PutConnector");
    (world, cp, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_sync_resumes_from_checkpoint() {
    let (world, cp, admin) = setup().await;
    let agent_cfg = world.agent_config(&cp.agents_url(), "agent-1", CONNECTOR).unwrap();
    let mut first = Agent::start(agent_cfg.clone()).expect("agent");
    let mut second: Option<Agent> = None;
    let t0 = Instant::now();
    let result = async {
        admin.configure(CONNECTOR, world.pg_values(CONNECTOR)).await?;
        let job_id = admin.create_job(CONNECTOR).await?;
        admin.wait_indexed(&job_id, INTERRUPT_AT).await?;
        first.service.kill9();
        // The control plane sees the stream break and hands the job back.
        let pending = wait_until("the job to be handed back (pending)", STEP, || async {
            let j = admin.job(&job_id).await?;
            Ok((j["status"] == "SYNC_STATUS_PENDING").then_some(j))
        })
        .await?;
        ensure!(
            pending["metadata"]["ferry_last_interruption"]["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("agent-1"),
            "the interruption is not recorded on the job: {pending}"
        );
        second = Some(Agent::start(agent_cfg.clone())?);
        let job = admin.wait_completed(&job_id, STEP).await?;
        assert_resumed(&world, &job).await?;
        ensure!(job["workerHostname"] == "agent-1", "{job}");
        eprintln!("agent kill: {:?}, per attempt {:?}", t0.elapsed(), documents_per_attempt(&job));
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e:?}");
    }
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_killed_mid_sync_resumes_after_restart() {
    let (world, cp, admin) = setup().await;
    let mut cp = cp;
    let agent =
        Agent::start(world.agent_config(&cp.agents_url(), "agent-1", CONNECTOR).unwrap()).expect("agent");
    let mut restarted: Option<ControlPlane> = None;
    let t0 = Instant::now();
    let result = async {
        admin.configure(CONNECTOR, world.pg_values(CONNECTOR)).await?;
        let job_id = admin.create_job(CONNECTOR).await?;
        admin.wait_indexed(&job_id, INTERRUPT_AT).await?;
        cp.service.kill9();
        // Nobody is left to release the job: it stays in_progress in
        // Elasticsearch until its lease expires.
        let raw = world.es.get_doc(".elastic-connectors-sync-jobs", &job_id).await?.context("job doc")?;
        ensure!(raw["status"] == "in_progress", "{raw}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Same ports, same Elasticsearch; the agent reconnects by itself.
        restarted = Some(ControlPlane::start(cp.config.clone())?);
        let job = admin.wait_completed(&job_id, STEP).await?;
        assert_resumed(&world, &job).await?;
        let interruption = job["metadata"]["ferry_last_interruption"]["reason"].as_str().unwrap_or_default();
        ensure!(interruption.contains("lease"), "expected a lease expiry, got: {job}");
        eprintln!("control plane kill: {:?}, per attempt {:?}", t0.elapsed(), documents_per_attempt(&job));
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e:?}");
    }
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_link_for_ten_seconds_resumes_after_reconnect() {
    let (world, cp, admin) = setup().await;
    let link = NetCut::start(cp.config.agents_listen).await.expect("netcut proxy");
    let url = format!("https://{}", link.addr());
    let agent = Agent::start(world.agent_config(&url, "agent-1", CONNECTOR).unwrap()).expect("agent");
    let t0 = Instant::now();
    let result = async {
        admin.configure(CONNECTOR, world.pg_values(CONNECTOR)).await?;
        let job_id = admin.create_job(CONNECTOR).await?;
        admin.wait_indexed(&job_id, INTERRUPT_AT).await?;
        link.cut();
        let cut_at = Instant::now();
        // While the link is down the control plane has handed the job back.
        wait_until("the job to be handed back during the cut", Duration::from_secs(8), || async {
            let j = admin.job(&job_id).await?;
            Ok((j["status"] == "SYNC_STATUS_PENDING").then_some(()))
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(10).saturating_sub(cut_at.elapsed())).await;
        link.heal();
        let job = admin.wait_completed(&job_id, STEP).await?;
        assert_resumed(&world, &job).await?;
        let c = link.counters();
        let (reset, refused) = (
            c.reset.load(std::sync::atomic::Ordering::Relaxed),
            c.refused.load(std::sync::atomic::Ordering::Relaxed),
        );
        ensure!(reset >= 1, "the cut reset no connection");
        ensure!(refused >= 1, "the agent did not try to reconnect during the cut");
        eprintln!(
            "link cut: {:?}, per attempt {:?}, reset {reset}, refused {refused}",
            t0.elapsed(),
            documents_per_attempt(&job)
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e:?}");
    }
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overloaded_elasticsearch_loses_nothing() {
    const ROWS: u64 = 6_000;
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    world.load_items(CONNECTOR, ROWS).await.expect("load rows");
    // Every 3rd bulk request is answered 429 whole; in the others every
    // 7th item is rejected with 429.
    let proxy =
        FaultProxy::start(world.es.url(), FaultPlan { reject_every_nth_bulk: 3, item_429_every_nth: 7 })
            .await
            .expect("fault proxy");
    let cp = ControlPlane::start(world.control_plane_config(&proxy.url()).unwrap()).expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    let agent =
        Agent::start(world.agent_config(&cp.agents_url(), "agent-1", CONNECTOR).unwrap()).expect("agent");
    let t0 = Instant::now();
    let result = async {
        admin.put_connector(CONNECTOR, INDEX).await?;
        admin.configure(CONNECTOR, world.pg_values(CONNECTOR)).await?;
        let job_id = admin.create_job(CONNECTOR).await?;
        let job = admin.wait_completed(&job_id, STEP).await?;
        let count = world.es.count(INDEX).await?;
        ensure!(count == ROWS, "{INDEX}/_count is {count}, expected {ROWS}");
        // Retried documents are counted once.
        ensure!(json_i64(&job["indexedDocumentCount"]) == ROWS as i64, "{job}");
        ensure!(metadata_u64(&job, "rejected_document_count") == Some(0), "{job}");
        ensure!(metadata_u64(&job, "attempts") == Some(1), "{job}");
        let (requests, items) = (proxy.rejected_requests(), proxy.rejected_items());
        ensure!(requests > 0 && items > 0, "no fault injected: {requests} requests, {items} items");
        eprintln!("overload: {:?}, {requests} requests and {items} items rejected with 429", t0.elapsed());
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e:?}");
    }
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_jobs_back_for_resume() {
    let (world, cp, admin) = setup().await;
    let mut cp = cp;
    let agent_cfg = world.agent_config(&cp.agents_url(), "agent-1", CONNECTOR).unwrap();
    let mut first = Agent::start(agent_cfg.clone()).expect("agent");
    let mut second: Option<Agent> = None;
    let mut restarted: Option<ControlPlane> = None;
    let t0 = Instant::now();
    let result = async {
        admin.configure(CONNECTOR, world.pg_values(CONNECTOR)).await?;
        let job_id = admin.create_job(CONNECTOR).await?;

        // SIGTERM the agent mid-sync: it stops its job and exits promptly;
        // the control plane hands the job back.
        admin.wait_indexed(&job_id, 3_000).await?;
        let stopping = Instant::now();
        ensure!(first.service.terminate_within(Duration::from_secs(15)).is_some(), "agent ignored SIGTERM");
        let agent_exit = stopping.elapsed();
        wait_until("the job to be handed back after the agent's SIGTERM", STEP, || async {
            let j = admin.job(&job_id).await?;
            Ok((j["status"] == "SYNC_STATUS_PENDING").then_some(()))
        })
        .await?;
        second = Some(Agent::start(agent_cfg.clone())?);

        // SIGTERM the control plane mid-sync: it hands the job back itself
        // before exiting (no lease expiry needed).
        let j = admin.wait_indexed(&job_id, 10_000).await?;
        ensure!(metadata_u64(&j, "attempts") == Some(2), "{j}");
        let stopping = Instant::now();
        let status = cp.service.terminate_within(Duration::from_secs(30));
        ensure!(status.is_some(), "the control plane did not exit within 30 s of SIGTERM");
        let cp_exit = stopping.elapsed();
        let raw = world.es.get_doc(".elastic-connectors-sync-jobs", &job_id).await?.context("job doc")?;
        ensure!(raw["status"] == "pending", "the control plane exited without handing the job back: {raw}");
        restarted = Some(ControlPlane::start(cp.config.clone())?);
        let job = admin.wait_completed(&job_id, STEP).await?;
        ensure!(world.es.count(INDEX).await? == ROWS, "_count");
        let per_attempt = documents_per_attempt(&job);
        ensure!(per_attempt.len() == 3 && per_attempt.iter().all(|&n| n < ROWS), "{per_attempt:?}");
        ensure!(per_attempt.iter().sum::<u64>() >= ROWS, "{per_attempt:?}");
        eprintln!(
            "sigterm: {:?}; agent exited in {agent_exit:?}, control plane in {cp_exit:?}; per attempt {per_attempt:?}",
            t0.elapsed()
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e:?}");
    }
    drop((second, restarted));
}
