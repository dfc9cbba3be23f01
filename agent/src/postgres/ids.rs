//! Document ids, identical to the ones Elastic's PostgreSQL connector writes,
//! so users switching to Ferry keep their documents (no duplicates, no
//! re-index).
//!
//! Elastic builds `{database}_{schema}_{table}_` followed by `{value}_` for
//! each primary key value, in Python:
//!
//! ```python
//! keys_value += f"{row.get(key)}_" if row.get(key) else ""
//! ```
//!
//! so a key part whose Python value is *falsy* (0, 0.0, Decimal zero, "",
//! False) is left out entirely. We reproduce that, including the quirk that
//! rows with key 0 and with an empty key of another column can collide:
//! being compatible matters more here than being pretty. Values are
//! rendered the way Python's `str()` renders what asyncpg returns, for the
//! types where PostgreSQL's text output differs (booleans, timestamptz).
//! Ids longer than 512 bytes are replaced by the hex md5 of the id, as
//! Elastic does (Elasticsearch's `_id` limit is 512 bytes).

use md5::{Digest, Md5};

/// Longest `_id` Elasticsearch accepts, in bytes.
pub const MAX_ID_BYTES: usize = 512;

/// How a primary key column's text is turned into Elastic's id part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// int2/int4/int8/oid/numeric/float: falsy when zero.
    Number,
    /// bool: `t` → `True`, `f` is falsy.
    Bool,
    /// text-like: falsy when empty.
    Text,
    /// timestamptz: Python prints the offset as `+00:00`.
    TimestampTz,
    /// Anything else: never falsy, PostgreSQL's text as-is.
    Other,
}

impl KeyKind {
    /// Kind for a base type name (`pg_type.typname`).
    pub fn for_type(typname: &str) -> KeyKind {
        match typname {
            "int2" | "int4" | "int8" | "oid" | "numeric" | "float4" | "float8" => KeyKind::Number,
            "bool" => KeyKind::Bool,
            "text" | "varchar" | "bpchar" | "name" | "citext" | "char" => KeyKind::Text,
            "timestamptz" => KeyKind::TimestampTz,
            _ => KeyKind::Other,
        }
    }
}

/// Append one key part (`{value}_`, or nothing for a falsy value) to `id`.
pub fn push_key_part(id: &mut String, kind: KeyKind, text: &str) {
    match kind {
        KeyKind::Number => {
            if is_zero(text) {
                return;
            }
            id.push_str(text);
        }
        KeyKind::Bool => {
            if text == "f" || text == "false" {
                return;
            }
            id.push_str("True");
        }
        KeyKind::Text => {
            if text.is_empty() {
                return;
            }
            id.push_str(text);
        }
        KeyKind::TimestampTz => {
            // PostgreSQL: `2024-01-02 03:04:05+00` (or `+05:30`); Python: `+00:00`.
            let b = text.as_bytes();
            let n = b.len();
            if n >= 3 && (b[n - 3] == b'+' || b[n - 3] == b'-') && b[n - 2..].iter().all(u8::is_ascii_digit) {
                id.push_str(text);
                id.push_str(":00");
            } else {
                id.push_str(text);
            }
        }
        KeyKind::Other => id.push_str(text),
    }
    id.push('_');
}

/// Zero as a number (`0`, `-0`, `0.000`, `0e0`); NaN and others are truthy.
fn is_zero(text: &str) -> bool {
    let t = text.strip_prefix(['-', '+']).unwrap_or(text);
    let mantissa = t.split(['e', 'E']).next().unwrap_or("");
    !mantissa.is_empty() && mantissa.bytes().all(|b| b == b'0' || b == b'.') && mantissa.contains('0')
}

/// The final `_id`: `id` itself, or its md5 hex when over 512 bytes.
pub fn finalize_id(id: String) -> String {
    if id.len() <= MAX_ID_BYTES {
        return id;
    }
    hex::encode(Md5::digest(id.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(parts: &[(KeyKind, &str)]) -> String {
        let mut s = "db_public_t_".to_owned();
        for (k, v) in parts {
            push_key_part(&mut s, *k, v);
        }
        s
    }

    #[test]
    fn falsy_parts_are_skipped_like_python() {
        assert_eq!(id(&[(KeyKind::Number, "5")]), "db_public_t_5_");
        assert_eq!(id(&[(KeyKind::Number, "0")]), "db_public_t_");
        assert_eq!(id(&[(KeyKind::Number, "0.00"), (KeyKind::Text, "a")]), "db_public_t_a_");
        assert_eq!(id(&[(KeyKind::Number, "-0")]), "db_public_t_");
        assert_eq!(id(&[(KeyKind::Number, "NaN")]), "db_public_t_NaN_");
        assert_eq!(id(&[(KeyKind::Number, "10")]), "db_public_t_10_");
        assert_eq!(id(&[(KeyKind::Text, "")]), "db_public_t_");
        assert_eq!(id(&[(KeyKind::Text, "0")]), "db_public_t_0_");
        assert_eq!(id(&[(KeyKind::Bool, "t"), (KeyKind::Bool, "f")]), "db_public_t_True_");
        assert_eq!(
            id(&[(KeyKind::TimestampTz, "2024-01-02 03:04:05+00")]),
            "db_public_t_2024-01-02 03:04:05+00:00_"
        );
    }

    #[test]
    fn long_ids_are_hashed() {
        let short = "a".repeat(512);
        assert_eq!(finalize_id(short.clone()), short);
        let long = "a".repeat(513);
        let h = finalize_id(long.clone());
        assert_eq!(h.len(), 32);
        assert_eq!(h, hex::encode(Md5::digest(long.as_bytes())));
    }
}
