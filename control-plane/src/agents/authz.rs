//! Which agent may serve which connector.
//!
//! An agent's identity is the Subject CN of its client certificate, which
//! the TLS layer verified against `agents.tls.client_ca` (agents without one
//! never get this far). A connector can be *bound* to the identities allowed
//! to serve it (`ferry.allowed_agents`, set with `UpdateAllowedAgents`).
//!
//! - Bound connector: only the listed agents. Any other agent that offers it
//!   is refused: it gets `ConnectorRefused`, never receives the connector's
//!   configuration (which holds secrets) nor its jobs, and the refusal is
//!   recorded on the connector (`ferry.refused_agents`, shown by
//!   `GetConnector`).
//! - Unbound connector: any agent holding a certificate from the client CA
//!   may serve it — issuing an agent certificate is already an act of
//!   authorization by the operator who owns that CA — and the control plane
//!   logs a warning once per session so the operator knows the connector is
//!   open to every agent. With `agents.require_binding: true` an unbound
//!   connector is served by nobody (deny by default) for deployments whose
//!   client CA is shared with other teams.
//!
//! The same rules, plus the offer's service_type, are applied wherever a
//! session is handed something about a connector
//! (`AgentSession::may_serve`): the dispatcher's choice of agent, and the
//! agent's answers (`ValidationResult`, `FilteringResult`, which also must
//! answer a check this session was sent). A refused agent never receives a
//! connector's jobs or configuration, and cannot change its status or rules.
//!
//! Sensitivity (`configuration.<key>.sensitive`) can only be raised by an
//! agent's schema, never lowered for a field that holds a value.

use crate::model::connector::RefusedAgent;
use crate::model::{now, ConnectorDoc};

/// Refusals kept on a connector document.
pub const MAX_REFUSED_KEPT: usize = 10;

/// Largest accepted agent id (certificate CNs are at most 64 characters;
/// leave room for other identity schemes).
pub const MAX_AGENT_ID_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The agent is listed in `allowed_agents`.
    Allowed,
    /// The connector is unbound and unbound connectors are open.
    Unbound,
    /// The agent may not serve the connector; why, for the agent and the log.
    Refused(String),
}

impl Verdict {
    pub fn may_serve(&self) -> bool {
        !matches!(self, Verdict::Refused(_))
    }
}

/// May `agent_id` serve `connector`?
pub fn verdict(connector: &ConnectorDoc, agent_id: &str, require_binding: bool) -> Verdict {
    let allowed = &connector.ferry.allowed_agents;
    if allowed.is_empty() {
        if require_binding {
            return Verdict::Refused(format!(
                "agent {agent_id:?} is not allowed to serve this connector: it is bound to no agent and this \
                 control plane requires a binding (agents.require_binding); an operator must add the agent \
                 with ConnectorService/UpdateAllowedAgents"
            ));
        }
        return Verdict::Unbound;
    }
    if allowed.iter().any(|a| a == agent_id) {
        Verdict::Allowed
    } else {
        Verdict::Refused(format!(
            "agent {agent_id:?} is not allowed to serve this connector (allowed: {}); an operator can add it \
             with ConnectorService/UpdateAllowedAgents",
            allowed.join(", ")
        ))
    }
}

/// Why an agent offering the connector as `offered_service_type` may not
/// serve it although its identity may: the connector is of another kind.
/// (A connector without a service_type takes the first agent's.)
pub fn service_type_refusal(
    connector: &ConnectorDoc,
    agent_id: &str,
    offered_service_type: &str,
) -> Option<String> {
    match &connector.service_type {
        Some(st) if st != offered_service_type => Some(format!(
            "the connector's service_type is {st:?} but agent {agent_id:?} serves {offered_service_type:?}"
        )),
        _ => None,
    }
}

/// Records a refusal on the connector; false when an identical one (same
/// agent, same reason) is already there, so callers write only on news.
pub fn record_refusal(connector: &mut ConnectorDoc, agent_id: &str, reason: &str) -> bool {
    let list = &mut connector.ferry.refused_agents;
    if list.iter().any(|r| r.agent_id == agent_id && r.reason == reason) {
        return false;
    }
    list.retain(|r| r.agent_id != agent_id);
    list.push(RefusedAgent { agent_id: agent_id.to_owned(), reason: reason.to_owned(), at: Some(now()) });
    let excess = list.len().saturating_sub(MAX_REFUSED_KEPT);
    list.drain(..excess);
    true
}

/// Validates and normalizes an allowed-agents list (sorted, deduplicated).
pub fn normalize_allowed(ids: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let id = id.trim();
        if id.is_empty() || id.len() > MAX_AGENT_ID_LEN || id.chars().any(char::is_control) {
            return Err(format!(
                "allowed_agents[{i}] must be an agent id (its certificate's Subject CN), 1 to \
                 {MAX_AGENT_ID_LEN} bytes without control characters"
            ));
        }
        out.push(id.to_owned());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(ids: &[&str]) -> ConnectorDoc {
        let mut c = ConnectorDoc::default();
        c.ferry.allowed_agents = ids.iter().map(|s| s.to_string()).collect();
        c
    }

    #[test]
    fn bound_connectors_admit_only_listed_agents() {
        let c = bound(&["agent-a", "agent-b"]);
        assert_eq!(verdict(&c, "agent-a", false), Verdict::Allowed);
        assert_eq!(verdict(&c, "agent-a", true), Verdict::Allowed);
        let v = verdict(&c, "agent-x", false);
        assert!(
            matches!(&v, Verdict::Refused(r) if r.contains("agent-x") && r.contains("UpdateAllowedAgents"))
        );
    }

    #[test]
    fn unbound_connectors_follow_require_binding() {
        let c = bound(&[]);
        assert_eq!(verdict(&c, "anyone", false), Verdict::Unbound);
        assert!(!verdict(&c, "anyone", true).may_serve());
    }

    #[test]
    fn refusals_are_recorded_once_and_bounded() {
        let mut c = bound(&["a"]);
        assert!(record_refusal(&mut c, "x", "no"));
        assert!(!record_refusal(&mut c, "x", "no"));
        assert!(record_refusal(&mut c, "x", "other reason"));
        assert_eq!(c.ferry.refused_agents.len(), 1);
        for i in 0..20 {
            record_refusal(&mut c, &format!("agent-{i}"), "no");
        }
        assert_eq!(c.ferry.refused_agents.len(), MAX_REFUSED_KEPT);
        assert_eq!(c.ferry.refused_agents.last().unwrap().agent_id, "agent-19");
    }

    #[test]
    fn allowed_lists_are_validated_and_normalized() {
        let ids = vec!["b".to_string(), " a ".to_string(), "b".to_string()];
        assert_eq!(normalize_allowed(&ids).unwrap(), vec!["a", "b"]);
        assert!(normalize_allowed(&["".to_string()]).unwrap_err().contains("allowed_agents[0]"));
    }
}
