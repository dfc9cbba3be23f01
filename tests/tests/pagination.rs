//! The admin API's lists page with `page_token`/`size` at fleet size.
//!
//! 10,000 connectors and 1,500 sync jobs are written straight into osmem
//! with `_bulk` (as Kibana or Elastic's service would leave them: the
//! control plane did not create them), then listed page by page:
//! - ListConnectors, 1,000 per page: every connector exactly once, in name
//!   order, `count` 10,000, the last page has no `next_page_token`, and a
//!   deep page costs no more than the first (search_after, not `from`);
//! - ListSyncJobs, 400 per page: every job exactly once, newest first;
//! - ListAgents, 2 per page over 3 live agents: each exactly once;
//! - a token that is not one is refused naming `page_token`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::ensure;
use serde_json::{json, Value};

use ferry_tests::process::{wait_until, Agent};
use ferry_tests::scenario::{Admin, World, CONNECTORS, SYNC_JOBS};

const CONNECTOR_COUNT: usize = 10_000;
const JOB_COUNT: usize = 1_500;

async fn bulk(world: &World, lines: Vec<Value>) -> anyhow::Result<()> {
    let mut body = String::new();
    for l in lines {
        body.push_str(&l.to_string());
        body.push('\n');
    }
    let r = reqwest::Client::new()
        .post(format!("{}/_bulk", world.es.url()))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await?
        .error_for_status()?
        .json::<Value>()
        .await?;
    ensure!(r["errors"] == false, "bulk had errors: {}", &r.to_string()[..500.min(r.to_string().len())]);
    Ok(())
}

async fn list_all(
    admin: &Admin,
    method: &str,
    mut request: Value,
    items: &str,
) -> anyhow::Result<(Vec<Value>, Vec<Duration>, Value)> {
    let mut out = Vec::new();
    let mut took = Vec::new();
    let mut last;
    loop {
        let t = Instant::now();
        let r = admin.call(method, request.clone()).await?;
        took.push(t.elapsed());
        let page = r[items].as_array().cloned().unwrap_or_default();
        out.extend(page);
        let next = r["nextPageToken"].as_str().unwrap_or_default().to_owned();
        last = r;
        if next.is_empty() {
            break;
        }
        ensure!(took.len() < 100, "more than 100 pages: the token does not move");
        request["page_token"] = json!(next);
    }
    Ok((out, took, last))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_through_ten_thousand_connectors() {
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    let cp = world.start_control_plane().expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    let result = async {
        let t0 = Instant::now();
        for chunk in (0..CONNECTOR_COUNT).collect::<Vec<_>>().chunks(1_000) {
            let mut lines = Vec::new();
            for i in chunk {
                let id = format!("c{i:05}");
                lines.push(json!({"index": {"_index": ".elastic-connectors", "_id": id}}));
                lines.push(json!({"name": format!("connector {i:05}"), "index_name": format!("idx-{i:05}"),
                    "service_type": "postgresql", "status": "created", "is_native": false,
                    "configuration": {}, "filtering": [], "scheduling": {}, "deleted": false}));
            }
            bulk(&world, lines).await?;
        }
        let mut lines = Vec::new();
        for j in 0..JOB_COUNT {
            let created = format!("2026-01-01T{:02}:{:02}:{:02}Z", j / 3600, (j / 60) % 60, j % 60);
            lines.push(
                json!({"index": {"_index": ".elastic-connectors-sync-jobs", "_id": format!("j{j:05}")}}),
            );
            lines.push(
                json!({"connector": {"id": format!("c{:05}", j % 50), "configuration": {}, "filtering": []},
                "status": "completed", "job_type": "full", "trigger_method": "on_demand",
                "created_at": created, "indexed_document_count": 0}),
            );
        }
        bulk(&world, lines).await?;
        eprintln!("wrote {CONNECTOR_COUNT} connectors and {JOB_COUNT} jobs in {:?}", t0.elapsed());

        let (connectors, took, last) =
            list_all(&admin, &format!("{CONNECTORS}/ListConnectors"), json!({"size": 1000}), "connectors")
                .await?;
        let ids: Vec<&str> = connectors.iter().filter_map(|c| c["id"].as_str()).collect();
        let unique: BTreeSet<&str> = ids.iter().copied().collect();
        ensure!(ids.len() == CONNECTOR_COUNT, "listed {} connectors, want {CONNECTOR_COUNT}", ids.len());
        ensure!(unique.len() == CONNECTOR_COUNT, "a connector was listed twice");
        let names: Vec<&str> = connectors.iter().filter_map(|c| c["name"].as_str()).collect();
        ensure!(names.windows(2).all(|w| w[0] <= w[1]), "connectors are not in name order");
        ensure!(json_count(&last) == CONNECTOR_COUNT as i64, "count: {}", last["count"]);
        ensure!(took.len() == 10, "{} pages of 1,000 for 10,000 connectors", took.len());
        eprintln!("ListConnectors pages: {took:?}");
        // search_after: the tenth page is no slower than the first (beyond
        // noise on a shared machine).
        let first = took[0].max(Duration::from_millis(200));
        ensure!(took[9] <= first * 3, "deep page {:?} vs first {:?}", took[9], took[0]);
        ensure!(took.iter().all(|t| *t < Duration::from_secs(10)), "a page took 10 s or more: {took:?}");

        let (jobs, took, _) =
            list_all(&admin, &format!("{SYNC_JOBS}/ListSyncJobs"), json!({"size": 400}), "syncJobs").await?;
        let ids: Vec<&str> = jobs.iter().filter_map(|j| j["id"].as_str()).collect();
        let unique: BTreeSet<&str> = ids.iter().copied().collect();
        ensure!(
            ids.len() == JOB_COUNT && unique.len() == JOB_COUNT,
            "listed {} jobs ({} unique)",
            ids.len(),
            unique.len()
        );
        ensure!(ids.first() == Some(&"j01499") && ids.last() == Some(&"j00000"), "not newest first");
        eprintln!("ListSyncJobs pages: {took:?}");

        let e = admin
            .call(&format!("{CONNECTORS}/ListConnectors"), json!({"page_token": "not-a-token"}))
            .await
            .expect_err("a bad token is refused");
        ensure!(format!("{e:#}").contains("page_token"), "{e:#}");

        // Three live agents, two per page.
        admin.put_connector("shop", "shop").await?;
        let mut agents = Vec::new();
        for a in ["agent-1", "agent-2", "agent-3"] {
            agents.push(Agent::start(world.agent_config(&cp.agents_url(), a, "shop")?)?);
        }
        wait_until("three agents connected", Duration::from_secs(60), || async {
            let r = admin.call("ferry.v1.FleetService/ListAgents", json!({})).await?;
            Ok((json_count(&r) == 3).then_some(()))
        })
        .await?;
        let (listed, took, _) =
            list_all(&admin, "ferry.v1.FleetService/ListAgents", json!({"size": 2}), "agents").await?;
        let ids: Vec<&str> = listed.iter().filter_map(|a| a["agentId"].as_str()).collect();
        ensure!(ids == ["agent-1", "agent-2", "agent-3"], "agents listed {ids:?} in {} pages", took.len());
        ensure!(took.len() == 2, "3 agents, 2 per page: {} pages", took.len());
        drop(agents);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e:#}\ncontrol plane:\n{}", cp.logs());
    }
}

fn json_count(v: &Value) -> i64 {
    match &v["count"] {
        Value::String(s) => s.parse().unwrap_or(-1),
        Value::Number(n) => n.as_i64().unwrap_or(-1),
        _ => 0,
    }
}
