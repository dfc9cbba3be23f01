//! Bad input never crashes anything and always tells the user.
//!
//! Real binaries, real PostgreSQL, osmem-server, grpcurl:
//! - a wrong PostgreSQL password: the agent's configuration check puts the
//!   connector in `error` with a readable message; a sync job started anyway
//!   ends `error` with that message, the connector's `last_sync_error` shows
//!   it, and both processes keep running; with the right password the same
//!   connector recovers (`connected`) and syncs;
//! - an invalid index name is INVALID_ARGUMENT naming the field; unknown ids
//!   are NOT_FOUND; a sync job for an unconfigured connector is
//!   FAILED_PRECONDITION with what to do.

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};

use ferry_tests::certs::TestPki;
use ferry_tests::osmem::Osmem;
use ferry_tests::postgres::PgCluster;
use ferry_tests::process::{
    json_i64, wait_until, Agent, AgentConfig, ClientTls, ControlPlane, ControlPlaneConfig, Grpcurl, ServerTls,
};

const TIMEOUT: Duration = Duration::from_secs(90);
const C: &str = "ferry.v1.ConnectorService";
const J: &str = "ferry.v1.SyncJobService";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_reported_on_connector_and_job_and_nothing_crashes() {
    let grpc = Grpcurl::find().expect("grpcurl");
    let pg = PgCluster::start().expect("PostgreSQL");
    pg.create_database("shop").await.unwrap();
    pg.execute("shop", "CREATE TABLE item (id int PRIMARY KEY, name text); INSERT INTO item SELECT g, 'item ' || g FROM generate_series(1, 25) g;")
        .await
        .unwrap();
    let es = Osmem::start().expect("osmem-server");
    let pki = TestPki::new().unwrap();
    let server = pki.write_server_cert().unwrap();
    let tls = ServerTls { cert: server.cert, key: server.key, client_ca: pki.write_ca().unwrap() };
    let mut cp = ControlPlane::start(ControlPlaneConfig::new(es.url(), tls).unwrap()).expect("control plane");
    let admin = cp.admin_addr();
    let call = |m: &'static str, body: Value| {
        let grpc = grpc.clone();
        let admin = admin.clone();
        async move { grpc.call(&admin, m, &body).await }
    };

    // Input errors name the field or say what to do.
    let e = grpc
        .call_err(
            &admin,
            &format!("{C}/PutConnector"),
            &json!({"connector_id": "c", "index_name": "Bad Index", "service_type": "postgresql"}),
        )
        .await
        .unwrap();
    assert_eq!(e.code, "InvalidArgument", "{e}");
    assert!(e.message.contains("index_name"), "{e}");
    let e =
        grpc.call_err(&admin, &format!("{C}/GetConnector"), &json!({"connector_id": "nope"})).await.unwrap();
    assert_eq!(e.code, "NotFound", "{e}");
    let e = grpc.call_err(&admin, &format!("{J}/GetSyncJob"), &json!({"sync_job_id": "nope"})).await.unwrap();
    assert_eq!(e.code, "NotFound", "{e}");

    call(
        "ferry.v1.ConnectorService/PutConnector",
        json!({"connector_id": "shop", "name": "Shop", "index_name": "shop", "service_type": "postgresql"}),
    )
    .await
    .unwrap();
    let e =
        grpc.call_err(&admin, &format!("{J}/CreateSyncJob"), &json!({"connector_id": "shop"})).await.unwrap();
    assert_eq!(e.code, "FailedPrecondition", "{e}");
    assert!(e.message.contains("agent"), "{e}");

    let cert = pki.write_client_cert("agent-e").unwrap();
    let mut agent = Agent::start(
        AgentConfig::new(
            &cp.agents_url(),
            ClientTls { ca: pki.write_ca().unwrap(), cert: cert.cert, key: cert.key },
        )
        .connector("shop", "postgresql"),
    )
    .expect("agent");
    wait_until("needs_configuration", TIMEOUT, || async {
        let c = call("ferry.v1.ConnectorService/GetConnector", json!({"connector_id": "shop"})).await?;
        Ok((c["connector"]["status"] == "CONNECTOR_STATUS_NEEDS_CONFIGURATION").then_some(()))
    })
    .await
    .unwrap();

    let mut values = json!({
        "host": pg.host(), "port": pg.port(), "username": pg.superuser(), "password": "not-the-password",
        "database": "shop", "schema": "public", "tables": "item"
    });
    call(
        "ferry.v1.ConnectorService/UpdateConfiguration",
        json!({"connector_id": "shop", "values": values.clone()}),
    )
    .await
    .unwrap();
    let c = wait_until("connector error after the failed check", TIMEOUT, || async {
        let c = call("ferry.v1.ConnectorService/GetConnector", json!({"connector_id": "shop"})).await?;
        Ok((c["connector"]["status"] == "CONNECTOR_STATUS_ERROR").then_some(c["connector"].clone()))
    })
    .await
    .unwrap();
    let err = c["error"].as_str().unwrap_or_default().to_owned();
    assert!(err.contains("password authentication failed"), "connector error is not readable: {err:?}");
    assert!(!err.contains("not-the-password"), "the password leaked into the error: {err}");
    assert_eq!(c["configuration"]["password"]["value"], "**********");

    // A job started anyway fails with the same story.
    let created = call(
        "ferry.v1.SyncJobService/CreateSyncJob",
        json!({"connector_id": "shop", "job_type": "JOB_TYPE_FULL"}),
    )
    .await
    .unwrap();
    let job_id = created["syncJob"]["id"].as_str().unwrap().to_owned();
    let job = wait_until("job error", TIMEOUT, || async {
        let j = call("ferry.v1.SyncJobService/GetSyncJob", json!({"sync_job_id": job_id})).await?;
        let j = j["syncJob"].clone();
        match j["status"].as_str() {
            Some("SYNC_STATUS_ERROR") => Ok(Some(j)),
            Some("SYNC_STATUS_COMPLETED") => bail!("job completed with a wrong password: {j}"),
            _ => Ok(None),
        }
    })
    .await
    .unwrap();
    let job_err = job["error"].as_str().unwrap_or_default();
    assert!(job_err.contains("password authentication failed"), "job error: {job_err:?}");
    let c = call("ferry.v1.ConnectorService/GetConnector", json!({"connector_id": "shop"})).await.unwrap();
    assert_eq!(c["connector"]["lastSyncStatus"], "SYNC_STATUS_ERROR");
    assert!(c["connector"]["lastSyncError"]
        .as_str()
        .unwrap_or_default()
        .contains("password authentication failed"));
    assert!(cp.service.is_running(), "control plane died:\n{}", cp.logs());
    assert!(agent.service.is_running(), "agent died:\n{}", agent.logs());

    // Fixing the password heals the connector, and the sync works.
    values["password"] = json!(pg.password());
    call("ferry.v1.ConnectorService/UpdateConfiguration", json!({"connector_id": "shop", "values": values}))
        .await
        .unwrap();
    wait_until("connected after the fix", TIMEOUT, || async {
        let c = call("ferry.v1.ConnectorService/GetConnector", json!({"connector_id": "shop"})).await?;
        Ok((c["connector"]["status"] == "CONNECTOR_STATUS_CONNECTED").then_some(()))
    })
    .await
    .unwrap();
    let created =
        call("ferry.v1.SyncJobService/CreateSyncJob", json!({"connector_id": "shop"})).await.unwrap();
    let job_id = created["syncJob"]["id"].as_str().context("job id").unwrap().to_owned();
    let job = wait_until("job completed", TIMEOUT, || async {
        let j = call("ferry.v1.SyncJobService/GetSyncJob", json!({"sync_job_id": job_id})).await?;
        let j = j["syncJob"].clone();
        match j["status"].as_str() {
            Some("SYNC_STATUS_COMPLETED") => Ok(Some(j)),
            Some("SYNC_STATUS_ERROR") => bail!("job failed: {j}"),
            _ => Ok(None),
        }
    })
    .await
    .unwrap();
    assert_eq!(json_i64(&job["indexedDocumentCount"]), 25);
    ensure_count(&es, "shop", 25).await.unwrap();
}

async fn ensure_count(es: &Osmem, index: &str, n: u64) -> anyhow::Result<()> {
    let got = es.count(index).await?;
    ensure!(got == n, "{index}/_count is {got}, expected {n}");
    Ok(())
}
