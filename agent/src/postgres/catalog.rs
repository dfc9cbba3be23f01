//! What the source reads, from PostgreSQL's catalog: the tables of the
//! configured schema, their columns (with types) and primary keys.
//!
//! `*` means every ordinary and partitioned table of the schema. Partitions
//! themselves are left out: their rows are read through the partitioned
//! parent, so listing both would send every row twice. A table named in the
//! configuration may also be a view or materialized view; it has no primary
//! key and is skipped (reported on the job) like any table without one.
//! Names are compared exactly (case-sensitive), as PostgreSQL stores them.

use ferry_sdk::SourceError;
use tokio_postgres::Client;

use super::config::TableSelection;

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `format_type(atttypid, atttypmod)`: a valid SQL type name (quoted and
    /// schema-qualified when needed), used for casts of keyset parameters.
    pub sql_type: String,
    /// `typname` of the base type (domains resolved), e.g. `int4`, `bytea`,
    /// `timestamp`; decides how the value is rendered.
    pub base_type: String,
    /// OID of that base type: picks the renderer of built-in types
    /// ([`super::render::Codec::for_type`]).
    pub base_oid: u32,
}

/// A table with its columns and primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub schema: String,
    pub name: String,
    /// In column order.
    pub columns: Vec<Column>,
    /// Primary key columns in key order (empty: no primary key).
    pub primary_key: Vec<Column>,
}

/// Quote an identifier for SQL: `we"ird` → `"we""ird"`.
pub fn quote_ident(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('"');
    for c in name.chars() {
        if c == '"' {
            s.push('"');
        }
        s.push(c);
    }
    s.push('"');
    s
}

pub(crate) fn query_error(what: &str, e: &tokio_postgres::Error) -> SourceError {
    match e.as_db_error() {
        Some(db) if db.code() == &tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE => {
            SourceError::Configuration(format!(
                "{what}: {}: grant the connector's user SELECT on the table (and USAGE on the schema)",
                db.message()
            ))
        }
        Some(db) if db.code() == &tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE => {
            SourceError::Internal(format!(
                "{what}: {}: another session holds a lock on the table for longer than the agent's \
                 postgresql.lock_timeout; retry once it is released, or raise lock_timeout in the agent's configuration",
                db.message()
            ))
        }
        Some(db) if db.code() == &tokio_postgres::error::SqlState::QUERY_CANCELED => {
            SourceError::Internal(format!(
                "{what}: {}: the statement ran longer than the agent's postgresql.statement_timeout \
                 (or was canceled by an administrator); raise statement_timeout in the agent's configuration",
                db.message()
            ))
        }
        Some(db) if db.code() == &tokio_postgres::error::SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT => {
            SourceError::Unreachable(format!(
                "{what}: {}: the agent left its transaction idle for longer than postgresql.idle_in_transaction_timeout",
                db.message()
            ))
        }
        Some(db) => SourceError::Internal(format!("{what}: {}", db.message())),
        None if e.is_closed() => {
            SourceError::Unreachable(format!("{what}: the connection to PostgreSQL was lost: {e}"))
        }
        None => SourceError::Internal(format!("{what}: {e}")),
    }
}

/// Whether the schema exists.
pub async fn schema_exists(client: &Client, schema: &str) -> Result<bool, SourceError> {
    let row = client
        .query_opt("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .map_err(|e| query_error("look up the schema", &e))?;
    Ok(row.is_some())
}

/// Every ordinary and partitioned table of `schema` (not partitions), sorted
/// by name (byte order).
pub async fn list_tables(client: &Client, schema: &str) -> Result<Vec<String>, SourceError> {
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
            &[&schema],
        )
        .await
        .map_err(|e| query_error("list the tables of the schema", &e))?;
    let mut names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    names.sort();
    Ok(names)
}

/// The tables to read, sorted by name. Checks that the schema and every
/// listed table exist.
/// PostgreSQL's estimate of the rows in `tables` (`pg_class.reltuples`, as of
/// the last VACUUM/ANALYZE), for progress; `None` when no table was ever
/// analyzed or the catalog cannot be read (progress then has no total).
pub async fn estimated_rows(client: &Client, schema: &str, tables: &[String]) -> Option<i64> {
    let row = client
        .query_one(
            "SELECT sum(greatest(c.reltuples, 0))::bigint, bool_or(c.reltuples >= 0) \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = ANY($2)",
            &[&schema, &tables],
        )
        .await
        .ok()?;
    let analyzed: Option<bool> = row.get(1);
    if analyzed != Some(true) {
        return None;
    }
    row.get::<_, Option<i64>>(0)
}

pub async fn resolve_tables(
    client: &Client,
    schema: &str,
    selection: &TableSelection,
) -> Result<Vec<String>, SourceError> {
    if !schema_exists(client, schema).await? {
        return Err(SourceError::Configuration(format!(
            "schema \"{schema}\" does not exist in the database: check `schema`"
        )));
    }
    match selection {
        TableSelection::All => list_tables(client, schema).await,
        TableSelection::Listed(names) => {
            let rows = client
                .query(
                    "SELECT c.relname::text FROM pg_catalog.pg_class c \
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relname = ANY($2) \
                     AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
                    &[&schema, names],
                )
                .await
                .map_err(|e| query_error("look up the configured tables", &e))?;
            let found: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
            let missing: Vec<&str> =
                names.iter().filter(|n| !found.contains(n.as_str())).map(String::as_str).collect();
            if !missing.is_empty() {
                let list = missing.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
                let noun = if missing.len() == 1 { "table" } else { "tables" };
                return Err(SourceError::Configuration(format!(
                    "{noun} {list} not found in schema \"{schema}\": check `tables` (names are case-sensitive; use * for every table)"
                )));
            }
            let mut names = names.clone();
            names.sort();
            Ok(names)
        }
    }
}

/// Columns and primary key of one table.
pub async fn describe_table(client: &Client, schema: &str, table: &str) -> Result<TableInfo, SourceError> {
    let what = format!("describe table \"{schema}\".\"{table}\"");
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), bt.typname::text, \
                    COALESCE(k.ord, 0)::int4, bt.oid \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             JOIN pg_catalog.pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
             LEFT JOIN LATERAL ( \
                 SELECT u.ord FROM pg_catalog.pg_index i, \
                        unnest(i.indkey::int2[]) WITH ORDINALITY AS u(attnum, ord) \
                 WHERE i.indrelid = c.oid AND i.indisprimary AND u.attnum = a.attnum \
             ) k ON true \
             WHERE n.nspname = $1 AND c.relname = $2 \
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .map_err(|e| query_error(&what, &e))?;
    if rows.is_empty() {
        return Err(SourceError::Configuration(format!(
            "table \"{table}\" not found in schema \"{schema}\": check `tables`"
        )));
    }
    let mut columns = Vec::with_capacity(rows.len());
    let mut pk: Vec<(i32, Column)> = Vec::new();
    for r in &rows {
        let col = Column { name: r.get(0), sql_type: r.get(1), base_type: r.get(2), base_oid: r.get(4) };
        let ord: i32 = r.get(3);
        if ord > 0 {
            pk.push((ord, col.clone()));
        }
        columns.push(col);
    }
    pk.sort_by_key(|(o, _)| *o);
    Ok(TableInfo {
        schema: schema.to_owned(),
        name: table.to_owned(),
        columns,
        primary_key: pk.into_iter().map(|(_, c)| c).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("plain"), "\"plain\"");
        assert_eq!(quote_ident("we\"ird; DROP"), "\"we\"\"ird; DROP\"");
    }
}
