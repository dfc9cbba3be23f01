//! Decoding pgoutput (protocol version 1) messages: pure, no I/O.
//!
//! Reference: PostgreSQL's "Logical Replication Message Formats". Values
//! arrive in text format (the agent never asks for `binary`), so any type
//! PostgreSQL can print can be decoded; [`TupleValue::Unchanged`] is the
//! `u` marker of a TOASTed value an UPDATE did not change (not sent).

use bytes::{Buf, Bytes};

/// One column of a relation as the stream describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelColumn {
    /// Part of the replica identity (the primary key by default).
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
}

/// A `Relation` message: sent before the first change of a table in a
/// session and again after its definition changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelColumn>,
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    Null,
    /// Unchanged TOASTed value: not sent, keep what the document has.
    Unchanged,
    Text(Bytes),
}

/// A decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin {
        final_lsn: u64,
        commit_time: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: u64,
        end_lsn: u64,
        commit_time: i64,
    },
    Relation(Relation),
    Insert {
        rel: u32,
        new: Vec<TupleValue>,
    },
    /// `old`: the key (`K`) or the whole old row (`O`) when sent.
    Update {
        rel: u32,
        old: Option<Vec<TupleValue>>,
        new: Vec<TupleValue>,
    },
    Delete {
        rel: u32,
        old: Vec<TupleValue>,
    },
    Truncate {
        rels: Vec<u32>,
    },
    /// Type, Origin, logical decoding Message: nothing to apply.
    Other(u8),
}

/// A message that does not follow the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pgoutput message {kind:?}: {what}")]
pub struct DecodeError {
    pub kind: char,
    pub what: &'static str,
}

struct Reader {
    kind: char,
    buf: Bytes,
}

impl Reader {
    fn need(&self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.remaining() < n {
            return Err(DecodeError { kind: self.kind, what });
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1, "truncated")?;
        Ok(self.buf.get_u8())
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4, "truncated")?;
        Ok(self.buf.get_u32())
    }
    fn i16(&mut self) -> Result<i16, DecodeError> {
        self.need(2, "truncated")?;
        Ok(self.buf.get_i16())
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        self.need(4, "truncated")?;
        Ok(self.buf.get_i32())
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.need(8, "truncated")?;
        Ok(self.buf.get_u64())
    }
    fn cstr(&mut self) -> Result<String, DecodeError> {
        let end = memchr::memchr(0, &self.buf)
            .ok_or(DecodeError { kind: self.kind, what: "unterminated string" })?;
        let s = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.advance(end + 1);
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Vec<TupleValue>, DecodeError> {
        let n = self.i16()?;
        let mut values = Vec::with_capacity(n.max(0) as usize);
        for _ in 0..n {
            values.push(match self.u8()? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::Unchanged,
                b't' | b'b' => {
                    let len = self.i32()?;
                    if len < 0 {
                        return Err(DecodeError { kind: self.kind, what: "negative value length" });
                    }
                    self.need(len as usize, "value shorter than its length")?;
                    TupleValue::Text(self.buf.split_to(len as usize))
                }
                _ => return Err(DecodeError { kind: self.kind, what: "unknown tuple value kind" }),
            });
        }
        Ok(values)
    }
}

/// Decode one pgoutput message (the payload of an XLogData).
pub fn decode(data: Bytes) -> Result<Message, DecodeError> {
    let Some(&kind) = data.first() else {
        return Err(DecodeError { kind: '?', what: "empty" });
    };
    let mut r = Reader { kind: kind as char, buf: data.slice(1..) };
    Ok(match kind {
        b'B' => Message::Begin { final_lsn: r.u64()?, commit_time: r.u64()? as i64, xid: r.u32()? },
        b'C' => {
            let _flags = r.u8()?;
            Message::Commit { commit_lsn: r.u64()?, end_lsn: r.u64()?, commit_time: r.u64()? as i64 }
        }
        b'R' => {
            let oid = r.u32()?;
            let schema = r.cstr()?;
            let name = r.cstr()?;
            let replica_identity = r.u8()?;
            let n = r.i16()?;
            let mut columns = Vec::with_capacity(n.max(0) as usize);
            for _ in 0..n {
                let flags = r.u8()?;
                let name = r.cstr()?;
                let type_oid = r.u32()?;
                let _typmod = r.i32()?;
                columns.push(RelColumn { key: flags & 1 == 1, name, type_oid });
            }
            Message::Relation(Relation { oid, schema, name, replica_identity, columns })
        }
        b'I' => {
            let rel = r.u32()?;
            match r.u8()? {
                b'N' => Message::Insert { rel, new: r.tuple()? },
                _ => return Err(DecodeError { kind: 'I', what: "expected a new tuple" }),
            }
        }
        b'U' => {
            let rel = r.u32()?;
            let mut old = None;
            let mut tag = r.u8()?;
            if tag == b'K' || tag == b'O' {
                old = Some(r.tuple()?);
                tag = r.u8()?;
            }
            if tag != b'N' {
                return Err(DecodeError { kind: 'U', what: "expected a new tuple" });
            }
            Message::Update { rel, old, new: r.tuple()? }
        }
        b'D' => {
            let rel = r.u32()?;
            match r.u8()? {
                b'K' | b'O' => Message::Delete { rel, old: r.tuple()? },
                _ => return Err(DecodeError { kind: 'D', what: "expected an old tuple" }),
            }
        }
        b'T' => {
            let n = r.u32()?;
            let _options = r.u8()?;
            let mut rels = Vec::with_capacity(n.min(1024) as usize);
            for _ in 0..n {
                rels.push(r.u32()?);
            }
            Message::Truncate { rels }
        }
        other => Message::Other(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    #[test]
    fn decodes_relation_update_with_unchanged_toast() {
        let mut b = BytesMut::new();
        b.put_u8(b'R');
        b.put_u32(16384);
        b.put_slice(b"public\0items\0");
        b.put_u8(b'd');
        b.put_i16(2);
        b.put_u8(1);
        b.put_slice(b"id\0");
        b.put_u32(23);
        b.put_i32(-1);
        b.put_u8(0);
        b.put_slice(b"body\0");
        b.put_u32(25);
        b.put_i32(-1);
        let m = decode(b.freeze()).unwrap();
        let Message::Relation(rel) = m else { panic!("{m:?}") };
        assert_eq!(rel.name, "items");
        assert!(rel.columns[0].key && !rel.columns[1].key);

        let mut b = BytesMut::new();
        b.put_u8(b'U');
        b.put_u32(16384);
        b.put_u8(b'N');
        b.put_i16(2);
        b.put_u8(b't');
        b.put_i32(2);
        b.put_slice(b"42");
        b.put_u8(b'u');
        let m = decode(b.freeze()).unwrap();
        assert_eq!(
            m,
            Message::Update {
                rel: 16384,
                old: None,
                new: vec![TupleValue::Text(Bytes::from_static(b"42")), TupleValue::Unchanged]
            }
        );
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        for len in 0..12 {
            let full = b"U\0\0\x40\0N\0\x02t\0\0\0\x0242u";
            let _ = decode(Bytes::copy_from_slice(&full[..len.min(full.len())]));
        }
        assert!(decode(Bytes::from_static(b"I\0\0")).is_err());
    }
}
