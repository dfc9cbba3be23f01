//! The connector lifecycle beyond one sync (issue 3), against the real
//! binaries, PostgreSQL and osmem-server, driven with grpcurl:
//! - cancel of a running 20,000-row sync ends `canceled` within 5 s, with
//!   the counts so far;
//! - the admin updates (scheduling, pipeline, index name, name, filtering)
//!   validate their input and name the field;
//! - a `*/5 * * * * ?` schedule produces `scheduled` jobs;
//! - DeleteSyncJob removes a finished job and refuses a running one.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use ferry_tests::certs::TestPki;
use ferry_tests::osmem::Osmem;
use ferry_tests::postgres::PgCluster;
use ferry_tests::process::{
    json_i64, wait_until, Agent, AgentConfig, ClientTls, ControlPlane, ControlPlaneConfig, Grpcurl, ServerTls,
};

const TIMEOUT: Duration = Duration::from_secs(120);
const C: &str = "ferry.v1.ConnectorService";
const J: &str = "ferry.v1.SyncJobService";

/// PostgreSQL with a database `shop` holding `item` (`rows` rows), osmem,
/// a control plane and one agent serving connector `shop`, configured and
/// connected.
struct World {
    grpc: Grpcurl,
    _pg: PgCluster,
    es: Osmem,
    cp: ControlPlane,
    agent: Agent,
    admin: String,
    pki: TestPki,
}

impl World {
    async fn start(rows: u32) -> anyhow::Result<World> {
        Self::start_with(rows, &[]).await
    }

    /// With environment for the agent, which also serves `shop2` (same
    /// database, index `shop2`) when `FERRY_MAX_CONCURRENT_JOBS` is given.
    async fn start_with(rows: u32, agent_env: &[(&str, &str)]) -> anyhow::Result<World> {
        let grpc = Grpcurl::find()?;
        let pg = PgCluster::start()?;
        pg.create_database("shop").await?;
        pg.execute(
            "shop",
            &format!(
                "CREATE TABLE item (id int PRIMARY KEY, name text, price int, body text); \
                 INSERT INTO item SELECT g, 'item ' || g, g % 100, repeat('x', 200) FROM generate_series(1, {rows}) g;"
            ),
        )
        .await?;
        let es = Osmem::start()?;
        let pki = TestPki::new()?;
        let server = pki.write_server_cert()?;
        let tls = ServerTls { cert: server.cert, key: server.key, client_ca: pki.write_ca()? };
        let mut cfg = ControlPlaneConfig::new(es.url(), tls)?;
        // osmem handles one request at a time: with the default 5,000-document
        // batches, every state write waits behind seconds of bulk. Small
        // batches keep that wait short (Elasticsearch has no such lock).
        // The window is kept small for the same reason: everything already
        // handed to osmem is indexed before a cancel's state write can run,
        // so a cancel waits behind window x batch documents (8 x 500 took
        // 9 s on a loaded CI machine; 4 x 250 is about a second). Typed content
        // indices (Elastic's text sub-fields) halve osmem's speed: 2 x 250.
        cfg.env.push(("FERRY_JOBS__MAX_BATCH_DOCUMENTS".into(), "250".into()));
        cfg.env.push(("FERRY_JOBS__MAX_UNACKED_BATCHES".into(), "2".into()));
        let cp = ControlPlane::start(cfg)?;
        let admin = cp.admin_addr();
        let cert = pki.write_client_cert("agent-l")?;
        let mut agent_cfg = AgentConfig::new(
            &cp.agents_url(),
            ClientTls { ca: pki.write_ca()?, cert: cert.cert, key: cert.key },
        )
        .connector("shop", "postgresql");
        if !agent_env.is_empty() {
            agent_cfg = agent_cfg.connector("shop2", "postgresql");
        }
        agent_cfg.env = agent_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let agent = Agent::start(agent_cfg)?;
        let w = World { grpc, es, cp, agent, admin, _pg: pg, pki };
        w.call(
            &format!("{C}/PutConnector"),
            json!({"connector_id": "shop", "name": "Shop", "index_name": "shop", "service_type": "postgresql"}),
        )
        .await?;
        w.wait_status("CONNECTOR_STATUS_NEEDS_CONFIGURATION").await?;
        let values = json!({
            "host": w._pg.host(), "port": w._pg.port(), "username": w._pg.superuser(),
            "password": w._pg.password(), "database": "shop", "schema": "public", "tables": "item"
        });
        w.call(&format!("{C}/UpdateConfiguration"), json!({"connector_id": "shop", "values": values}))
            .await?;
        w.wait_status("CONNECTOR_STATUS_CONNECTED").await?;
        Ok(w)
    }

    async fn call(&self, method: &str, body: Value) -> anyhow::Result<Value> {
        self.grpc.call(&self.admin, method, &body).await
    }

    async fn wait_status(&self, status: &str) -> anyhow::Result<()> {
        wait_until(status, TIMEOUT, || async {
            let c = self.call(&format!("{C}/GetConnector"), json!({"connector_id": "shop"})).await?;
            Ok((c["connector"]["status"] == status).then_some(()))
        })
        .await
    }

    async fn job(&self, id: &str) -> anyhow::Result<Value> {
        Ok(self
            .call(&format!("{J}/GetSyncJob"), json!({"sync_job_id": id, "view": "SYNC_JOB_VIEW_FULL"}))
            .await?["syncJob"]
            .clone())
    }

    async fn start_job(&self) -> anyhow::Result<String> {
        let created = self.call(&format!("{J}/CreateSyncJob"), json!({"connector_id": "shop"})).await?;
        Ok(created["syncJob"]["id"].as_str().context("job id")?.to_owned())
    }

    async fn wait_job(&self, id: &str, status: &str) -> anyhow::Result<Value> {
        wait_until(&format!("job {id} {status}"), TIMEOUT, || async {
            let j = self.job(id).await?;
            match j["status"].as_str() {
                Some(s) if s == status => Ok(Some(j)),
                Some("SYNC_STATUS_ERROR") => bail!("job failed: {j}"),
                _ => Ok(None),
            }
        })
        .await
    }

    /// A second control plane on the same Elasticsearch (no agents).
    fn second_control_plane(&self) -> anyhow::Result<ControlPlane> {
        let server = self.pki.write_server_cert()?;
        let tls = ServerTls { cert: server.cert, key: server.key, client_ca: self.pki.write_ca()? };
        ControlPlane::start(ControlPlaneConfig::new(self.es.url(), tls)?)
    }

    async fn err(&self, method: &str, body: Value) -> ferry_tests::process::GrpcError {
        self.grpc.call_err(&self.admin, method, &body).await.unwrap()
    }

    fn logs(&self) -> String {
        format!("control plane:\n{}\nagent:\n{}", self.cp.logs(), self.agent.logs())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_running_20k_row_sync_ends_canceled_within_5_s() {
    let mut w = World::start(20_000).await.expect("world");
    let job_id = w.start_job().await.unwrap();
    // Running: the agent is reading and Elasticsearch indexing.
    wait_until("the sync to run", TIMEOUT, || async {
        let j = w.job(&job_id).await?;
        if j["status"] == "SYNC_STATUS_COMPLETED" {
            bail!("the sync finished before it could be canceled: {j}");
        }
        Ok((j["status"] == "SYNC_STATUS_IN_PROGRESS" && json_i64(&j["indexedDocumentCount"]) > 0)
            .then_some(()))
    })
    .await
    .unwrap();
    let asked = Instant::now();
    let resp = w.call(&format!("{J}/CancelSyncJob"), json!({"sync_job_id": job_id})).await.unwrap();
    let s = resp["syncJob"]["status"].as_str().unwrap_or_default().to_owned();
    assert!(s == "SYNC_STATUS_CANCELING" || s == "SYNC_STATUS_CANCELED", "{resp}");
    assert!(resp["syncJob"]["cancelationRequestedAt"].is_string(), "{resp}");
    let job = wait_until("canceled", Duration::from_secs(10), || async {
        let j = w.job(&job_id).await?;
        Ok((j["status"] == "SYNC_STATUS_CANCELED").then_some(j))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", w.logs()));
    let took = asked.elapsed();
    assert!(took <= Duration::from_secs(5), "cancel took {took:?}\n{}", w.logs());
    assert!(job["canceledAt"].is_string(), "{job}");
    let indexed = json_i64(&job["indexedDocumentCount"]);
    assert!(indexed > 0 && indexed < 20_000, "counts so far: {job}");
    let c = w.call(&format!("{C}/GetConnector"), json!({"connector_id": "shop"})).await.unwrap();
    assert_eq!(c["connector"]["lastSyncStatus"], "SYNC_STATUS_CANCELED", "{c}");
    // Canceled jobs are terminal: a second cancel says so.
    let e = w
        .grpc
        .call_err(&w.admin, &format!("{J}/CancelSyncJob"), &json!({"sync_job_id": job_id}))
        .await
        .unwrap();
    assert_eq!(e.code, "FailedPrecondition", "{e}");
    // The agent is free again: the next sync runs to the end.
    let next = w.start_job().await.unwrap();
    let done =
        w.wait_job(&next, "SYNC_STATUS_COMPLETED").await.unwrap_or_else(|e| panic!("{e}\n{}", w.logs()));
    assert_eq!(json_i64(&done["indexedDocumentCount"]), 20_000, "{done}");
    assert_eq!(w.es.count("shop").await.unwrap(), 20_000);
    assert!(w.cp.service.is_running() && w.agent.service.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_second_schedule_creates_scheduled_jobs_once_across_two_control_planes() {
    let w = World::start(50).await.expect("world");
    let cp2 = w.second_control_plane().expect("second control plane");
    let admin2 = cp2.admin_addr();

    // Input errors name the field.
    let e = w
        .err(
            &format!("{C}/UpdateScheduling"),
            json!({"connector_id": "shop", "scheduling": {"full": {"enabled": true, "interval": "*/5 * * * *"}}}),
        )
        .await;
    assert_eq!(e.code, "InvalidArgument", "{e}");
    assert!(e.message.contains("scheduling.full.interval") && e.message.contains("seconds"), "{e}");

    // Set through the second replica: any control plane serves the API.
    let set = w
        .grpc
        .call(
            &admin2,
            &format!("{C}/UpdateScheduling"),
            &json!({"connector_id": "shop", "scheduling": {"full": {"enabled": true, "interval": "*/5 * * * * ?"}}}),
        )
        .await
        .unwrap();
    assert_eq!(set["connector"]["scheduling"]["full"]["interval"], "*/5 * * * * ?", "{set}");
    assert_eq!(set["connector"]["scheduling"]["full"]["enabled"], true, "{set}");
    let since = Instant::now();

    let jobs = wait_until("three scheduled syncs to complete", TIMEOUT, || async {
        let l = w.call(&format!("{J}/ListSyncJobs"), json!({"connector_id": "shop"})).await?;
        let jobs = l["syncJobs"].as_array().cloned().unwrap_or_default();
        let done = jobs.iter().filter(|j| j["status"] == "SYNC_STATUS_COMPLETED").count();
        Ok((done >= 3).then_some(jobs))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", w.logs()));
    let elapsed = since.elapsed();
    for j in &jobs {
        assert_eq!(j["triggerMethod"], "TRIGGER_METHOD_SCHEDULED", "{j}");
        assert_eq!(j["jobType"], "JOB_TYPE_FULL", "{j}");
    }
    // Exactly once per fire time, though two control planes run the loop:
    // no two jobs within the same 5 s slot, and no more than the slots.
    let mut created: Vec<i128> = jobs
        .iter()
        .map(|j| {
            let t = j["createdAt"].as_str().unwrap();
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .unwrap()
                .unix_timestamp_nanos()
        })
        .collect();
    created.sort();
    for pair in created.windows(2) {
        let gap = Duration::from_nanos((pair[1] - pair[0]) as u64);
        assert!(gap >= Duration::from_secs(4), "two scheduled jobs {gap:?} apart: {jobs:?}");
    }
    assert!(jobs.len() as u64 <= elapsed.as_secs() / 5 + 2, "{} jobs in {elapsed:?}", jobs.len());
    let c = w.call(&format!("{C}/GetConnector"), json!({"connector_id": "shop"})).await.unwrap();
    assert!(c["connector"]["lastSyncScheduledAt"].is_string(), "{c}");

    // Disabled: no more scheduled jobs.
    w.call(
        &format!("{C}/UpdateScheduling"),
        json!({"connector_id": "shop", "scheduling": {"full": {"enabled": false}}}),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let count = |l: Value| json_i64(&l["count"]);
    let before = count(w.call(&format!("{J}/ListSyncJobs"), json!({"connector_id": "shop"})).await.unwrap());
    tokio::time::sleep(Duration::from_secs(7)).await;
    let after = count(w.call(&format!("{J}/ListSyncJobs"), json!({"connector_id": "shop"})).await.unwrap());
    assert_eq!(before, after, "a disabled schedule still created jobs");
    drop(cp2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_updates_validate_and_name_the_field() {
    let w = World::start(10).await.expect("world");
    let conn = |v: &Value| v["connector"].clone();

    // Name and description.
    let e = w.err(&format!("{C}/UpdateName"), json!({"connector_id": "shop", "name": " "})).await;
    assert!(e.code == "InvalidArgument" && e.message.starts_with("name:"), "{e}");
    let c = w
        .call(
            &format!("{C}/UpdateName"),
            json!({"connector_id": "shop", "name": "Shop 2", "description": "items"}),
        )
        .await
        .unwrap();
    assert_eq!(conn(&c)["name"], "Shop 2");
    assert_eq!(conn(&c)["description"], "items");
    let e = w.err(&format!("{C}/UpdateName"), json!({"connector_id": "nope", "name": "x"})).await;
    assert_eq!(e.code, "NotFound", "{e}");

    // Index name.
    let e =
        w.err(&format!("{C}/UpdateIndexName"), json!({"connector_id": "shop", "index_name": "Shop"})).await;
    assert!(e.code == "InvalidArgument" && e.message.starts_with("index_name:"), "{e}");
    let c = w
        .call(&format!("{C}/UpdateIndexName"), json!({"connector_id": "shop", "index_name": "shop-items"}))
        .await
        .unwrap();
    assert_eq!(conn(&c)["indexName"], "shop-items");

    // Pipeline.
    let e = w
        .err(&format!("{C}/UpdatePipeline"), json!({"connector_id": "shop", "pipeline": {"name": "my pipe"}}))
        .await;
    assert!(e.code == "InvalidArgument" && e.message.starts_with("pipeline.name:"), "{e}");
    let c = w
        .call(
            &format!("{C}/UpdatePipeline"),
            json!({"connector_id": "shop", "pipeline": {"name": "", "reduce_whitespace": true}}),
        )
        .await
        .unwrap();
    assert_eq!(conn(&c)["pipeline"]["name"], "");
    assert_eq!(conn(&c)["pipeline"]["reduceWhitespace"], true);

    // Filtering: bad rules are refused, good ones become the draft.
    let e = w
        .err(
            &format!("{C}/UpdateFiltering"),
            json!({"connector_id": "shop", "rules": [{"policy": "exclude", "field": "price", "rule": "like", "value": "1"}]}),
        )
        .await;
    assert!(e.code == "InvalidArgument" && e.message.starts_with("rules[0].rule:"), "{e}");
    let e = w
        .err(
            &format!("{C}/UpdateFiltering"),
            json!({"connector_id": "shop", "advanced_snippet": [{"tables": ["item"]}]}),
        )
        .await;
    assert!(e.code == "InvalidArgument" && e.message.starts_with("advanced_snippet[0].query:"), "{e}");
    let c = w
        .call(
            &format!("{C}/UpdateFiltering"),
            json!({"connector_id": "shop", "rules": [{"policy": "exclude", "field": "price", "rule": "<", "value": "10"}]}),
        )
        .await
        .unwrap();
    let f = &conn(&c)["filtering"][0];
    assert_eq!(f["draft"]["rules"][0]["rule"], "<", "{f}");
    assert_eq!(f["draft"]["rules"][1]["id"], "DEFAULT", "{f}");
    assert_eq!(f["draft"]["validation"]["state"], "edited", "{f}");
    assert_eq!(f["active"]["rules"].as_array().map(|a| a.len()), Some(1), "draft not active yet: {f}");

    // A finished job can be deleted; then it is gone.
    let job = w.start_job().await.unwrap();
    w.wait_job(&job, "SYNC_STATUS_COMPLETED").await.unwrap();
    let d = w.call(&format!("{J}/DeleteSyncJob"), json!({"sync_job_id": job})).await.unwrap();
    assert_eq!(d["acknowledged"], true);
    let e = w.err(&format!("{J}/GetSyncJob"), json!({"sync_job_id": job})).await;
    assert_eq!(e.code, "NotFound", "{e}");

    // A new kind of source starts over.
    let c = w
        .call(&format!("{C}/UpdateServiceType"), json!({"connector_id": "shop", "service_type": "mysql"}))
        .await
        .unwrap();
    assert_eq!(conn(&c)["serviceType"], "mysql");
    assert_eq!(conn(&c)["status"], "CONNECTOR_STATUS_CREATED");
    let e = w
        .err(&format!("{C}/UpdateServiceType"), json!({"connector_id": "shop", "service_type": "My SQL"}))
        .await;
    assert!(e.code == "InvalidArgument" && e.message.starts_with("service_type:"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_rules_are_checked_by_the_agent_and_applied_in_sql() {
    let w = World::start(100).await.expect("world");
    let filtering = || async {
        let c = w.call(&format!("{C}/GetConnector"), json!({"connector_id": "shop"})).await?;
        Ok::<_, anyhow::Error>(c["connector"]["filtering"][0].clone())
    };
    let wait_state = |state: &'static str| async move {
        wait_until(&format!("draft {state}"), TIMEOUT, || async {
            let f = filtering().await?;
            Ok((f["draft"]["validation"]["state"] == state).then_some(f))
        })
        .await
    };
    let sync = || async {
        let id = w.start_job().await?;
        w.wait_job(&id, "SYNC_STATUS_COMPLETED").await
    };

    // Basic: exclude price < 10 (prices are id % 100: ids 1-9 and 100).
    w.call(
        &format!("{C}/UpdateFiltering"),
        json!({"connector_id": "shop", "rules": [{"id": "cheap", "policy": "exclude", "field": "price", "rule": "<", "value": "10"}]}),
    )
    .await
    .unwrap();
    let f = wait_state("valid").await.unwrap_or_else(|e| panic!("{e}\n{}", w.logs()));
    assert_eq!(f["active"]["rules"][0]["id"], "cheap", "a valid draft is activated: {f}");
    let job = sync().await.unwrap();
    assert_eq!(json_i64(&job["indexedDocumentCount"]), 90, "{job}");
    assert_eq!(w.es.count("shop").await.unwrap(), 90);
    assert!(
        w.es.get_doc("shop", "shop_public_item_5").await.unwrap().is_none(),
        "an excluded row was indexed"
    );

    // Advanced: a custom query; vanished documents are deleted as usual.
    w.call(
        &format!("{C}/UpdateFiltering"),
        json!({"connector_id": "shop", "advanced_snippet": [{"tables": ["item"], "query": "SELECT id, name FROM item WHERE id <= 25", "id_columns": ["id"]}]}),
    )
    .await
    .unwrap();
    let f = wait_state("valid").await.unwrap();
    assert_eq!(f["active"]["advancedSnippet"][0]["query"], "SELECT id, name FROM item WHERE id <= 25", "{f}");
    let job = sync().await.unwrap();
    assert_eq!(json_i64(&job["indexedDocumentCount"]), 25, "{job}");
    assert_eq!(w.es.count("shop").await.unwrap(), 25);
    let doc = w.es.get_doc("shop", "shop_public_item_7").await.unwrap().expect("doc 7");
    assert_eq!(doc["public_item_name"], "item 7", "{doc}");
    assert!(doc.get("public_item_price").is_none(), "only the query's columns: {doc}");

    // Invalid: reported on the draft, not activated.
    w.call(
        &format!("{C}/UpdateFiltering"),
        json!({"connector_id": "shop", "advanced_snippet": [{"tables": ["item"], "query": "SELECT nope FROM item", "id_columns": ["id"]}]}),
    )
    .await
    .unwrap();
    let f = wait_state("invalid").await.unwrap();
    let errors = f["draft"]["validation"]["errors"].to_string();
    assert!(errors.contains("nope") && errors.contains("advanced_snippet"), "{errors}");
    assert_eq!(f["active"]["advancedSnippet"][0]["query"], "SELECT id, name FROM item WHERE id <= 25", "{f}");
    let job = sync().await.unwrap();
    assert_eq!(json_i64(&job["indexedDocumentCount"]), 25, "the active rules still apply: {job}");
    assert_eq!(
        job["connector"]["filtering"][0]["active"]["advancedSnippet"][0]["query"],
        "SELECT id, name FROM item WHERE id <= 25",
        "the job carries the rules it ran with: {job}"
    );

    // A table without a primary key, through id_columns.
    w._pg
        .execute("shop", "CREATE TABLE log (n int, msg text); INSERT INTO log SELECT g, 'line ' || g FROM generate_series(1, 7) g;")
        .await
        .unwrap();
    w.call(
        &format!("{C}/UpdateFiltering"),
        json!({"connector_id": "shop", "advanced_snippet": [{"tables": ["log"], "query": "SELECT n, msg FROM log", "id_columns": ["n"]}]}),
    )
    .await
    .unwrap();
    wait_state("valid").await.unwrap();
    let job = sync().await.unwrap();
    assert_eq!(json_i64(&job["indexedDocumentCount"]), 7, "{job}");
    let doc = w.es.get_doc("shop", "shop_public_log_3").await.unwrap().expect("log row 3");
    assert_eq!(doc["public_log_msg"], "line 3", "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_index_is_kept_and_the_pipeline_is_named_on_bulk_requests() {
    let w = World::start(20).await.expect("world");
    // The user made the index with their own mapping before the first sync.
    w.es.request(
        reqwest::Method::PUT,
        "/shop",
        Some(&json!({"mappings": {"properties": {
            "public_item_name": {"type": "keyword"},
            "owner_note": {"type": "keyword"}
        }}})),
    )
    .await
    .unwrap();
    let w = &w;
    let sync = |expect: &'static str| async move {
        let id = w.start_job().await?;
        wait_until(&format!("job {expect}"), TIMEOUT, || async {
            let j = w.job(&id).await?;
            Ok((j["status"] == expect).then_some(j))
        })
        .await
    };
    let job = sync("SYNC_STATUS_COMPLETED").await.unwrap_or_else(|e| panic!("{e}\n{}", w.logs()));
    assert_eq!(json_i64(&job["indexedDocumentCount"]), 20);
    let mapping = w.es.request(reqwest::Method::GET, "/shop/_mapping", None).await.unwrap();
    let props = &mapping["shop"]["mappings"]["properties"];
    assert_eq!(props["owner_note"]["type"], "keyword", "the user's mapping was replaced: {mapping}");
    assert_eq!(props["public_item_name"]["type"], "keyword", "{mapping}");

    // A named pipeline rides on every bulk request. (osmem has no ingest
    // pipelines, so it rejects each document naming the missing pipeline,
    // which shows the name arrived.)
    let c = w
        .call(
            &format!("{C}/UpdatePipeline"),
            json!({"connector_id": "shop", "pipeline": {"name": "ferry-test-pipeline"}}),
        )
        .await
        .unwrap();
    assert_eq!(c["connector"]["pipeline"]["name"], "ferry-test-pipeline");
    let job = sync("SYNC_STATUS_ERROR").await.unwrap();
    assert!(job["error"].as_str().unwrap_or_default().contains("ferry-test-pipeline"), "{job}");
    // Cleared: syncs work again.
    w.call(&format!("{C}/UpdatePipeline"), json!({"connector_id": "shop", "pipeline": {"name": ""}}))
        .await
        .unwrap();
    let job = sync("SYNC_STATUS_COMPLETED").await.unwrap();
    assert_eq!(json_i64(&job["indexedDocumentCount"]), 20, "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_agents_shows_the_fleet_from_any_control_plane() {
    const F: &str = "ferry.v1.FleetService";
    let w = World::start(5_000).await.expect("world");
    // A second control plane with its own agent, serving two connectors.
    let cp2 = w.second_control_plane().expect("second control plane");
    let cert = w.pki.write_client_cert("agent-m").unwrap();
    let _agent2 = Agent::start(
        AgentConfig::new(
            &cp2.agents_url(),
            ClientTls { ca: w.pki.write_ca().unwrap(), cert: cert.cert, key: cert.key },
        )
        .connector("shop", "postgresql")
        .connector("books", "postgresql"),
    )
    .expect("agent-m");

    // Asked on the first control plane, which holds only agent-l.
    let agents = wait_until("both agents listed", TIMEOUT, || async {
        let l = w.call(&format!("{F}/ListAgents"), json!({})).await?;
        let agents = l["agents"].as_array().cloned().unwrap_or_default();
        Ok((agents.len() == 2).then_some(agents))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", w.logs()));
    let by_id = |id: &str| {
        agents.iter().find(|a| a["agentId"] == id).cloned().unwrap_or_else(|| panic!("{id}: {agents:?}"))
    };
    let l = by_id("agent-l");
    let m = by_id("agent-m");
    assert_eq!(l["connectors"], json!(["shop"]), "{l}");
    assert_eq!(m["connectors"], json!(["shop", "books"]), "{m}");
    for a in [&l, &m] {
        assert!(a["version"].as_str().is_some_and(|v| !v.is_empty()), "{a}");
        assert!(a["address"].as_str().is_some_and(|v| v.starts_with("127.0.0.1:")), "{a}");
        assert!(a["connectedSince"].is_string() && a["lastHeartbeat"].is_string(), "{a}");
    }
    assert_ne!(l["controlPlane"], m["controlPlane"]);

    // Per connector: who may serve it, and who does while a sync runs.
    let job = w.start_job().await.unwrap();
    let got = wait_until("an agent serving shop", TIMEOUT, || async {
        let g = w.call(&format!("{F}/GetConnectorAgents"), json!({"connector_id": "shop"})).await?;
        Ok((!g["serving"].as_array().map(|a| a.is_empty()).unwrap_or(true)).then_some(g))
    })
    .await
    .unwrap();
    let may: Vec<&str> =
        got["mayServe"].as_array().unwrap().iter().filter_map(|a| a["agentId"].as_str()).collect();
    assert_eq!(may, vec!["agent-l", "agent-m"], "{got}");
    let serving = got["serving"][0]["agentId"].as_str().unwrap().to_owned();
    assert_eq!(got["runningJobs"][&job], serving, "{got}");
    assert!(got["serving"][0]["runningJobIds"].as_array().unwrap().iter().any(|j| j == &json!(job)), "{got}");
    let e = w.err(&format!("{F}/GetConnectorAgents"), json!({"connector_id": "nope"})).await;
    assert_eq!(e.code, "NotFound", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_beyond_the_agents_limit_wait_pending() {
    let w = World::start_with(20_000, &[("FERRY_MAX_CONCURRENT_JOBS", "1")]).await.expect("world");
    w.call(
        &format!("{C}/PutConnector"),
        json!({"connector_id": "shop2", "name": "Shop 2", "index_name": "shop2", "service_type": "postgresql"}),
    )
    .await
    .unwrap();
    wait_until("shop2 registered", TIMEOUT, || async {
        let c = w.call(&format!("{C}/GetConnector"), json!({"connector_id": "shop2"})).await?;
        Ok((c["connector"]["status"] == "CONNECTOR_STATUS_NEEDS_CONFIGURATION").then_some(()))
    })
    .await
    .unwrap();
    let values = json!({
        "host": w._pg.host(), "port": w._pg.port(), "username": w._pg.superuser(),
        "password": w._pg.password(), "database": "shop", "schema": "public", "tables": "item"
    });
    w.call(&format!("{C}/UpdateConfiguration"), json!({"connector_id": "shop2", "values": values}))
        .await
        .unwrap();
    wait_until("shop2 connected", TIMEOUT, || async {
        let c = w.call(&format!("{C}/GetConnector"), json!({"connector_id": "shop2"})).await?;
        Ok((c["connector"]["status"] == "CONNECTOR_STATUS_CONNECTED").then_some(()))
    })
    .await
    .unwrap();

    let first = w.start_job().await.unwrap();
    wait_until("first job running", TIMEOUT, || async {
        Ok((w.job(&first).await?["status"] == "SYNC_STATUS_IN_PROGRESS").then_some(()))
    })
    .await
    .unwrap();
    let created = w.call(&format!("{J}/CreateSyncJob"), json!({"connector_id": "shop2"})).await.unwrap();
    let second = created["syncJob"]["id"].as_str().unwrap().to_owned();
    // While the first runs, the agent (limit 1) has no room: the second waits.
    let mut checks = 0;
    loop {
        // The second is read first: if the first is still running after
        // that, both ran at once unless the second was pending.
        let b = w.job(&second).await.unwrap();
        let a = w.job(&first).await.unwrap();
        if a["status"] != "SYNC_STATUS_IN_PROGRESS" {
            break;
        }
        assert_eq!(b["status"], "SYNC_STATUS_PENDING", "second job started beside the first: {b}");
        checks += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(checks >= 2, "the first job ended too soon to observe the wait ({checks} checks)");
    let a = w.wait_job(&first, "SYNC_STATUS_COMPLETED").await.unwrap();
    let b = w.wait_job(&second, "SYNC_STATUS_COMPLETED").await.unwrap();
    assert_eq!(json_i64(&b["indexedDocumentCount"]), 20_000);
    let ts = |v: &Value| {
        time::OffsetDateTime::parse(v.as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    assert!(ts(&b["startedAt"]) >= ts(&a["completedAt"]), "second started before the first ended: {a} {b}");
}
