//! Sync rules for PostgreSQL.
//!
//! **Basic rules** become a `WHERE` clause, so excluded rows are never read
//! (Elastic's connector fetches every row and filters afterwards). The rules
//! keep their meaning — the first rule whose condition holds decides — as
//! `CASE WHEN c1 THEN include1 WHEN c2 THEN include2 ... ELSE TRUE END`
//! (the `ELSE` is the catch-all rule). A rule's `field` is a column name, or
//! the document field `{schema}_{table}_{column}`; a rule about a column a
//! table does not have does not apply to that table (its documents lack the
//! field, so it cannot match). Values are parameters, never spliced in;
//! identifiers are quoted. Comparisons: `equals`, `starts_with`,
//! `ends_with`, `contains` on the column's text (as Elastic compares
//! strings); `regex` is PostgreSQL's `~` (POSIX regular expressions); `<`
//! and `>` compare in the column's own type (numbers as numbers, dates as
//! dates). A NULL never matches.
//!
//! **Advanced rules** are Elastic's PostgreSQL shape: an array of
//! `{tables, query, id_columns}`. Each query is streamed in a `REPEATABLE
//! READ, READ ONLY` transaction (a query cannot write); documents take ids
//! from `id_columns` (or the single table's primary key), so views, joins
//! and tables without a primary key can be synced.

use std::collections::BTreeMap;

use ferry_sdk::{BasicRule, RuleError, SourceError, SyncRules};
use serde::Deserialize;
use tokio_postgres::Client;

use super::catalog::{self, quote_ident, TableInfo};
use super::ids::KeyKind;

/// One advanced rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvancedRule {
    pub tables: Vec<String>,
    pub query: String,
    #[serde(default)]
    pub id_columns: Vec<String>,
}

/// Parses the advanced snippet; `None` when there are no advanced rules.
pub fn advanced_rules(rules: &SyncRules) -> Result<Option<Vec<AdvancedRule>>, String> {
    let v = match &rules.advanced {
        serde_json::Value::Null => return Ok(None),
        serde_json::Value::String(s) => {
            serde_json::from_str(s).map_err(|e| format!("not valid JSON: {e}"))?
        }
        v => v.clone(),
    };
    let list: Vec<AdvancedRule> = serde_json::from_value(v).map_err(|e| {
        format!("expected an array of {{\"tables\": [...], \"query\": \"SELECT ...\", \"id_columns\": [...]}}: {e}")
    })?;
    Ok((!list.is_empty()).then_some(list))
}

/// The column of `table` a rule's field names.
pub fn resolve_field<'a>(field: &str, table: &'a TableInfo) -> Option<&'a catalog::Column> {
    let field = field.trim();
    table.columns.iter().find(|c| c.name == field).or_else(|| {
        let lower = field.to_lowercase();
        table
            .columns
            .iter()
            .find(|c| format!("{}_{}_{}", table.schema, table.name, c.name).to_lowercase() == lower)
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Cond {
    /// `t."column"`
    column: String,
    sql_type: String,
    rule: String,
    value: String,
    include: bool,
}

/// The basic rules that apply to one table, as SQL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowFilter {
    conds: Vec<Cond>,
}

impl RowFilter {
    pub fn for_table(rules: &[BasicRule], table: &TableInfo) -> RowFilter {
        let conds = rules
            .iter()
            .filter(|r| !r.is_default())
            .filter_map(|r| {
                let col = resolve_field(&r.field, table)?;
                Some(Cond {
                    column: format!("t.{}", quote_ident(&col.name)),
                    sql_type: col.sql_type.clone(),
                    rule: r.rule.clone(),
                    value: r.value.clone(),
                    include: r.include(),
                })
            })
            .collect();
        RowFilter { conds }
    }

    pub fn is_empty(&self) -> bool {
        self.conds.is_empty()
    }

    /// A boolean SQL expression whose parameters are numbered from
    /// `first_param`, in the order of [`RowFilter::params`].
    pub fn sql(&self, first_param: usize) -> String {
        if self.conds.is_empty() {
            return "TRUE".into();
        }
        let mut s = String::from("CASE");
        for (i, c) in self.conds.iter().enumerate() {
            let v = format!("${}::text", first_param + i);
            let text = format!("{}::text", c.column);
            let cond = match c.rule.as_str() {
                "equals" => format!("{text} = {v}"),
                "starts_with" => format!("left({text}, length({v})) = {v}"),
                "ends_with" => format!("right({text}, length({v})) = {v}"),
                "contains" => format!("strpos({text}, {v}) > 0"),
                "regex" => format!("{text} ~ {v}"),
                "<" => format!("{} < {v}::{}", c.column, c.sql_type),
                ">" => format!("{} > {v}::{}", c.column, c.sql_type),
                // Checked on validation; an unknown rule matches nothing.
                _ => "FALSE".to_owned(),
            };
            s.push_str(&format!(" WHEN {cond} THEN {}", if c.include { "TRUE" } else { "FALSE" }));
        }
        s.push_str(" ELSE TRUE END");
        s
    }

    pub fn params(&self) -> impl Iterator<Item = &String> {
        self.conds.iter().map(|c| &c.value)
    }

    pub fn len(&self) -> usize {
        self.conds.len()
    }
}

/// Checks rules against the source: fields are columns of the configured
/// tables, regexes and comparison values are valid for PostgreSQL, advanced
/// queries prepare and return their id columns.
pub async fn validate(client: &Client, schema: &str, tables: &[String], rules: &SyncRules) -> Vec<RuleError> {
    let mut errors = vec![];
    let mut infos = Vec::new();
    if !rules.basic.is_empty() {
        for t in tables {
            match catalog::describe_table(client, schema, t).await {
                Ok(info) => infos.push(info),
                Err(e) => errors.push(RuleError::new("DEFAULT", format!("cannot read table {t:?}: {e}"))),
            }
        }
    }
    for r in rules.basic.iter().filter(|r| !r.is_default()) {
        let cols: Vec<_> = infos.iter().filter_map(|t| resolve_field(&r.field, t)).collect();
        if cols.is_empty() {
            errors.push(RuleError::new(
                &r.id,
                format!("field {:?} is not a column of the synced tables ({})", r.field, tables.join(", ")),
            ));
            continue;
        }
        let check = match r.rule.as_str() {
            "regex" => client.query("SELECT '' ~ $1::text", &[&r.value]).await.err().map(|e| {
                format!("{:?} is not a valid PostgreSQL regular expression: {}", r.value, db_message(&e))
            }),
            "<" | ">" => {
                let mut err = None;
                for c in &cols {
                    let sql = format!("SELECT $1::text::{}", c.sql_type);
                    if let Err(e) = client.query(&sql, &[&r.value]).await {
                        err = Some(format!(
                            "{:?} cannot be compared with column {:?} of type {}: {}",
                            r.value,
                            c.name,
                            c.sql_type,
                            db_message(&e)
                        ));
                        break;
                    }
                }
                err
            }
            "equals" | "starts_with" | "ends_with" | "contains" => None,
            other => Some(format!("unknown rule {other:?}")),
        };
        if let Some(m) = check {
            errors.push(RuleError::new(&r.id, m));
        }
    }
    match advanced_rules(rules) {
        Err(e) => errors.push(RuleError::new("advanced_snippet", e)),
        Ok(None) => {}
        Ok(Some(list)) => {
            for (i, a) in list.iter().enumerate() {
                if let Err(m) = check_advanced(client, schema, a).await {
                    errors.push(RuleError::new("advanced_snippet", format!("rule {i}: {m}")));
                }
            }
        }
    }
    errors
}

/// The id columns of an advanced rule: given, or the primary key of its
/// single table.
pub async fn id_columns(client: &Client, schema: &str, a: &AdvancedRule) -> Result<Vec<String>, String> {
    if !a.id_columns.is_empty() {
        return Ok(a.id_columns.clone());
    }
    if a.tables.len() != 1 {
        return Err("id_columns is required when a query reads several tables".into());
    }
    let info = catalog::describe_table(client, schema, &a.tables[0]).await.map_err(|e| e.to_string())?;
    if info.primary_key.is_empty() {
        return Err(format!(
            "table {:?} has no primary key: name the columns that identify a row in id_columns",
            a.tables[0]
        ));
    }
    Ok(info.primary_key.iter().map(|c| c.name.clone()).collect())
}

/// How each id column's text becomes its id part (by the query's column types).
pub async fn id_column_kinds(
    client: &Client,
    a: &AdvancedRule,
    id_columns: &[String],
) -> Result<Vec<KeyKind>, String> {
    let stmt = client
        .prepare(&wrap_query(&a.query))
        .await
        .map_err(|e| format!("the query does not work: {}", db_message(&e)))?;
    id_columns
        .iter()
        .map(|c| {
            stmt.columns()
                .iter()
                .find(|col| col.name() == c)
                .map(|col| KeyKind::for_type(col.type_().name()))
                .ok_or_else(|| format!("id column {c:?} is not among the query's columns"))
        })
        .collect()
}

async fn check_advanced(client: &Client, schema: &str, a: &AdvancedRule) -> Result<(), String> {
    if a.tables.is_empty() {
        return Err("tables must name at least one table".into());
    }
    // Prepared, not run: checks syntax, tables, columns and that it is a
    // single statement.
    let stmt = client
        .prepare(&wrap_query(&a.query))
        .await
        .map_err(|e| format!("the query does not work: {}", db_message(&e)))?;
    let cols: Vec<&str> = stmt.columns().iter().map(|c| c.name()).collect();
    for c in id_columns(client, schema, a).await? {
        if !cols.contains(&c.as_str()) {
            return Err(format!("id column {c:?} is not among the query's columns ({})", cols.join(", ")));
        }
    }
    Ok(())
}

/// The user's query as a subquery `q`.
pub fn wrap_query(query: &str) -> String {
    let q = query.trim().trim_end_matches(';');
    format!("SELECT * FROM ({q}) AS q")
}

/// The SELECT that streams an advanced rule: the row as JSON with prefixed
/// field names (`$1` is the prefix), then the id columns as text.
pub fn advanced_sql(query: &str, id_columns: &[String]) -> String {
    let q = query.trim().trim_end_matches(';');
    let mut sql = String::from(
        "SELECT (SELECT json_object_agg($1::text || lower(j.key), j.value) FROM json_each(row_to_json(q)) AS j)::text",
    );
    for c in id_columns {
        sql.push_str(&format!(", q.{}::text", quote_ident(c)));
    }
    sql.push_str(&format!(" FROM ({q}) AS q"));
    sql
}

fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| e.to_string())
}

/// Rows per advanced rule, for the job's metadata.
pub type AdvancedReport = BTreeMap<String, u64>;

pub(crate) fn source_error(m: String) -> SourceError {
    SourceError::Configuration(format!("advanced sync rule: {m}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::catalog::Column;

    fn table() -> TableInfo {
        let col = |n: &str, t: &str, b: &str| Column {
            name: n.into(),
            sql_type: t.into(),
            base_type: b.into(),
            base_oid: 0,
        };
        TableInfo {
            schema: "public".into(),
            name: "item".into(),
            columns: vec![
                col("id", "integer", "int4"),
                col("Name", "text", "text"),
                col("price", "numeric(10,2)", "numeric"),
            ],
            primary_key: vec![col("id", "integer", "int4")],
        }
    }

    fn rule(id: &str, policy: &str, field: &str, rule: &str, value: &str) -> BasicRule {
        BasicRule {
            id: id.into(),
            policy: policy.into(),
            field: field.into(),
            rule: rule.into(),
            value: value.into(),
        }
    }

    #[test]
    fn basic_rules_become_a_case_in_rule_order() {
        let rules = [
            rule("a", "exclude", "price", "<", "10"),
            rule("b", "include", "public_item_name", "starts_with", "it"),
            rule("c", "exclude", "missing", "equals", "x"),
            rule("DEFAULT", "include", "_", "regex", ".*"),
        ];
        let f = RowFilter::for_table(&rules, &table());
        assert_eq!(f.len(), 2, "the rule on a missing column does not apply");
        assert_eq!(
            f.sql(5),
            "CASE WHEN t.\"price\" < $5::text::numeric(10,2) THEN FALSE \
             WHEN left(t.\"Name\"::text, length($6::text)) = $6::text THEN TRUE ELSE TRUE END"
        );
        assert_eq!(f.params().cloned().collect::<Vec<_>>(), vec!["10", "it"]);
    }

    #[test]
    fn every_rule_kind_has_sql_and_values_stay_parameters() {
        for (r, expect) in [
            ("equals", "t.\"id\"::text = $1::text"),
            ("ends_with", "right(t.\"id\"::text, length($1::text)) = $1::text"),
            ("contains", "strpos(t.\"id\"::text, $1::text) > 0"),
            ("regex", "t.\"id\"::text ~ $1::text"),
            (">", "t.\"id\" > $1::text::integer"),
        ] {
            let f =
                RowFilter::for_table(&[rule("x", "include", "id", r, "'; DROP TABLE item; --")], &table());
            let sql = f.sql(1);
            assert!(sql.contains(expect), "{r}: {sql}");
            assert!(!sql.contains("DROP"), "{sql}");
        }
        assert!(RowFilter::for_table(&[], &table()).is_empty());
    }

    #[test]
    fn advanced_rules_parse_and_wrap() {
        let rules = SyncRules {
            basic: vec![],
            advanced: serde_json::json!([{"tables": ["item"], "query": "SELECT * FROM item WHERE price > 5;"}]),
        };
        let list = advanced_rules(&rules).unwrap().unwrap();
        assert_eq!(list[0].tables, vec!["item"]);
        assert_eq!(
            advanced_sql(&list[0].query, &["id".into()]),
            "SELECT (SELECT json_object_agg($1::text || lower(j.key), j.value) FROM json_each(row_to_json(q)) AS j)::text, \
             q.\"id\"::text FROM (SELECT * FROM item WHERE price > 5) AS q"
        );
        let bad =
            SyncRules { basic: vec![], advanced: serde_json::json!([{"table": ["item"], "query": "q"}]) };
        assert!(advanced_rules(&bad).unwrap_err().contains("expected an array"));
        assert_eq!(advanced_rules(&SyncRules::default()).unwrap(), None);
    }
}
