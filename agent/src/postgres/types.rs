//! Column types as document field kinds, and the values a search index
//! cannot hold.
//!
//! Contracts:
//! - [`field_kind`] maps a column's catalog type (`typname` of its base type,
//!   `format_type` text for `numeric(p,s)`) to a [`FieldKind`]: integers →
//!   Integer/Long, `numeric` → Decimal with its precision and scale,
//!   `real`/`double precision` → Double, `boolean`, `date`/`timestamp[tz]` →
//!   Date, text types → Text, `uuid`/`"char"`/`cidr`/`money`/`time`/`interval`/...
//!   → Keyword, `json`/`jsonb` → Object, `bytea` → Binary, `inet` → Ip;
//!   arrays → their element's kind. Anything else (enums, composites,
//!   ranges, extension types) is not described: dynamic mapping takes it.
//! - [`ValueCheck::fix`] runs on every rendered value of a described field.
//!   Values Elasticsearch rejects for that kind — `NaN`/`±Infinity` numbers,
//!   numbers beyond a double's range, `±infinity`, BC or year > 9999 dates,
//!   `inet` values with a network mask — become `null` (inside an array:
//!   that element), and the original JSON text is kept in the document as
//!   `_ferry_original.<field>` (a string). Each such value counts once in the
//!   job's metadata `unrepresentable_values`.
//! - `json`/`jsonb` values are made mapping-safe: a top level that is not an
//!   object becomes `{"value": <it>}`, and in an array that mixes objects with
//!   other values each non-object becomes `{"value": <it>}`; objects are
//!   otherwise sent as stored.

use ferry_sdk::{FieldKind, FieldSpec};
use serde_json::Value;

use super::catalog::Column;
use super::render::write_json_str;

/// The document field that keeps the original text of values replaced by null.
pub const ORIGINAL_FIELD: &str = "_ferry_original";

/// The kind of a column's values (`None`: not described), and whether they are arrays.
pub fn field_kind(col: &Column) -> Option<(FieldKind, bool)> {
    let (base, array) = match col.base_type.strip_prefix('_') {
        Some(elem) => (elem, true),
        None => (col.base_type.as_str(), false),
    };
    let kind = match base {
        "int2" | "int4" => FieldKind::Integer,
        "int8" | "oid" | "xid8" => FieldKind::Long,
        "float4" | "float8" => FieldKind::Double,
        "numeric" => {
            let (precision, scale) = numeric_typmod(&col.sql_type);
            FieldKind::Decimal { precision, scale }
        }
        "bool" => FieldKind::Boolean,
        "date" | "timestamp" | "timestamptz" => FieldKind::Date,
        "text" | "varchar" | "bpchar" | "citext" => FieldKind::Text,
        "name" | "char" | "uuid" | "cidr" | "macaddr" | "macaddr8" | "money" | "time" | "timetz"
        | "interval" | "bit" | "varbit" | "xml" | "pg_lsn" => FieldKind::Keyword,
        // bytea[] is rendered by PostgreSQL (hex `\x..`, not base64).
        "bytea" if !array => FieldKind::Binary,
        "bytea" => FieldKind::Keyword,
        "json" | "jsonb" => FieldKind::Object,
        "inet" => FieldKind::Ip,
        _ => return None,
    };
    Some((kind, array))
}

/// `numeric(12,4)` → (12, 4); `numeric` → (0, 0).
fn numeric_typmod(sql_type: &str) -> (u32, i32) {
    let inner = sql_type.split_once('(').and_then(|(_, r)| r.strip_suffix(')'));
    let Some(inner) = inner else { return (0, 0) };
    let mut parts = inner.split(',').map(|p| p.trim());
    let p = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let s = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (p, s)
}

/// The field specs of a table's documents (described columns only).
pub fn field_specs<'a>(fields: impl Iterator<Item = (&'a str, &'a Column)>) -> Vec<FieldSpec> {
    fields
        .filter_map(|(name, col)| {
            field_kind(col).map(|(kind, array)| FieldSpec {
                name: name.to_owned(),
                kind,
                array,
                source_type: col.sql_type.clone(),
            })
        })
        .collect()
}

/// What is checked on each value of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueCheck {
    None,
    /// Finite and within a double's range.
    Number,
    /// `strict_date_optional_time`, years 1-9999.
    Date,
    /// An address without a network mask.
    Ip,
    /// Mapping-safe JSON objects.
    Json,
}

impl ValueCheck {
    pub fn for_column(col: &Column) -> (ValueCheck, bool) {
        match field_kind(col) {
            Some((
                FieldKind::Integer | FieldKind::Long | FieldKind::Double | FieldKind::Decimal { .. },
                a,
            )) => (ValueCheck::Number, a),
            Some((FieldKind::Date, a)) => (ValueCheck::Date, a),
            Some((FieldKind::Ip, a)) => (ValueCheck::Ip, a),
            Some((FieldKind::Object, a)) => (ValueCheck::Json, a),
            Some((_, a)) => (ValueCheck::None, a),
            None => (ValueCheck::None, false),
        }
    }

    /// Whether one scalar JSON value is representable.
    fn scalar_ok(self, v: &[u8]) -> bool {
        match self {
            ValueCheck::None | ValueCheck::Json => true,
            ValueCheck::Number => match v.first() {
                None | Some(b'n') => true,
                Some(b'"') => false, // "NaN", "Infinity", "-Infinity"
                Some(_) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<f64>().ok())
                    .is_some_and(f64::is_finite),
            },
            ValueCheck::Date => match v {
                b"null" => true,
                [b'"', rest @ ..] => {
                    let s = rest.strip_suffix(b"\"").unwrap_or(rest);
                    let year_digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
                    year_digits == 4
                        && s.get(4) == Some(&b'-')
                        && !s.ends_with(b" BC")
                        && !s.starts_with(b"0000")
                }
                _ => false,
            },
            ValueCheck::Ip => !v.contains(&b'/'),
        }
    }
}

/// The value check of one field, applied to its rendered values.
#[derive(Debug, Clone)]
pub struct FieldCheck {
    check: ValueCheck,
    array: bool,
}

impl FieldCheck {
    pub fn for_column(col: &Column) -> FieldCheck {
        let (check, array) = ValueCheck::for_column(col);
        FieldCheck { check, array }
    }

    /// Fix the value rendered at `out[start..]` in place. Returns the
    /// original text when the value was unrepresentable (it is now `null`,
    /// or an array with nulls).
    pub fn fix(&self, out: &mut Vec<u8>, start: usize) -> Option<Vec<u8>> {
        if self.check == ValueCheck::None {
            return None;
        }
        let v = &out[start..];
        if v == b"null" {
            return None;
        }
        if self.check == ValueCheck::Json && !self.array {
            if let Some(fixed) = safe_json(v) {
                out.truncate(start);
                out.extend_from_slice(&fixed);
            }
            return None;
        }
        if !self.array || !v.starts_with(b"[") {
            if self.check.scalar_ok(v) {
                return None;
            }
            let original = v.to_vec();
            out.truncate(start);
            out.extend_from_slice(b"null");
            return Some(original);
        }
        // An array (possibly nested, as PostgreSQL renders multi-dimensional
        // arrays): check each element.
        let Ok(mut tree) = serde_json::from_slice::<Value>(v) else { return None };
        let mut bad = false;
        if self.check == ValueCheck::Json {
            walk_leaves(&mut tree, &mut |leaf| {
                if let Some(fixed) = safe_json(leaf.to_string().as_bytes()) {
                    *leaf = serde_json::from_slice(&fixed).unwrap_or(Value::Null);
                }
            });
        } else {
            walk_leaves(&mut tree, &mut |leaf| {
                if !self.check.scalar_ok(leaf.to_string().as_bytes()) {
                    *leaf = Value::Null;
                    bad = true;
                }
            });
        }
        let fixed = serde_json::to_vec(&tree).unwrap_or_else(|_| b"null".to_vec());
        let original = bad.then(|| v.to_vec());
        if bad || self.check == ValueCheck::Json {
            out.truncate(start);
            out.extend_from_slice(&fixed);
        }
        original
    }
}

fn walk_leaves(v: &mut Value, f: &mut impl FnMut(&mut Value)) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(|i| walk_leaves(i, f)),
        leaf => f(leaf),
    }
}

/// The mapping-safe form of one JSON value, `None` when it already is.
pub fn safe_json(v: &[u8]) -> Option<Vec<u8>> {
    let first = v.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first != Some(b'{') {
        if first.is_none() || v.trim_ascii() == b"null" {
            return None;
        }
        let mut out = Vec::with_capacity(v.len() + 10);
        out.extend_from_slice(b"{\"value\":");
        out.extend_from_slice(v);
        out.push(b'}');
        return Some(safe_json(&out).unwrap_or(out));
    }
    if !v.contains(&b'[') {
        return None; // no arrays, nothing can mix
    }
    // Numbers beyond f64 make serde_json fail: such text stays as stored.
    let mut tree: Value = serde_json::from_slice(v).ok()?;
    if !fix_mixed_arrays(&mut tree) {
        return None;
    }
    serde_json::to_vec(&tree).ok()
}

/// Wraps the non-objects of arrays that also hold objects; true if anything changed.
fn fix_mixed_arrays(v: &mut Value) -> bool {
    match v {
        Value::Object(m) => m.values_mut().fold(false, |c, x| fix_mixed_arrays(x) | c),
        Value::Array(items) => {
            let mut changed = items.iter_mut().fold(false, |c, x| fix_mixed_arrays(x) | c);
            let mut leaves = Vec::new();
            collect_kinds(items, &mut leaves);
            let has_object = leaves.contains(&true);
            let has_other = leaves.contains(&false);
            if has_object && has_other {
                wrap_non_objects(items);
                changed = true;
            }
            changed
        }
        _ => false,
    }
}

/// Whether each leaf (nested arrays flattened, as Elasticsearch does) is an
/// object; nulls do not count.
fn collect_kinds(items: &[Value], out: &mut Vec<bool>) {
    for i in items {
        match i {
            Value::Array(inner) => collect_kinds(inner, out),
            Value::Null => {}
            Value::Object(_) => out.push(true),
            _ => out.push(false),
        }
    }
}

fn wrap_non_objects(items: &mut [Value]) {
    for i in items.iter_mut() {
        match i {
            Value::Array(inner) => wrap_non_objects(inner),
            Value::Null | Value::Object(_) => {}
            other => {
                let taken = std::mem::take(other);
                *other = serde_json::json!({ "value": taken });
            }
        }
    }
}

/// Append `,"_ferry_original":{"<field>":"<text>",...}` for the values of
/// one document that were replaced by null.
pub fn write_originals(out: &mut Vec<u8>, originals: &[(&str, Vec<u8>)]) {
    if originals.is_empty() {
        return;
    }
    out.push(b',');
    write_json_str(out, ORIGINAL_FIELD);
    out.extend_from_slice(b":{");
    for (i, (field, text)) in originals.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(out, field);
        out.push(b':');
        // A JSON string value is kept as its decoded text; anything else as its JSON.
        let text: String = serde_json::from_slice::<String>(text)
            .unwrap_or_else(|_| String::from_utf8_lossy(text).into_owned());
        write_json_str(out, &text);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(base: &str, sql: &str) -> Column {
        Column { name: "c".into(), sql_type: sql.into(), base_type: base.into(), base_oid: 0 }
    }

    fn fixed(base: &str, sql: &str, v: &str) -> (String, Option<String>) {
        let check = FieldCheck::for_column(&col(base, sql));
        let mut out = b"{\"x\":".to_vec();
        out.extend_from_slice(v.as_bytes());
        let orig = check.fix(&mut out, 5);
        (String::from_utf8(out[5..].to_vec()).unwrap(), orig.map(|o| String::from_utf8(o).unwrap()))
    }

    #[test]
    fn kinds_from_the_catalog() {
        assert_eq!(field_kind(&col("int4", "integer")), Some((FieldKind::Integer, false)));
        assert_eq!(field_kind(&col("int8", "bigint")), Some((FieldKind::Long, false)));
        assert_eq!(
            field_kind(&col("numeric", "numeric(12,4)")),
            Some((FieldKind::Decimal { precision: 12, scale: 4 }, false))
        );
        assert_eq!(
            field_kind(&col("numeric", "numeric")),
            Some((FieldKind::Decimal { precision: 0, scale: 0 }, false))
        );
        assert_eq!(field_kind(&col("_float8", "double precision[]")), Some((FieldKind::Double, true)));
        assert_eq!(
            field_kind(&col("timestamptz", "timestamp with time zone")),
            Some((FieldKind::Date, false))
        );
        assert_eq!(field_kind(&col("varchar", "character varying(10)")), Some((FieldKind::Text, false)));
        assert_eq!(field_kind(&col("uuid", "uuid")), Some((FieldKind::Keyword, false)));
        assert_eq!(field_kind(&col("jsonb", "jsonb")), Some((FieldKind::Object, false)));
        assert_eq!(field_kind(&col("bytea", "bytea")), Some((FieldKind::Binary, false)));
        assert_eq!(field_kind(&col("_bytea", "bytea[]")), Some((FieldKind::Keyword, true)));
        assert_eq!(field_kind(&col("inet", "inet")), Some((FieldKind::Ip, false)));
        assert_eq!(field_kind(&col("mood", "mood")), None);
    }

    #[test]
    fn unrepresentable_numbers_become_null_with_the_original() {
        assert_eq!(fixed("float8", "double precision", "1.5"), ("1.5".into(), None));
        assert_eq!(fixed("float8", "double precision", "\"NaN\""), ("null".into(), Some("\"NaN\"".into())));
        assert_eq!(
            fixed("numeric", "numeric", "\"-Infinity\""),
            ("null".into(), Some("\"-Infinity\"".into()))
        );
        assert_eq!(fixed("numeric", "numeric", "1e400"), ("null".into(), Some("1e400".into())));
        let big = "12345678901234567890.1234567890";
        assert_eq!(fixed("numeric", "numeric(30,10)", big), (big.into(), None));
        assert_eq!(fixed("int8", "bigint", "null"), ("null".into(), None));
        assert_eq!(
            fixed("_float8", "double precision[]", "[1,\"Infinity\",[2,\"NaN\"]]"),
            ("[1,null,[2,null]]".into(), Some("[1,\"Infinity\",[2,\"NaN\"]]".into()))
        );
        assert_eq!(fixed("_float8", "double precision[]", "[1,2.5]"), ("[1,2.5]".into(), None));
    }

    #[test]
    fn dates_out_of_range_become_null() {
        assert_eq!(fixed("date", "date", "\"2024-02-29\""), ("\"2024-02-29\"".into(), None));
        let ts = "\"2024-01-02T03:04:05.123456+00:00\"";
        assert_eq!(fixed("timestamptz", "timestamptz", ts), (ts.into(), None));
        for bad in [
            "\"infinity\"",
            "\"-infinity\"",
            "\"0044-03-15 BC\"",
            "\"10000-01-01\"",
            "\"0001-12-31T23:59:59+00:00 BC\"",
        ] {
            assert_eq!(fixed("timestamptz", "timestamptz", bad), ("null".into(), Some(bad.into())), "{bad}");
        }
        assert_eq!(
            fixed("_date", "date[]", "[\"2020-01-01\",\"infinity\"]"),
            ("[\"2020-01-01\",null]".into(), Some("[\"2020-01-01\",\"infinity\"]".into()))
        );
        assert_eq!(fixed("inet", "inet", "\"10.0.0.1/24\""), ("null".into(), Some("\"10.0.0.1/24\"".into())));
        assert_eq!(fixed("inet", "inet", "\"10.0.0.1\""), ("\"10.0.0.1\"".into(), None));
    }

    #[test]
    fn jsonb_is_made_mapping_safe() {
        let j = |v: &str| fixed("jsonb", "jsonb", v);
        assert_eq!(j("{\"a\": 1}"), ("{\"a\": 1}".into(), None));
        assert_eq!(j("\"str\""), ("{\"value\":\"str\"}".into(), None));
        assert_eq!(j("42"), ("{\"value\":42}".into(), None));
        assert_eq!(j("[1, {\"z\": null}]"), ("{\"value\":[{\"value\":1},{\"z\":null}]}".into(), None));
        assert_eq!(
            j("{\"k\": [1, 2, {\"z\": null}]}"),
            ("{\"k\":[{\"value\":1},{\"value\":2},{\"z\":null}]}".into(), None)
        );
        assert_eq!(j("{\"k\": [[1], [{\"z\": 1}]]}"), ("{\"k\":[[{\"value\":1}],[{\"z\":1}]]}".into(), None));
        assert_eq!(j("{\"k\": [1, 2, null]}"), ("{\"k\": [1, 2, null]}".into(), None));
        assert_eq!(j("null"), ("null".into(), None));
        // The top-level wrap comes first, then the arrays inside are fixed.
        let (out, _) = j("[1, {\"z\": 1}]");
        assert!(out.starts_with("{\"value\":"), "{out}");
    }

    #[test]
    fn originals_are_strings() {
        let mut out = Vec::new();
        write_originals(&mut out, &[("f", b"\"NaN\"".to_vec()), ("g", b"1e400".to_vec())]);
        assert_eq!(String::from_utf8(out).unwrap(), ",\"_ferry_original\":{\"f\":\"NaN\",\"g\":\"1e400\"}");
    }
}
