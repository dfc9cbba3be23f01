//! Ferry as a drop-in for Elastic's connector service (issue 14), against the
//! real binaries, PostgreSQL and osmem-server. The connector and its sync
//! jobs are written as raw JSON into `.elastic-connectors` and
//! `.elastic-connectors-sync-jobs`, exactly as Kibana / Elasticsearch's
//! Connector API and Elastic's Python service write them (the job's
//! `connector.filtering` is the active filter object, not the connector's
//! `[{domain, active, draft}]` list). The test then checks that:
//! - such a job runs with its basic sync rule (exactly the rows it keeps);
//! - while it runs, the connector says `last_sync_status: in_progress`;
//! - at the end the job and connector carry the fields Kibana reads
//!   (`completed_at`, `total_document_count`, `worker_hostname`, ...);
//! - a canceled job has `completed_at`; a failed sync puts the connector in
//!   `status: error` with `error`, and the next good sync brings it back to
//!   `connected`;
//! - `DeleteConnector {delete_sync_jobs: true}` removes the jobs and the
//!   connector and answers OK, also when retried;
//! - the agent's capabilities are written into `features`; a job Elastic's
//!   service left `suspended` is resumed;
//! - a connector created through Ferry gets Elastic's pipeline defaults.

use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::Method;
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
const CONNECTORS: &str = ".elastic-connectors";
const JOBS: &str = ".elastic-connectors-sync-jobs";

/// 30 albums; every third (10) is Jazz, the rest Rock.
const ROWS: i64 = 30;
const JAZZ: i64 = 10;

struct World {
    grpc: Grpcurl,
    pg: PgCluster,
    es: Osmem,
    cp: ControlPlane,
    agent: Agent,
    admin: String,
}

impl World {
    async fn start() -> anyhow::Result<World> {
        let grpc = Grpcurl::find()?;
        let pg = PgCluster::start()?;
        pg.create_database("music").await?;
        pg.execute(
            "music",
            &format!(
                "CREATE TABLE album (id int PRIMARY KEY, title text, genre text); \
                 INSERT INTO album SELECT g, 'album ' || g, CASE WHEN g % 3 = 0 THEN 'Jazz' ELSE 'Rock' END \
                 FROM generate_series(1, {ROWS}) g;"
            ),
        )
        .await?;
        let es = Osmem::start()?;
        let pki = TestPki::new()?;
        let server = pki.write_server_cert()?;
        let tls = ServerTls { cert: server.cert, key: server.key, client_ca: pki.write_ca()? };
        let mut cfg = ControlPlaneConfig::new(es.url(), tls)?;
        cfg.env.push(("FERRY_JOBS__POLL_INTERVAL_MS".into(), "200".into()));
        let cp = ControlPlane::start(cfg)?;
        let admin = cp.admin_addr();
        let cert = pki.write_client_cert("agent-e")?;
        let agent = Agent::start(
            AgentConfig::new(
                &cp.agents_url(),
                ClientTls { ca: pki.write_ca()?, cert: cert.cert, key: cert.key },
            )
            .connector("music", "postgresql"),
        )?;
        Ok(World { grpc, pg, es, cp, agent, admin })
    }

    async fn call(&self, method: &str, body: Value) -> anyhow::Result<Value> {
        self.grpc.call(&self.admin, method, &body).await
    }

    async fn put_raw(&self, index: &str, id: &str, doc: &Value) -> anyhow::Result<()> {
        self.es.request(Method::PUT, &format!("{index}/_doc/{id}?refresh=true"), Some(doc)).await?;
        Ok(())
    }

    async fn raw(&self, index: &str, id: &str) -> anyhow::Result<Value> {
        self.es.get_doc(index, id).await?.with_context(|| format!("{index}/{id} is missing"))
    }

    async fn wait_job(&self, id: &str, status: &str) -> anyhow::Result<Value> {
        wait_until(&format!("job {id} {status}"), TIMEOUT, || async {
            let j = self.raw(JOBS, id).await?;
            match j["status"].as_str() {
                Some(s) if s == status => Ok(Some(j)),
                Some(s @ ("error" | "completed" | "canceled")) => bail!("job ended {s}, not {status}: {j}"),
                _ => Ok(None),
            }
        })
        .await
    }

    fn logs(&self) -> String {
        format!("control plane:\n{}\nagent:\n{}", self.cp.logs(), self.agent.logs())
    }

    /// Takes an exclusive lock on `album` in an open transaction: a sync
    /// claims its job and then waits on the lock, so "running" lasts until
    /// the returned client commits.
    async fn lock_albums(&self) -> anyhow::Result<tokio_postgres::Client> {
        let c = self.pg.client("music").await?;
        c.batch_execute("BEGIN; LOCK TABLE album IN ACCESS EXCLUSIVE MODE").await?;
        Ok(c)
    }
}

fn config_entry(label: &str, kind: &str, display: &str, order: i64, value: Value) -> Value {
    json!({
        "default_value": null, "depends_on": [], "display": display, "label": label, "options": [],
        "order": order, "required": true, "sensitive": false, "tooltip": null, "type": kind,
        "ui_restrictions": [], "validations": [], "value": value
    })
}

/// The configuration of Elastic's PostgreSQL connector, values filled in
/// (as Elastic's service registers the schema and Kibana saves values).
fn configuration(pg: &PgCluster, database: &str) -> Value {
    let mut password = config_entry("Password", "str", "text", 4, json!(pg.password()));
    password["sensitive"] = json!(true);
    let mut fetch = config_entry("Rows fetched per request", "int", "numeric", 8, json!(50));
    fetch["required"] = json!(false);
    fetch["ui_restrictions"] = json!(["advanced"]);
    let mut retry = config_entry("Retries per request", "int", "numeric", 9, json!(0));
    retry["required"] = json!(false);
    retry["ui_restrictions"] = json!(["advanced"]);
    let mut ssl = config_entry("Enable SSL verification", "bool", "toggle", 10, json!(false));
    ssl["required"] = json!(false);
    let mut ssl_ca = config_entry("SSL certificate", "str", "text", 11, json!(""));
    ssl_ca["required"] = json!(false);
    ssl_ca["depends_on"] = json!([{"field": "ssl_enabled", "value": true}]);
    json!({
        "host": config_entry("Host", "str", "text", 1, json!(pg.host())),
        "port": config_entry("Port", "int", "numeric", 2, json!(pg.port())),
        "username": config_entry("Username", "str", "text", 3, json!(pg.superuser())),
        "password": password,
        "database": config_entry("Database", "str", "text", 5, json!(database)),
        "schema": config_entry("Schema", "str", "text", 6, json!("public")),
        "tables": config_entry("Comma-separated list of tables", "list", "textarea", 7, json!("album")),
        "fetch_size": fetch,
        "retry_count": retry,
        "ssl_enabled": ssl,
        "ssl_ca": ssl_ca,
    })
}

const T0: &str = "2024-05-01T10:00:00.000Z";

fn rule(id: &str, policy: &str, field: &str, rule: &str, value: &str, order: i64) -> Value {
    json!({"id": id, "policy": policy, "field": field, "rule": rule, "value": value, "order": order,
           "created_at": T0, "updated_at": T0})
}

/// The active filter Kibana saves: exclude Jazz, then the catch-all rule.
fn active_filter() -> Value {
    json!({
        "rules": [
            rule("c1f2", "exclude", "public_album_genre", "equals", "Jazz", 0),
            rule("DEFAULT", "include", "_", "regex", ".*", 1)
        ],
        "advanced_snippet": {"value": {}, "created_at": T0, "updated_at": T0},
        "validation": {"state": "valid", "errors": []}
    })
}

fn pipeline() -> Value {
    json!({"name": "search-default-ingestion", "extract_binary_content": true, "reduce_whitespace": true,
           "run_ml_inference": true})
}

/// The connector document as Elasticsearch's Connector API stores it,
/// after Elastic's service registered the configuration and Kibana saved
/// values and sync rules.
fn connector_doc(pg: &PgCluster) -> Value {
    json!({
        "api_key_id": null, "api_key_secret_id": null,
        "configuration": configuration(pg, "music"),
        "custom_scheduling": {}, "description": null, "error": null,
        "features": {"sync_rules": {"advanced": {"enabled": false}, "basic": {"enabled": false}},
                     "incremental_sync": {"enabled": false}, "document_level_security": {"enabled": false}},
        "filtering": [{"domain": "DEFAULT", "active": active_filter(), "draft": active_filter()}],
        "index_name": "music", "is_native": false, "language": null,
        "last_access_control_sync_error": null, "last_access_control_sync_scheduled_at": null,
        "last_access_control_sync_status": null, "last_deleted_document_count": null,
        "last_incremental_sync_scheduled_at": null, "last_indexed_document_count": null,
        "last_seen": null, "last_sync_error": null, "last_sync_scheduled_at": null,
        "last_sync_status": null, "last_synced": null,
        "name": "Music", "pipeline": pipeline(),
        "scheduling": {
            "access_control": {"enabled": false, "interval": "0 0 0 * * ?"},
            "full": {"enabled": false, "interval": "0 0 0 * * ?"},
            "incremental": {"enabled": false, "interval": "0 0 0 * * ?"}
        },
        "service_type": "postgresql", "status": "configured", "sync_cursor": null, "deleted": false
    })
}

/// A job as Elastic's Python service writes it (`SyncJobIndex.create`,
/// times from `datetime.isoformat()`, microseconds and `+00:00`).
fn python_job(pg: &PgCluster, database: &str) -> Value {
    let now = time::OffsetDateTime::now_utc();
    let ts = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        now.year(),
        now.month() as u8,
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.microsecond()
    );
    json!({
        "connector": {
            "id": "music", "filtering": active_filter(), "index_name": "music", "language": null,
            "pipeline": pipeline(), "service_type": "postgresql",
            "configuration": configuration(pg, database)
        },
        "trigger_method": "on_demand", "job_type": "full", "status": "pending",
        "indexed_document_count": 0, "indexed_document_volume": 0, "deleted_document_count": 0,
        "created_at": ts, "last_seen": ts
    })
}

/// A job as Elasticsearch's `POST _connector/_sync_job` writes it (Kibana's
/// Sync button): also `total_document_count: 0`, times in milliseconds with `Z`.
fn api_job(pg: &PgCluster) -> Value {
    let now = time::OffsetDateTime::now_utc();
    let ts = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        now.year(),
        now.month() as u8,
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    );
    json!({
        "cancelation_requested_at": null, "canceled_at": null, "completed_at": null,
        "connector": {
            "configuration": configuration(pg, "music"), "filtering": active_filter(), "id": "music",
            "index_name": "music", "language": null, "pipeline": pipeline(), "service_type": "postgresql"
        },
        "created_at": ts, "deleted_document_count": 0, "error": null, "indexed_document_count": 0,
        "indexed_document_volume": 0, "job_type": "full", "last_seen": ts, "metadata": {},
        "started_at": null, "status": "pending", "total_document_count": 0, "trigger_method": "on_demand",
        "worker_hostname": null
    })
}

fn assert_time(v: &Value, field: &str) {
    let s = v[field].as_str().unwrap_or_else(|| panic!("{field} is not a time: {v}"));
    assert!(s.len() >= 20 && s.starts_with("20"), "{field} = {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_written_as_elastic_writes_them_run_with_their_rules_and_leave_the_fields_kibana_reads() {
    let w = World::start().await.expect("world");
    w.put_raw(CONNECTORS, "music", &connector_doc(&w.pg)).await.unwrap();
    wait_until("the agent to validate the connector", TIMEOUT, || async {
        let c = w.raw(CONNECTORS, "music").await?;
        Ok((c["status"] == "connected").then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", w.logs()));

    // The serving agent's capabilities reach `features` (Kibana shows the
    // sync-rule editors from it).
    let c = wait_until("features from the agent", Duration::from_secs(30), || async {
        let c = w.raw(CONNECTORS, "music").await?;
        Ok((c["features"]["sync_rules"]["basic"]["enabled"] == true).then_some(c))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", w.logs()));
    assert_eq!(c["features"]["sync_rules"]["advanced"]["enabled"], true, "{c}");
    assert_eq!(c["features"]["document_level_security"]["enabled"], false, "{c}");

    // 1. A job written by Elastic's Python service, held running by a lock.
    let lock = w.lock_albums().await.unwrap();
    w.put_raw(JOBS, "py-job-1", &python_job(&w.pg, "music")).await.unwrap();
    let running = w.wait_job("py-job-1", "in_progress").await.unwrap_or_else(|e| panic!("{e}\n{}", w.logs()));
    assert_time(&running, "started_at");
    assert!(running["worker_hostname"].as_str().is_some_and(|h| !h.is_empty()), "{running}");
    let c = wait_until("last_sync_status in_progress", Duration::from_secs(10), || async {
        let c = w.raw(CONNECTORS, "music").await?;
        Ok((c["last_sync_status"] == "in_progress").then_some(c))
    })
    .await
    .unwrap();
    assert!(c["last_sync_error"].is_null(), "{c}");
    lock.batch_execute("COMMIT").await.unwrap();
    let done = w.wait_job("py-job-1", "completed").await.unwrap_or_else(|e| panic!("{e}\n{}", w.logs()));

    // Exactly the rows the rule keeps.
    assert_eq!(w.es.count("music").await.unwrap() as i64, ROWS - JAZZ, "{}", w.logs());
    let all = w.es.search("music", &json!({"query": {"match_all": {}}, "size": 100})).await.unwrap();
    let mut ids: Vec<String> = all["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            assert_eq!(h["_source"]["public_album_genre"], "Rock", "{h}");
            h["_id"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    // Elastic 9.x ids: {database}_{schema}_{table}_{key}.
    let mut want: Vec<String> =
        (1..=ROWS).filter(|i| i % 3 != 0).map(|i| format!("music_public_album_{i}")).collect();
    want.sort();
    assert_eq!(ids, want);
    // The job as Kibana reads it.
    assert_time(&done, "completed_at");
    assert_eq!(done["indexed_document_count"], ROWS - JAZZ, "{done}");
    assert_eq!(done["total_document_count"], ROWS - JAZZ, "{done}");
    assert_eq!(done["deleted_document_count"], 0, "{done}");
    assert!(done["indexed_document_volume"].is_number(), "{done}");
    assert!(done["metadata"].is_object(), "{done}");
    assert_eq!(done["trigger_method"], "on_demand");
    assert!(done["error"].is_null(), "{done}");
    // The job's snapshot keeps Elastic's shape.
    assert_eq!(done["connector"]["filtering"]["rules"][0]["id"], "c1f2", "{done}");
    // The connector as Kibana reads it.
    let c = w.raw(CONNECTORS, "music").await.unwrap();
    assert_eq!(c["last_sync_status"], "completed", "{c}");
    assert_eq!(c["status"], "connected", "{c}");
    assert!(c["error"].is_null() && c["last_sync_error"].is_null(), "{c}");
    assert_eq!(c["last_indexed_document_count"], ROWS - JAZZ, "{c}");
    assert_time(&c, "last_synced");
    let keys = c.as_object().unwrap();
    for k in
        ["sync_cursor", "last_access_control_sync_status", "last_incremental_sync_scheduled_at", "pipeline"]
    {
        assert!(keys.contains_key(k), "connector without {k}: {c}");
    }

    // 2. A Kibana Sync-button job, canceled while it runs.
    let lock = w.lock_albums().await.unwrap();
    w.put_raw(JOBS, "api-job-2", &api_job(&w.pg)).await.unwrap();
    w.wait_job("api-job-2", "in_progress").await.unwrap_or_else(|e| panic!("{e}\n{}", w.logs()));
    let resp = w.call(&format!("{J}/CancelSyncJob"), json!({"sync_job_id": "api-job-2"})).await.unwrap();
    let s = resp["syncJob"]["status"].as_str().unwrap_or_default().to_owned();
    assert!(s == "SYNC_STATUS_CANCELING" || s == "SYNC_STATUS_CANCELED", "{resp}");
    lock.batch_execute("COMMIT").await.unwrap();
    let canceled = w.wait_job("api-job-2", "canceled").await.unwrap_or_else(|e| panic!("{e}\n{}", w.logs()));
    for f in ["completed_at", "canceled_at", "cancelation_requested_at"] {
        assert_time(&canceled, f);
    }
    let c = w.raw(CONNECTORS, "music").await.unwrap();
    assert_eq!(c["last_sync_status"], "canceled", "{c}");

    // 3. A job whose configuration snapshot names a database that does not
    // exist: the sync fails and the connector says so.
    w.put_raw(JOBS, "py-job-3", &python_job(&w.pg, "no_such_db")).await.unwrap();
    let failed = w.wait_job("py-job-3", "error").await.unwrap_or_else(|e| panic!("{e}\n{}", w.logs()));
    assert!(failed["error"].as_str().is_some_and(|e| !e.is_empty()), "{failed}");
    assert_time(&failed, "completed_at");
    let c = w.raw(CONNECTORS, "music").await.unwrap();
    assert_eq!(c["status"], "error", "{c}");
    assert_eq!(c["last_sync_status"], "error", "{c}");
    assert!(c["error"].as_str().is_some_and(|e| !e.is_empty()), "{c}");
    assert_eq!(c["last_sync_error"], failed["error"], "{c}");

    // 4. The next good sync brings the connector back.
    w.put_raw(JOBS, "api-job-4", &api_job(&w.pg)).await.unwrap();
    w.wait_job("api-job-4", "completed").await.unwrap_or_else(|e| panic!("{e}\n{}", w.logs()));
    let c = w.raw(CONNECTORS, "music").await.unwrap();
    assert_eq!((c["status"].clone(), c["error"].clone()), (json!("connected"), Value::Null), "{c}");
    assert_eq!(w.es.count("music").await.unwrap() as i64, ROWS - JAZZ);

    // A job Elastic's service left `suspended` (it stopped mid-sync) is
    // resumed and completed.
    let mut suspended = python_job(&w.pg, "music");
    suspended["status"] = json!("suspended");
    suspended["started_at"] = suspended["created_at"].clone();
    suspended["worker_hostname"] = json!("elastic-connectors-1");
    w.put_raw(JOBS, "py-job-5", &suspended).await.unwrap();
    let resumed = w.wait_job("py-job-5", "completed").await.unwrap_or_else(|e| panic!("{e}\n{}", w.logs()));
    assert_eq!(resumed["indexed_document_count"], ROWS - JAZZ, "{resumed}");

    // 5. DeleteConnector with its jobs: OK, and OK again when retried.
    let del = w
        .call(&format!("{C}/DeleteConnector"), json!({"connector_id": "music", "delete_sync_jobs": true}))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", w.logs()));
    assert_eq!(json_i64(&del["deletedSyncJobs"]), 5, "{del}");
    assert_eq!(w.raw(CONNECTORS, "music").await.unwrap()["deleted"], true);
    w.es.refresh(JOBS).await.unwrap();
    let left = w.es.search(JOBS, &json!({"query": {"term": {"connector.id": "music"}}})).await.unwrap();
    assert_eq!(left["hits"]["total"]["value"], 0, "{left}");
    let again = w
        .call(&format!("{C}/DeleteConnector"), json!({"connector_id": "music", "delete_sync_jobs": true}))
        .await
        .unwrap();
    assert_eq!(json_i64(&again["deletedSyncJobs"]), 0, "{again}");
    let e = w
        .grpc
        .call_err(&w.admin, &format!("{C}/DeleteConnector"), &json!({"connector_id": "music"}))
        .await
        .unwrap();
    assert_eq!(e.code, "NotFound", "{e}");

    // 6. A connector created through Ferry has Elastic's defaults.
    w.call(
        &format!("{C}/PutConnector"),
        json!({"connector_id": "fresh", "name": "Fresh", "index_name": "fresh", "service_type": "postgresql"}),
    )
    .await
    .unwrap();
    let fresh = w.raw(CONNECTORS, "fresh").await.unwrap();
    assert_eq!(fresh["pipeline"], pipeline(), "{fresh}");
    assert_eq!(fresh["filtering"][0]["domain"], "DEFAULT", "{fresh}");
    assert!(fresh["features"]["sync_rules"]["basic"]["enabled"].is_boolean(), "{fresh}");
    assert!(fresh.as_object().unwrap().contains_key("sync_cursor"), "{fresh}");
}
