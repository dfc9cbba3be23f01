//! Shared set-up of the fault tests (`tests/tests/resilience_*.rs`,
//! `tests/tests/authorization.rs`): a PostgreSQL table of N rows, osmem, a
//! PKI, control planes tuned for short leases and small batches, agents, and
//! an [`Admin`] client that drives the admin API with grpcurl.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};

use crate::certs::TestPki;
use crate::osmem::Osmem;
use crate::postgres::PgCluster;
use crate::process::{
    json_i64, wait_until, AgentConfig, ClientTls, ControlPlane, ControlPlaneConfig, Grpcurl, ServerTls,
};

pub const CONNECTORS: &str = "ferry.v1.ConnectorService";
pub const SYNC_JOBS: &str = "ferry.v1.SyncJobService";

/// Batches of this many documents: fine-grained checkpoints (the default,
/// 5,000, would put a 20,000-row table in four batches).
pub const BATCH_DOCUMENTS: u32 = 500;
/// The flow-control window of the tests' control planes. osmem-server runs
/// one request at a time, so every state read or write (GetSyncJob, a
/// cancel) waits behind what is already handed to it: window x batch
/// documents. The default 8 x 500 is ~20 s of typed-index bulk on a loaded
/// 2-core machine (grpcurl's 30 s deadline was hit); 4 x 500 halves it.
/// Elasticsearch indexes bulks concurrently and has no such queue.
pub const UNACKED_BATCHES: u32 = 4;
/// The control planes' `jobs.lease_timeout_s` (the minimum accepted).
pub const LEASE_TIMEOUT_S: u64 = 5;

/// PostgreSQL, osmem and a PKI.
pub struct World {
    pub pg: PgCluster,
    pub es: Osmem,
    pub pki: TestPki,
    pub grpc: Grpcurl,
    pub ca: PathBuf,
    pub server_tls: ServerTls,
}

impl World {
    pub fn start() -> anyhow::Result<World> {
        World::start_on(PgCluster::start()?)
    }

    /// [`World::start`] on a PostgreSQL with `wal_level = logical`
    /// ([`PgCluster::start_logical`]), for incremental sync.
    pub fn start_logical() -> anyhow::Result<World> {
        World::start_on(PgCluster::start_logical()?)
    }

    /// [`World::start`] on the given PostgreSQL.
    pub fn start_on(pg: PgCluster) -> anyhow::Result<World> {
        let grpc = Grpcurl::find()?;
        let es = Osmem::start()?;
        let pki = TestPki::new()?;
        let ca = pki.write_ca()?;
        let server = pki.write_server_cert()?;
        let server_tls = ServerTls { cert: server.cert, key: server.key, client_ca: ca.clone() };
        Ok(World { pg, es, pki, grpc, ca, server_tls })
    }

    /// Database `db` with table `item` of `rows` rows (ids 1..=rows, ~200
    /// bytes each).
    pub async fn load_items(&self, db: &str, rows: u64) -> anyhow::Result<()> {
        self.pg.create_database(db).await?;
        self.pg
            .execute(
                db,
                &format!(
                    "CREATE TABLE item (id bigint PRIMARY KEY, name text NOT NULL, price numeric(10,2), body text);
                     INSERT INTO item SELECT g, 'item ' || g, g * 0.25, repeat(md5(g::text), 5)
                       FROM generate_series(1, {rows}) g;"
                ),
            )
            .await
            .context("load the item table")
    }

    /// A control plane on free ports in front of `es_url`, with a
    /// [`LEASE_TIMEOUT_S`] lease, [`BATCH_DOCUMENTS`]-document batches, a
    /// window of [`UNACKED_BATCHES`] and a fast dispatcher.
    pub fn control_plane_config(&self, es_url: &str) -> anyhow::Result<ControlPlaneConfig> {
        let mut c = ControlPlaneConfig::new(es_url, self.server_tls.clone())?;
        c.env = vec![
            ("FERRY_JOBS__LEASE_TIMEOUT_S".into(), LEASE_TIMEOUT_S.to_string()),
            ("FERRY_JOBS__MAX_BATCH_DOCUMENTS".into(), BATCH_DOCUMENTS.to_string()),
            ("FERRY_JOBS__MAX_UNACKED_BATCHES".into(), UNACKED_BATCHES.to_string()),
            ("FERRY_JOBS__POLL_INTERVAL_MS".into(), "200".into()),
        ];
        Ok(c)
    }

    /// A control plane ([`World::control_plane_config`]) on this world's
    /// Elasticsearch.
    pub fn start_control_plane(&self) -> anyhow::Result<ControlPlane> {
        ControlPlane::start(self.control_plane_config(self.es.url())?)
    }

    /// Client TLS files for an agent whose identity (CN) is `cn`.
    pub fn agent_tls(&self, cn: &str) -> anyhow::Result<ClientTls> {
        let cert = self.pki.write_client_cert(cn)?;
        Ok(ClientTls { ca: self.ca.clone(), cert: cert.cert, key: cert.key })
    }

    /// An agent `cn` dialing `url`, serving `connector` (postgresql).
    pub fn agent_config(&self, url: &str, cn: &str, connector: &str) -> anyhow::Result<AgentConfig> {
        Ok(AgentConfig::new(url, self.agent_tls(cn)?).connector(connector, "postgresql"))
    }

    /// Connector configuration values for database `db`, table `item`.
    pub fn pg_values(&self, db: &str) -> Value {
        json!({
            "host": self.pg.host(), "port": self.pg.port(), "username": self.pg.superuser(),
            "password": self.pg.password(), "database": db, "schema": "public", "tables": "item"
        })
    }
}

/// The admin API of one control plane, through grpcurl.
#[derive(Clone)]
pub struct Admin {
    pub grpc: Grpcurl,
    pub addr: String,
}

/// How long a step may take on a busy 2-core machine.
pub const STEP: Duration = Duration::from_secs(120);

impl Admin {
    pub fn new(grpc: &Grpcurl, addr: String) -> Admin {
        Admin { grpc: grpc.clone(), addr }
    }

    pub async fn call(&self, method: &str, request: Value) -> anyhow::Result<Value> {
        self.grpc.call(&self.addr, method, &request).await
    }

    pub async fn put_connector(&self, id: &str, index: &str) -> anyhow::Result<()> {
        self.call(
            &format!("{CONNECTORS}/PutConnector"),
            json!({"connector_id": id, "name": id, "index_name": index, "service_type": "postgresql"}),
        )
        .await?;
        Ok(())
    }

    pub async fn connector(&self, id: &str) -> anyhow::Result<Value> {
        let r = self.call(&format!("{CONNECTORS}/GetConnector"), json!({"connector_id": id})).await?;
        r.get("connector").cloned().context("GetConnector without connector")
    }

    /// Waits for an agent to register the connector, configures it and
    /// waits until an agent checked the values (`connected`).
    pub async fn configure(&self, id: &str, values: Value) -> anyhow::Result<()> {
        wait_until("the connector to be registered by an agent", STEP, || async {
            let c = self.connector(id).await?;
            Ok((c["status"] != "CONNECTOR_STATUS_CREATED").then_some(()))
        })
        .await?;
        self.call(
            &format!("{CONNECTORS}/UpdateConfiguration"),
            json!({"connector_id": id, "values": values}),
        )
        .await?;
        wait_until("the connector to be connected", STEP, || async {
            let c = self.connector(id).await?;
            match c["status"].as_str() {
                Some("CONNECTOR_STATUS_CONNECTED") => Ok(Some(())),
                Some("CONNECTOR_STATUS_ERROR") => bail!("connector in error: {c}"),
                _ => Ok(None),
            }
        })
        .await
    }

    /// Creates a full sync job; returns its id.
    pub async fn create_job(&self, connector: &str) -> anyhow::Result<String> {
        let r = self
            .call(
                &format!("{SYNC_JOBS}/CreateSyncJob"),
                json!({"connector_id": connector, "job_type": "JOB_TYPE_FULL"}),
            )
            .await?;
        let id = r["syncJob"]["id"].as_str().context("CreateSyncJob without syncJob.id")?.to_owned();
        ensure!(!id.is_empty(), "empty job id: {r}");
        Ok(id)
    }

    pub async fn job(&self, id: &str) -> anyhow::Result<Value> {
        let r = self.call(&format!("{SYNC_JOBS}/GetSyncJob"), json!({"sync_job_id": id})).await?;
        r.get("syncJob").cloned().context("GetSyncJob without syncJob")
    }

    /// Waits until the job is `in_progress` with at least `n` documents
    /// indexed; fails if it finishes first.
    pub async fn wait_indexed(&self, id: &str, n: i64) -> anyhow::Result<Value> {
        wait_until(&format!("job {id} to index {n} documents"), STEP, || async {
            let j = self.job(id).await?;
            match j["status"].as_str() {
                Some("SYNC_STATUS_IN_PROGRESS") if json_i64(&j["indexedDocumentCount"]) >= n => Ok(Some(j)),
                Some("SYNC_STATUS_PENDING" | "SYNC_STATUS_IN_PROGRESS") => Ok(None),
                _ => bail!("job finished before the fault could be injected: {j}"),
            }
        })
        .await
    }

    /// Waits until the job completes (an error or cancel fails).
    pub async fn wait_completed(&self, id: &str, timeout: Duration) -> anyhow::Result<Value> {
        wait_until(&format!("job {id} to complete"), timeout, || async {
            let j = self.job(id).await?;
            match j["status"].as_str() {
                Some("SYNC_STATUS_COMPLETED") => Ok(Some(j)),
                Some("SYNC_STATUS_PENDING" | "SYNC_STATUS_IN_PROGRESS") => Ok(None),
                _ => bail!("job did not complete: {j}"),
            }
        })
        .await
    }
}

/// `metadata.documents_per_attempt` of a job (protobuf JSON) as numbers.
pub fn documents_per_attempt(job: &Value) -> Vec<u64> {
    job["metadata"]["documents_per_attempt"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(0.0) as u64).collect())
        .unwrap_or_default()
}

/// A number in a job's `metadata` (Struct numbers are doubles).
pub fn metadata_u64(job: &Value, key: &str) -> Option<u64> {
    job["metadata"][key].as_f64().map(|f| f as u64)
}
