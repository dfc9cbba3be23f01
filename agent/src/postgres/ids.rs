//! Document ids, identical to the ones Elastic's PostgreSQL connector 9.x
//! writes, so users switching to Ferry keep their documents (no duplicates,
//! no re-index).
//!
//! Elastic (since 8.11) builds, in Python:
//!
//! ```python
//! f"{database}_{schema}_" + f"{'_'.join(sorted(tables))}_" +
//!     '_'.join(str(v) for pk in primary_key_columns if (v := row.get(pk)) is not None)
//! ```
//!
//! with the key columns in key order (`ORDER BY array_position(i.indkey,
//! a.attnum)`) and each value rendered by Python's `str()` of what asyncpg
//! returns: `Decimal` as stored (`1.50`, `1E-7`), `True`/`False`, floats as
//! Python's `repr`, datetimes `2024-01-02 03:04:05.500000+00:00`, dates,
//! UUIDs. NULL parts (possible only for advanced rules' `id_columns`) are
//! left out. An id over 512 bytes becomes the md5 hex of itself
//! (Elasticsearch's `_id` limit). [`IdFormat`] is the one place that builds
//! ids: table reads, advanced rules and the change-data-capture reader all
//! call it with the key values as PostgreSQL prints them (session
//! `TimeZone=UTC`).
//!
//! **Collisions.** Joining parts with `_` is ambiguous: keys `("a_b", "c")`
//! and `("a", "b_c")` both give `..._a_b_c`, and NULL or empty parts vanish.
//! Elastic indexes such rows as one document silently; Ferry keeps the
//! format (ids must stay identical) and detects it: [`CollisionCheck`]
//! remembers every *ambiguous* id of a job (a key part that is NULL, empty,
//! or — in a composite key — contains `_`) and reports two different keys
//! with one id in the job's metadata (`id_collisions`). Two unambiguous keys
//! of one table can never collide (same number of parts, no separator
//! inside a part), so only ambiguous ids need remembering; memory stays
//! bounded by [`MAX_TRACKED_IDS`].

use std::borrow::Cow;
use std::collections::HashMap;

use md5::{Digest, Md5};
use serde_json::{json, Value};

/// Longest `_id` Elasticsearch accepts, in bytes.
pub const MAX_ID_BYTES: usize = 512;

/// Ambiguous ids remembered per job by [`CollisionCheck`]; past it the check
/// says it is incomplete.
pub const MAX_TRACKED_IDS: usize = 200_000;

/// Collisions listed with their keys in the job's metadata.
const MAX_REPORTED: usize = 10;

/// How a key column's PostgreSQL text becomes Python's `str()` of the value
/// asyncpg returns for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// int2/int4/int8/oid: the same digits.
    Integer,
    /// numeric → `Decimal`.
    Numeric,
    /// float4 → a Python float holding the single-precision value.
    Float4,
    /// float8 → Python float.
    Float8,
    /// bool → `True` / `False`.
    Bool,
    /// timestamptz → aware datetime in UTC.
    TimestampTz,
    /// timestamp → naive datetime.
    Timestamp,
    /// time → `time`.
    Time,
    /// timetz → `time` with an offset.
    TimeTz,
    /// date → `date`.
    Date,
    /// text-like, uuid and anything else: PostgreSQL's text as-is.
    Text,
}

impl KeyKind {
    /// Kind for a base type name (`pg_type.typname`).
    pub fn for_type(typname: &str) -> KeyKind {
        match typname {
            "int2" | "int4" | "int8" | "oid" => KeyKind::Integer,
            "numeric" => KeyKind::Numeric,
            "float4" => KeyKind::Float4,
            "float8" => KeyKind::Float8,
            "bool" => KeyKind::Bool,
            "timestamptz" => KeyKind::TimestampTz,
            "timestamp" => KeyKind::Timestamp,
            "time" => KeyKind::Time,
            "timetz" => KeyKind::TimeTz,
            "date" => KeyKind::Date,
            _ => KeyKind::Text,
        }
    }
}

/// Python's `str()` of the value asyncpg returns for a column of `kind`
/// whose PostgreSQL text output is `text`.
pub fn python_str(kind: KeyKind, text: &str) -> Cow<'_, str> {
    match kind {
        KeyKind::Integer | KeyKind::Text | KeyKind::Date => match text {
            // asyncpg maps infinite dates to date.max / date.min.
            "infinity" if kind == KeyKind::Date => Cow::Borrowed("9999-12-31"),
            "-infinity" if kind == KeyKind::Date => Cow::Borrowed("0001-01-01"),
            _ => Cow::Borrowed(text),
        },
        KeyKind::Numeric => decimal_str(text),
        KeyKind::Float4 => match text.parse::<f32>() {
            Ok(v) => Cow::Owned(float_repr(f64::from(v))),
            Err(_) => Cow::Borrowed(text),
        },
        KeyKind::Float8 => match text.parse::<f64>() {
            Ok(v) => Cow::Owned(float_repr(v)),
            Err(_) => Cow::Borrowed(text),
        },
        KeyKind::Bool => match text {
            "t" | "true" => Cow::Borrowed("True"),
            "f" | "false" => Cow::Borrowed("False"),
            _ => Cow::Borrowed(text),
        },
        KeyKind::Timestamp | KeyKind::TimestampTz => {
            let tz = kind == KeyKind::TimestampTz;
            match text {
                "infinity" => {
                    Cow::Owned(format!("9999-12-31 23:59:59.999999{}", if tz { "+00:00" } else { "" }))
                }
                "-infinity" => Cow::Owned(format!("0001-01-01 00:00:00{}", if tz { "+00:00" } else { "" })),
                _ => Cow::Owned(datetime_str(text)),
            }
        }
        KeyKind::Time | KeyKind::TimeTz => Cow::Owned(datetime_str(text)),
    }
}

/// `2024-01-02 03:04:05.5+00` → `2024-01-02 03:04:05.500000+00:00`: Python
/// prints microseconds with six digits (none when zero) and offsets as
/// `±HH:MM`. Also used for times (`03:04:05.5+05:30`).
fn datetime_str(text: &str) -> String {
    // Split off an offset: the last '+' or '-' after the time part.
    let time_start = text.find(' ').map_or(0, |i| i + 1);
    let (main, offset) = match text[time_start..].rfind(['+', '-']) {
        Some(i) => text.split_at(time_start + i),
        None => (text, ""),
    };
    let mut out = String::with_capacity(text.len() + 10);
    match main.split_once('.') {
        Some((whole, frac)) => {
            out.push_str(whole);
            let digits: String = frac.chars().take(6).collect();
            if digits.bytes().any(|b| b != b'0') {
                out.push('.');
                out.push_str(&digits);
                for _ in digits.len()..6 {
                    out.push('0');
                }
            }
        }
        None => out.push_str(main),
    }
    if !offset.is_empty() {
        // `+00`, `+05:30`, `+05:30:15` → Python `+00:00`, `+05:30`, `+05:30:15`.
        out.push_str(offset);
        if offset.len() == 3 {
            out.push_str(":00");
        }
    }
    out
}

/// Python's `str(Decimal(text))` for PostgreSQL's numeric text, which holds
/// exactly the stored digits and scale (as asyncpg's Decimal does).
fn decimal_str(text: &str) -> Cow<'_, str> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text),
    };
    let (int_part, frac_part) = body.split_once('.').unwrap_or((body, ""));
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit())
    {
        // NaN, Infinity, -Infinity print the same in Python.
        return Cow::Borrowed(text);
    }
    let all: String = format!("{int_part}{frac_part}");
    let trimmed = all.trim_start_matches('0');
    let coeff = if trimmed.is_empty() { "0" } else { trimmed };
    let exp = -(frac_part.len() as i64);
    // CPython's Decimal.__str__ (not engineering notation).
    let leftdigits = exp + coeff.len() as i64;
    let dotplace = if exp <= 0 && leftdigits > -6 { leftdigits } else { 1 };
    let (intpart, fracpart) = if dotplace <= 0 {
        ("0".to_owned(), format!(".{}{coeff}", "0".repeat((-dotplace) as usize)))
    } else if dotplace as usize >= coeff.len() {
        (format!("{coeff}{}", "0".repeat(dotplace as usize - coeff.len())), String::new())
    } else {
        (coeff[..dotplace as usize].to_owned(), format!(".{}", &coeff[dotplace as usize..]))
    };
    let exppart =
        if leftdigits == dotplace { String::new() } else { format!("E{:+}", leftdigits - dotplace) };
    Cow::Owned(format!("{}{intpart}{fracpart}{exppart}", if negative { "-" } else { "" }))
}

/// Python's `repr(float)`: shortest round-trip digits, fixed notation for
/// exponents -4..16, else `1e+16` / `1.5e-05`.
fn float_repr(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // `{:e}` gives the shortest round-trip digits: `-1.5e-5`, `1e16`, `0e0`.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        if point <= 0 {
            format!("{sign}0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{sign}{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!("{sign}{}.{}", &digits[..point as usize], &digits[point as usize..])
        }
    } else {
        let rest = &digits[1..];
        let m = if rest.is_empty() { digits[..1].to_owned() } else { format!("{}.{rest}", &digits[..1]) };
        format!("{sign}{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    }
}

/// The id prefix of one source of rows: `{database}_{schema}_{sorted tables
/// joined by _}_`. Build it once per table (or advanced rule) and call
/// [`IdFormat::id`] per row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdFormat {
    prefix: String,
}

impl IdFormat {
    pub fn new<S: AsRef<str>>(database: &str, schema: &str, tables: &[S]) -> Self {
        let mut sorted: Vec<&str> = tables.iter().map(|t| t.as_ref()).collect();
        sorted.sort_unstable();
        IdFormat { prefix: format!("{database}_{schema}_{}_", sorted.join("_")) }
    }

    /// The `_id` of a row whose key values (in key order; `None` = NULL) are
    /// given as PostgreSQL prints them.
    pub fn id<'a>(&self, parts: impl IntoIterator<Item = (KeyKind, Option<&'a str>)>) -> String {
        let mut id = self.prefix.clone();
        let mut first = true;
        for (kind, value) in parts {
            let Some(text) = value else { continue };
            if !first {
                id.push('_');
            }
            first = false;
            id.push_str(&python_str(kind, text));
        }
        finalize_id(id)
    }
}

/// The final `_id`: `id` itself, or its md5 hex when over 512 bytes.
pub fn finalize_id(id: String) -> String {
    if id.len() <= MAX_ID_BYTES {
        return id;
    }
    hex::encode(Md5::digest(id.as_bytes()))
}

/// Finds different keys that got the same id within one job (see the module
/// docs for why remembering ambiguous ids suffices).
#[derive(Debug, Default)]
pub struct CollisionCheck {
    /// Ambiguous id → the key that produced it (PostgreSQL text, `None` = NULL).
    seen: HashMap<String, Vec<Option<String>>>,
    collisions: u64,
    examples: Vec<Value>,
    /// Ambiguous ids not remembered because the map was full.
    untracked: u64,
}

impl CollisionCheck {
    /// Whether a key's id can equal another key's id.
    pub fn is_ambiguous(parts: &[Option<&str>]) -> bool {
        parts.iter().any(|p| match p {
            None => true,
            Some(t) => t.is_empty() || (parts.len() > 1 && t.contains('_')),
        })
    }

    /// Record the row with `id` and key `parts`.
    pub fn observe(&mut self, id: &str, parts: &[Option<&str>]) {
        if !Self::is_ambiguous(parts) {
            return;
        }
        let key: Vec<Option<String>> = parts.iter().map(|p| p.map(str::to_owned)).collect();
        match self.seen.get(id) {
            Some(earlier) if *earlier != key => {
                self.collisions += 1;
                if self.examples.len() < MAX_REPORTED {
                    self.examples.push(json!({"id": id, "keys": [earlier, key]}));
                }
            }
            Some(_) => {}
            None if self.seen.len() < MAX_TRACKED_IDS => {
                self.seen.insert(id.to_owned(), key);
            }
            None => self.untracked += 1,
        }
    }

    /// Collisions found so far.
    pub fn collisions(&self) -> u64 {
        self.collisions
    }

    /// The job metadata entry (`id_collisions`), `None` when there is nothing to say.
    pub fn report(&self) -> Option<Value> {
        if self.collisions == 0 && self.untracked == 0 {
            return None;
        }
        Some(json!({
            "count": self.collisions,
            "examples": self.examples,
            "unchecked_ambiguous_ids": self.untracked,
            "why": "Elastic's id format joins key values with `_`, so keys whose text values contain `_` \
                    (or are empty or NULL) can give two rows one id; only one of them is in the index. \
                    Use an advanced sync rule with id_columns that identify rows without ambiguity.",
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_str_of_asyncpg_values() {
        use KeyKind::*;
        let cases = [
            (Integer, "0", "0"),
            (Integer, "-42", "-42"),
            (Numeric, "1.50", "1.50"),
            (Numeric, "0", "0"),
            (Numeric, "0.00", "0.00"),
            (Numeric, "-12.3400", "-12.3400"),
            (Numeric, "100", "100"),
            (Numeric, "0.000001", "0.000001"),
            (Numeric, "0.0000001", "1E-7"),
            (Numeric, "0.0000000", "0E-7"),
            (Numeric, "NaN", "NaN"),
            (Float8, "1.5", "1.5"),
            (Float8, "2", "2.0"),
            (Float8, "1e+16", "1e+16"),
            (Float8, "123456789012345", "123456789012345.0"),
            (Float8, "1e-05", "1e-05"),
            (Float8, "0.0001", "0.0001"),
            (Float8, "-0", "-0.0"),
            (Float8, "Infinity", "inf"),
            (Float8, "NaN", "nan"),
            (Float4, "1.1", "1.100000023841858"),
            (Bool, "true", "True"),
            (Bool, "f", "False"),
            (TimestampTz, "2024-01-02 03:04:05+00", "2024-01-02 03:04:05+00:00"),
            (TimestampTz, "2024-01-02 03:04:05.5+00", "2024-01-02 03:04:05.500000+00:00"),
            (TimestampTz, "2024-01-02 03:04:05.123456+00", "2024-01-02 03:04:05.123456+00:00"),
            (Timestamp, "2024-01-02 03:04:05", "2024-01-02 03:04:05"),
            (Timestamp, "2024-01-02 03:04:05.25", "2024-01-02 03:04:05.250000"),
            (Time, "03:04:05.1", "03:04:05.100000"),
            (TimeTz, "03:04:05+05:30", "03:04:05+05:30"),
            (TimeTz, "03:04:05-02", "03:04:05-02:00"),
            (Date, "2024-01-02", "2024-01-02"),
            (Text, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ];
        for (kind, text, want) in cases {
            assert_eq!(python_str(kind, text), want, "{kind:?} {text}");
        }
    }

    #[test]
    fn ids_follow_elastic_9() {
        let f = IdFormat::new("chinook", "public", &["album"]);
        assert_eq!(f.id([(KeyKind::Integer, Some("1"))]), "chinook_public_album_1");
        assert_eq!(f.id([(KeyKind::Integer, Some("0"))]), "chinook_public_album_0");
        let two = |a: &str, b: &str| f.id([(KeyKind::Integer, Some(a)), (KeyKind::Integer, Some(b))]);
        assert_eq!(two("0", "1"), "chinook_public_album_0_1");
        assert_eq!(two("1", "0"), "chinook_public_album_1_0");
        // NULL parts are left out; tables are sorted.
        let g = IdFormat::new("db", "s", &["b", "a"]);
        assert_eq!(g.id([(KeyKind::Text, None), (KeyKind::Text, Some("x"))]), "db_s_a_b_x");
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

    #[test]
    fn collisions_are_found_among_ambiguous_keys() {
        let f = IdFormat::new("db", "s", &["t"]);
        let mut check = CollisionCheck::default();
        for key in [
            [Some("a_b"), Some("c")],
            [Some("x"), Some("y")],
            [Some("a"), Some("b_c")],
            [Some("a_b"), Some("c")],
        ] {
            let id = f.id(key.iter().map(|v| (KeyKind::Text, *v)));
            check.observe(&id, &key);
        }
        assert_eq!(check.collisions(), 1);
        let report = check.report().unwrap();
        assert_eq!(report["examples"][0]["id"], "db_s_t_a_b_c");
        assert_eq!(report["examples"][0]["keys"], json!([["a_b", "c"], ["a", "b_c"]]));
        // A single-part key with `_` is not ambiguous.
        assert!(!CollisionCheck::is_ambiguous(&[Some("a_b")]));
        assert!(CollisionCheck::is_ambiguous(&[None]));
    }
}
