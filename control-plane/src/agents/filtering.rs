//! Draft sync rules checked by the agent, then activated.
//!
//! UpdateFiltering stores a draft with `validation.state: edited`. When an
//! agent serving the connector is connected, the reconciler sends it
//! `ValidateFiltering` (once per draft revision and session); the agent
//! checks the rules against the source (columns, tables, queries) and
//! answers `FilteringResult`. No errors: the draft is marked `valid` and
//! copied to `active` — jobs created from then on carry it. Errors: the
//! draft is marked `invalid` with them and `active` is left as it was.

use std::sync::Arc;

use ferry_sdk::proto::{self, control_message::Message as Out};
use serde_json::{json, Value};

use super::registry::AgentSession;
use crate::app::App;
use crate::error::Result;
use crate::model::{now, ConnectorStatus};
use crate::store::Change;

fn default_domain(filtering: &Value) -> Option<&Value> {
    filtering.as_array()?.iter().find(|f| f.get("domain").and_then(|d| d.as_str()) == Some("DEFAULT"))
}

fn default_domain_mut(filtering: &mut Value) -> Option<&mut Value> {
    filtering.as_array_mut()?.iter_mut().find(|f| f.get("domain").and_then(|d| d.as_str()) == Some("DEFAULT"))
}

/// Identifies the rules of a draft (not its validation).
pub fn revision(rules: &Value) -> String {
    use md5::{Digest, Md5};
    let key = json!([rules.get("rules"), rules.get("advanced_snippet").and_then(|s| s.get("value"))]);
    hex::encode(Md5::digest(key.to_string().as_bytes()))
}

/// The wire form of stored rules (`active` or `draft`).
pub fn to_sync_rules(rules: &Value) -> proto::SyncRules {
    let f = crate::admin::settings::filtering_to_proto(&json!([{"domain": "DEFAULT", "active": rules}]));
    let r = f.into_iter().next().and_then(|f| f.active).unwrap_or_default();
    proto::SyncRules { rules: r.rules, advanced_snippet: r.advanced_snippet }
}

/// The active rules of a connector (or job snapshot) filtering.
pub fn active_rules(filtering: &Value) -> Option<proto::SyncRules> {
    default_domain(filtering).and_then(|d| d.get("active")).map(to_sync_rules)
}

/// Asks the agent to check the draft when it is `edited` and not asked yet.
pub async fn check_draft(
    session: &AgentSession,
    connector_id: &str,
    status: ConnectorStatus,
    filtering: &Value,
    values: &std::collections::BTreeMap<String, Value>,
) {
    if status != ConnectorStatus::Connected {
        return;
    }
    let Some(draft) = default_domain(filtering).and_then(|d| d.get("draft")) else { return };
    if draft.get("validation").and_then(|v| v.get("state")).and_then(|s| s.as_str()) != Some("edited") {
        return;
    }
    let rev = revision(draft);
    {
        let mut st = session.state.lock().expect("state lock");
        match st.filtering_checks.get(connector_id) {
            Some((r, at)) if *r == rev && at.elapsed() < std::time::Duration::from_secs(60) => return,
            _ => {}
        }
        st.filtering_checks.insert(connector_id.to_owned(), (rev.clone(), std::time::Instant::now()));
    }
    let msg = proto::ValidateFiltering {
        connector_id: connector_id.to_owned(),
        revision: rev,
        configuration: ferry_sdk::config_schema::values_to_proto(values),
        rules: Some(to_sync_rules(draft)),
    };
    tracing::info!(connector_id, agent_id = %session.agent_id, "asking the agent to check draft sync rules");
    session.send(Out::ValidateFiltering(msg));
}

/// Records the agent's answer; activates a valid draft. Only an answer to
/// a question this session was asked counts (it serves the connector, may
/// serve it, and was sent this draft revision): an agent serving another
/// connector cannot validate or activate someone else's rules.
pub async fn on_result(app: Arc<App>, session: Arc<AgentSession>, r: proto::FilteringResult) {
    let asked = session.serves(&r.connector_id)
        && session
            .state
            .lock()
            .expect("state lock")
            .filtering_checks
            .get(&r.connector_id)
            .is_some_and(|(rev, _)| *rev == r.revision);
    if !asked {
        tracing::warn!(connector_id = %r.connector_id, agent_id = %session.agent_id, "ignoring a sync rules check this session was not asked for");
        return;
    }
    let res: Result<_> = app
        .stores
        .connectors
        .update(&r.connector_id, |c| {
            if !session.may_serve(&r.connector_id, c, app.require_binding) {
                return Ok(Change::Keep(None));
            }
            let Some(domain) = default_domain_mut(&mut c.filtering) else { return Ok(Change::Keep(None)) };
            // An answer about a draft that changed since is stale.
            if domain.get("draft").map(revision).as_deref() != Some(r.revision.as_str()) {
                return Ok(Change::Keep(None));
            }
            let errors: Vec<Value> =
                r.errors.iter().map(|e| json!({"ids": e.ids, "messages": e.messages})).collect();
            let valid = errors.is_empty();
            domain["draft"]["validation"] =
                json!({"state": if valid { "valid" } else { "invalid" }, "errors": errors});
            domain["draft"]["advanced_snippet"]["updated_at"] =
                json!(now().format(&time::format_description::well_known::Rfc3339).unwrap_or_default());
            if valid {
                domain["active"] = domain["draft"].clone();
            }
            Ok(Change::Write(Some(valid)))
        })
        .await;
    match res {
        Ok(Some((_, Some(valid)))) => {
            tracing::info!(connector_id = %r.connector_id, agent_id = %session.agent_id, valid, "draft sync rules checked by the agent")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(connector_id = %r.connector_id, "recording the sync rules check failed: {e}")
        }
    }
}
