//! Streaming one table's rows as Elasticsearch documents.
//!
//! Contract:
//! - One transaction per table, `REPEATABLE READ, READ ONLY`: the table is
//!   read from one consistent snapshot.
//! - Rows are streamed with an extended-protocol portal (`query_raw`), which
//!   tokio-postgres reads as the caller pulls; nothing is paged with OFFSET
//!   and no result is held in memory. Rows come in primary-key order, so the
//!   last key read is an exact resume position (keyset: `WHERE (pk...) >
//!   ($1::text::type, ...)`, with parameters, never interpolated values).
//! - Values travel in PostgreSQL's binary format and the agent writes the
//!   JSON ([`super::render`]), identical to what `to_json` would give: the
//!   built-in types tables are made of (booleans, integers, numeric with
//!   every digit, text, uuid, date, timestamptz, json, jsonb) are rendered
//!   here; every other type is rendered by PostgreSQL itself
//!   (`to_json(column)`), so arrays are arrays, composites are objects and
//!   custom or extension types become their text output — no type can crash
//!   the reader. Two rewrites happen in SQL: `timestamp without time zone`
//!   is taken as UTC (`AT TIME ZONE 'UTC'`, so the JSON carries an RFC 3339
//!   offset), and `bytea` becomes base64 without line breaks. (Arrays of
//!   those types keep PostgreSQL's default rendering.)
//! - Field names (`{schema}_{table}_{column}`) are written by the agent, so
//!   they are not cut at PostgreSQL's 63-byte identifier limit; the extra
//!   fields (`id`, `_timestamp`, `table`, `schema`, `database`) too. Each
//!   row is written once, straight into its document's buffer: no JSON tree
//!   and no intermediate string per value.

use std::pin::Pin;

use ferry_sdk::SourceError;
use futures::StreamExt;
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::{Client, RowStream};

use super::catalog::{query_error, quote_ident, TableInfo};
use super::ids::{CollisionCheck, IdFormat, KeyKind};
use super::render::{write_json_str, Codec};
use super::types::FieldCheck;

/// What every document of a sync shares.
#[derive(Debug, Clone)]
pub struct DocContext {
    pub database: String,
    pub schema: String,
    /// `_timestamp`: the sync's start, RFC 3339 UTC.
    pub timestamp: String,
}

impl DocContext {
    /// A context stamped with the current time.
    pub fn now(database: &str, schema: &str) -> Self {
        let timestamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned());
        Self { database: database.to_owned(), schema: schema.to_owned(), timestamp }
    }

    /// The end of every document of `table`:
    /// `,"_timestamp":...,"table":...,"schema":...,"database":...}`.
    pub fn suffix(&self, table: &str) -> Vec<u8> {
        let mut suffix = Vec::new();
        for (k, v) in [
            ("_timestamp", self.timestamp.as_str()),
            ("table", table),
            ("schema", &self.schema),
            ("database", &self.database),
        ] {
            suffix.push(b',');
            write_json_str(&mut suffix, k);
            suffix.push(b':');
            write_json_str(&mut suffix, v);
        }
        suffix.push(b'}');
        suffix
    }
}

/// One document read from a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Elasticsearch `_id`.
    pub id: String,
    /// The `_source`: one JSON object, no newlines.
    pub source: Vec<u8>,
    /// The resume position after this row:
    /// `{"table":"<name>","after":["<pk text>", ...]}` (key order).
    pub checkpoint: Vec<u8>,
}

/// The SQL and fixed parts of the documents of one table.
#[derive(Debug, Clone)]
pub struct TablePlan {
    pub table: TableInfo,
    /// Field names (`{schema}_{table}_{column}`, lower case), in select order.
    pub fields: Vec<String>,
    /// Column list used for `fields` (duplicates after lower-casing dropped).
    columns: Vec<usize>,
    /// Per selected column: `,"{field}":` and how its value is rendered.
    renders: Vec<(Vec<u8>, Codec)>,
    /// Per primary key column (key order, which is also the order of the id's parts).
    key_kinds: Vec<KeyKind>,
    /// `{database}_{schema}_{table}_`
    id_format: IdFormat,
    /// `,"_timestamp":...,"table":...,"schema":...,"database":...}`
    suffix: Vec<u8>,
    /// `{"table":"<name>","after":[`: the start of every checkpoint.
    checkpoint_prefix: Vec<u8>,
    /// Basic sync rules that apply to this table (see `rules.rs`).
    pub filter: super::rules::RowFilter,
    /// Per selected column: what its values are checked for ([`super::types`]).
    checks: Vec<FieldCheck>,
}

impl TablePlan {
    /// Plan a table; it must have a primary key.
    pub fn new(ctx: &DocContext, table: TableInfo) -> Result<Self, SourceError> {
        if table.primary_key.is_empty() {
            return Err(SourceError::Configuration(format!(
                "table \"{}\" has no primary key: add a primary key, or use an advanced sync rule with id_columns",
                table.name
            )));
        }
        let mut fields = Vec::with_capacity(table.columns.len());
        let mut columns = Vec::with_capacity(table.columns.len());
        let mut seen = std::collections::HashSet::new();
        for (i, c) in table.columns.iter().enumerate() {
            let field = format!("{}_{}_{}", table.schema, table.name, c.name).to_lowercase();
            if !seen.insert(field.clone()) {
                // Two columns that differ only in case would give the same
                // field twice, which Elasticsearch rejects.
                tracing::warn!(table = %table.name, column = %c.name, field = %field,
                    "column maps to the same field as another column (names differ only in case); skipping it");
                continue;
            }
            fields.push(field);
            columns.push(i);
        }
        // Elastic 9.x orders the id's key parts by `array_position(i.indkey,
        // a.attnum)`: key order, the order `primary_key` is in.
        let key_kinds = table.primary_key.iter().map(|c| KeyKind::for_type(&c.base_type)).collect();
        let id_format = IdFormat::new(&ctx.database, &ctx.schema, &[&table.name]);
        let suffix = ctx.suffix(&table.name);
        let renders = columns
            .iter()
            .zip(&fields)
            .map(|(&ci, field)| {
                let mut key = vec![b','];
                write_json_str(&mut key, field);
                key.push(b':');
                (key, select_expr(&table.columns[ci]).1)
            })
            .collect();
        let checks = columns.iter().map(|&ci| FieldCheck::for_column(&table.columns[ci])).collect();
        let mut checkpoint_prefix = b"{\"table\":".to_vec();
        write_json_str(&mut checkpoint_prefix, &table.name);
        checkpoint_prefix.extend_from_slice(b",\"after\":[");
        Ok(Self {
            checkpoint_prefix,
            table,
            fields,
            columns,
            renders,
            key_kinds,
            id_format,
            suffix,
            filter: Default::default(),
            checks,
        })
    }

    /// The SELECT: the columns, then the primary key as text; with
    /// `resume`, a keyset predicate whose parameters come first.
    pub fn sql(&self, resume: bool) -> String {
        let t = &self.table;
        let mut sql = String::from("SELECT ");
        let mut param = 0usize;
        for (j, &ci) in self.columns.iter().enumerate() {
            if j > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&select_expr(&t.columns[ci]).0);
        }
        let pk: Vec<String> = t.primary_key.iter().map(|c| format!("t.{}", quote_ident(&c.name))).collect();
        for (p, c) in pk.iter().zip(&t.primary_key) {
            if c.base_type == "bpchar" {
                // A cast to text strips char(n)'s padding; asyncpg (and so
                // Elastic's id) keeps it, as the type's output function does.
                sql.push_str(&format!(", pg_catalog.format('%s', {p})"));
            } else {
                sql.push_str(&format!(", {p}::text"));
            }
        }
        sql.push_str(&format!(" FROM {}.{} AS t", quote_ident(&t.schema), quote_ident(&t.name)));
        let mut conditions = Vec::new();
        if resume {
            let params: Vec<String> = t
                .primary_key
                .iter()
                .map(|c| {
                    param += 1;
                    format!("${param}::text::{}", c.sql_type)
                })
                .collect();
            conditions.push(format!("({}) > ({})", pk.join(", "), params.join(", ")));
        }
        if !self.filter.is_empty() {
            // Sync rules: excluded rows are never read.
            conditions.push(format!("({})", self.filter.sql(param + 1)));
        }
        if !conditions.is_empty() {
            sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
        }
        sql.push_str(&format!(" ORDER BY {}", pk.join(", ")));
        sql
    }

    /// Primary key arity.
    pub fn key_len(&self) -> usize {
        self.table.primary_key.len()
    }

    /// The document id from the primary key's text values (`key(i)`: the
    /// i-th key column in key order), as Elastic builds it (see [`super::ids`]).
    pub fn build_id<'k, E>(&self, mut key: impl FnMut(usize) -> Result<&'k str, E>) -> Result<String, E> {
        let mut parts = Vec::with_capacity(self.key_len());
        for i in 0..self.key_len() {
            parts.push(Some(key(i)?));
        }
        Ok(self.id_format.id(self.key_kinds.iter().copied().zip(parts)))
    }

    /// The fields of the documents: index into `table.columns` and the
    /// `,"{field}":` bytes that precede its value.
    pub fn field_keys(&self) -> impl Iterator<Item = (usize, &[u8])> {
        self.columns.iter().zip(&self.renders).map(|(&ci, (key, _))| (ci, key.as_slice()))
    }

    /// The typed fields of this table's documents (sent as `DocumentSchema`).
    pub fn schema(&self) -> ferry_sdk::DocumentSchema {
        let fields =
            self.fields.iter().zip(&self.columns).map(|(f, &ci)| (f.as_str(), &self.table.columns[ci]));
        ferry_sdk::DocumentSchema {
            source: format!("{}.{}", self.table.schema, self.table.name),
            fields: super::types::field_specs(fields),
        }
    }
}

/// The SELECT expression for a column and how its value is rendered.
///
/// Native types are cast to their base type so a domain arrives in its base
/// type's binary form; the rest is rendered by PostgreSQL as `json`.
fn select_expr(col: &super::catalog::Column) -> (String, Codec) {
    let c = format!("t.{}", quote_ident(&col.name));
    match col.base_oid {
        // timestamp
        1114 => return (format!("({c}::pg_catalog.timestamp AT TIME ZONE 'UTC')"), Codec::TimestampTz),
        // bytea
        17 => {
            return (
                format!(
                    "pg_catalog.translate(pg_catalog.encode({c}::pg_catalog.bytea, 'base64'), E'\\n', '')"
                ),
                Codec::Text,
            )
        }
        _ => {}
    }
    match Codec::for_type(col.base_oid) {
        Some(codec) => (format!("{c}::pg_catalog.{}", quote_ident(&col.base_type)), codec),
        None => (format!("pg_catalog.to_json({c})"), Codec::Json),
    }
}

/// One column of a row as it came off the wire (binary format), any type.
struct RawValue<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for RawValue<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Reads one table inside its own snapshot transaction.
pub struct TableReader<'a> {
    client: &'a Client,
    plan: &'a TablePlan,
    stream: Pin<Box<RowStream>>,
    rows: u64,
    unrepresentable: u64,
}

impl<'a> TableReader<'a> {
    /// Begin the transaction and start the query; `after` resumes after
    /// that primary key (PostgreSQL text of each key column).
    pub async fn open(
        client: &'a Client,
        plan: &'a TablePlan,
        after: Option<&[String]>,
    ) -> Result<TableReader<'a>, SourceError> {
        Self::open_in_snapshot(client, plan, after, None).await
    }

    /// [`Self::open`] inside an exported snapshot (`SET TRANSACTION
    /// SNAPSHOT`): the incremental sync reads the tables as of its
    /// replication slot's creation, so nothing falls between read and stream.
    pub async fn open_in_snapshot(
        client: &'a Client,
        plan: &'a TablePlan,
        after: Option<&[String]>,
        snapshot: Option<&str>,
    ) -> Result<TableReader<'a>, SourceError> {
        let what = format!("read table \"{}\"", plan.table.name);
        if let Some(a) = after {
            if a.len() != plan.key_len() {
                return Err(SourceError::Internal(format!(
                    "{what}: resume position has {} key values, the primary key has {} columns",
                    a.len(),
                    plan.key_len()
                )));
            }
        }
        let begin = match snapshot {
            // The snapshot name comes from PostgreSQL (`0000000A-00000002-1`);
            // quoted anyway.
            Some(s) => format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
                s.replace('\'', "''")
            ),
            None => "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY".to_owned(),
        };
        if let Err(e) = client.batch_execute(&begin).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(query_error(&what, &e));
        }
        let sql = plan.sql(after.is_some());
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(plan.key_len() + plan.filter.len());
        if let Some(a) = after {
            for v in a {
                params.push(v);
            }
        }
        for v in plan.filter.params() {
            params.push(v);
        }
        let stream = match client.query_raw(&sql, params).await {
            Ok(s) => s,
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(query_error(&what, &e));
            }
        };
        Ok(TableReader { client, plan, stream: Box::pin(stream), rows: 0, unrepresentable: 0 })
    }

    /// The next document, `None` at the end of the table. Its key goes
    /// through `check` (ids that two keys share are reported on the job).
    pub async fn next(&mut self, check: &mut CollisionCheck) -> Result<Option<Document>, SourceError> {
        let row = match self.stream.next().await {
            None => return Ok(None),
            Some(Ok(r)) => r,
            Some(Err(e)) => return Err(query_error(&format!("read table \"{}\"", self.plan.table.name), &e)),
        };
        self.rows += 1;
        let plan = self.plan;
        let bad_row = |e: tokio_postgres::Error| {
            SourceError::Internal(format!("read table \"{}\": unexpected row: {e}", plan.table.name))
        };
        let values = plan.renders.len();
        let key = |i: usize| -> Result<&str, SourceError> { row.try_get(values + i).map_err(bad_row) };
        let mut parts = Vec::with_capacity(plan.key_len());
        for i in 0..plan.key_len() {
            parts.push(Some(key(i)?));
        }
        let id = plan.id_format.id(plan.key_kinds.iter().copied().zip(parts.iter().copied()));
        check.observe(&id, &parts);
        let mut checkpoint = Vec::with_capacity(plan.checkpoint_prefix.len() + 8 * plan.key_len() + 16);
        checkpoint.extend_from_slice(&plan.checkpoint_prefix);
        for i in 0..plan.key_len() {
            if i > 0 {
                checkpoint.push(b',');
            }
            write_json_str(&mut checkpoint, key(i)?);
        }
        checkpoint.extend_from_slice(b"]}");

        // Size the buffer once: rendered JSON is close to the binary size
        // (escapes and dates add a little; the slack covers most rows).
        let mut len = id.len() + plan.suffix.len() + 16;
        for (i, (field, _)) in plan.renders.iter().enumerate() {
            let v: RawValue = row.try_get(i).map_err(bad_row)?;
            len += field.len() + v.0.map_or(4, |r| r.len() + r.len() / 8 + 8);
        }
        let mut source = Vec::with_capacity(len);
        source.extend_from_slice(b"{\"id\":");
        write_json_str(&mut source, &id);
        let mut originals = Vec::new();
        for (i, (field, codec)) in plan.renders.iter().enumerate() {
            source.extend_from_slice(field);
            match row.try_get::<_, RawValue>(i).map_err(bad_row)?.0 {
                None => source.extend_from_slice(b"null"),
                Some(raw) => {
                    let start = source.len();
                    codec.write(raw, &mut source).map_err(|e| {
                        SourceError::Internal(format!(
                            "read table \"{}\", column \"{}\": {e}",
                            plan.table.name, plan.table.columns[plan.columns[i]].name
                        ))
                    })?;
                    if let Some(original) = plan.checks[i].fix(&mut source, start) {
                        originals.push((plan.fields[i].as_str(), original));
                    }
                }
            }
        }
        self.unrepresentable += originals.len() as u64;
        super::types::write_originals(&mut source, &originals);
        source.extend_from_slice(&plan.suffix);
        // Values of type `json` keep the text they were stored with, which may
        // contain line breaks. In valid JSON a raw CR/LF can only be
        // whitespace (inside strings they are escaped), so blanking them keeps
        // the document identical while making it one line.
        if memchr::memchr2(b'\n', b'\r', &source).is_some() {
            for b in source.iter_mut() {
                if *b == b'\n' || *b == b'\r' {
                    *b = b' ';
                }
            }
        }
        Ok(Some(Document { id, source, checkpoint }))
    }

    /// Rows read so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Values replaced by null so far (see [`super::types`]).
    pub fn unrepresentable(&self) -> u64 {
        self.unrepresentable
    }

    /// End the transaction. Returns the number of rows read.
    pub async fn finish(self) -> Result<u64, SourceError> {
        let rows = self.rows;
        drop(self.stream);
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| query_error(&format!("finish reading table \"{}\"", self.plan.table.name), &e))?;
        Ok(rows)
    }
}
