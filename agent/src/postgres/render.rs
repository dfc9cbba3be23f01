//! Rendering PostgreSQL values, received in the binary wire format, as JSON
//! text: the agent's half of turning rows into documents.
//!
//! Contract: for every type this module knows ([`Codec::for_type`]), the JSON
//! written is the same value PostgreSQL's own `to_json` produces (the
//! conversion `row_to_json` and Elastic's documents rely on), so switching a
//! column between the two renderings never changes a document:
//! - booleans and integers as JSON literals;
//! - `numeric` with exactly the digits and scale of `numeric_out` (no float
//!   on the way), `NaN`/`Infinity`/`-Infinity` as strings;
//! - text types as JSON strings (text that is not valid UTF-8, possible only
//!   in a `SQL_ASCII` database, is rendered with U+FFFD replacements);
//! - `uuid` in canonical lower-case form;
//! - `date` as `YYYY-MM-DD`, `timestamptz` as RFC 3339 in UTC
//!   (`YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`, trailing fraction zeros dropped),
//!   years before 1 as PostgreSQL writes them (`0044-03-15 BC`),
//!   `infinity`/`-infinity` as strings;
//! - `json` and `jsonb` as the JSON they hold.
//!
//! Every other type is rendered by PostgreSQL (`to_json(column)`, sent as
//! `json`) and copied through: correctness for the long tail, speed for the
//! types tables are made of. Why not let PostgreSQL render everything: its
//! JSON building costs about three times what sending the binary values does
//! (5.1 s against 1.7 s of backend CPU per million benchmark rows), and the
//! backend is a single core the whole sync waits on.

use std::fmt;

/// How one column's binary value becomes JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Bool,
    Int2,
    Int4,
    Int8,
    Numeric,
    /// `text`, `varchar`, `bpchar`, `name`: the bytes are the string.
    Text,
    Uuid,
    Date,
    TimestampTz,
    /// `json`: the text as stored; also everything PostgreSQL rendered.
    Json,
    /// `jsonb`: a version byte (1), then the JSON text.
    Jsonb,
}

/// A value whose binary form is not what its type promises; PostgreSQL
/// never sends one, so this means a bug or a protocol mix-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError(String);

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(what: &str, raw: &[u8]) -> RenderError {
    RenderError(format!("malformed binary {what} value ({} bytes)", raw.len()))
}

impl Codec {
    /// The codec for a built-in type, by its OID (fixed for PostgreSQL's
    /// own types); `None`: let PostgreSQL render it.
    pub fn for_type(oid: u32) -> Option<Codec> {
        Some(match oid {
            16 => Codec::Bool,
            21 => Codec::Int2,
            23 => Codec::Int4,
            20 => Codec::Int8,
            1700 => Codec::Numeric,
            25 | 1043 | 1042 | 19 => Codec::Text,
            2950 => Codec::Uuid,
            1082 => Codec::Date,
            1184 => Codec::TimestampTz,
            114 => Codec::Json,
            3802 => Codec::Jsonb,
            _ => return None,
        })
    }

    /// Append the JSON for one non-NULL value.
    pub fn write(self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), RenderError> {
        match self {
            Codec::Bool => match raw {
                [0] => out.extend_from_slice(b"false"),
                [_] => out.extend_from_slice(b"true"),
                _ => return Err(bad("bool", raw)),
            },
            Codec::Int2 => {
                let v = i16::from_be_bytes(raw.try_into().map_err(|_| bad("int2", raw))?);
                out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
            }
            Codec::Int4 => {
                let v = i32::from_be_bytes(raw.try_into().map_err(|_| bad("int4", raw))?);
                out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
            }
            Codec::Int8 => {
                let v = i64::from_be_bytes(raw.try_into().map_err(|_| bad("int8", raw))?);
                out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
            }
            Codec::Numeric => write_numeric(raw, out)?,
            Codec::Text => write_text(raw, out),
            Codec::Uuid => {
                let b: &[u8; 16] = raw.try_into().map_err(|_| bad("uuid", raw))?;
                write_uuid(b, out);
            }
            Codec::Date => {
                let days = i32::from_be_bytes(raw.try_into().map_err(|_| bad("date", raw))?);
                write_date(days, out);
            }
            Codec::TimestampTz => {
                let micros = i64::from_be_bytes(raw.try_into().map_err(|_| bad("timestamptz", raw))?);
                write_timestamptz(micros, out);
            }
            Codec::Json => out.extend_from_slice(raw),
            Codec::Jsonb => match raw.split_first() {
                Some((1, text)) => out.extend_from_slice(text),
                _ => return Err(bad("jsonb", raw)),
            },
        }
        Ok(())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Bytes that must be escaped inside a JSON string: `"`, `\` and the
/// control characters; 0 means "copy as is".
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Append `s` as a JSON string literal (the one escaper of the agent's
/// documents: values, field names, ids, checkpoints).
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    escape_into(s.as_bytes(), out);
}

/// Append `raw` (text off the wire, UTF-8 unless the database is
/// `SQL_ASCII`) as a JSON string literal.
fn write_text(raw: &[u8], out: &mut Vec<u8>) {
    match std::str::from_utf8(raw) {
        Ok(_) => escape_into(raw, out),
        Err(_) => escape_into(String::from_utf8_lossy(raw).as_bytes(), out),
    }
}

fn escape_into(s: &[u8], out: &mut Vec<u8>) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let e = ESCAPE[b as usize];
        if e == 0 {
            continue;
        }
        out.extend_from_slice(&s[start..i]);
        if e == b'u' {
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            out.extend_from_slice(&[b'\\', e]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

fn write_uuid(b: &[u8; 16], out: &mut Vec<u8>) {
    out.push(b'"');
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push(b'-');
        }
        out.push(HEX[(byte >> 4) as usize]);
        out.push(HEX[(byte & 15) as usize]);
    }
    out.push(b'"');
}

const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

/// `numeric`'s binary form: ndigits, weight, sign, dscale (each 16 bits),
/// then `ndigits` base-10000 digits; the value is
/// `sum(digit[k] * 10000^(weight - k))`, shown with `dscale` decimals.
fn write_numeric(raw: &[u8], out: &mut Vec<u8>) -> Result<(), RenderError> {
    let word =
        |i: usize| -> Option<u16> { raw.get(i * 2..i * 2 + 2).map(|b| u16::from_be_bytes([b[0], b[1]])) };
    let (Some(ndigits), Some(weight), Some(sign), Some(dscale)) = (word(0), word(1), word(2), word(3)) else {
        return Err(bad("numeric", raw));
    };
    let ndigits = ndigits as usize;
    let weight = weight as i16 as i32;
    if raw.len() != 8 + 2 * ndigits {
        return Err(bad("numeric", raw));
    }
    match sign {
        NUMERIC_NAN => {
            out.extend_from_slice(b"\"NaN\"");
            return Ok(());
        }
        NUMERIC_PINF => {
            out.extend_from_slice(b"\"Infinity\"");
            return Ok(());
        }
        NUMERIC_NINF => {
            out.extend_from_slice(b"\"-Infinity\"");
            return Ok(());
        }
        _ => {}
    }
    // Group k's digit; groups outside the stored ones are zero.
    let digit = |k: i32| -> u16 {
        if k < 0 || k as usize >= ndigits {
            0
        } else {
            word(4 + k as usize).unwrap_or(0)
        }
    };
    if sign == NUMERIC_NEG {
        out.push(b'-');
    }
    if weight < 0 {
        out.push(b'0');
    } else {
        // The first group without leading zeros, the others as 4 digits.
        out.extend_from_slice(itoa::Buffer::new().format(digit(0)).as_bytes());
        for k in 1..=weight {
            push_group(digit(k), 4, out);
        }
    }
    let dscale = dscale as usize;
    if dscale > 0 {
        out.push(b'.');
        let mut left = dscale;
        let mut k = weight + 1;
        while left > 0 {
            let take = left.min(4);
            push_group(digit(k), take, out);
            left -= take;
            k += 1;
        }
    }
    Ok(())
}

/// The first `take` of the 4 decimal digits of `g` (zero-padded).
fn push_group(g: u16, take: usize, out: &mut Vec<u8>) {
    let d = [
        b'0' + (g / 1000) as u8,
        b'0' + (g / 100 % 10) as u8,
        b'0' + (g / 10 % 10) as u8,
        b'0' + (g % 10) as u8,
    ];
    out.extend_from_slice(&d[..take]);
}

/// Days since 2000-01-01 → (year, month, day), proleptic Gregorian with
/// astronomical years (0 is 1 BC), as PostgreSQL counts.
fn civil_from_days(days_since_2000: i64) -> (i64, u32, u32) {
    // Howard Hinnant's algorithm, counted from 1970-01-01.
    let z = days_since_2000 + 10_957 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn push_2(v: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]);
}

/// `YYYY-MM-DD` (at least four year digits, BC years shown as positive);
/// returns whether the year is BC.
fn push_ymd(days: i64, out: &mut Vec<u8>) -> bool {
    let (y, m, d) = civil_from_days(days);
    let bc = y <= 0;
    let shown = if bc { 1 - y } else { y };
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(shown);
    for _ in digits.len()..4 {
        out.push(b'0');
    }
    out.extend_from_slice(digits.as_bytes());
    out.push(b'-');
    push_2(m, out);
    out.push(b'-');
    push_2(d, out);
    bc
}

fn write_date(days: i32, out: &mut Vec<u8>) {
    match days {
        i32::MAX => out.extend_from_slice(b"\"infinity\""),
        i32::MIN => out.extend_from_slice(b"\"-infinity\""),
        _ => {
            out.push(b'"');
            if push_ymd(i64::from(days), out) {
                out.extend_from_slice(b" BC");
            }
            out.push(b'"');
        }
    }
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

fn write_timestamptz(micros: i64, out: &mut Vec<u8>) {
    match micros {
        i64::MAX => out.extend_from_slice(b"\"infinity\""),
        i64::MIN => out.extend_from_slice(b"\"-infinity\""),
        _ => {
            let days = micros.div_euclid(MICROS_PER_DAY);
            let in_day = micros.rem_euclid(MICROS_PER_DAY);
            let secs = (in_day / 1_000_000) as u32;
            let frac = (in_day % 1_000_000) as u32;
            out.push(b'"');
            let bc = push_ymd(days, out);
            out.push(b'T');
            push_2(secs / 3600, out);
            out.push(b':');
            push_2(secs / 60 % 60, out);
            out.push(b':');
            push_2(secs % 60, out);
            if frac > 0 {
                // Six digits, trailing zeros dropped, as PostgreSQL prints.
                let mut digits = [0u8; 6];
                let mut f = frac;
                for d in digits.iter_mut().rev() {
                    *d = b'0' + (f % 10) as u8;
                    f /= 10;
                }
                let mut n = 6;
                while digits[n - 1] == b'0' {
                    n -= 1;
                }
                out.push(b'.');
                out.extend_from_slice(&digits[..n]);
            }
            out.extend_from_slice(b"+00:00");
            if bc {
                out.extend_from_slice(b" BC");
            }
            out.push(b'"');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(codec: Codec, raw: &[u8]) -> String {
        let mut out = Vec::new();
        codec.write(raw, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn numeric(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [digits.len() as u16, weight as u16, sign, dscale] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_keep_every_digit_and_the_scale() {
        assert_eq!(render(Codec::Numeric, &numeric(0, 0, 2, &[12, 3400])), "12.34");
        assert_eq!(render(Codec::Numeric, &numeric(1, NUMERIC_NEG, 0, &[1, 2])), "-10002");
        assert_eq!(render(Codec::Numeric, &numeric(-2, 0, 10, &[5])), "0.0000000500");
        assert_eq!(render(Codec::Numeric, &numeric(0, 0, 2, &[])), "0.00");
        assert_eq!(render(Codec::Numeric, &numeric(2, 0, 0, &[7])), "700000000");
        assert_eq!(render(Codec::Numeric, &numeric(0, NUMERIC_NAN, 0, &[])), "\"NaN\"");
        assert!(Codec::Numeric.write(&[0, 1], &mut Vec::new()).is_err());
    }

    #[test]
    fn dates_and_timestamps_read_as_postgresql_writes_them() {
        assert_eq!(render(Codec::Date, &0i32.to_be_bytes()), "\"2000-01-01\"");
        assert_eq!(render(Codec::Date, &(-1i32).to_be_bytes()), "\"1999-12-31\"");
        assert_eq!(render(Codec::Date, &i32::MAX.to_be_bytes()), "\"infinity\"");
        let us: i64 = 790_000_000_000_000 + 123_400; // 2025-01-12T12:26:40.1234
        assert_eq!(render(Codec::TimestampTz, &us.to_be_bytes()), "\"2025-01-12T12:26:40.1234+00:00\"");
        assert_eq!(
            render(Codec::TimestampTz, &(-1i64).to_be_bytes()),
            "\"1999-12-31T23:59:59.999999+00:00\""
        );
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(render(Codec::Text, "a\"b\\c\n\u{1}ü".as_bytes()), r#""a\"b\\c\n\u0001ü""#);
        assert_eq!(render(Codec::Text, b"bad \xff"), "\"bad \u{fffd}\"");
        assert_eq!(
            render(
                Codec::Uuid,
                &[
                    0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a,
                    0x11
                ]
            ),
            "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\""
        );
        assert_eq!(render(Codec::Jsonb, b"\x01{\"a\": 1}"), "{\"a\": 1}");
    }
}
