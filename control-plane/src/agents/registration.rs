//! Connectors as seen through an agent session: the configuration schema
//! the agent registers, `last_seen`, and configuration checks.
//!
//! For every connector a session offers, [`run`] keeps the connector
//! document in line when the connector cache (`store::cache`) reports a
//! change, and every [`RECONCILE_EVERY`] for checks to repeat. It reads the
//! cached document (no request) and writes only when something must change:
//! - merges the agent's schema into `configuration` (values are kept) and
//!   moves `created` → `needs_configuration` (→ `configured` when values for
//!   every required field are already there);
//! - `last_seen` is written in batches for all connectors of the instance
//!   by [`run_last_seen`] (one `_bulk` every [`LAST_SEEN_EVERY`]);
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

/// How often a session looks again at its connectors without a change
/// (checks to repeat: unanswered, or a connector in `error`).
pub const RECONCILE_EVERY: Duration = Duration::from_secs(5);
pub const LAST_SEEN_EVERY: Duration = Duration::from_secs(30);
pub const RECHECK_ERROR_EVERY: Duration = Duration::from_secs(30);
/// Items per `_bulk` of `last_seen` updates.
const LAST_SEEN_BULK: usize = 1_000;

/// Connectors whose `last_seen` should be written soon (a session just
/// started serving them). Bounded by the number of connectors offered.
#[derive(Default)]
pub struct LastSeenQueue {
    due: std::sync::Mutex<std::collections::HashSet<String>>,
    wake: tokio::sync::Notify,
}

impl LastSeenQueue {
    pub fn push(&self, connector_id: &str) {
        self.due.lock().expect("last_seen lock").insert(connector_id.to_owned());
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<String> {
        self.due.lock().expect("last_seen lock").drain().collect()
    }
}

/// Writes `last_seen` of the connectors served on this instance, in
/// batches: every [`LAST_SEEN_EVERY`] for all of them (one `_bulk` per
/// [`LAST_SEEN_BULK`] connectors), and shortly after a session starts
/// serving one. Each item is a partial update guarded by the cached
/// version (`if_seq_no`): on success the cache learns the new version
/// without reading the document back; a conflict means the document
/// changed meanwhile, and the next cycle (after the cache caught up) writes.
pub async fn run_last_seen(app: Arc<App>) {
    let mut tick = tokio::time::interval(LAST_SEEN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let ids = tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tick.tick() => served_connectors(&app),
            _ = app.last_seen.wake.notified() => {
                // Sessions that connect together share one request.
                tokio::time::sleep(Duration::from_millis(200)).await;
                app.last_seen.take()
            }
        };
        if let Err(e) = write_last_seen(&app, ids).await {
            tracing::warn!("writing last_seen failed (retrying next cycle): {e}");
        }
    }
}

/// Every connector a live session of this instance serves (and may).
fn served_connectors(app: &App) -> Vec<String> {
    let mut ids = std::collections::BTreeSet::new();
    for s in app.registry.all() {
        if s.closed.is_cancelled() {
            continue;
        }
        let st = s.state.lock().expect("state lock");
        for o in &s.offers {
            if !st.refused.contains(&o.connector_id) {
                ids.insert(o.connector_id.clone());
            }
        }
    }
    ids.into_iter().collect()
}

async fn write_last_seen(app: &App, ids: Vec<String>) -> Result<()> {
    let t = now();
    let stamp = serde_json::json!({"doc": {"last_seen": t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()}}).to_string();
    let targets: Vec<(String, crate::elasticsearch::SeqNo)> = ids
        .into_iter()
        .filter_map(|id| app.connector_cache.get(&id))
        .filter(|v| !v.doc.deleted)
        .map(|v| (v.id, v.seq_no))
        .collect();
    for chunk in targets.chunks(LAST_SEEN_BULK) {
        let mut body = String::new();
        for (id, seq) in chunk {
            let action = serde_json::json!({"update": {
                "_index": app.stores.connectors.index(), "_id": id,
                "if_seq_no": seq.seq_no, "if_primary_term": seq.primary_term,
            }});
            body.push_str(&action.to_string());
            body.push('\n');
            body.push_str(&stamp);
            body.push('\n');
        }
        let answer = app.stores.es.bulk_json(bytes::Bytes::from(body)).await?;
        let items = answer["items"].as_array().cloned().unwrap_or_default();
        for item in items {
            let Some(r) = item.get("update") else { continue };
            let (Some(id), Some(seq_no), Some(term)) =
                (r["_id"].as_str(), r["_seq_no"].as_i64(), r["_primary_term"].as_i64())
            else {
                continue; // conflict or missing: the next cycle tries again
            };
            if r["status"].as_u64().is_some_and(|s| s < 300) {
                let seq = crate::elasticsearch::SeqNo { seq_no, primary_term: term };
                app.connector_cache.set_last_seen(id, t, seq);
            }
        }
    }
    Ok(())
}

pub async fn run(app: Arc<App>, session: Arc<AgentSession>) {
    let mut changes = app.connector_cache.subscribe();
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for offer in &session.offers {
        app.last_seen.push(&offer.connector_id);
    }
    loop {
        tokio::select! {
            _ = session.closed.cancelled() => return,
            _ = app.shutdown.cancelled() => return,
            _ = tick.tick() => {}
            r = changes.changed() => if r.is_err() { return },
        }
        changes.mark_unchanged();
        for offer in &session.offers {
            if let Err(e) = reconcile(&app, &session, offer).await {
                tracing::warn!(connector_id = %offer.connector_id, agent_id = %session.agent_id, "updating the connector failed: {e}");
            }
        }
    }
}

/// What a session learns from one look at a connector: the refusal reason,
/// or (status, configuration revision, values, filtering, unbound).
type Outcome = std::result::Result<
    (ConnectorStatus, String, std::collections::BTreeMap<String, serde_json::Value>, serde_json::Value, bool),
    String,
>;

/// The registration rules applied to one connector document (pure: runs on
/// the cached copy to see whether anything needs writing, then again inside
/// the optimistic-concurrency loop when it does).
fn apply(
    app: &App,
    session: &AgentSession,
    offer: &Offer,
    c: &mut crate::model::ConnectorDoc,
) -> Change<Option<Outcome>> {
    if c.deleted {
        return Change::Keep(None);
    }
    let verdict = authz::verdict(c, &session.agent_id, app.require_binding);
    if let Verdict::Refused(reason) = verdict {
        // Recorded on the connector once per agent and reason.
        let news = authz::record_refusal(c, &session.agent_id, &reason);
        let out = Some(Err(reason));
        return if news { Change::Write(out) } else { Change::Keep(out) };
    }
    let unbound = verdict == Verdict::Unbound;
    if let Some(reason) = authz::service_type_refusal(c, &session.agent_id, &offer.service_type) {
        return Change::Keep(Some(Err(reason)));
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
                && c.configuration.values().any(|e| !crate::model::connector::is_empty_value(&e.value))))
    {
        c.move_to(ConnectorStatus::Configured);
    }
    let snapshot = (c.status, c.config_revision(), c.config_values(), c.filtering.clone(), unbound);
    if *c == before {
        Change::Keep(Some(Ok(snapshot)))
    } else {
        // A registration write also says the agent is there.
        c.last_seen = Some(now());
        Change::Write(Some(Ok(snapshot)))
    }
}

async fn reconcile(app: &App, session: &AgentSession, offer: &Offer) -> Result<()> {
    let outcome = match app.connector_cache.get(&offer.connector_id) {
        None => None,
        Some(cached) => {
            let mut copy = cached.doc;
            match apply(app, session, offer, &mut copy) {
                Change::Keep(outcome) => outcome,
                Change::Write(_) => {
                    let updated = app
                        .stores
                        .connectors
                        .update(&offer.connector_id, |c| Ok(apply(app, session, offer, c)))
                        .await?;
                    match updated {
                        Some((written, outcome)) => {
                            app.connector_cache.put(written);
                            outcome
                        }
                        None => None,
                    }
                }
            }
        }
    };
    let Some(outcome) = outcome else {
        // No such connector (or deleted): nothing will ever be assigned. Tell
        // the agent once per session what to do instead of staying silent.
        // A connector created later appears in the cache, wakes this
        // session and is served (the refusal is lifted below).
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
        Ok(written) => {
            if let Some((v, ())) = written {
                app.connector_cache.put(v);
            }
            tracing::info!(connector_id = %r.connector_id, agent_id = %session.agent_id, ok = r.ok, "configuration checked by the agent")
        }
        Err(e) => {
            tracing::warn!(connector_id = %r.connector_id, "recording the configuration check failed: {e}")
        }
    }
    app.registry.changed.notify_waiters();
}
