//! Cancel reaches PostgreSQL: the real binaries, real PostgreSQL.
//!
//! A job blocked inside PostgreSQL — an advanced sync rule running
//! `pg_sleep(600)`, or a full sync waiting for a table another session holds
//! `ACCESS EXCLUSIVE` — reaches `canceled` within 10 s of `CancelSyncJob`, and
//! its backend is gone from `pg_stat_activity` (the agent sent PostgreSQL's
//! cancel request and closed the session). The agent's
//! `postgresql.lock_timeout` then ends a job that waits for the lock longer
//! than configured, with an error that names the setting.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use ferry_tests::process::{wait_until, Agent, ControlPlane};
use ferry_tests::scenario::{Admin, World, CONNECTORS, STEP, SYNC_JOBS};

/// The agent's `postgresql.lock_timeout` in this test.
const LOCK_TIMEOUT_S: u64 = 15;

struct Setup {
    w: World,
    cp: ControlPlane,
    agent: Agent,
    admin: Admin,
}

impl Setup {
    fn logs(&self) -> String {
        format!("{}\n{}", self.cp.logs(), self.agent.logs())
    }

    /// The pid of the agent's backend running a statement that contains
    /// `needle`, once it is waiting (`wait_event_type`, e.g. `Lock` or
    /// `Timeout`).
    async fn agent_backend(&self, needle: &str, wait_event_type: &str) -> anyhow::Result<i32> {
        let c = self.w.pg.client("postgres").await?;
        wait_until(
            &format!("an agent backend running {needle:?} to wait ({wait_event_type})"),
            STEP,
            || async {
                let rows = c
                    .query(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = 'ferry-agent' \
                     AND state = 'active' AND wait_event_type = $1 AND strpos(query, $2) > 0",
                        &[&wait_event_type, &needle],
                    )
                    .await?;
                Ok(rows.first().map(|r| r.get::<_, i32>(0)))
            },
        )
        .await
    }

    /// Cancels `job` and returns how long until it was `canceled`.
    async fn cancel(&self, job: &str) -> anyhow::Result<Duration> {
        let asked = Instant::now();
        self.admin.call(&format!("{SYNC_JOBS}/CancelSyncJob"), json!({"sync_job_id": job})).await?;
        wait_until(&format!("job {job} to be canceled"), Duration::from_secs(30), || async {
            let j = self.admin.job(job).await?;
            match j["status"].as_str() {
                Some("SYNC_STATUS_CANCELED") => Ok(Some(())),
                Some("SYNC_STATUS_CANCELING" | "SYNC_STATUS_IN_PROGRESS" | "SYNC_STATUS_PENDING") => Ok(None),
                _ => bail!("job {job} ended otherwise: {j}"),
            }
        })
        .await?;
        Ok(asked.elapsed())
    }

    /// Waits until backend `pid` is gone; returns how long that took.
    async fn backend_gone(&self, pid: i32) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let c = self.w.pg.client("postgres").await?;
        wait_until(&format!("backend {pid} to end"), Duration::from_secs(30), || async {
            let n: i64 =
                c.query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", &[&pid]).await?.get(0);
            Ok((n == 0).then_some(()))
        })
        .await?;
        Ok(start.elapsed())
    }

    async fn start_job_in_progress(&self, connector: &str) -> anyhow::Result<String> {
        let id = self.admin.create_job(connector).await?;
        wait_until(&format!("job {id} to start"), STEP, || async {
            let j = self.admin.job(&id).await?;
            match j["status"].as_str() {
                Some("SYNC_STATUS_IN_PROGRESS") => Ok(Some(())),
                Some("SYNC_STATUS_PENDING") => Ok(None),
                _ => bail!("job {id} did not start: {j}"),
            }
        })
        .await?;
        Ok(id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_interrupts_a_sleeping_query_and_a_lock_wait() {
    let w = World::start().expect("world");
    w.load_items("shop", 20).await.unwrap();
    let cp = w.start_control_plane().expect("control plane");
    let mut config =
        w.agent_config(&cp.agents_url(), "agent-pg", "sleepy").unwrap().connector("locked", "postgresql");
    config.env.push(("FERRY_POSTGRESQL__LOCK_TIMEOUT".into(), format!("{LOCK_TIMEOUT_S}s")));
    let agent = Agent::start(config).expect("agent");
    let admin = Admin::new(&w.grpc, cp.admin_addr());
    let s = Setup { w, cp, agent, admin };
    let result = run(&s).await;
    if let Err(e) = result {
        panic!("{e:#}\n{}", s.logs());
    }
}

async fn run(s: &Setup) -> anyhow::Result<()> {
    let admin = &s.admin;
    for id in ["sleepy", "locked"] {
        admin.put_connector(id, id).await?;
        admin.configure(id, s.w.pg_values("shop")).await?;
    }

    // 1. An advanced rule whose query sleeps 600 s on its first row.
    let query = "SELECT id, name FROM item WHERE pg_sleep(600)::text = ''";
    admin
        .call(
            &format!("{CONNECTORS}/UpdateFiltering"),
            json!({"connector_id": "sleepy", "advanced_snippet": [{"tables": ["item"], "query": query, "id_columns": ["id"]}]}),
        )
        .await?;
    wait_until("the sleeping rule to be validated", STEP, || async {
        let c = admin.connector("sleepy").await?;
        let f: &Value = &c["filtering"][0];
        match f["draft"]["validation"]["state"].as_str() {
            Some("valid") => Ok(Some(())),
            Some("invalid") => bail!("rule refused: {f}"),
            _ => Ok(None),
        }
    })
    .await?;
    let job = s.start_job_in_progress("sleepy").await?;
    let pid = s.agent_backend("pg_sleep(600)", "Timeout").await?;
    let took = s.cancel(&job).await?;
    let gone = s.backend_gone(pid).await?;
    println!("pg_sleep(600): canceled {took:?} after CancelSyncJob; backend {pid} gone {gone:?} later");
    anyhow::ensure!(took <= Duration::from_secs(10), "pg_sleep job took {took:?} to cancel");
    anyhow::ensure!(gone <= Duration::from_secs(5), "pg_sleep backend outlived the job by {gone:?}");

    // 2. A full sync waiting for a table another session holds ACCESS EXCLUSIVE.
    let lock = s.w.pg.client("shop").await?;
    lock.batch_execute("BEGIN; LOCK TABLE item IN ACCESS EXCLUSIVE MODE").await.context("lock item")?;
    let job = s.start_job_in_progress("locked").await?;
    let pid = s.agent_backend("item", "Lock").await?;
    let took = s.cancel(&job).await?;
    let gone = s.backend_gone(pid).await?;
    println!("lock wait: canceled {took:?} after CancelSyncJob; backend {pid} gone {gone:?} later");
    anyhow::ensure!(took <= Duration::from_secs(10), "lock-waiting job took {took:?} to cancel");
    anyhow::ensure!(gone <= Duration::from_secs(5), "lock-waiting backend outlived the job by {gone:?}");

    // 3. The next job, lock still held: ended by the agent's lock_timeout.
    let started = Instant::now();
    let job = admin.create_job("locked").await?;
    let failed = wait_until("the job to fail on lock_timeout", STEP, || async {
        let j = admin.job(&job).await?;
        match j["status"].as_str() {
            Some("SYNC_STATUS_ERROR") => Ok(Some(j)),
            Some("SYNC_STATUS_PENDING" | "SYNC_STATUS_IN_PROGRESS") => Ok(None),
            _ => bail!("job ended otherwise: {j}"),
        }
    })
    .await?;
    let took = started.elapsed();
    println!("lock_timeout {LOCK_TIMEOUT_S}s: job failed after {took:?}: {}", failed["error"]);
    anyhow::ensure!(failed["error"].as_str().is_some_and(|e| e.contains("lock_timeout")), "{failed}");
    anyhow::ensure!(took >= Duration::from_secs(LOCK_TIMEOUT_S - 1), "failed before lock_timeout: {took:?}");
    lock.batch_execute("ROLLBACK").await?;

    // 4. Lock released: the connector syncs.
    let job = admin.create_job("locked").await?;
    let done = admin.wait_completed(&job, STEP).await?;
    anyhow::ensure!(done["indexedDocumentCount"].to_string().contains("20"), "{done}");
    Ok(())
}
