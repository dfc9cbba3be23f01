//! Two control planes against one Elasticsearch, two agents serving the same
//! connector (agent-a → control plane 1, agent-b → control plane 2), ten
//! on-demand jobs created through both admin APIs at once: every job runs
//! exactly once.
//!
//! Proof, per job: the job document says completed, one attempt, one worker
//! (`worker_hostname` = `ferry.agent_id`), the documents of exactly one
//! attempt; across both agents' logs the job was started exactly once; jobs
//! of the connector never overlapped in time (one running job per
//! connector, even with two dispatchers); `_count` is exact.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use serde_json::Value;

use ferry_tests::process::{json_i64, Agent};
use ferry_tests::scenario::{Admin, World};

const ROWS: u64 = 300;
const JOBS: usize = 10;
const CONNECTOR: &str = "shop";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_control_planes_two_agents_ten_jobs_each_runs_once() {
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    world.load_items(CONNECTOR, ROWS).await.expect("load rows");
    let cp1 = world.start_control_plane().expect("control plane 1");
    let cp2 = world.start_control_plane().expect("control plane 2");
    let admins = [Admin::new(&world.grpc, cp1.admin_addr()), Admin::new(&world.grpc, cp2.admin_addr())];
    admins[0].put_connector(CONNECTOR, CONNECTOR).await.expect("PutConnector");
    let agent_a = Agent::start(world.agent_config(&cp1.agents_url(), "agent-a", CONNECTOR).unwrap()).unwrap();
    let agent_b = Agent::start(world.agent_config(&cp2.agents_url(), "agent-b", CONNECTOR).unwrap()).unwrap();
    let t0 = Instant::now();
    let result = async {
        admins[0].configure(CONNECTOR, world.pg_values(CONNECTOR)).await?;
        // Both agents checked the configuration before jobs pour in.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let creates = (0..JOBS).map(|i| {
            let admin = admins[i % 2].clone();
            async move { admin.create_job(CONNECTOR).await }
        });
        let ids: Vec<String> = futures_join_all(creates).await?;
        let mut jobs = Vec::new();
        for id in &ids {
            jobs.push(admins[0].wait_completed(id, Duration::from_secs(240)).await?);
        }
        let logs = format!("{}\n{}", agent_a.logs(), agent_b.logs());
        let mut by_worker: BTreeMap<String, usize> = BTreeMap::new();
        let mut by_cp: BTreeMap<String, usize> = BTreeMap::new();
        for (id, job) in ids.iter().zip(&jobs) {
            ensure!(json_i64(&job["indexedDocumentCount"]) == ROWS as i64, "{job}");
            let raw = world
                .es
                .get_doc(".elastic-connectors-sync-jobs", id)
                .await?
                .with_context(|| format!("job document {id}"))?;
            ensure!(raw["status"] == "completed", "{raw}");
            ensure!(raw["ferry"]["attempts"] == 1, "job {id} was claimed more than once: {raw}");
            ensure!(
                raw["ferry"]["documents_per_attempt"] == serde_json::json!([ROWS]),
                "job {id}: documents per attempt {}",
                raw["ferry"]["documents_per_attempt"]
            );
            let worker = raw["worker_hostname"].as_str().unwrap_or_default().to_owned();
            ensure!(worker == "agent-a" || worker == "agent-b", "job {id} worker {worker:?}");
            ensure!(raw["ferry"]["agent_id"] == worker.as_str(), "job {id}: {raw}");
            let starts =
                logs.lines().filter(|l| l.contains("job started") && l.contains(id.as_str())).count();
            ensure!(starts == 1, "job {id} started {starts} times in the agents' logs");
            *by_worker.entry(worker).or_default() += 1;
            *by_cp
                .entry(raw["ferry"]["control_plane"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        // One running job per connector: no two jobs overlap.
        let mut spans: Vec<(f64, f64, &str)> = ids
            .iter()
            .zip(&jobs)
            .map(|(id, j)| (seconds(&j["startedAt"]), seconds(&j["completedAt"]), id.as_str()))
            .collect();
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in spans.windows(2) {
            ensure!(
                w[1].0 >= w[0].1,
                "jobs {} and {} of one connector ran at the same time: {spans:?}",
                w[0].2,
                w[1].2
            );
        }
        ensure!(world.es.count(CONNECTOR).await? == ROWS, "_count");
        eprintln!("replicas: {:?}; jobs per agent {by_worker:?}; per control plane {by_cp:?}", t0.elapsed());
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e:?}");
    }
}

/// Runs the futures concurrently and collects their results in order.
async fn futures_join_all<T, F>(futures: impl IntoIterator<Item = F>) -> anyhow::Result<Vec<T>>
where
    F: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await??);
    }
    Ok(out)
}

/// Seconds since the epoch-ish of an RFC 3339 UTC timestamp (protobuf JSON),
/// good enough to order timestamps of one test run.
fn seconds(v: &Value) -> f64 {
    let s = v.as_str().unwrap_or_default().trim_end_matches('Z');
    let (date_time, frac) = s.split_once('.').unwrap_or((s, "0"));
    let num = |r: std::ops::Range<usize>| date_time.get(r).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    let (day, h, m, sec) = (num(8..10), num(11..13), num(14..16), num(17..19));
    day * 86_400.0 + h * 3_600.0 + m * 60.0 + sec + format!("0.{frac}").parse::<f64>().unwrap_or(0.0)
}
