//! What a source tells the control plane about its documents' fields before
//! it sends them (`DocumentSchema` on the wire, see sdk/PROTOCOL.md): each
//! field with a neutral kind the control plane turns into an index mapping.
//!
//! Contract for a source that describes a field: every value it sends in
//! that field is one the kind's mapping accepts (JSON `null` included) —
//! values that would be rejected are sent as `null`, with the original kept
//! elsewhere (the PostgreSQL source: `_ferry_original.<field>`).

use crate::proto;

/// A field's kind, independent of the search engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// 32-bit integer.
    Integer,
    /// 64-bit integer.
    Long,
    /// IEEE double (finite values only).
    Double,
    /// Exact decimal with `precision` digits, `scale` of them after the
    /// point; 0/0 = unconstrained. Sent as a JSON number with every digit.
    Decimal {
        precision: u32,
        scale: i32,
    },
    Boolean,
    /// Dates and timestamps as ISO 8601 text (`strict_date_optional_time`:
    /// `YYYY-MM-DD[THH:MM:SS[.f][offset]]`, years 0001-9999).
    Date,
    /// Exact strings (ids, codes, enumerations).
    Keyword,
    /// Free text (searchable, with a keyword sub-field).
    Text,
    /// JSON objects of any shape (jsonb).
    Object,
    /// Base64 bytes.
    Binary,
    /// An IPv4/IPv6 address.
    Ip,
}

/// One field of a source's documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    /// The document field.
    pub name: String,
    pub kind: FieldKind,
    /// Values are arrays of `kind`.
    pub array: bool,
    /// The source's own type name (PostgreSQL: `numeric(12,4)`), for messages.
    pub source_type: String,
}

/// The fields of the documents from one source object (a table, a query).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DocumentSchema {
    /// PostgreSQL: `schema.table`, or the advanced rule.
    pub source: String,
    pub fields: Vec<FieldSpec>,
}

impl FieldKind {
    fn to_proto(self) -> (proto::FieldKind, u32, i32) {
        use proto::FieldKind as K;
        match self {
            FieldKind::Integer => (K::Integer, 0, 0),
            FieldKind::Long => (K::Long, 0, 0),
            FieldKind::Double => (K::Double, 0, 0),
            FieldKind::Decimal { precision, scale } => (K::Decimal, precision, scale),
            FieldKind::Boolean => (K::Boolean, 0, 0),
            FieldKind::Date => (K::Date, 0, 0),
            FieldKind::Keyword => (K::Keyword, 0, 0),
            FieldKind::Text => (K::Text, 0, 0),
            FieldKind::Object => (K::Object, 0, 0),
            FieldKind::Binary => (K::Binary, 0, 0),
            FieldKind::Ip => (K::Ip, 0, 0),
        }
    }

    /// `None` for UNSPECIFIED or a kind this SDK does not know (a newer peer).
    pub fn from_proto(f: &proto::FieldSchema) -> Option<FieldKind> {
        use proto::FieldKind as K;
        Some(match K::try_from(f.kind).ok()? {
            K::Unspecified => return None,
            K::Integer => FieldKind::Integer,
            K::Long => FieldKind::Long,
            K::Double => FieldKind::Double,
            K::Decimal => FieldKind::Decimal { precision: f.precision, scale: f.scale },
            K::Boolean => FieldKind::Boolean,
            K::Date => FieldKind::Date,
            K::Keyword => FieldKind::Keyword,
            K::Text => FieldKind::Text,
            K::Object => FieldKind::Object,
            K::Binary => FieldKind::Binary,
            K::Ip => FieldKind::Ip,
        })
    }
}

impl FieldSpec {
    pub fn to_proto(&self) -> proto::FieldSchema {
        let (kind, precision, scale) = self.kind.to_proto();
        proto::FieldSchema {
            name: self.name.clone(),
            kind: kind as i32,
            array: self.array,
            source_type: self.source_type.clone(),
            precision,
            scale,
        }
    }
}
