//! `ferry.v1.FleetService`: the agents connected to any control plane.
//!
//! A control plane only holds its own agent sessions. So that grpcurl
//! against any replica shows the whole fleet, each instance writes one
//! document per live session into [`AGENTS_INDEX`] every
//! [`RECORD_EVERY`] (all of them in one `_bulk`), with an expiry ([`TTL`]); a session that ended (or whose
//! control plane died) drops out of the answers when its document expires
//! and is deleted then. Answers merge this instance's live sessions (exact,
//! now) with the other instances' unexpired documents.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_sdk::proto::{self, fleet_service_server::FleetService};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::agents::registry::AgentSession;
use crate::app::App;
use crate::error::Result;
use crate::model::{now, to_proto_ts, Timestamp};

pub use crate::store::indices::AGENTS_INDEX;
pub const RECORD_EVERY: Duration = Duration::from_secs(5);
/// Session records per `_bulk`.
const RECORD_BULK: usize = 1_000;
/// A session document not refreshed for this long is gone.
pub const TTL: Duration = Duration::from_secs(20);

/// One live session, as stored in [`AGENTS_INDEX`].
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AgentRecord {
    pub agent_id: String,
    pub session_id: String,
    pub version: String,
    pub address: String,
    pub hostname: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub connected_since: Option<Timestamp>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_heartbeat: Option<Timestamp>,
    pub connectors: Vec<String>,
    pub running_job_ids: Vec<String>,
    pub max_concurrent_jobs: u32,
    pub control_plane: String,
    /// Unix milliseconds after which the record is stale.
    pub expires_at_ms: i64,
}

impl AgentRecord {
    fn of(app: &App, s: &AgentSession) -> AgentRecord {
        let mut running: Vec<String> = s.jobs.lock().expect("jobs lock").keys().cloned().collect();
        running.sort();
        let last_heartbeat = s.state.lock().expect("state lock").last_heartbeat;
        let now_ms = (now().unix_timestamp_nanos() / 1_000_000) as i64;
        AgentRecord {
            agent_id: s.agent_id.clone(),
            session_id: s.session_id.clone(),
            version: s.agent_version.clone(),
            address: s.address.clone(),
            hostname: s.hostname.clone(),
            connected_since: Some(s.connected_at),
            last_heartbeat: last_heartbeat.or(Some(s.connected_at)),
            connectors: s.offers.iter().map(|o| o.connector_id.clone()).collect(),
            running_job_ids: running,
            max_concurrent_jobs: s.max_concurrent_jobs as u32,
            control_plane: app.instance_id.clone(),
            expires_at_ms: now_ms + TTL.as_millis() as i64,
        }
    }

    fn to_proto(&self) -> proto::AgentInfo {
        proto::AgentInfo {
            agent_id: self.agent_id.clone(),
            session_id: self.session_id.clone(),
            version: self.version.clone(),
            address: self.address.clone(),
            hostname: self.hostname.clone(),
            connected_since: to_proto_ts(&self.connected_since),
            last_heartbeat: to_proto_ts(&self.last_heartbeat),
            connectors: self.connectors.clone(),
            running_job_ids: self.running_job_ids.clone(),
            max_concurrent_jobs: self.max_concurrent_jobs,
            control_plane: self.control_plane.clone(),
        }
    }
}

/// Writes this instance's sessions every [`RECORD_EVERY`] and removes
/// expired records.
pub async fn run_recorder(app: Arc<App>) {
    let mut tick = tokio::time::interval(RECORD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // One `_bulk` per RECORD_BULK sessions, not one request each.
        let records: Vec<AgentRecord> = app.registry.all().iter().map(|s| AgentRecord::of(&app, s)).collect();
        for chunk in records.chunks(RECORD_BULK) {
            if let Err(e) = record(&app, chunk).await {
                tracing::warn!("recording {} agent sessions failed: {e}", chunk.len());
            }
        }
        let now_ms = (now().unix_timestamp_nanos() / 1_000_000) as i64;
        let expired = serde_json::json!({"range": {"expires_at_ms": {"lt": now_ms}}});
        if let Err(e) = app.stores.es.delete_by_query(AGENTS_INDEX, &expired).await {
            tracing::debug!("removing expired agent sessions failed: {e}");
        }
    }
}

/// Writes `records` with one `_bulk`; the first failed item is the error.
async fn record(app: &App, records: &[AgentRecord]) -> Result<()> {
    let mut body = String::new();
    for r in records {
        let action = serde_json::json!({"index": {"_index": AGENTS_INDEX, "_id": r.session_id}});
        body.push_str(&action.to_string());
        body.push('\n');
        body.push_str(&serde_json::to_string(r).map_err(|e| crate::error::Error::Internal(e.to_string()))?);
        body.push('\n');
    }
    let answer = app.stores.es.bulk_json(bytes::Bytes::from(body)).await?;
    if answer["errors"].as_bool() == Some(true) {
        let first = answer["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i.get("index"))
            .find(|i| i.get("error").is_some())
            .map(|i| i["error"].to_string())
            .unwrap_or_default();
        return Err(crate::error::Error::Internal(format!(
            "Elasticsearch refused a session record: {first}"
        )));
    }
    Ok(())
}

/// Every live session: this instance's, then the others' unexpired records.
pub async fn fleet(app: &App) -> Result<Vec<AgentRecord>> {
    let mut out: BTreeMap<String, AgentRecord> =
        app.registry.all().iter().map(|s| (s.session_id.clone(), AgentRecord::of(app, s))).collect();
    let now_ms = (now().unix_timestamp_nanos() / 1_000_000) as i64;
    let res = app
        .stores
        .es
        .search::<AgentRecord>(
            AGENTS_INDEX,
            &serde_json::json!({
                "size": 10_000,
                "query": {"bool": {
                    "filter": [{"range": {"expires_at_ms": {"gte": now_ms}}}],
                    "must_not": [{"term": {"control_plane": app.instance_id}}]
                }}
            }),
        )
        .await;
    match res {
        Ok(r) => {
            for h in r.hits {
                // Records of this instance's past sessions are not live.
                if h.source.control_plane != app.instance_id {
                    out.entry(h.source.session_id.clone()).or_insert(h.source);
                }
            }
        }
        Err(crate::elasticsearch::EsError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let mut list: Vec<AgentRecord> = out.into_values().collect();
    list.sort_by(|a, b| (&a.agent_id, &a.session_id).cmp(&(&b.agent_id, &b.session_id)));
    Ok(list)
}

pub struct Fleet {
    app: Arc<App>,
}

impl Fleet {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl FleetService for Fleet {
    async fn list_agents(
        &self,
        request: Request<proto::ListAgentsRequest>,
    ) -> Result<Response<proto::ListAgentsResponse>, Status> {
        let r = request.into_inner();
        let size = super::page::size(r.size);
        let after = super::page::decode(&r.page_token)?;
        let all = fleet(&self.app).await?;
        let count = all.len() as i64;
        // `fleet` answers sorted by (agent_id, session_id): the page starts
        // after the token's pair.
        let start = match after.as_deref() {
            Some([serde_json::Value::String(a), serde_json::Value::String(s)]) => all.partition_point(|x| {
                (x.agent_id.as_str(), x.session_id.as_str()) <= (a.as_str(), s.as_str())
            }),
            Some(_) => {
                return Err(crate::error::Error::invalid("page_token", "not a ListAgents token").into())
            }
            None => 0,
        };
        let page: Vec<&AgentRecord> = all[start..].iter().take(size).collect();
        let next_page_token = match page.last() {
            Some(last) if start + page.len() < all.len() => {
                super::page::encode(&[serde_json::json!(last.agent_id), serde_json::json!(last.session_id)])
            }
            _ => String::new(),
        };
        let agents = page.into_iter().map(AgentRecord::to_proto).collect();
        Ok(Response::new(proto::ListAgentsResponse { agents, next_page_token, count }))
    }

    async fn create_enrollment_token(
        &self,
        request: Request<proto::CreateEnrollmentTokenRequest>,
    ) -> Result<Response<proto::CreateEnrollmentTokenResponse>, Status> {
        Ok(Response::new(crate::enrollment::create_token(&self.app, request.into_inner()).await?))
    }

    async fn revoke_agent(
        &self,
        request: Request<proto::RevokeAgentRequest>,
    ) -> Result<Response<proto::RevokeAgentResponse>, Status> {
        Ok(Response::new(crate::enrollment::revoke_agent(&self.app, request.into_inner()).await?))
    }

    async fn get_connector_agents(
        &self,
        request: Request<proto::GetConnectorAgentsRequest>,
    ) -> Result<Response<proto::GetConnectorAgentsResponse>, Status> {
        let id = request.into_inner().connector_id;
        super::validate::connector_id("connector_id", &id)?;
        let connector = match self.app.stores.connectors.get(&id).await? {
            Some(c) if !c.doc.deleted => c.doc,
            _ => {
                return Err(crate::error::Error::NotFound(format!(
                    "connector {id:?} not found: list them with ListConnectors"
                ))
                .into())
            }
        };
        let running = self
            .app
            .stores
            .jobs
            .search(&serde_json::json!({
                "size": 100,
                "query": {"bool": {"filter": [
                    {"term": {"connector.id": id}},
                    {"terms": {"status": ["in_progress", "canceling"]}}
                ]}}
            }))
            .await?;
        let running_jobs: std::collections::HashMap<String, String> = running
            .hits
            .iter()
            .map(|h| (h.id.clone(), h.source.ferry.agent_id.clone().unwrap_or_default()))
            .collect();
        let agents = fleet(&self.app).await?;
        // Offering the connector is not enough: the agent must also pass the
        // connector's binding (allowed_agents / agents.require_binding).
        let may_serve = agents
            .iter()
            .filter(|a| a.connectors.contains(&id))
            .filter(|a| {
                crate::agents::authz::verdict(&connector, &a.agent_id, self.app.require_binding).may_serve()
            })
            .map(AgentRecord::to_proto)
            .collect();
        let serving = agents
            .iter()
            .filter(|a| a.running_job_ids.iter().any(|j| running_jobs.contains_key(j)))
            .map(AgentRecord::to_proto)
            .collect();
        Ok(Response::new(proto::GetConnectorAgentsResponse { may_serve, serving, running_jobs }))
    }
}
