//! Configuration schemas and values as the Connector Protocol shapes them,
//! plus the conversions between `google.protobuf.Value` and JSON that both
//! sides of the wire need.

use std::collections::BTreeMap;

use prost_types::value::Kind;

use crate::proto;

/// Configuration values of one connector, key → JSON value.
pub type ConfigValues = BTreeMap<String, serde_json::Value>;

/// Redaction marker for sensitive values in API responses.
pub const REDACTED: &str = "**********";

/// One field of a configuration schema, built by a [`crate::Source`].
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigFieldSpec {
    pub label: String,
    /// `str` | `int` | `bool` | `list`
    pub kind: &'static str,
    /// `text` | `textarea` | `numeric` | `toggle` | `dropdown`
    pub display: &'static str,
    pub sensitive: bool,
    pub required: bool,
    pub order: i32,
    pub tooltip: String,
    pub default_value: Option<serde_json::Value>,
    pub advanced: bool,
}

impl ConfigFieldSpec {
    fn new(label: &str, kind: &'static str, display: &'static str, order: i32) -> Self {
        Self {
            label: label.to_owned(),
            kind,
            display,
            sensitive: false,
            required: true,
            order,
            tooltip: String::new(),
            default_value: None,
            advanced: false,
        }
    }
    /// A required text field.
    pub fn text(label: &str, order: i32) -> Self {
        Self::new(label, "str", "text", order)
    }
    /// A required integer field.
    pub fn int(label: &str, order: i32) -> Self {
        Self::new(label, "int", "numeric", order)
    }
    /// A toggle, not required, default false.
    pub fn toggle(label: &str, order: i32) -> Self {
        Self::new(label, "bool", "toggle", order).optional(serde_json::Value::Bool(false))
    }
    /// A required multi-line text field.
    pub fn textarea(label: &str, order: i32) -> Self {
        Self::new(label, "str", "textarea", order)
    }
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }
    /// Not required; `default` is used when the value is empty.
    pub fn optional(mut self, default: serde_json::Value) -> Self {
        self.required = false;
        self.default_value = Some(default);
        self
    }
    pub fn tooltip(mut self, tooltip: &str) -> Self {
        self.tooltip = tooltip.to_owned();
        self
    }
    /// Shown under "advanced" in UIs (`ui_restrictions: ["advanced"]`).
    pub fn advanced(mut self) -> Self {
        self.advanced = true;
        self
    }

    /// The wire form, without a value.
    pub fn to_proto(&self) -> proto::ConfigField {
        proto::ConfigField {
            label: self.label.clone(),
            r#type: self.kind.to_owned(),
            display: self.display.to_owned(),
            sensitive: self.sensitive,
            required: self.required,
            order: self.order,
            tooltip: self.tooltip.clone(),
            ui_restrictions: if self.advanced { vec!["advanced".to_owned()] } else { vec![] },
            default_value: self.default_value.as_ref().map(json_to_value),
            ..Default::default()
        }
    }
}

/// JSON → `google.protobuf.Value`.
pub fn json_to_value(v: &serde_json::Value) -> prost_types::Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => {
            Kind::ListValue(prost_types::ListValue { values: a.iter().map(json_to_value).collect() })
        }
        serde_json::Value::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// JSON object → `google.protobuf.Struct`.
pub fn json_to_struct(o: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct { fields: o.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect() }
}

/// `google.protobuf.Value` → JSON. Whole numbers come back as integers, so a
/// port typed as `5432` in grpcurl is stored as `5432`, not `5432.0`.
pub fn value_to_json(v: &prost_types::Value) -> serde_json::Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                serde_json::Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n)
                    .map(serde_json::Value::Number)
                    .unwrap_or(serde_json::Value::Null)
            }
        }
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(l)) => serde_json::Value::Array(l.values.iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(struct_to_json(s)),
    }
}

/// `google.protobuf.Struct` → JSON object.
pub fn struct_to_json(s: &prost_types::Struct) -> serde_json::Map<String, serde_json::Value> {
    s.fields.iter().map(|(k, v)| (k.clone(), value_to_json(v))).collect()
}

/// Wire map of values → [`ConfigValues`].
pub fn values_from_proto(m: &std::collections::HashMap<String, prost_types::Value>) -> ConfigValues {
    m.iter().map(|(k, v)| (k.clone(), value_to_json(v))).collect()
}

/// [`ConfigValues`] → wire map of values.
pub fn values_to_proto(v: &ConfigValues) -> std::collections::HashMap<String, prost_types::Value> {
    v.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_protobuf_value() {
        let v =
            serde_json::json!({"port": 5432, "ratio": 0.5, "tables": ["a", "b"], "ssl": false, "x": null});
        let back = value_to_json(&json_to_value(&v));
        assert_eq!(back, v);
    }
}
