//! Connectors as seen through an agent session: the configuration schema
//! the agent registers, `last_seen`, and configuration checks.
//!
//! For every connector a session offers, [`run`] keeps the connector
//! document in line, every [`RECONCILE_EVERY`] or when something changed:
//! - merges the agent's schema into `configuration` (values are kept) and
//!   moves `created` → `needs_configuration` (→ `configured` when values for
//!   every required field are already there);
//! - writes `last_seen` (at most every [`LAST_SEEN_EVERY`]);
//! - asks the agent to check configured values it has not checked yet
//!   (validate + reach the source): ok → `connected`, failure → `error` with
//!   the agent's message. A connector in `error` is checked again every
//!   [`RECHECK_ERROR_EVERY`], so it recovers by itself once the source is back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_sdk::proto::{self, control_message::Message as Out};

use super::authz::{self, Verdict};
use super::registry::{AgentSession, Offer, ValidationState};
use crate::app::App;
use crate::error::Result;
use crate::model::{now, ConnectorStatus};
use crate::store::Change;

pub const RECONCILE_EVERY: Duration = Duration::from_secs(2);
pub const LAST_SEEN_EVERY: Duration = Duration::from_secs(30);
pub const RECHECK_ERROR_EVERY: Duration = Duration::from_secs(30);

pub async fn run(app: Arc<App>, session: Arc<AgentSession>) {
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = session.closed.cancelled() => return,
            _ = app.shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = app.registry.changed.notified() => {}
        }
        for offer in &session.offers {
            if let Err(e) = reconcile(&app, &session, offer).await {
                tracing::warn!(connector_id = %offer.connector_id, agent_id = %session.agent_id, "updating the connector failed: {e}");
            }
        }
    }
}

async fn reconcile(app: &App, session: &AgentSession, offer: &Offer) -> Result<()> {
    let write_last_seen = {
        let st = session.state.lock().expect("state lock");
        st.last_seen_written.get(&offer.connector_id).map(|t| t.elapsed() >= LAST_SEEN_EVERY).unwrap_or(true)
    };
    let updated = app
        .stores
        .connectors
        .update(&offer.connector_id, |c| {
            if c.deleted {
                return Ok(Change::Keep(None));
            }
            let verdict = authz::verdict(c, &session.agent_id, app.require_binding);
            if let Verdict::Refused(reason) = verdict {
                // Recorded on the connector once per agent and reason.
                let news = authz::record_refusal(c, &session.agent_id, &reason);
                let out = Some(Err(reason));
                return Ok(if news { Change::Write(out) } else { Change::Keep(out) });
            }
            let unbound = verdict == Verdict::Unbound;
            if let Some(reason) = authz::service_type_refusal(c, &session.agent_id, &offer.service_type) {
                return Ok(Change::Keep(Some(Err(reason))));
            }
            let before = c.clone();
            for (key, schema) in &offer.schema {
                let entry = c.configuration.entry(key.clone()).or_default();
                let value = std::mem::take(&mut entry.value);
                let extra = std::mem::take(&mut entry.extra);
                // An agent may raise sensitivity, never lower it for a field
                // that holds a value: that would let any agent serving the
                // connector publish the secret through GetConnector.
                let keep_secret = entry.sensitive && !crate::model::connector::is_empty_value(&value);
                *entry = schema.clone();
                entry.sensitive |= keep_secret;
                entry.value = value;
                entry.extra = extra;
            }
            if c.service_type.is_none() {
                c.service_type = Some(offer.service_type.clone());
            }
            if let Some(f) = &offer.features {
                f.write_into(&mut c.features);
            }
            if c.status == ConnectorStatus::Created {
                c.move_to(ConnectorStatus::NeedsConfiguration);
            }
            // Configured once the values needed are there; a schema with no
            // required field (or none at all) needs nothing from the user.
            if c.status == ConnectorStatus::NeedsConfiguration
                && c.missing_required().is_empty()
                && (!c.configuration.values().any(|e| e.required)
                    || (!c.config_values().is_empty()
                        && c.configuration
                            .values()
                            .any(|e| !crate::model::connector::is_empty_value(&e.value))))
            {
                c.move_to(ConnectorStatus::Configured);
            }
            if write_last_seen {
                c.last_seen = Some(now());
            }
            let snapshot = (c.status, c.config_revision(), c.config_values(), c.filtering.clone(), unbound);
            if *c == before {
                Ok(Change::Keep(Some(Ok(snapshot))))
            } else {
                Ok(Change::Write(Some(Ok(snapshot))))
            }
        })
        .await?;
    let Some((_, Some(outcome))) = updated else {
        // No such connector (or deleted): nothing will ever be assigned. Tell
        // the agent once per session what to do instead of staying silent.
        let first = session.state.lock().expect("state lock").refused.insert(offer.connector_id.clone());
        if first {
            let reason = format!(
                "connector {id:?} does not exist on the control plane: create it with \
                 ConnectorService/PutConnector {{\"connector_id\": \"{id}\", \"service_type\": \"{st}\", \
                 \"index_name\": \"...\"}}, or fix connector_id in this agent's configuration",
                id = offer.connector_id,
                st = offer.service_type,
            );
            tracing::warn!(connector_id = %offer.connector_id, agent_id = %session.agent_id, "agent offers a connector that does not exist: {reason}");
            let msg = proto::ConnectorRefused { connector_id: offer.connector_id.clone(), reason };
            session.send(Out::ConnectorRefused(msg));
        }
        return Ok(());
    };
    if write_last_seen {
        session
            .state
            .lock()
            .expect("state lock")
            .last_seen_written
            .insert(offer.connector_id.clone(), Instant::now());
    }
    let (status, revision, values, filtering, unbound) = match outcome {
        Ok(s) => s,
        Err(reason) => {
            let first = session.state.lock().expect("state lock").refused.insert(offer.connector_id.clone());
            if first {
                tracing::warn!(connector_id = %offer.connector_id, agent_id = %session.agent_id, address = %session.address, "agent refused for the connector: {reason}");
                let msg = proto::ConnectorRefused { connector_id: offer.connector_id.clone(), reason };
                session.send(Out::ConnectorRefused(msg));
            }
            return Ok(());
        }
    };
    {
        let mut st = session.state.lock().expect("state lock");
        // Allowed (again): a later refusal must be told to the agent anew.
        st.refused.remove(&offer.connector_id);
        if unbound && st.warned_unbound.insert(offer.connector_id.clone()) {
            tracing::warn!(
                connector_id = %offer.connector_id, agent_id = %session.agent_id,
                "connector is bound to no agent: any agent with a certificate from the client CA may serve it; \
                 bind it with ConnectorService/UpdateAllowedAgents"
            );
        }
    }
    let needs_check = match status {
        ConnectorStatus::Configured | ConnectorStatus::Connected | ConnectorStatus::Error => {
            let st = session.state.lock().expect("state lock");
            match st.validations.get(&offer.connector_id) {
                None => true,
                Some(v) if v.revision != revision => true,
                Some(v) if !v.answered => v.at.elapsed() > Duration::from_secs(60),
                Some(v) => status == ConnectorStatus::Error && v.at.elapsed() > RECHECK_ERROR_EVERY,
            }
        }
        _ => false,
    };
    if needs_check {
        session.state.lock().expect("state lock").validations.insert(
            offer.connector_id.clone(),
            ValidationState { revision: revision.clone(), answered: false, at: Instant::now() },
        );
        let msg = proto::ValidateConfiguration {
            connector_id: offer.connector_id.clone(),
            values: ferry_sdk::config_schema::values_to_proto(&values),
            revision,
        };
        session.send(Out::ValidateConfiguration(msg));
    }
    super::filtering::check_draft(session, &offer.connector_id, status, &filtering, &values).await;
    Ok(())
}

/// The agent answered a configuration check.
pub async fn on_validation_result(app: Arc<App>, session: Arc<AgentSession>, r: proto::ValidationResult) {
    {
        let mut st = session.state.lock().expect("state lock");
        if st.refused.contains(&r.connector_id) || !session.serves(&r.connector_id) {
            tracing::warn!(connector_id = %r.connector_id, agent_id = %session.agent_id, "ignoring a configuration check from an agent that does not serve the connector");
            return;
        }
        if let Some(v) = st.validations.get_mut(&r.connector_id) {
            if v.revision == r.revision {
                v.answered = true;
                v.at = Instant::now();
            }
        }
    }
    let res = app
        .stores
        .connectors
        .update(&r.connector_id, |c| {
            // An answer about values that changed since is stale; one from
            // an agent that may no longer serve the connector does not count.
            if c.config_revision() != r.revision
                || c.deleted
                || !session.may_serve(&r.connector_id, c, app.require_binding)
            {
                return Ok(Change::Keep(()));
            }
            if r.ok {
                c.move_to(ConnectorStatus::Connected);
                c.error = None;
                c.ferry.validated_revision = Some(r.revision.clone());
            } else {
                c.move_to(ConnectorStatus::Error);
                c.error = Some(r.error.clone());
            }
            c.last_seen = Some(now());
            Ok(Change::Write(()))
        })
        .await;
    match res {
        Ok(_) => {
            tracing::info!(connector_id = %r.connector_id, agent_id = %session.agent_id, ok = r.ok, "configuration checked by the agent")
        }
        Err(e) => {
            tracing::warn!(connector_id = %r.connector_id, "recording the configuration check failed: {e}")
        }
    }
    app.registry.changed.notify_waiters();
}
