//! Sync rules as a source sees them (Elastic's "filtering").
//!
//! - [`BasicRule`]s are checked in order; the first rule whose condition
//!   matches a document decides whether it is included or excluded, and the
//!   catch-all rule (`id: DEFAULT`, include everything) comes last.
//! - `advanced` is the source-specific advanced snippet (JSON), e.g. for
//!   PostgreSQL an array of `{tables, query, id_columns}`.

use crate::config_schema::{json_to_value, value_to_json};
use crate::proto;

/// One basic rule: `policy` (include|exclude) documents whose `field`
/// matches `rule` (equals|starts_with|ends_with|contains|regex|<|>) `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicRule {
    pub id: String,
    pub policy: String,
    pub field: String,
    pub rule: String,
    pub value: String,
}

impl BasicRule {
    /// The catch-all rule that includes everything.
    pub fn is_default(&self) -> bool {
        self.id == "DEFAULT" || (self.field == "_" && self.rule == "regex" && self.value == ".*")
    }
    pub fn include(&self) -> bool {
        self.policy != "exclude"
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncRules {
    /// In order, without the catch-all rule.
    pub basic: Vec<BasicRule>,
    /// Null when there are no advanced rules.
    pub advanced: serde_json::Value,
}

impl SyncRules {
    pub fn is_empty(&self) -> bool {
        self.basic.is_empty() && self.advanced.is_null()
    }

    pub fn from_proto(p: Option<&proto::SyncRules>) -> SyncRules {
        let Some(p) = p else { return SyncRules::default() };
        let basic = p
            .rules
            .iter()
            .map(|r| BasicRule {
                id: r.id.clone(),
                policy: r.policy.clone(),
                field: r.field.clone(),
                rule: r.rule.clone(),
                value: r.value.clone(),
            })
            .filter(|r| !r.is_default())
            .collect();
        let advanced = p.advanced_snippet.as_ref().map(value_to_json).unwrap_or_default();
        let empty = match &advanced {
            serde_json::Value::Object(o) => o.is_empty(),
            serde_json::Value::Array(a) => a.is_empty(),
            serde_json::Value::String(s) => s.trim().is_empty(),
            v => v.is_null(),
        };
        SyncRules { basic, advanced: if empty { serde_json::Value::Null } else { advanced } }
    }

    pub fn to_proto(&self) -> proto::SyncRules {
        proto::SyncRules {
            rules: self
                .basic
                .iter()
                .map(|r| proto::FilteringRule {
                    id: r.id.clone(),
                    policy: r.policy.clone(),
                    field: r.field.clone(),
                    rule: r.rule.clone(),
                    value: r.value.clone(),
                    ..Default::default()
                })
                .collect(),
            advanced_snippet: (!self.advanced.is_null()).then(|| json_to_value(&self.advanced)),
        }
    }
}

/// A problem with sync rules, shown on the connector's filtering
/// validation: the ids of the rules concerned (`advanced_snippet` for the
/// advanced rules) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub ids: Vec<String>,
    pub message: String,
}

impl RuleError {
    pub fn new(id: impl Into<String>, message: impl Into<String>) -> Self {
        Self { ids: vec![id.into()], message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rule_and_empty_snippet_are_dropped() {
        let p = proto::SyncRules {
            rules: vec![
                proto::FilteringRule {
                    id: "a".into(),
                    policy: "exclude".into(),
                    field: "x".into(),
                    rule: "equals".into(),
                    value: "1".into(),
                    ..Default::default()
                },
                proto::FilteringRule {
                    id: "DEFAULT".into(),
                    policy: "include".into(),
                    field: "_".into(),
                    rule: "regex".into(),
                    value: ".*".into(),
                    ..Default::default()
                },
            ],
            advanced_snippet: Some(json_to_value(&serde_json::json!({}))),
        };
        let r = SyncRules::from_proto(Some(&p));
        assert_eq!(r.basic.len(), 1);
        assert!(!r.basic[0].include());
        assert!(r.advanced.is_null());
        assert_eq!(SyncRules::from_proto(Some(&r.to_proto())), r);
    }
}
