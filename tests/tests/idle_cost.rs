//! The idle cost of the control plane does not grow with the number of
//! connectors.
//!
//! Two fleets, each with its own osmem behind a counting proxy
//! (`faults.rs`, nothing injected) and its own control plane with the
//! production defaults: 3 agents x 2 connectors and 3 agents x 10
//! connectors, every connector configured and `connected`. After a settling
//! pause, each fleet sits idle for [`WINDOW`] while the proxy counts every
//! Elasticsearch request by method and path.
//!
//! Proof of the batched shape:
//! - no request reads one connector (`GET /.elastic-connectors/_doc/{id}`)
//!   and none writes one (`PUT .../_doc/{id}`) while idle: sessions read the
//!   in-memory cache, `last_seen` goes out in `_bulk`;
//! - the 30-connector fleet costs at most a constant more than the
//!   6-connector one (before this change: 19 requests/s against ~4);
//! - the rate is a small constant (a few requests per second, whatever N);
//! - `last_seen` is still written: fresh on every connector at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context};

use ferry_tests::faults::{FaultPlan, FaultProxy};
use ferry_tests::osmem::Osmem;
use ferry_tests::process::{Agent, ControlPlane, ControlPlaneConfig};
use ferry_tests::scenario::{Admin, World};

/// How long each fleet is measured idle.
const WINDOW: Duration = Duration::from_secs(60);
const AGENTS: usize = 3;
const DB: &str = "idle";

struct Measured {
    connectors: usize,
    requests: BTreeMap<String, u64>,
}

impl Measured {
    fn total(&self) -> u64 {
        self.requests.values().sum()
    }

    fn per_connector_doc(&self) -> u64 {
        self.requests
            .iter()
            .filter(|(route, _)| route.contains("/.elastic-connectors/_doc/"))
            .map(|(_, n)| n)
            .sum()
    }
}

fn diff(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// One fleet of `AGENTS` agents x `per_agent` connectors, idle for WINDOW.
async fn measure(world: &World, per_agent: usize) -> anyhow::Result<Measured> {
    let es = Osmem::start()?;
    let proxy = FaultProxy::start(es.url(), FaultPlan::default()).await?;
    let cp = ControlPlane::start(ControlPlaneConfig::new(&proxy.url(), world.server_tls.clone())?)?;
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    let mut ids = Vec::new();
    let mut agents = Vec::new();
    for a in 0..AGENTS {
        let url = cp.agents_url();
        let mut config = ferry_tests::process::AgentConfig::new(&url, world.agent_tls(&format!("idle-{a}"))?);
        for i in 0..per_agent {
            let id = format!("n{per_agent}-a{a}-c{i}");
            admin.put_connector(&id, &id).await?;
            config = config.connector(&id, "postgresql");
            ids.push(id);
        }
        agents.push(Agent::start(config)?);
    }
    let configures: Vec<_> = ids
        .iter()
        .map(|id| {
            let admin = admin.clone();
            let id = id.clone();
            let values = world.pg_values(DB);
            tokio::spawn(async move { admin.configure(&id, values).await })
        })
        .collect();
    for c in configures {
        c.await??;
    }
    // Let registration writes and the first checks settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = proxy.requests();
    tokio::time::sleep(WINDOW).await;
    let requests = diff(&proxy.requests(), &before);
    // Still connected, and `last_seen` kept fresh by the batched writer
    // (every 30 s). Read from osmem directly: not counted.
    let now = time::OffsetDateTime::now_utc();
    for id in &ids {
        let doc = es.get_doc(".elastic-connectors", id).await?.with_context(|| format!("connector {id}"))?;
        ensure!(doc["status"] == "connected", "connector {id} is not connected after the idle window: {doc}");
        let seen = doc["last_seen"].as_str().with_context(|| format!("connector {id} has no last_seen"))?;
        let seen = time::OffsetDateTime::parse(seen, &time::format_description::well_known::Rfc3339)?;
        ensure!(
            now - seen < time::Duration::seconds(45),
            "connector {id}: last_seen {seen} is stale at {now}"
        );
    }
    for a in &mut agents {
        a.service.stop(Duration::from_secs(5));
    }
    drop(cp);
    Ok(Measured { connectors: ids.len(), requests })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_requests_do_not_grow_with_connectors() {
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    world.load_items(DB, 3).await.expect("load rows");
    // Both fleets at once: half the wall time, and the same machine load.
    let (small, large) = tokio::join!(measure(&world, 2), measure(&world, 10));
    let (small, large) = (small.expect("small fleet"), large.expect("large fleet"));
    let secs = WINDOW.as_secs_f64();
    for m in [&small, &large] {
        eprintln!(
            "{} connectors idle {:.0} s: {} requests ({:.2}/s, {:.4}/s per connector): {:?}",
            m.connectors,
            secs,
            m.total(),
            m.total() as f64 / secs,
            m.total() as f64 / secs / m.connectors as f64,
            m.requests
        );
    }
    for m in [&small, &large] {
        assert_eq!(
            m.per_connector_doc(),
            0,
            "{} connectors: idle requests on single connector documents: {:?}",
            m.connectors,
            m.requests
        );
        assert!(
            (m.total() as f64 / secs) <= 5.0,
            "{} connectors: more than 5 requests/s idle: {:?}",
            m.connectors,
            m.requests
        );
    }
    // Constant in N: five times the connectors, (almost) the same requests.
    // The slack covers loops whose cycles drift across the window's edges.
    assert!(
        large.total() <= small.total() + small.total() / 5 + 10,
        "30 connectors cost {} requests, 6 cost {}: the idle cost grows with the fleet\nlarge: {:?}\nsmall: {:?}",
        large.total(),
        small.total(),
        large.requests,
        small.requests
    );
}
