//! A connector's settings beyond its configuration — scheduling, filtering
//! (sync rules), pipeline — in the shapes of the Connector Protocol, their
//! wire forms, and the checks the Update* calls make. Each error names the
//! request field at fault (`scheduling.full.interval`, `rules[1].policy`).
//!
//! The stored shapes:
//! - `scheduling`: `{full|incremental|access_control: {enabled, interval}}`
//! - `pipeline`: `{name, extract_binary_content, reduce_whitespace, run_ml_inference}`
//! - `filtering`: `[{domain: "DEFAULT", active: R, draft: R}]` with
//!   `R = {rules: [...], advanced_snippet: {value, created_at, updated_at},
//!   validation: {state: edited|valid|invalid, errors: [{ids, messages}]}}`
//!
//! Unknown keys in these objects are kept on update.

use ferry_sdk::config_schema::{json_to_value, value_to_json};
use ferry_sdk::proto;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::jobs::scheduler;
use crate::model::{to_proto_ts, Timestamp};

const JOB_TYPES: [&str; 3] = ["full", "incremental", "access_control"];
/// Basic rule kinds, as the Connector Protocol names them.
pub const RULES: [&str; 7] = ["equals", "starts_with", "ends_with", "contains", "regex", "<", ">"];
pub const POLICIES: [&str; 2] = ["include", "exclude"];

fn rfc3339(t: Timestamp) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn parse_ts(v: &Value) -> Option<prost_types::Timestamp> {
    let t = time::OffsetDateTime::parse(v.as_str()?, &time::format_description::well_known::Rfc3339).ok();
    to_proto_ts(&t)
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k).and_then(|s| s.as_str()).unwrap_or_default().to_owned()
}

fn bool_of(v: &Value, k: &str) -> bool {
    v.get(k).and_then(|b| b.as_bool()).unwrap_or_default()
}

// ---- scheduling ----

pub fn scheduling_to_proto(v: &Value) -> proto::Scheduling {
    let entry = |k: &str| {
        v.get(k)
            .map(|e| proto::ScheduleEntry { enabled: bool_of(e, "enabled"), interval: str_of(e, "interval") })
    };
    proto::Scheduling {
        full: entry("full"),
        incremental: entry("incremental"),
        access_control: entry("access_control"),
    }
}

/// Applies the given entries to the stored `scheduling` (entries not given
/// are kept). Returns the job types whose entry changed.
pub fn apply_scheduling(stored: &mut Value, s: &proto::Scheduling) -> Result<Vec<&'static str>> {
    if !stored.is_object() {
        *stored = json!({});
    }
    let mut changed = vec![];
    for (name, entry) in JOB_TYPES.iter().zip([&s.full, &s.incremental, &s.access_control]) {
        let Some(e) = entry else { continue };
        let field = format!("scheduling.{name}.interval");
        if e.interval.trim().is_empty() {
            if e.enabled {
                return Err(Error::invalid(
                    &field,
                    "is required when the schedule is enabled, e.g. \"0 0 * * * ?\"",
                ));
            }
        } else {
            scheduler::validate_interval(&field, e.interval.trim())?;
        }
        let slot = stored[*name].as_object_mut().cloned().unwrap_or_default();
        let mut slot = Value::Object(slot);
        let before = slot.clone();
        slot["enabled"] = json!(e.enabled);
        if !e.interval.trim().is_empty() {
            slot["interval"] = json!(e.interval.trim());
        }
        if slot != before {
            changed.push(*name);
        }
        stored[*name] = slot;
    }
    if changed.is_empty() && s.full.is_none() && s.incremental.is_none() && s.access_control.is_none() {
        return Err(Error::invalid("scheduling", "is required: give full, incremental or access_control"));
    }
    Ok(changed)
}

// ---- pipeline ----

pub fn pipeline_to_proto(v: &Value) -> proto::Pipeline {
    proto::Pipeline {
        name: str_of(v, "name"),
        extract_binary_content: bool_of(v, "extract_binary_content"),
        reduce_whitespace: bool_of(v, "reduce_whitespace"),
        run_ml_inference: bool_of(v, "run_ml_inference"),
    }
}

/// Checks a pipeline and writes it over the stored one (unknown keys kept).
pub fn apply_pipeline(stored: &mut Value, p: Option<&proto::Pipeline>) -> Result<()> {
    let p = p.ok_or_else(|| Error::invalid("pipeline", "is required"))?;
    let name = p.name.trim();
    if name.len() > 512 {
        return Err(Error::invalid("pipeline.name", "must be at most 512 bytes"));
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control() || "\\/*?\"<>|,#".contains(*c))
    {
        return Err(Error::invalid(
            "pipeline.name",
            format!("{name:?} is not a valid ingest pipeline name: it contains {c:?}"),
        ));
    }
    if name.starts_with('_') {
        return Err(Error::invalid("pipeline.name", format!("{name:?} must not start with '_'")));
    }
    if !stored.is_object() {
        *stored = json!({});
    }
    stored["name"] = json!(name);
    stored["extract_binary_content"] = json!(p.extract_binary_content);
    stored["reduce_whitespace"] = json!(p.reduce_whitespace);
    stored["run_ml_inference"] = json!(p.run_ml_inference);
    Ok(())
}

// ---- filtering ----

fn rules_to_proto(r: &Value) -> proto::FilteringRules {
    let rules = r
        .get("rules")
        .and_then(|r| r.as_array())
        .map(|a| {
            a.iter()
                .map(|x| proto::FilteringRule {
                    id: str_of(x, "id"),
                    policy: str_of(x, "policy"),
                    field: str_of(x, "field"),
                    rule: str_of(x, "rule"),
                    value: match x.get("value") {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Null) | None => String::new(),
                        Some(v) => v.to_string(),
                    },
                    order: x.get("order").and_then(|o| o.as_i64()).unwrap_or_default() as i32,
                    created_at: x.get("created_at").and_then(parse_ts),
                    updated_at: x.get("updated_at").and_then(parse_ts),
                })
                .collect()
        })
        .unwrap_or_default();
    let snippet = r.get("advanced_snippet").and_then(|s| s.get("value")).filter(|v| !is_empty_snippet(v));
    let validation = r.get("validation").map(|v| proto::FilteringValidation {
        state: str_of(v, "state"),
        errors: v
            .get("errors")
            .and_then(|e| e.as_array())
            .map(|a| {
                a.iter()
                    .map(|e| proto::FilteringValidationError {
                        ids: strings(e.get("ids")),
                        messages: strings(e.get("messages")),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    });
    proto::FilteringRules { rules, advanced_snippet: snippet.map(json_to_value), validation }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => {
            a.iter().map(|s| s.as_str().map(str::to_owned).unwrap_or_else(|| s.to_string())).collect()
        }
        Some(Value::String(s)) => vec![s.clone()],
        _ => vec![],
    }
}

/// `{}`, `[]` and null all mean "no advanced rules".
pub fn is_empty_snippet(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

pub fn filtering_to_proto(v: &Value) -> Vec<proto::Filtering> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|f| proto::Filtering {
                    domain: str_of(f, "domain"),
                    active: f.get("active").map(rules_to_proto),
                    draft: f.get("draft").map(rules_to_proto),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The catch-all rule every rule list ends with.
fn default_rule(t: &str) -> Value {
    json!({
        "id": "DEFAULT", "policy": "include", "field": "_", "rule": "regex", "value": ".*",
        "order": 0, "created_at": t, "updated_at": t
    })
}

/// Checks basic rules and the advanced snippet and builds the draft
/// (`validation.state: edited`, to be validated by the serving agent).
pub fn build_draft(
    rules: &[proto::FilteringRule],
    snippet: Option<&prost_types::Value>,
    t: Timestamp,
) -> Result<Value> {
    let ts = rfc3339(t);
    let mut out = Vec::with_capacity(rules.len() + 1);
    let mut ids = std::collections::HashSet::new();
    for (i, r) in rules.iter().enumerate() {
        let f = |k: &str| format!("rules[{i}].{k}");
        if r.id == "DEFAULT" {
            continue; // the catch-all rule is added last below
        }
        if !POLICIES.contains(&r.policy.as_str()) {
            return Err(Error::invalid(
                &f("policy"),
                format!("{:?} is not a policy: use include or exclude", r.policy),
            ));
        }
        if !RULES.contains(&r.rule.as_str()) {
            return Err(Error::invalid(
                &f("rule"),
                format!("{:?} is not a rule: use one of {}", r.rule, RULES.join(", ")),
            ));
        }
        if r.field.trim().is_empty() {
            return Err(Error::invalid(&f("field"), "is required: a column name"));
        }
        if r.value.is_empty() && r.rule != "equals" {
            return Err(Error::invalid(&f("value"), format!("is required for rule {:?}", r.rule)));
        }
        let id = if r.id.is_empty() {
            uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
        } else {
            r.id.clone()
        };
        if !ids.insert(id.clone()) {
            return Err(Error::invalid(&f("id"), format!("{id:?} is used by two rules")));
        }
        out.push(json!({
            "id": id, "policy": r.policy, "field": r.field.trim(), "rule": r.rule, "value": r.value,
            "order": i, "created_at": ts, "updated_at": ts
        }));
    }
    let mut last = default_rule(&ts);
    last["order"] = json!(out.len());
    out.push(last);
    let snippet = snippet.map(value_to_json).unwrap_or(Value::Null);
    let snippet = match snippet {
        // Accept the JSON text of the rules too (what Kibana's editor holds).
        Value::String(s) if !s.trim().is_empty() => serde_json::from_str(&s)
            .map_err(|e| Error::invalid("advanced_snippet", format!("is not valid JSON: {e}")))?,
        v => v,
    };
    check_advanced(&snippet)?;
    Ok(json!({
        "rules": out,
        "advanced_snippet": {"value": if is_empty_snippet(&snippet) { json!({}) } else { snippet }, "created_at": ts, "updated_at": ts},
        "validation": {"state": "edited", "errors": []}
    }))
}

/// The shape of advanced rules (as Elastic's PostgreSQL connector has them):
/// an array of `{tables: [..], query: "SELECT ...", id_columns: [..]}`.
/// Whether the tables, columns and query work is for the agent to tell.
pub fn check_advanced(v: &Value) -> Result<()> {
    if is_empty_snippet(v) {
        return Ok(());
    }
    let Some(items) = v.as_array() else {
        return Err(Error::invalid(
            "advanced_snippet",
            "must be an array of {\"tables\": [...], \"query\": \"SELECT ...\", \"id_columns\": [...]}",
        ));
    };
    for (i, item) in items.iter().enumerate() {
        let f = |k: &str| format!("advanced_snippet[{i}].{k}");
        let Some(o) = item.as_object() else {
            return Err(Error::invalid(
                &format!("advanced_snippet[{i}]"),
                "must be an object with tables and query",
            ));
        };
        if let Some(k) = o.keys().find(|k| !["tables", "query", "id_columns"].contains(&k.as_str())) {
            return Err(Error::invalid(&f(k), "is not a known key: use tables, query and id_columns"));
        }
        match o.get("tables") {
            Some(Value::Array(t))
                if !t.is_empty() && t.iter().all(|x| x.as_str().is_some_and(|s| !s.is_empty())) => {}
            _ => return Err(Error::invalid(&f("tables"), "must be a non-empty array of table names")),
        }
        match o.get("query") {
            Some(Value::String(q)) if !q.trim().is_empty() => {}
            _ => return Err(Error::invalid(&f("query"), "is required: a SELECT statement")),
        }
        match o.get("id_columns") {
            None => {}
            Some(Value::Array(c)) if c.iter().all(|x| x.as_str().is_some_and(|s| !s.is_empty())) => {}
            _ => return Err(Error::invalid(&f("id_columns"), "must be an array of column names")),
        }
    }
    Ok(())
}

/// Writes `draft` into the DEFAULT domain of the stored filtering.
/// Sets the DEFAULT domain's draft. With `keep_rules` (an UpdateFiltering
/// that sent only `advanced_snippet`) the basic rules of the current draft
/// stay: sending advanced rules must not silently drop the basic ones.
pub fn set_draft_keeping_rules(stored: &mut Value, mut draft: Value, keep_rules: bool) {
    if keep_rules {
        let current = stored
            .as_array()
            .and_then(|l| l.iter().find(|f| f.get("domain").and_then(|d| d.as_str()) == Some("DEFAULT")))
            .and_then(|f| f.get("draft"))
            .and_then(|d| d.get("rules"))
            .filter(|r| r.as_array().is_some_and(|a| !a.is_empty()))
            .cloned();
        if let Some(rules) = current {
            draft["rules"] = rules;
        }
    }
    set_draft(stored, draft)
}

pub fn set_draft(stored: &mut Value, draft: Value) {
    if !stored.is_array() {
        *stored = json!([]);
    }
    let list = stored.as_array_mut().expect("array");
    match list.iter_mut().find(|f| f.get("domain").and_then(|d| d.as_str()) == Some("DEFAULT")) {
        Some(f) => f["draft"] = draft,
        None => list.push(json!({"domain": "DEFAULT", "active": draft.clone(), "draft": draft})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(policy: &str, field: &str, rule: &str, value: &str) -> proto::FilteringRule {
        proto::FilteringRule {
            policy: policy.into(),
            field: field.into(),
            rule: rule.into(),
            value: value.into(),
            ..Default::default()
        }
    }

    #[test]
    fn advanced_rules_alone_keep_the_basic_rules() {
        let now = crate::model::now();
        let mut stored = json!([]);
        let basic = build_draft(&[rule("exclude", "album_id", "<", "10")], None, now).unwrap();
        set_draft(&mut stored, basic);
        let snippet =
            json_to_value(&json!([{"tables": ["album"], "query": "SELECT 1", "id_columns": ["album_id"]}]));
        let advanced = build_draft(&[], Some(&snippet), now).unwrap();
        set_draft_keeping_rules(&mut stored, advanced, true);
        let draft = &stored[0]["draft"];
        assert_eq!(draft["rules"][0]["field"], "album_id", "{draft}");
        assert_eq!(draft["rules"].as_array().unwrap().len(), 2, "the rule and the default rule: {draft}");
        assert_eq!(draft["advanced_snippet"]["value"][0]["tables"][0], "album", "{draft}");
        // Rules sent replace the old ones.
        let replaced = build_draft(&[rule("include", "title", "contains", "x")], None, now).unwrap();
        set_draft_keeping_rules(&mut stored, replaced, false);
        assert_eq!(stored[0]["draft"]["rules"][0]["field"], "title");
    }

    #[test]
    fn scheduling_checks_intervals_and_keeps_other_entries() {
        let mut stored = json!({"full": {"enabled": false, "interval": "0 0 0 * * ?"}, "access_control": {"enabled": false, "interval": "0 0 0 * * ?", "x": 1}});
        let s = proto::Scheduling {
            full: Some(proto::ScheduleEntry { enabled: true, interval: "*/5 * * * * ?".into() }),
            ..Default::default()
        };
        assert_eq!(apply_scheduling(&mut stored, &s).unwrap(), vec!["full"]);
        assert_eq!(stored["full"], json!({"enabled": true, "interval": "*/5 * * * * ?"}));
        assert_eq!(stored["access_control"]["x"], 1);
        let bad = proto::Scheduling {
            incremental: Some(proto::ScheduleEntry { enabled: true, interval: "every minute".into() }),
            ..Default::default()
        };
        let e = apply_scheduling(&mut stored, &bad).unwrap_err().to_string();
        assert!(e.starts_with("scheduling.incremental.interval:"), "{e}");
        let e = apply_scheduling(&mut stored, &proto::Scheduling::default()).unwrap_err().to_string();
        assert!(e.starts_with("scheduling:"), "{e}");
    }

    #[test]
    fn pipeline_names_are_checked() {
        let mut stored = json!({"name": "search-default-ingestion", "other": true});
        let p = proto::Pipeline { name: "my-pipeline".into(), reduce_whitespace: true, ..Default::default() };
        apply_pipeline(&mut stored, Some(&p)).unwrap();
        assert_eq!(stored["name"], "my-pipeline");
        assert_eq!(stored["other"], true);
        let p = proto::Pipeline { name: "my pipeline".into(), ..Default::default() };
        assert!(apply_pipeline(&mut stored, Some(&p)).unwrap_err().to_string().starts_with("pipeline.name:"));
        assert!(apply_pipeline(&mut stored, None).unwrap_err().to_string().starts_with("pipeline:"));
    }

    #[test]
    fn basic_rules_are_checked_and_end_with_the_default_rule() {
        let t = crate::model::now();
        let d = build_draft(&[rule("exclude", "price", "<", "10")], None, t).unwrap();
        let rules = d["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0]["policy"], "exclude");
        assert_eq!(rules[1]["id"], "DEFAULT");
        assert_eq!(d["validation"]["state"], "edited");
        let e = build_draft(&[rule("drop", "price", "<", "10")], None, t).unwrap_err().to_string();
        assert!(e.starts_with("rules[0].policy:"), "{e}");
        let e = build_draft(
            &[rule("include", "a", "equals", "x"), rule("include", "price", "like", "1")],
            None,
            t,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("rules[1].rule:") && e.contains("starts_with"), "{e}");
        let e = build_draft(&[rule("include", "", "equals", "x")], None, t).unwrap_err().to_string();
        assert!(e.starts_with("rules[0].field:"), "{e}");
    }

    #[test]
    fn advanced_rules_have_the_postgresql_shape() {
        let t = crate::model::now();
        let ok = json_to_value(&json!([{"tables": ["item"], "query": "SELECT * FROM item WHERE price > 5"}]));
        let d = build_draft(&[], Some(&ok), t).unwrap();
        assert_eq!(d["advanced_snippet"]["value"][0]["tables"][0], "item");
        let text = json_to_value(&json!(
            "[{\"tables\": [\"t\"], \"query\": \"SELECT 1\", \"id_columns\": [\"id\"]}]"
        ));
        assert!(build_draft(&[], Some(&text), t).is_ok());
        for (bad, field) in [
            (json!({"tables": ["t"]}), "advanced_snippet:"),
            (json!([{"tables": [], "query": "SELECT 1"}]), "advanced_snippet[0].tables:"),
            (json!([{"tables": ["t"]}]), "advanced_snippet[0].query:"),
            (json!([{"tables": ["t"], "query": "q", "id_columns": "id"}]), "advanced_snippet[0].id_columns:"),
            (json!([{"tables": ["t"], "query": "q", "idcolumns": ["id"]}]), "advanced_snippet[0].idcolumns:"),
        ] {
            let e = build_draft(&[], Some(&json_to_value(&bad)), t).unwrap_err().to_string();
            assert!(e.starts_with(field), "{bad}: {e}");
        }
    }

    #[test]
    fn stored_filtering_reads_back() {
        let c = crate::model::ConnectorDoc::new(
            "n".into(),
            String::new(),
            "i".into(),
            "postgresql".into(),
            String::new(),
        );
        let f = filtering_to_proto(&c.filtering);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].domain, "DEFAULT");
        let active = f[0].active.as_ref().unwrap();
        assert_eq!(active.rules[0].id, "DEFAULT");
        assert_eq!(active.validation.as_ref().unwrap().state, "valid");
        assert!(active.advanced_snippet.is_none());
        let p = pipeline_to_proto(&c.pipeline);
        assert_eq!(p.name, "search-default-ingestion");
        let s = scheduling_to_proto(&c.scheduling);
        assert_eq!(s.full.unwrap().interval, "0 0 0 * * ?");
    }
}
