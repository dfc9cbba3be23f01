//! Rendering pgoutput's text-format values as the JSON the full sync writes
//! for the same value ([`crate::postgres::render`] on binary values, or
//! PostgreSQL's `to_json`), so a document is identical whether it came from
//! a full sync or from the stream.
//!
//! The replication session runs with the full sync's settings
//! (`TimeZone=UTC`, `DateStyle=ISO`, `extra_float_digits=3`,
//! `bytea_output=hex`), so text output is predictable:
//! - booleans `t`/`f`, integers, numeric and floats are JSON literals
//!   (`NaN`/`Infinity` as strings, as `to_json` writes them);
//! - text types and uuid are strings; json/jsonb are copied;
//! - date, timestamptz and timestamp (taken as UTC, like the full sync's
//!   `AT TIME ZONE 'UTC'`) are rewritten to RFC 3339
//!   (`2024-01-02 03:04:05+00` → `"2024-01-02T03:04:05+00:00"`);
//! - bytea (`\x...`) becomes base64, like the full sync's
//!   `encode(..., 'base64')`;
//! - every other type (arrays, composites, ranges, enums, extension
//!   types) is [`TextCodec::Server`]: the caller asks PostgreSQL for
//!   `to_json(value::type)`, one round trip per value — correct for the
//!   long tail, at a cost only tables with such columns pay.

use base64::Engine;

use crate::postgres::render::write_json_str;

/// How one text value becomes JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextCodec {
    Bool,
    /// Integers and numeric: the text is the literal; numeric's
    /// `NaN`/`Infinity` become strings.
    Number,
    /// float4/float8 (same rule as [`TextCodec::Number`]).
    Float,
    String,
    Date,
    TimestampTz,
    /// `timestamp without time zone`, taken as UTC.
    Timestamp,
    Bytea,
    Json,
    /// Render with `to_json` on the server.
    Server,
}

impl TextCodec {
    /// By base type OID (domains resolved).
    pub fn for_type(oid: u32) -> TextCodec {
        match oid {
            16 => TextCodec::Bool,
            20 | 21 | 23 | 26 | 1700 => TextCodec::Number,
            700 | 701 => TextCodec::Float,
            25 | 1043 | 1042 | 19 | 2950 => TextCodec::String,
            1082 => TextCodec::Date,
            1184 => TextCodec::TimestampTz,
            1114 => TextCodec::Timestamp,
            17 => TextCodec::Bytea,
            114 | 3802 => TextCodec::Json,
            _ => TextCodec::Server,
        }
    }

    /// Append the JSON of one non-NULL value; `false` for
    /// [`TextCodec::Server`] (nothing written: the caller asks PostgreSQL).
    pub fn write(self, text: &[u8], out: &mut Vec<u8>) -> bool {
        let s = String::from_utf8_lossy(text);
        match self {
            TextCodec::Bool => out.extend_from_slice(if text == b"t" { b"true" } else { b"false" }),
            TextCodec::Number | TextCodec::Float => match &*s {
                "NaN" | "Infinity" | "-Infinity" | "inf" | "-inf" => write_json_str(out, &s),
                _ => out.extend_from_slice(text),
            },
            TextCodec::String => write_json_str(out, &s),
            TextCodec::Date => write_json_str(out, &s),
            TextCodec::TimestampTz => write_json_str(out, &rfc3339(&s, false)),
            TextCodec::Timestamp => write_json_str(out, &rfc3339(&s, true)),
            TextCodec::Bytea => {
                let hex = s.strip_prefix("\\x").unwrap_or(&s);
                match hex::decode(hex) {
                    Ok(bytes) => {
                        write_json_str(out, &base64::engine::general_purpose::STANDARD.encode(bytes))
                    }
                    Err(_) => write_json_str(out, &s),
                }
            }
            TextCodec::Json => out.extend_from_slice(text),
            TextCodec::Server => return false,
        }
        true
    }
}

/// PostgreSQL's ISO timestamp text (session time zone UTC) → the full
/// sync's RFC 3339 form: `T` between date and time, `+00:00` offset, ` BC`
/// kept at the end; `infinity` as is.
fn rfc3339(text: &str, naive: bool) -> String {
    if !text.starts_with(|c: char| c.is_ascii_digit()) {
        return text.to_owned(); // infinity, -infinity
    }
    let (body, bc) = match text.strip_suffix(" BC") {
        Some(b) => (b, " BC"),
        None => (text, ""),
    };
    let mut out = body.replacen(' ', "T", 1);
    if naive {
        out.push_str("+00:00");
    } else if let Some(pos) = out.rfind(['+', '-']).filter(|&p| p > 10) {
        // `+00` or `+05:30`: make it `+HH:MM`.
        if out.len() - pos == 3 {
            out.push_str(":00");
        }
    }
    out.push_str(bc);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(c: TextCodec, text: &str) -> String {
        let mut out = Vec::new();
        assert!(c.write(text.as_bytes(), &mut out));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_values_render_like_the_full_sync() {
        assert_eq!(render(TextCodec::Bool, "t"), "true");
        assert_eq!(render(TextCodec::Number, "-12.3400"), "-12.3400");
        assert_eq!(render(TextCodec::Number, "NaN"), "\"NaN\"");
        assert_eq!(render(TextCodec::Float, "-Infinity"), "\"-Infinity\"");
        assert_eq!(render(TextCodec::String, "a\"b\n"), r#""a\"b\n""#);
        assert_eq!(
            render(TextCodec::TimestampTz, "2024-01-02 03:04:05.1234+00"),
            "\"2024-01-02T03:04:05.1234+00:00\""
        );
        assert_eq!(
            render(TextCodec::TimestampTz, "0044-03-15 12:00:00+00 BC"),
            "\"0044-03-15T12:00:00+00:00 BC\""
        );
        assert_eq!(render(TextCodec::Timestamp, "2024-01-02 03:04:05"), "\"2024-01-02T03:04:05+00:00\"");
        assert_eq!(render(TextCodec::TimestampTz, "infinity"), "\"infinity\"");
        assert_eq!(render(TextCodec::Date, "2024-01-02"), "\"2024-01-02\"");
        assert_eq!(render(TextCodec::Bytea, "\\x00ff10"), "\"AP8Q\"");
        assert_eq!(render(TextCodec::Json, "{\"a\": [1]}"), "{\"a\": [1]}");
        assert!(!TextCodec::Server.write(b"{1,2}", &mut Vec::new()));
    }
}
