//! Incremental sync from PostgreSQL's logical replication (`pgoutput`).
//!
//! Contracts:
//! - **Names**: one publication and one logical replication slot per
//!   connector, both `ferry_<connector id, sanitised>_<8 hex of its md5>`
//!   ([`names`]), created and managed by the agent. The publication lists
//!   the configured tables that have a primary key (`publish_via_partition_root`
//!   so partitions are published as their parent, as the full sync reads
//!   them); it is brought in line with the configuration on every job.
//!   Tables without a primary key are never published: PostgreSQL would
//!   refuse the application's UPDATE/DELETE on a published table without a
//!   replica identity, and without a key there is no document id (the full
//!   sync skips them too). They are listed in `skipped_tables` with the
//!   reason.
//! - **Cursor** (the job checkpoint, stored by the control plane as the
//!   connector's `sync_cursor`): `{"slot", "publication", "lsn"}` where
//!   `lsn` is the end of the last transaction handed over, `X/Y`. A cursor
//!   without `lsn` is a snapshot that did not finish.
//! - **First run** (no cursor, or a snapshot that did not finish): the slot
//!   is (re)created with `EXPORT_SNAPSHOT`, every table is read in that
//!   snapshot (`SET TRANSACTION SNAPSHOT`, the full sync's reader), then the
//!   stream starts at the slot's consistent point on the same connection:
//!   nothing falls between. A cursor whose slot vanished starts over the
//!   same way (`resnapshot_reason` on the job).
//! - **Changes**: insert and update → index (the whole row); an update
//!   with unchanged TOASTed columns (not sent by PostgreSQL) → partial
//!   update of the columns that were sent; delete → delete; TRUNCATE →
//!   delete-matching `{table, schema, database}`. The version of each change
//!   is its WAL position, so two changes of one row are ordered. An update
//!   that changes the primary key deletes the old id first.
//! - **Confirmation**: `confirmed_flush_lsn` is sent (standby status
//!   update) only up to the cursor of the acknowledged prefix; when
//!   everything handed over is acknowledged and no transaction is open, up
//!   to the server's keepalive position (so an idle slot does not hold WAL).
//!   Status updates go out from their own task at least every
//!   `wal_sender_timeout / 3` (10 s at most) even while Elasticsearch
//!   applies back-pressure.
//! - **Memory**: a transaction is never buffered: each change is sent as it
//!   is decoded, behind the flow-control window, so a 1M-row transaction
//!   streams with flat memory (PostgreSQL spills it to disk while decoding).
//! - **Batching**: the open batch goes out when full, when the stream is
//!   idle (200 ms without a message), and at a commit once the last send
//!   is [`FLUSH_EVERY`] old: under a steady stream a commit waits at most
//!   about that long in the agent.
//! - **Modes**: drain stops once the stream passed the WAL position current
//!   at job start and everything is acknowledged; continuous runs until
//!   canceled.

pub mod pgoutput;
pub mod sender;
pub mod values;
pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ferry_sdk::{SourceError, SyncStopped};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use self::pgoutput::{Message, Relation, TupleValue};
use self::values::TextCodec;
use self::wire::{format_lsn, parse_lsn, ReplicationConn, StreamMessage, StreamReader, WireError};
use super::catalog::{self, query_error, quote_ident, Column, TableInfo};
use super::config::PostgresConfig;
use super::reader::{DocContext, TablePlan, TableReader};
use super::{connect, prepare_session, DocumentSink};

/// GUCs of the replication session: the text pgoutput sends is rendered
/// with them ([`values`]).
const SESSION_OPTIONS: &str =
    "-c DateStyle=ISO -c TimeZone=UTC -c extra_float_digits=3 -c bytea_output=hex -c IntervalStyle=postgres";

/// Slot lag (bytes of WAL the slot holds) above which the job reports a
/// warning: an abandoned or stuck stream fills the server's disk.
pub const LAG_WARNING_BYTES: i64 = 1 << 30;

/// One change for the control plane to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The whole document (insert, update).
    Index {
        id: String,
        source: Vec<u8>,
    },
    /// Only the fields present; the document keeps the others (unchanged
    /// TOASTed columns).
    Update {
        id: String,
        source: Vec<u8>,
    },
    Delete {
        id: String,
    },
    /// Delete every document whose fields equal these (TRUNCATE).
    DeleteMatching {
        fields: Vec<u8>,
    },
}

/// Where changes go: the SDK's sender in the agent, a collecting sink in
/// tests.
#[async_trait]
pub trait ChangeSink: DocumentSink {
    /// Hand over one change; `version` orders changes of one document.
    async fn apply(&mut self, change: Change, version: u64) -> Result<(), SyncStopped>;
    /// Send what is batched now (the stream went idle: changes must not
    /// wait in an open batch).
    async fn flush(&mut self) -> Result<(), SyncStopped>;
    /// Wait until everything handed over is acknowledged.
    async fn barrier(&mut self) -> Result<(), SyncStopped>;
    /// The checkpoint of the acknowledged prefix (the latest), if any.
    fn acknowledged(&mut self) -> Option<Vec<u8>>;
    /// Stats for the job (rate-limited by the runtime).
    async fn progress(&mut self, metadata: serde_json::Map<String, Value>) -> Result<(), SyncStopped>;
}

/// How long an incremental job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Apply what is there at job start, then complete.
    Drain,
    /// Stream until canceled.
    Continuous,
}

/// The position of a connector's stream (its `sync_cursor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub slot: String,
    pub publication: String,
    /// End of the last transaction handed over; `None` while the initial
    /// snapshot runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
}

impl Cursor {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A cursor, or `None` when the bytes are empty or not ours.
    pub fn parse(bytes: &[u8]) -> Option<Cursor> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        serde_json::from_slice(bytes).ok()
    }

    fn lsn(&self) -> Option<u64> {
        self.lsn.as_deref().and_then(parse_lsn)
    }
}

/// Publication and slot name of a connector: `ferry_` + the id lower-cased
/// with anything but `[a-z0-9_]` as `_`, cut to fit 63 bytes, + `_` + 8 hex
/// of the id's md5 (ids differing only in case stay apart).
pub fn names(connector_id: &str) -> String {
    let mut clean: String = connector_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    clean.truncate(63 - "ferry_".len() - 9);
    let hash = hex::encode(Md5::digest(connector_id.as_bytes()));
    format!("ferry_{clean}_{}", &hash[..8])
}

/// One incremental job.
pub struct IncrementalRequest<'a> {
    pub cfg: &'a PostgresConfig,
    pub connector_id: &'a str,
    /// The connector's `sync_cursor` (or the job's resume checkpoint).
    pub cursor: Option<&'a [u8]>,
    pub mode: Mode,
    pub cancel: &'a CancellationToken,
}

/// What an incremental job did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncrementalReport {
    /// Rows read by the initial snapshot (0 when streaming from a cursor).
    pub snapshot_rows: u64,
    pub changes: u64,
    pub deletes: u64,
    /// The position reached (end of the last transaction handed over).
    pub lsn: String,
    pub skipped_tables: Vec<String>,
}

/// Why the server cannot do logical replication for this connector, with
/// the fix; `None` when it can.
async fn preflight(client: &Client, cfg: &PostgresConfig) -> Result<i32, SourceError> {
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), \
                    (SELECT rolreplication OR rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), \
                    current_setting('server_version_num')::int4",
            &[],
        )
        .await
        .map_err(|e| query_error("check the server's replication settings", &e))?;
    let wal_level: String = row.get(0);
    let can_replicate: Option<bool> = row.get(1);
    let version: i32 = row.get(2);
    if wal_level != "logical" {
        return Err(SourceError::Configuration(format!(
            "PostgreSQL at {} has wal_level = {wal_level}; incremental sync reads changes through logical \
             replication, which needs wal_level = logical: set it in postgresql.conf (or run ALTER SYSTEM SET \
             wal_level = logical) and restart PostgreSQL (a reload is not enough)",
            cfg.address()
        )));
    }
    if can_replicate != Some(true) {
        return Err(SourceError::Configuration(format!(
            "role \"{}\" lacks the REPLICATION attribute incremental sync needs to read changes: run ALTER ROLE {} \
             WITH REPLICATION as a superuser",
            cfg.username,
            quote_ident(&cfg.username)
        )));
    }
    if version < 100_000 {
        return Err(SourceError::Configuration(
            "incremental sync needs PostgreSQL 10 or later (pgoutput); run full syncs on this server".into(),
        ));
    }
    Ok(version)
}

/// Make the publication list exactly `tables`.
async fn ensure_publication(
    client: &Client,
    name: &str,
    schema: &str,
    tables: &[String],
    version: i32,
) -> Result<(), SourceError> {
    let list =
        tables.iter().map(|t| format!("{}.{}", quote_ident(schema), quote_ident(t))).collect::<Vec<_>>();
    let fix = format!(
        "the connector's user must own the tables to publish them: have their owner (or a superuser) run \
         CREATE PUBLICATION {} FOR TABLE {}; the agent then uses it",
        quote_ident(name),
        list.join(", ")
    );
    let pub_error = |what: &str, e: &tokio_postgres::Error| match e.as_db_error() {
        Some(db) if db.code() == &tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE => {
            SourceError::Configuration(format!(
                "cannot {what} publication \"{name}\": {}: {fix}",
                db.message()
            ))
        }
        _ => query_error(&format!("{what} publication \"{name}\""), e),
    };
    let exists = client
        .query_opt("SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1", &[&name])
        .await
        .map_err(|e| query_error("look up the publication", &e))?
        .is_some();
    if !exists {
        let with = if version >= 130_000 { " WITH (publish_via_partition_root = true)" } else { "" };
        let sql = format!("CREATE PUBLICATION {} FOR TABLE {}{with}", quote_ident(name), list.join(", "));
        return client.batch_execute(&sql).await.map_err(|e| pub_error("create", &e));
    }
    let rows = client
        .query(
            "SELECT tablename::text FROM pg_catalog.pg_publication_tables WHERE pubname = $1 AND schemaname = $2",
            &[&name, &schema],
        )
        .await
        .map_err(|e| query_error("list the publication's tables", &e))?;
    let mut have: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    have.sort();
    let mut want = tables.to_vec();
    want.sort();
    if have != want {
        let sql = format!("ALTER PUBLICATION {} SET TABLE {}", quote_ident(name), list.join(", "));
        client.batch_execute(&sql).await.map_err(|e| pub_error("alter", &e))?;
    }
    Ok(())
}

/// `SourceError` for a failure on the replication connection.
fn wire_error(cfg: &PostgresConfig, what: &str, e: WireError) -> SourceError {
    match &e {
        WireError::Setup(s) => s.clone(),
        WireError::Server(s) => match s.code.as_str() {
            "53400" => SourceError::Configuration(format!(
                "{what}: {}: every replication slot is in use: drop unused slots (SELECT slot_name, active FROM \
                 pg_replication_slots; SELECT pg_drop_replication_slot('<name>')) or raise max_replication_slots \
                 and restart PostgreSQL",
                s.message
            )),
            "55000" if s.message.contains("wal_level") => SourceError::Configuration(format!(
                "{what}: {}: set wal_level = logical in postgresql.conf and restart PostgreSQL",
                s.message
            )),
            "42501" | "28000" => SourceError::Configuration(format!(
                "{what}: {}: run ALTER ROLE {} WITH REPLICATION as a superuser, and allow replication connections \
                 for this user in pg_hba.conf",
                s.message,
                quote_ident(&cfg.username)
            )),
            "28P01" => SourceError::Unreachable(format!("{what}: {}: check username and password", s.message)),
            "55006" => SourceError::Unreachable(format!(
                "{what}: {}: another session uses this connector's replication slot; it is free once that session \
                 ends",
                s.message
            )),
            _ => SourceError::Internal(format!("{what}: {s}")),
        },
        WireError::Io(_) | WireError::Timeout(_) => {
            SourceError::Unreachable(format!("{what}: PostgreSQL at {}: {e}", cfg.address()))
        }
        WireError::Protocol(_) => SourceError::Internal(format!("{what}: {e}")),
    }
}

/// Drop the connector's slot and publication (the connector was deleted:
/// an abandoned slot keeps WAL forever). Missing ones are fine.
pub async fn release(cfg: &PostgresConfig, connector_id: &str) -> Result<(), SourceError> {
    let name = names(connector_id);
    let client = connect::connect(cfg).await?;
    // A session still streaming from the slot holds it: end it first.
    client
        .execute(
            "SELECT pg_catalog.pg_terminate_backend(active_pid) FROM pg_catalog.pg_replication_slots \
             WHERE slot_name = $1 AND active_pid IS NOT NULL",
            &[&name],
        )
        .await
        .map_err(|e| query_error("stop the session on the replication slot", &e))?;
    for _ in 0..50 {
        let r = client
            .execute(
                "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots \
                 WHERE slot_name = $1",
                &[&name],
            )
            .await;
        match r {
            Ok(_) => break,
            // Still active for a moment after the terminate.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => return Err(query_error("drop the replication slot", &e)),
        }
    }
    client
        .batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote_ident(&name)))
        .await
        .map_err(|e| query_error("drop the publication", &e))?;
    Ok(())
}

/// Run one incremental job.
pub async fn incremental_sync<S: ChangeSink + ?Sized>(
    req: IncrementalRequest<'_>,
    sink: &mut S,
) -> Result<IncrementalReport, SourceError> {
    let cfg = req.cfg;
    let name = names(req.connector_id);
    let client = connect::connect(cfg).await?;
    prepare_session(&client, cfg).await?;
    let version = preflight(&client, cfg).await?;

    let mut report = IncrementalReport::default();
    let mut plans = Vec::new();
    for t in catalog::resolve_tables(&client, &cfg.schema, &cfg.tables).await? {
        let info = catalog::describe_table(&client, &cfg.schema, &t).await?;
        if info.primary_key.is_empty() {
            report.skipped_tables.push(t);
            continue;
        }
        plans.push(info);
    }
    if !report.skipped_tables.is_empty() {
        tracing::warn!(tables = ?report.skipped_tables,
            "tables without a primary key are not streamed: add a primary key (the full sync skips them too)");
        sink.set_metadata(
            "skipped_tables",
            json!({
                "tables": report.skipped_tables,
                "reason": "no primary key: no document id, and publishing them would make PostgreSQL refuse \
                           their UPDATE/DELETE (no replica identity); add a primary key"
            }),
        );
    }
    if plans.is_empty() {
        return Err(SourceError::Configuration(
            "no configured table has a primary key, so there is nothing to stream: add primary keys".into(),
        ));
    }
    let table_names: Vec<String> = plans.iter().map(|t| t.name.clone()).collect();
    ensure_publication(&client, &name, &cfg.schema, &table_names, version).await?;

    // Drain mode: where "what is there at start" ends.
    let target: Option<u64> = match req.mode {
        Mode::Continuous => None,
        Mode::Drain => {
            let row = client
                .query_one("SELECT pg_catalog.pg_current_wal_lsn()::text", &[])
                .await
                .map_err(|e| query_error("read the current WAL position", &e))?;
            parse_lsn(&row.get::<_, String>(0))
        }
    };

    let slot_row = client
        .query_opt(
            "SELECT database::text, plugin::text FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .map_err(|e| query_error("look up the replication slot", &e))?;
    let cursor = req.cursor.and_then(Cursor::parse).filter(|c| c.slot == name);
    let resume_at = match (&cursor, &slot_row) {
        (Some(c), Some(_)) => c.lsn(),
        (Some(c), None) if c.lsn().is_some() => {
            tracing::warn!(slot = %name, "the connector's replication slot is gone; reading the tables again");
            sink.set_metadata(
                "resnapshot_reason",
                json!(
                    "the replication slot was dropped outside Ferry: changes since the cursor were lost, so \
                       the tables were read again (rows deleted meanwhile stay until the next full sync)"
                ),
            );
            None
        }
        _ => None,
    };
    let mut repl = ReplicationConn::connect(cfg, SESSION_OPTIONS)
        .await
        .map_err(|e| wire_error(cfg, "open the replication connection", e))?;
    let deadline = Duration::from_secs(60);

    let start = match resume_at {
        Some(lsn) => lsn,
        None => {
            if slot_row.is_some() {
                // A snapshot that did not finish: its exported snapshot is gone.
                client
                    .execute("SELECT pg_catalog.pg_drop_replication_slot($1)", &[&name])
                    .await
                    .map_err(|e| query_error("drop the unfinished replication slot", &e))?;
            }
            let rows = repl
                .simple_query(
                    &format!(
                        "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
                        quote_ident(&name)
                    ),
                    deadline,
                )
                .await
                .map_err(|e| wire_error(cfg, "create the replication slot", e))?;
            let row = rows
                .first()
                .ok_or_else(|| SourceError::Internal("CREATE_REPLICATION_SLOT: no answer".into()))?;
            let consistent = row.get(1).cloned().flatten().as_deref().and_then(parse_lsn);
            let snapshot = row.get(2).cloned().flatten();
            let (Some(consistent), Some(snapshot)) = (consistent, snapshot) else {
                return Err(SourceError::Internal("CREATE_REPLICATION_SLOT: unexpected answer".into()));
            };
            sink.checkpoint(Cursor { slot: name.clone(), publication: name.clone(), lsn: None }.to_bytes());
            report.snapshot_rows = read_snapshot(&client, cfg, &plans, &snapshot, req.cancel, sink).await?;
            sink.set_metadata("snapshot_rows", json!(report.snapshot_rows));
            consistent
        }
    };
    sink.checkpoint(
        Cursor { slot: name.clone(), publication: name.clone(), lsn: Some(format_lsn(start)) }.to_bytes(),
    );

    let sql = format!(
        "START_REPLICATION SLOT {} LOGICAL {} (\"proto_version\" '1', \"publication_names\" '{}')",
        quote_ident(&name),
        format_lsn(start),
        quote_ident(&name).replace('\'', "''")
    );
    repl.start_replication(&sql, deadline).await.map_err(|e| wire_error(cfg, "start streaming", e))?;
    let status_every = status_interval(&client).await;
    let (reader, writer) = repl.split();
    let mut stream = Stream {
        cfg,
        client: &client,
        name: name.clone(),
        connector: req.connector_id.to_owned(),
        relations: HashMap::new(),
        to_json: HashMap::new(),
        report,
        start,
        last_commit_end: start,
        acked: start,
        server_pos: 0,
        in_txn: false,
        commit_time: 0,
        pending: VecDeque::new(),
        applied: 0,
        last_applied_commit_time: None,
    };
    stream.run(reader, writer, status_every, target, req.cancel, sink).await
}

/// How often to send a status update: a third of `wal_sender_timeout`,
/// at most 10 s.
async fn status_interval(client: &Client) -> Duration {
    let ms = client
        .query_one("SELECT setting::int8 FROM pg_catalog.pg_settings WHERE name = 'wal_sender_timeout'", &[])
        .await
        .ok()
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(60_000);
    let third = if ms > 0 { Duration::from_millis((ms / 3) as u64) } else { Duration::from_secs(10) };
    third.clamp(Duration::from_millis(500), Duration::from_secs(10))
}

/// Read every table in the exported snapshot (documents only; the cursor
/// stays "snapshot running" until the stream starts).
async fn read_snapshot<S: ChangeSink + ?Sized>(
    client: &Client,
    cfg: &PostgresConfig,
    tables: &[TableInfo],
    snapshot: &str,
    cancel: &CancellationToken,
    sink: &mut S,
) -> Result<u64, SourceError> {
    let ctx = DocContext::now(&cfg.database, &cfg.schema);
    let mut total = 0;
    let mut check = super::ids::CollisionCheck::default();
    for info in tables {
        let plan = TablePlan::new(&ctx, info.clone())?;
        sink.describe(&plan.schema()).await?;
        let mut reader = TableReader::open_in_snapshot(client, &plan, None, Some(snapshot)).await?;
        loop {
            let doc = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(SyncStopped::Canceled.into()),
                d = reader.next(&mut check) => d?,
            };
            let Some(doc) = doc else { break };
            sink.send(doc.id, doc.source).await?;
        }
        total += reader.finish().await?;
        sink.set_metadata("rows_read", json!(total));
    }
    super::report_collisions(&check, sink);
    Ok(total)
}

/// A table as the stream describes it, planned like the full sync.
struct RelPlan {
    plan: TablePlan,
    /// Per relation column: how its text becomes JSON, and its SQL type
    /// (for [`TextCodec::Server`]).
    codecs: Vec<(TextCodec, String)>,
    /// Relation column of each primary key column, in key order.
    key_pos: Vec<usize>,
    /// `_timestamp`..`database` tail for the commit time it was built for.
    suffix: (i64, Vec<u8>),
}

struct Stream<'a> {
    cfg: &'a PostgresConfig,
    client: &'a Client,
    name: String,
    /// Label of the `ferry_agent_replication_*` gauges.
    connector: String,
    relations: HashMap<u32, Option<RelPlan>>,
    to_json: HashMap<String, tokio_postgres::Statement>,
    report: IncrementalReport,
    start: u64,
    /// End of the last commit handed over.
    last_commit_end: u64,
    /// End of the last commit acknowledged.
    acked: u64,
    /// The server's position from keepalives.
    server_pos: u64,
    in_txn: bool,
    /// Commit time (PostgreSQL epoch µs) of the open transaction.
    commit_time: i64,
    /// Commits handed over, not yet acknowledged: (end, commit time,
    /// changes handed over up to it). Bounded: when full, the oldest go.
    pending: VecDeque<(u64, i64, u64)>,
    applied: u64,
    last_applied_commit_time: Option<i64>,
}

/// Removes the connector's `ferry_agent_replication_*` gauges when its
/// stream ends, however it ends.
struct ClearReplicationMetrics(String);

impl Drop for ClearReplicationMetrics {
    fn drop(&mut self) {
        ferry_sdk::metrics::AGENT.clear_replication(&self.0);
    }
}

/// The longest a commit waits in an open batch while the stream is busy
/// (an idle stream flushes at once): bounds commit -> acknowledged latency
/// at low and medium rates, where a batch would take seconds to fill; at
/// high rates batches fill (and go) sooner.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Commits remembered for lag and applied counts; beyond this the oldest
/// are forgotten (the stats get coarser, nothing else changes).
const MAX_PENDING_COMMITS: usize = 65_536;

impl Stream<'_> {
    async fn run<S: ChangeSink + ?Sized>(
        &mut self,
        mut reader: StreamReader,
        writer: wire::StatusWriter,
        status_every: Duration,
        target: Option<u64>,
        cancel: &CancellationToken,
        sink: &mut S,
    ) -> Result<IncrementalReport, SourceError> {
        let flush = Arc::new(AtomicU64::new(self.start));
        let (ping_tx, ping_rx) = mpsc::channel::<()>(1);
        let status_cancel = cancel.child_token();
        let status =
            tokio::spawn(status_task(writer, flush.clone(), ping_rx, status_every, status_cancel.clone()));
        let _stop_status = status_cancel.clone().drop_guard();
        let _clear_metrics = ClearReplicationMetrics(self.connector.clone());
        let mut last_tick = Instant::now();
        let mut last_progress = Instant::now();
        let mut last_lag_query: Option<Instant> = None;
        let mut slot_lag: Option<i64> = None;
        let mut last_ping = Instant::now();
        let mut last_flush = Instant::now();
        let mut flushed_to = self.start;

        loop {
            let msg = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(SyncStopped::Canceled.into()),
                m = reader.next(Duration::from_millis(200)) => m.map_err(|e| wire_error(self.cfg, "read the replication stream", e))?,
            };
            let idle = msg.is_none();
            match msg {
                None => {}
                Some(StreamMessage::XLogData { start, data, .. }) => {
                    let m = pgoutput::decode(data).map_err(|e| SourceError::Internal(e.to_string()))?;
                    self.handle(m, start, sink).await?;
                }
                Some(StreamMessage::Keepalive { end, reply }) => {
                    self.server_pos = self.server_pos.max(end);
                    if reply {
                        let _ = ping_tx.try_send(());
                    }
                }
                Some(StreamMessage::End) => {
                    return Err(SourceError::Unreachable(
                        "PostgreSQL ended the replication stream; the job resumes from its cursor".into(),
                    ))
                }
            }
            if idle
                || (!self.in_txn && self.last_commit_end > flushed_to && last_flush.elapsed() >= FLUSH_EVERY)
            {
                // A steady stream never goes idle: without this a commit
                // would wait in the open batch until it fills.
                sink.flush().await?;
                last_flush = Instant::now();
                flushed_to = self.last_commit_end;
            }
            if idle || last_tick.elapsed() >= Duration::from_millis(200) {
                last_tick = Instant::now();
                self.take_acks(sink);
                flush.store(self.confirmable(), Ordering::Relaxed);
                if let Some(t) = target {
                    if !self.in_txn && self.last_commit_end.max(self.server_pos).max(self.start) >= t {
                        return self.finish_drain(status, status_cancel, flush, sink).await;
                    }
                    if idle && last_ping.elapsed() >= Duration::from_millis(300) {
                        // Ask for a keepalive: its position tells when the
                        // stream passed the target with nothing to send.
                        last_ping = Instant::now();
                        let _ = ping_tx.try_send(());
                    }
                }
            }
            if last_progress.elapsed() >= Duration::from_secs(1) {
                last_progress = Instant::now();
                if last_lag_query.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                    last_lag_query = Some(Instant::now());
                    slot_lag = self.slot_lag().await;
                }
                let p = self.progress(slot_lag);
                sink.progress(p).await?;
            }
        }
    }

    /// Where the slot may be confirmed: the acknowledged prefix; the
    /// server's position when everything handed over is acknowledged.
    fn confirmable(&self) -> u64 {
        if !self.in_txn && self.acked >= self.last_commit_end {
            self.acked.max(self.server_pos)
        } else {
            self.acked
        }
    }

    fn take_acks<S: ChangeSink + ?Sized>(&mut self, sink: &mut S) {
        let Some(lsn) = sink.acknowledged().as_deref().and_then(Cursor::parse).and_then(|c| c.lsn()) else {
            return;
        };
        if lsn <= self.acked {
            return;
        }
        self.acked = lsn;
        while let Some(&(end, time, count)) = self.pending.front() {
            if end > lsn {
                break;
            }
            self.applied = count;
            self.last_applied_commit_time = Some(time);
            self.pending.pop_front();
        }
    }

    async fn finish_drain<S: ChangeSink + ?Sized>(
        &mut self,
        status: tokio::task::JoinHandle<Result<wire::StatusWriter, WireError>>,
        status_cancel: CancellationToken,
        flush: Arc<AtomicU64>,
        sink: &mut S,
    ) -> Result<IncrementalReport, SourceError> {
        sink.barrier().await?;
        self.take_acks(sink);
        let lag = self.slot_lag().await;
        let p = self.progress(lag);
        sink.progress(p).await?;
        let confirm = self.confirmable();
        flush.store(confirm, Ordering::Relaxed);
        status_cancel.cancel();
        if let Ok(Ok(mut writer)) = status.await {
            // Everything up to here is in Elasticsearch: let the slot move.
            let _ = writer.send_status(confirm, false).await;
            writer.close().await;
        }
        self.report.lsn = format_lsn(self.last_commit_end);
        Ok(self.report.clone())
    }

    async fn slot_lag(&self) -> Option<i64> {
        let row = self
            .client
            .query_opt(
                "SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), confirmed_flush_lsn)::int8 \
                 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&self.name],
            )
            .await
            .ok()??;
        row.get::<_, Option<i64>>(0)
    }

    fn progress(&self, slot_lag: Option<i64>) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("changes_applied".into(), json!(self.applied));
        m.insert("changes_sent".into(), json!(self.report.changes));
        m.insert("deletes_sent".into(), json!(self.report.deletes));
        m.insert("confirmed_lsn".into(), json!(format_lsn(self.acked)));
        m.insert("slot".into(), json!(self.name));
        // Seconds behind: the oldest commit not yet acknowledged.
        let lag_seconds = match self.pending.front() {
            Some(&(_, t, _)) => ((pg_now_micros() - t).max(0) as f64 / 1e6 * 10.0).round() / 10.0,
            None => 0.0,
        };
        m.insert("lag_seconds".into(), json!(lag_seconds));
        ferry_sdk::metrics::AGENT.set_replication(
            &self.connector,
            slot_lag,
            lag_seconds,
            self.last_applied_commit_time.map(|t| (t + 946_684_800_000_000) as f64 / 1e6),
        );
        if let Some(t) = self.last_applied_commit_time {
            m.insert("last_commit_time".into(), json!(rfc3339_micros(t)));
        }
        if let Some(lag) = slot_lag {
            m.insert("lag_bytes".into(), json!(lag));
            if lag > LAG_WARNING_BYTES {
                m.insert(
                    "slot_lag_warning".into(),
                    json!(format!(
                        "replication slot {} holds {} MiB of WAL not yet applied: PostgreSQL keeps it on disk until \
                         the stream catches up",
                        self.name,
                        lag >> 20
                    )),
                );
            }
        }
        m
    }

    async fn handle<S: ChangeSink + ?Sized>(
        &mut self,
        m: Message,
        lsn: u64,
        sink: &mut S,
    ) -> Result<(), SourceError> {
        match m {
            Message::Begin { commit_time, .. } => {
                self.in_txn = true;
                self.commit_time = commit_time;
            }
            Message::Commit { end_lsn, commit_time, .. } => {
                self.in_txn = false;
                self.last_commit_end = end_lsn;
                if self.pending.len() >= MAX_PENDING_COMMITS {
                    self.pending.pop_front();
                }
                self.pending.push_back((end_lsn, commit_time, self.report.changes));
                sink.checkpoint(
                    Cursor {
                        slot: self.name.clone(),
                        publication: self.name.clone(),
                        lsn: Some(format_lsn(end_lsn)),
                    }
                    .to_bytes(),
                );
            }
            Message::Relation(rel) => {
                let plan = self.plan_relation(rel).await?;
                // Keyed by OID: a Relation message replaces the plan (schema change).
                if let Some((oid, plan)) = plan {
                    self.relations.insert(oid, plan);
                }
            }
            Message::Insert { rel, new } => {
                if let Some((id, source)) = self.document(rel, &new, false).await? {
                    self.emit(Change::Index { id, source }, lsn, sink).await?;
                }
            }
            Message::Update { rel, old, new } => {
                let partial = new.contains(&TupleValue::Unchanged);
                let Some((id, source)) = self.document(rel, &new, partial).await? else { return Ok(()) };
                if let Some(old) = old {
                    if let Some(old_id) = self.key_id(rel, &old) {
                        if old_id != id {
                            // The primary key changed: the row moved to another id.
                            self.report.deletes += 1;
                            self.emit(Change::Delete { id: old_id }, lsn, sink).await?;
                            if partial {
                                tracing::warn!(document_id = %id,
                                    "primary key changed in an update that left TOASTed columns unchanged; the new document lacks them until the row is next updated or a full sync runs");
                            }
                        }
                    }
                }
                let change =
                    if partial { Change::Update { id, source } } else { Change::Index { id, source } };
                self.emit(change, lsn, sink).await?;
            }
            Message::Delete { rel, old } => match self.key_id(rel, &old) {
                Some(id) => {
                    self.report.deletes += 1;
                    self.emit(Change::Delete { id }, lsn, sink).await?;
                }
                None => tracing::warn!(relation = rel, "delete without the primary key's values; skipped"),
            },
            Message::Truncate { rels } => {
                for rel in rels {
                    let Some(Some(rp)) = self.relations.get(&rel) else { continue };
                    let mut fields = Vec::new();
                    fields.extend_from_slice(b"{\"table\":");
                    super::render::write_json_str(&mut fields, &rp.plan.table.name);
                    fields.extend_from_slice(b",\"schema\":");
                    super::render::write_json_str(&mut fields, &self.cfg.schema);
                    fields.extend_from_slice(b",\"database\":");
                    super::render::write_json_str(&mut fields, &self.cfg.database);
                    fields.push(b'}');
                    self.emit(Change::DeleteMatching { fields }, lsn, sink).await?;
                }
            }
            Message::Other(_) => {}
        }
        Ok(())
    }

    async fn emit<S: ChangeSink + ?Sized>(
        &mut self,
        c: Change,
        lsn: u64,
        sink: &mut S,
    ) -> Result<(), SourceError> {
        self.report.changes += 1;
        sink.apply(c, lsn).await?;
        Ok(())
    }

    /// Plan a relation: its columns as the stream sends them, base types
    /// and primary key from the catalog.
    async fn plan_relation(&mut self, rel: Relation) -> Result<Option<(u32, Option<RelPlan>)>, SourceError> {
        if rel.schema != self.cfg.schema {
            return Ok(Some((rel.oid, None)));
        }
        let oids: Vec<u32> = rel.columns.iter().map(|c| c.type_oid).collect();
        let rows = self
            .client
            .query(
                "SELECT t.oid, bt.typname::text, bt.oid, pg_catalog.format_type(t.oid, NULL) \
                 FROM pg_catalog.pg_type t \
                 JOIN pg_catalog.pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
                 WHERE t.oid = ANY($1)",
                &[&oids],
            )
            .await
            .map_err(|e| query_error("look up column types", &e))?;
        let types: HashMap<u32, (String, u32, String)> =
            rows.iter().map(|r| (r.get::<_, u32>(0), (r.get(1), r.get(2), r.get(3)))).collect();
        let pk_rows = self
            .client
            .query(
                "SELECT a.attname::text FROM pg_catalog.pg_index i \
                 CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS u(attnum, ord) \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.attnum \
                 WHERE i.indrelid = $1 AND i.indisprimary ORDER BY u.ord",
                &[&rel.oid],
            )
            .await
            .map_err(|e| query_error("look up the primary key", &e))?;
        let pk: Vec<String> = pk_rows.iter().map(|r| r.get(0)).collect();
        let columns: Vec<Column> = rel
            .columns
            .iter()
            .map(|c| {
                let (base_type, base_oid, sql_type) = types
                    .get(&c.type_oid)
                    .cloned()
                    .unwrap_or_else(|| (String::new(), c.type_oid, "text".into()));
                Column { name: c.name.clone(), sql_type, base_type, base_oid }
            })
            .collect();
        let key_pos: Option<Vec<usize>> =
            pk.iter().map(|k| columns.iter().position(|c| &c.name == k)).collect();
        let Some(key_pos) = key_pos.filter(|k| !k.is_empty()) else {
            tracing::warn!(table = %rel.name, "changes of a table without a primary key are skipped");
            return Ok(Some((rel.oid, None)));
        };
        let info = TableInfo {
            schema: rel.schema.clone(),
            name: rel.name.clone(),
            primary_key: key_pos.iter().map(|&i| columns[i].clone()).collect(),
            columns: columns.clone(),
        };
        let ctx = DocContext::now(&self.cfg.database, &self.cfg.schema);
        let plan = TablePlan::new(&ctx, info)?;
        let codecs = columns.iter().map(|c| (TextCodec::for_type(c.base_oid), c.sql_type.clone())).collect();
        Ok(Some((rel.oid, Some(RelPlan { plan, codecs, key_pos, suffix: (i64::MIN, Vec::new()) }))))
    }

    /// The id from a tuple's key columns (`None`: unknown table or a key
    /// value missing).
    fn key_id(&self, rel: u32, tuple: &[TupleValue]) -> Option<String> {
        let rp = self.relations.get(&rel)?.as_ref()?;
        rp.plan
            .build_id(|i| match tuple.get(rp.key_pos[i]) {
                Some(TupleValue::Text(t)) => std::str::from_utf8(t).map_err(|_| ()),
                _ => Err(()),
            })
            .ok()
    }

    /// The document of a row: every field, or (`partial`) only those sent.
    async fn document(
        &mut self,
        rel: u32,
        tuple: &[TupleValue],
        partial: bool,
    ) -> Result<Option<(String, Vec<u8>)>, SourceError> {
        let Some(id) = self.key_id(rel, tuple) else { return Ok(None) };
        let commit_time = self.commit_time;
        let Some(Some(rp)) = self.relations.get_mut(&rel) else { return Ok(None) };
        if rp.suffix.0 != commit_time {
            let ctx = DocContext {
                database: self.cfg.database.clone(),
                schema: self.cfg.schema.clone(),
                timestamp: rfc3339_micros(commit_time),
            };
            rp.suffix = (commit_time, ctx.suffix(&rp.plan.table.name));
        }
        let mut source = Vec::with_capacity(256);
        source.extend_from_slice(b"{\"id\":");
        super::render::write_json_str(&mut source, &id);
        let fields: Vec<(usize, Vec<u8>)> = rp.plan.field_keys().map(|(ci, k)| (ci, k.to_vec())).collect();
        for (ci, key) in fields {
            let value = tuple.get(ci).cloned().unwrap_or(TupleValue::Null);
            match value {
                TupleValue::Unchanged if partial => continue,
                TupleValue::Unchanged | TupleValue::Null => {
                    source.extend_from_slice(&key);
                    source.extend_from_slice(b"null");
                }
                TupleValue::Text(t) => {
                    source.extend_from_slice(&key);
                    let (codec, sql_type) = self.relations[&rel]
                        .as_ref()
                        .map(|r| r.codecs[ci].clone())
                        .unwrap_or((TextCodec::Server, "text".into()));
                    if !codec.write(&t, &mut source) {
                        let json = self.server_json(&sql_type, &t).await?;
                        source.extend_from_slice(json.as_bytes());
                    }
                }
            }
        }
        let Some(Some(rp)) = self.relations.get(&rel) else { return Ok(None) };
        source.extend_from_slice(&rp.suffix.1);
        if memchr::memchr2(b'\n', b'\r', &source).is_some() {
            for b in source.iter_mut() {
                if *b == b'\n' || *b == b'\r' {
                    *b = b' ';
                }
            }
        }
        Ok(Some((id, source)))
    }

    /// `to_json(text::type)` by PostgreSQL, for types rendered there in the
    /// full sync too.
    async fn server_json(&mut self, sql_type: &str, text: &[u8]) -> Result<String, SourceError> {
        let what = format!("render a {sql_type} value");
        if !self.to_json.contains_key(sql_type) {
            let stmt = self
                .client
                .prepare(&format!("SELECT pg_catalog.to_json($1::text::{sql_type})::text"))
                .await
                .map_err(|e| query_error(&what, &e))?;
            self.to_json.insert(sql_type.to_owned(), stmt);
        }
        let text = String::from_utf8_lossy(text);
        let row = self
            .client
            .query_one(&self.to_json[sql_type], &[&text.as_ref()])
            .await
            .map_err(|e| query_error(&what, &e))?;
        Ok(row.get::<_, Option<String>>(0).unwrap_or_else(|| "null".into()))
    }
}

async fn status_task(
    mut writer: wire::StatusWriter,
    flush: Arc<AtomicU64>,
    mut ping: mpsc::Receiver<()>,
    every: Duration,
    cancel: CancellationToken,
) -> Result<wire::StatusWriter, WireError> {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sent = 0u64;
    let mut last_time = Instant::now();
    loop {
        let reply = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(writer),
            p = ping.recv() => p.is_some(),
            _ = tick.tick() => false,
        };
        let pos = flush.load(Ordering::Relaxed);
        // Send on every advance (at most 4 a second), on request, and at
        // least every `every` so the walsender never times out.
        if reply || pos != last_sent || last_time.elapsed() >= every {
            tokio::time::timeout(Duration::from_secs(10), writer.send_status(pos, reply))
                .await
                .map_err(|_| WireError::Timeout("send a status update"))??;
            last_sent = pos;
            last_time = Instant::now();
        }
    }
}

fn pg_now_micros() -> i64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    unix - 946_684_800_000_000
}

/// PostgreSQL-epoch microseconds → RFC 3339 UTC.
fn rfc3339_micros(t: i64) -> String {
    let nanos = (i128::from(t) + 946_684_800_000_000) * 1000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_slot_names_and_distinct() {
        let a = names("AbC-12_x");
        let b = names("abc-12_x");
        assert_ne!(a, b);
        assert!(a.starts_with("ferry_abc_12_x_"));
        let long = names(&"X".repeat(200));
        assert!(long.len() <= 63, "{long}");
        assert!(long.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'));
    }

    #[test]
    fn cursors_round_trip() {
        let c = Cursor { slot: "s".into(), publication: "p".into(), lsn: Some("0/10".into()) };
        assert_eq!(Cursor::parse(&c.to_bytes()), Some(c));
        assert_eq!(Cursor::parse(b""), None);
        assert_eq!(Cursor::parse(b"{\"table\":\"t\",\"after\":[]}"), None);
        assert_eq!(rfc3339_micros(0), "2000-01-01T00:00:00Z");
    }
}
