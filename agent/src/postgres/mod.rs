//! The PostgreSQL source (`service_type` `postgresql`), a drop-in for
//! Elastic's PostgreSQL connector: same configuration keys, same document
//! ids and field names (see [`ids`] and [`reader`]).
//!
//! Contracts:
//! - **Which rows**: the tables of one schema ([`catalog`]), read in sorted
//!   name order, each in its own `REPEATABLE READ, READ ONLY` transaction,
//!   streamed in primary-key order ([`reader`]). Memory does not grow with
//!   table size.
//! - **Tables without a primary key** are skipped with a warning and listed
//!   in the job's metadata (`skipped_tables`): without a key there is no
//!   stable document id and no resume position.
//! - **Checkpoints**: after every document the position
//!   `{"table": "<name>", "after": ["<pk text>", ...]}` is recorded. A resumed
//!   job skips the tables sorted before `table` and restarts `table` after
//!   that key; an unreadable checkpoint restarts the sync from scratch.
//! - **Session**: `TimeZone=UTC` (naive timestamps are taken as UTC), full
//!   float precision, and the agent's [`session::SessionLimits`] (lock,
//!   statement and idle-in-transaction timeouts).
//! - **Cancel**: a full sync's work runs under [`session::interruptible`]:
//!   canceling the job sends PostgreSQL a cancel request and drops the work
//!   whatever it awaits (a lock wait, a slow advanced-rule query).
//! - **Job kinds** (`capabilities`): full and incremental. An incremental
//!   job streams logical replication ([`cdc`]): it starts at the job's own
//!   checkpoint, else the connector's `sync_cursor` (none: an exported
//!   snapshot of every table first), and in `Drain` mode completes once it
//!   applied what was there at start, in `Continuous` mode streams until
//!   canceled. The slot is confirmed only up to what the control plane
//!   acknowledged ([`cdc::sender`]). Incremental jobs refuse sync rules
//!   (`Unsupported`); access-control jobs are `Unsupported`.
//! - **Tables without a primary key** are not streamed either (no document
//!   id, whatever their `REPLICA IDENTITY`): listed with the reason in
//!   `skipped_tables`.
//! - **Deleting the connector** (`release_connector`) drops its replication
//!   slot and publication.
//! - **Metadata** on the job: `rows_read`, `rows_estimated` (full syncs of tables:
//!   `pg_class.reltuples`, absent when never analyzed), `rows_per_table`, `skipped_tables`;
//!   incremental jobs also `snapshot_rows`, `changes_sent`, `deletes_sent`,
//!   `lsn`, and while running (`JobProgress`) `changes_applied`, `lag_bytes`,
//!   `lag_seconds`, `last_commit_time`, `confirmed_lsn`, `slot`;
//!   `unrepresentable_values` (values sent as null, see [`types`]).

pub mod catalog;
pub mod cdc;
pub mod config;
pub mod connect;
pub mod ids;
pub mod reader;
pub mod render;
pub mod rules;
pub mod schema;
pub mod session;
pub mod types;

use std::collections::BTreeMap;

use async_trait::async_trait;
use ferry_sdk::{
    ConfigFieldSpec, ConfigValues, DocumentSender, IncrementalMode, Job, JobKind, RuleError, Source,
    SourceCapabilities, SourceError, SyncRules, SyncStopped,
};
use serde::Deserialize;
use serde_json::json;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

pub use config::{PostgresConfig, TableSelection};
pub use reader::{DocContext, Document, TablePlan, TableReader};
pub use session::SessionLimits;

/// The PostgreSQL source. Stateless: every call connects on its own, with
/// the agent's session limits.
#[derive(Debug, Clone, Default)]
pub struct PostgresSource {
    limits: SessionLimits,
}

impl PostgresSource {
    /// A source with the default [`SessionLimits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A source whose sessions use `limits`.
    pub fn with_limits(limits: SessionLimits) -> Self {
        Self { limits }
    }

    /// A connector's values, with `env:`/`file:` references resolved
    /// ([`crate::secrets`]), parsed, with this agent's limits.
    fn config(&self, values: &ConfigValues) -> Result<PostgresConfig, SourceError> {
        let values = crate::secrets::resolve(values, &crate::secrets::SecretEnv::Process)?;
        let mut cfg = PostgresConfig::from_values(&values)?;
        cfg.limits = self.limits;
        Ok(cfg)
    }
}

#[async_trait]
impl Source for PostgresSource {
    fn service_type(&self) -> &str {
        "postgresql"
    }

    fn configuration_schema(&self) -> Vec<(String, ConfigFieldSpec)> {
        schema::configuration_schema()
    }

    fn capabilities(&self) -> SourceCapabilities {
        SourceCapabilities {
            job_kinds: vec![JobKind::Full, JobKind::Incremental],
            basic_rules: true,
            advanced_rules: true,
        }
    }

    async fn validate(&self, values: &ConfigValues) -> Result<(), SourceError> {
        let cfg = self.config(values)?;
        let client = connect::connect(&cfg).await?;
        prepare_session(&client, &cfg).await?;
        client.simple_query("SELECT 1").await.map_err(|e| {
            SourceError::Unreachable(format!("PostgreSQL at {} did not answer: {e}", cfg.address()))
        })?;
        catalog::resolve_tables(&client, &cfg.schema, &cfg.tables).await?;
        Ok(())
    }

    async fn sync(&self, job: &Job, out: &mut DocumentSender) -> Result<(), SourceError> {
        let cfg = self.config(&job.config)?;
        match job.kind {
            JobKind::Full => {
                full_sync_with_rules(&cfg, &job.rules, job.resume_checkpoint.as_deref(), &job.cancel, out)
                    .await?;
            }
            JobKind::Incremental => incremental(&cfg, job, out).await?,
            JobKind::AccessControl => {
                return Err(SourceError::Unsupported(
                    "the PostgreSQL source has no document-level security: it runs no access-control syncs"
                        .to_owned(),
                ))
            }
        }
        Ok(())
    }

    async fn release_connector(&self, connector_id: &str, config: &ConfigValues) -> Result<(), SourceError> {
        let cfg = self.config(config)?;
        cdc::release(&cfg, connector_id).await
    }

    async fn validate_rules(&self, values: &ConfigValues, rules: &SyncRules) -> Vec<RuleError> {
        let fail = |m: String| vec![RuleError::new("DEFAULT", m)];
        let cfg = match self.config(values) {
            Ok(c) => c,
            Err(e) => return fail(format!("the configuration is not valid: {e}")),
        };
        let client = match connect::connect(&cfg).await {
            Ok(c) => c,
            Err(e) => return fail(format!("cannot reach PostgreSQL to check the rules: {e}")),
        };
        if let Err(e) = prepare_session(&client, &cfg).await {
            return fail(e.to_string());
        }
        let tables = if rules.basic.is_empty() {
            vec![]
        } else {
            match catalog::resolve_tables(&client, &cfg.schema, &cfg.tables).await {
                Ok(t) => t,
                Err(e) => return fail(e.to_string()),
            }
        };
        rules::validate(&client, &cfg.schema, &tables, rules).await
    }
}

/// One incremental job (logical replication, [`cdc`]): from the job's start
/// position (its own checkpoint, else the connector's `sync_cursor`), in the
/// job's mode, into `out`.
async fn incremental(cfg: &PostgresConfig, job: &Job, out: &mut DocumentSender) -> Result<(), SourceError> {
    if !job.rules.is_empty() {
        return Err(SourceError::Unsupported(
            "incremental sync does not apply sync rules yet: remove the connector's sync rules or run full syncs"
                .to_owned(),
        ));
    }
    let mode = match job.mode {
        IncrementalMode::Drain => cdc::Mode::Drain,
        IncrementalMode::Continuous => cdc::Mode::Continuous,
    };
    let req = cdc::IncrementalRequest {
        cfg,
        connector_id: &job.connector_id,
        cursor: job.start_position(),
        mode,
        cancel: &job.cancel,
    };
    let mut sink = cdc::sender::SenderSink::new(out);
    let report = cdc::incremental_sync(req, &mut sink).await?;
    out.set_metadata("snapshot_rows", json!(report.snapshot_rows));
    out.set_metadata("changes_sent", json!(report.changes));
    out.set_metadata("deletes_sent", json!(report.deletes));
    out.set_metadata("lsn", json!(report.lsn));
    Ok(())
}

/// Where documents go: the SDK's [`DocumentSender`] in the agent, a
/// collecting sink in tests.
#[async_trait]
pub trait DocumentSink: Send {
    async fn send(&mut self, id: String, source: Vec<u8>) -> Result<(), SyncStopped>;
    fn checkpoint(&mut self, position: Vec<u8>);
    fn set_metadata(&mut self, key: &str, value: serde_json::Value);
    /// The typed fields of the documents that follow (see [`types`]).
    async fn describe(&mut self, _schema: &ferry_sdk::DocumentSchema) -> Result<(), SyncStopped> {
        Ok(())
    }
}

#[async_trait]
impl DocumentSink for DocumentSender {
    async fn send(&mut self, id: String, source: Vec<u8>) -> Result<(), SyncStopped> {
        DocumentSender::send(self, id, source).await
    }
    fn checkpoint(&mut self, position: Vec<u8>) {
        DocumentSender::checkpoint(self, position)
    }
    fn set_metadata(&mut self, key: &str, value: serde_json::Value) {
        DocumentSender::set_metadata(self, key, value)
    }
    async fn describe(&mut self, schema: &ferry_sdk::DocumentSchema) -> Result<(), SyncStopped> {
        DocumentSender::describe(self, schema).await
    }
}

/// A resume position as written by [`full_sync`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Checkpoint {
    pub table: String,
    pub after: Vec<String>,
}

impl Checkpoint {
    /// Parse a checkpoint; `None` (with a warning) when it is not ours.
    pub fn parse(bytes: &[u8]) -> Option<Checkpoint> {
        match serde_json::from_slice(bytes) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an unreadable resume checkpoint; the sync starts from the beginning");
                None
            }
        }
    }
}

/// What a full sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub rows_read: u64,
    pub rows_per_table: BTreeMap<String, u64>,
    /// Tables without a primary key.
    pub skipped_tables: Vec<String>,
    /// Values sent as null because an index cannot hold them ([`types`]).
    pub unrepresentable_values: u64,
}

/// Read every configured table into `sink`, resuming after `resume` when
/// given. Stops with [`SyncStopped::Canceled`] when `cancel` fires.
pub async fn full_sync<S: DocumentSink + ?Sized>(
    cfg: &PostgresConfig,
    resume: Option<&[u8]>,
    cancel: &CancellationToken,
    sink: &mut S,
) -> Result<SyncReport, SourceError> {
    full_sync_with_rules(cfg, &SyncRules::default(), resume, cancel, sink).await
}

/// [`full_sync`] under sync rules: advanced rules replace the table list
/// with their queries; basic rules filter each table in SQL.
pub async fn full_sync_with_rules<S: DocumentSink + ?Sized>(
    cfg: &PostgresConfig,
    sync_rules: &SyncRules,
    resume: Option<&[u8]>,
    cancel: &CancellationToken,
    sink: &mut S,
) -> Result<SyncReport, SourceError> {
    let client = tokio::select! {
        biased;
        _ = cancel.cancelled() => return Err(SyncStopped::Canceled.into()),
        c = connect::connect(cfg) => c?,
    };
    session::interruptible(cfg, &client, cancel, full_sync_on(&client, cfg, sync_rules, resume, cancel, sink))
        .await
}

/// [`full_sync_with_rules`] on a connected `client`.
async fn full_sync_on<S: DocumentSink + ?Sized>(
    client: &Client,
    cfg: &PostgresConfig,
    sync_rules: &SyncRules,
    resume: Option<&[u8]>,
    cancel: &CancellationToken,
    sink: &mut S,
) -> Result<SyncReport, SourceError> {
    prepare_session(client, cfg).await?;
    if let Some(list) = rules::advanced_rules(sync_rules).map_err(rules::source_error)? {
        let mut check = ids::CollisionCheck::default();
        let report = advanced_sync(client, cfg, &list, resume, cancel, sink, &mut check).await;
        report_collisions(&check, sink);
        return report;
    }
    let tables = catalog::resolve_tables(client, &cfg.schema, &cfg.tables).await?;
    if let Some(n) = catalog::estimated_rows(client, &cfg.schema, &tables).await {
        sink.set_metadata("rows_estimated", json!(n));
    }
    let resume = resume.and_then(Checkpoint::parse);
    let ctx = DocContext::now(&cfg.database, &cfg.schema);
    let mut report = SyncReport::default();
    let mut check = ids::CollisionCheck::default();

    for name in &tables {
        if cancel.is_cancelled() {
            return Err(SyncStopped::Canceled.into());
        }
        let after = match &resume {
            Some(cp) if name.as_str() < cp.table.as_str() => continue, // finished in an earlier attempt
            Some(cp) if *name == cp.table => Some(cp.after.as_slice()),
            _ => None,
        };
        let info = catalog::describe_table(client, &cfg.schema, name).await?;
        if info.primary_key.is_empty() {
            tracing::warn!(schema = %cfg.schema, table = %name,
                "skipping table without a primary key: add a primary key, or use an advanced sync rule with id_columns");
            report.skipped_tables.push(name.clone());
            sink.set_metadata("skipped_tables", json!(report.skipped_tables));
            continue;
        }
        let mut plan = TablePlan::new(&ctx, info)?;
        plan.filter = rules::RowFilter::for_table(&sync_rules.basic, &plan.table);
        let after = match after {
            Some(a) if a.len() != plan.key_len() => {
                tracing::warn!(table = %name, "the checkpoint's key does not match the primary key; reading the table from the start");
                None
            }
            a => a,
        };
        sink.describe(&plan.schema()).await?;
        let rows =
            read_table(client, &plan, after, cancel, sink, &mut check, &mut report.unrepresentable_values)
                .await;
        report_collisions(&check, sink);
        if report.unrepresentable_values > 0 {
            sink.set_metadata("unrepresentable_values", json!(report.unrepresentable_values));
        }
        let rows = rows?;
        report.rows_read += rows;
        report.rows_per_table.insert(name.clone(), rows);
        sink.set_metadata("rows_read", json!(report.rows_read));
        sink.set_metadata("rows_per_table", json!(report.rows_per_table));
    }
    sink.set_metadata("rows_read", json!(report.rows_read));
    sink.set_metadata("rows_per_table", json!(report.rows_per_table));
    sink.set_metadata("skipped_tables", json!(report.skipped_tables));
    Ok(report)
}

/// Puts what `check` found into the job's metadata (`id_collisions`).
fn report_collisions<S: DocumentSink + ?Sized>(check: &ids::CollisionCheck, sink: &mut S) {
    if let Some(report) = check.report() {
        if check.collisions() > 0 {
            tracing::warn!(
                collisions = check.collisions(),
                "rows with different keys got the same document id (see the job's metadata.id_collisions)"
            );
        }
        sink.set_metadata("id_collisions", report);
    }
}

/// Session settings every read relies on, and the agent's limits.
pub async fn prepare_session(client: &Client, cfg: &PostgresConfig) -> Result<(), SourceError> {
    client
        .batch_execute(&format!("SET TIME ZONE 'UTC'; SET extra_float_digits = 3; {}", cfg.limits.sql()))
        .await
        .map_err(|e| catalog::query_error("prepare the session", &e))
}

async fn read_table<S: DocumentSink + ?Sized>(
    client: &Client,
    plan: &TablePlan,
    after: Option<&[String]>,
    cancel: &CancellationToken,
    sink: &mut S,
    check: &mut ids::CollisionCheck,
    unrepresentable: &mut u64,
) -> Result<u64, SourceError> {
    let mut reader = TableReader::open(client, plan, after).await?;
    let result = read_rows(&mut reader, cancel, sink, check).await;
    *unrepresentable += reader.unrepresentable();
    result?;
    reader.finish().await
}

async fn read_rows<S: DocumentSink + ?Sized>(
    reader: &mut TableReader<'_>,
    cancel: &CancellationToken,
    sink: &mut S,
    check: &mut ids::CollisionCheck,
) -> Result<(), SourceError> {
    loop {
        let doc = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(SyncStopped::Canceled.into()),
            d = reader.next(check) => d?,
        };
        let Some(doc) = doc else { break };
        sink.send(doc.id, doc.source).await?;
        sink.checkpoint(doc.checkpoint);
    }
    Ok(())
}

/// Checkpoint table name of advanced rules: `after` holds the index of the
/// rule being read (a resumed job reads that rule's query again).
const ADVANCED_CHECKPOINT: &str = "#advanced";

/// Streams each advanced rule's query in its own `REPEATABLE READ, READ
/// ONLY` transaction.
async fn advanced_sync<S: DocumentSink + ?Sized>(
    client: &Client,
    cfg: &PostgresConfig,
    list: &[rules::AdvancedRule],
    resume: Option<&[u8]>,
    cancel: &CancellationToken,
    sink: &mut S,
    check: &mut ids::CollisionCheck,
) -> Result<SyncReport, SourceError> {
    use futures::StreamExt;
    let start = resume
        .and_then(Checkpoint::parse)
        .filter(|c| c.table == ADVANCED_CHECKPOINT)
        .and_then(|c| c.after.first().and_then(|i| i.parse::<usize>().ok()))
        .unwrap_or(0);
    let ctx = DocContext::now(&cfg.database, &cfg.schema);
    let mut report = SyncReport::default();
    for (i, a) in list.iter().enumerate().skip(start) {
        let what = format!("advanced sync rule {i} (tables {})", a.tables.join(", "));
        let ids = rules::id_columns(client, &cfg.schema, a).await.map_err(rules::source_error)?;
        let kinds = rules::id_column_kinds(client, a, &ids).await.map_err(rules::source_error)?;
        // Elastic sorts the tables for both the field prefix and the id.
        let mut sorted = a.tables.clone();
        sorted.sort_unstable();
        let prefix = format!("{}_{}_", cfg.schema, sorted.join("_")).to_lowercase();
        let id_format = ids::IdFormat::new(&cfg.database, &cfg.schema, &a.tables);
        let suffix = ctx.suffix(&a.tables.join(","));
        let checkpoint = serde_json::to_vec(&json!({"table": ADVANCED_CHECKPOINT, "after": [i.to_string()]}))
            .unwrap_or_default();
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(|e| catalog::query_error(&what, &e))?;
        let sql = rules::advanced_sql(&a.query, &ids);
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&prefix];
        let stream = match client.query_raw(&sql, params).await {
            Ok(s) => s,
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(catalog::query_error(&what, &e));
            }
        };
        let mut stream = Box::pin(stream);
        let mut rows = 0u64;
        loop {
            let row = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(SyncStopped::Canceled.into()),
                r = stream.next() => r,
            };
            let row = match row {
                None => break,
                Some(Ok(r)) => r,
                Some(Err(e)) => return Err(catalog::query_error(&what, &e)),
            };
            let bad =
                |e: tokio_postgres::Error| SourceError::Internal(format!("{what}: unexpected row: {e}"));
            let object: Option<&str> = row.try_get(0).map_err(bad)?;
            let mut parts: Vec<Option<&str>> = Vec::with_capacity(ids.len());
            for k in 0..ids.len() {
                parts.push(row.try_get(k + 1).map_err(bad)?);
            }
            let id = id_format.id(kinds.iter().copied().zip(parts.iter().copied()));
            check.observe(&id, &parts);
            let mut source = Vec::with_capacity(256);
            source.extend_from_slice(b"{\"id\":");
            render::write_json_str(&mut source, &id);
            let inner = object
                .unwrap_or("{}")
                .trim()
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .unwrap_or("");
            if !inner.trim().is_empty() {
                source.push(b',');
                source.extend_from_slice(inner.as_bytes());
            }
            source.extend_from_slice(&suffix);
            for b in source.iter_mut() {
                if *b == b'\n' || *b == b'\r' {
                    *b = b' ';
                }
            }
            sink.send(id, source).await?;
            sink.checkpoint(checkpoint.clone());
            rows += 1;
        }
        drop(stream);
        client.batch_execute("COMMIT").await.map_err(|e| catalog::query_error(&what, &e))?;
        report.rows_read += rows;
        report.rows_per_table.insert(format!("advanced[{i}]: {}", a.tables.join(",")), rows);
        sink.set_metadata("rows_read", json!(report.rows_read));
        sink.set_metadata("rows_per_table", json!(report.rows_per_table));
    }
    Ok(report)
}
