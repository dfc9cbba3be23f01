//! `ferry.v1.ConnectorService`.

use std::sync::Arc;

use ferry_sdk::config_schema::{values_from_proto, REDACTED};
use ferry_sdk::proto::{self, connector_service_server::ConnectorService};
use tonic::{Request, Response, Status};

use super::{convert, settings, validate, watch};
use crate::app::App;
use crate::error::{Error, Result};
use crate::model::{ConnectorDoc, ConnectorStatus};
use crate::store::{Change, Versioned};

pub struct Connectors {
    app: Arc<App>,
}

impl Connectors {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    async fn get_live(&self, id: &str) -> Result<Versioned<ConnectorDoc>> {
        validate::connector_id("connector_id", id)?;
        match self.app.stores.connectors.get(id).await? {
            Some(c) if !c.doc.deleted => Ok(c),
            _ => Err(not_found(id)),
        }
    }

    async fn put(&self, r: proto::PutConnectorRequest) -> Result<proto::PutConnectorResponse> {
        validate::connector_id("connector_id", &r.connector_id)?;
        if !r.index_name.is_empty() {
            validate::index_name("index_name", &r.index_name)?;
        }
        let store = &self.app.stores.connectors;
        let updated = store
            .update(&r.connector_id, |c| {
                if c.deleted {
                    *c = ConnectorDoc::new(
                        r.name.clone(),
                        r.description.clone(),
                        r.index_name.clone(),
                        r.service_type.clone(),
                        r.language.clone(),
                    );
                    return Ok(Change::Write("created"));
                }
                if !r.service_type.is_empty() && c.service_type.as_deref().is_some_and(|s| s != r.service_type) {
                    return Err(Error::invalid(
                        "service_type",
                        format!(
                            "the connector already has service_type {:?}; delete it and create it again to change the source kind",
                            c.service_type.clone().unwrap_or_default()
                        ),
                    ));
                }
                let set = |field: &mut Option<String>, v: &str| {
                    if !v.is_empty() {
                        *field = Some(v.to_owned());
                    }
                };
                set(&mut c.name, &r.name);
                set(&mut c.description, &r.description);
                set(&mut c.index_name, &r.index_name);
                set(&mut c.service_type, &r.service_type);
                set(&mut c.language, &r.language);
                Ok(Change::Write("updated"))
            })
            .await?;
        let (connector, result) = match updated {
            Some((c, result)) => (c, result),
            None => {
                let doc = ConnectorDoc::new(r.name, r.description, r.index_name, r.service_type, r.language);
                match store.create(&r.connector_id, &doc).await {
                    Ok(seq_no) => (Versioned { id: r.connector_id.clone(), doc, seq_no }, "created"),
                    // Created concurrently: report what is there now.
                    Err(Error::Aborted(_)) => (self.get_live(&r.connector_id).await?, "updated"),
                    Err(e) => return Err(e),
                }
            }
        };
        self.app.registry.changed.notify_waiters();
        tracing::info!(connector_id = %connector.id, result, "connector put");
        Ok(proto::PutConnectorResponse {
            connector: Some(convert::connector(&connector)),
            result: result.into(),
        })
    }

    async fn update_configuration(
        &self,
        r: proto::UpdateConfigurationRequest,
    ) -> Result<Versioned<ConnectorDoc>> {
        validate::connector_id("connector_id", &r.connector_id)?;
        let values = values_from_proto(&r.values);
        let served = !self.app.registry.serving(&r.connector_id).is_empty();
        let updated = self
            .app
            .stores
            .connectors
            .update(&r.connector_id, |c| {
                if c.deleted {
                    return Err(not_found(&r.connector_id));
                }
                // An agent registered an empty schema: nothing to set.
                if c.configuration.is_empty() && (served || c.status != ConnectorStatus::Created) {
                    if let Some(key) = values.keys().next() {
                        return Err(Error::invalid(
                            &format!("values.{key}"),
                            "this connector's agent declares no configuration fields: send \"values\": {}",
                        ));
                    }
                    if c.status == ConnectorStatus::Created {
                        c.move_to(ConnectorStatus::NeedsConfiguration);
                    }
                    if c.status == ConnectorStatus::NeedsConfiguration {
                        c.move_to(ConnectorStatus::Configured);
                    }
                    c.error = None;
                    return Ok(Change::Write(()));
                }
                if c.configuration.is_empty() {
                    return Err(Error::FailedPrecondition(format!(
                        "connector {:?} has no configuration schema yet: start an agent that serves it \
                         (its schema is registered on connect), then set the values",
                        r.connector_id
                    )));
                }
                for (key, value) in &values {
                    let Some(entry) = c.configuration.get_mut(key) else {
                        let known: Vec<_> = c.configuration.keys().cloned().collect();
                        return Err(Error::invalid(
                            &format!("values.{key}"),
                            format!(
                                "is not a configuration field of this connector; known fields: {}",
                                known.join(", ")
                            ),
                        ));
                    };
                    // A redacted value sent back unchanged keeps the secret.
                    if entry.sensitive && value.as_str() == Some(REDACTED) {
                        continue;
                    }
                    entry.value = validate::coerce(key, &entry.kind, value.clone())?;
                }
                let missing = c.missing_required();
                if !missing.is_empty() {
                    return Err(Error::invalid(
                        &format!("values.{}", missing[0]),
                        format!("is required; missing required fields: {}", missing.join(", ")),
                    ));
                }
                if c.status != ConnectorStatus::Configured {
                    if c.status == ConnectorStatus::Created {
                        c.move_to(ConnectorStatus::NeedsConfiguration);
                    }
                    c.move_to(ConnectorStatus::Configured);
                }
                c.error = None;
                Ok(Change::Write(()))
            })
            .await?;
        let (c, ()) = updated.ok_or_else(|| not_found(&r.connector_id))?;
        self.app.registry.changed.notify_waiters();
        tracing::info!(connector_id = %c.id, "configuration updated");
        Ok(c)
    }
}

impl Connectors {
    /// Read-modify-write of a live connector; `f` checks and changes it.
    async fn modify(
        &self,
        id: &str,
        mut f: impl FnMut(&mut ConnectorDoc) -> Result<()>,
    ) -> Result<proto::Connector> {
        validate::connector_id("connector_id", id)?;
        let updated = self
            .app
            .stores
            .connectors
            .update(id, |c| {
                if c.deleted {
                    return Err(not_found(id));
                }
                f(c)?;
                Ok(Change::Write(()))
            })
            .await?;
        let (c, ()) = updated.ok_or_else(|| not_found(id))?;
        self.app.registry.changed.notify_waiters();
        Ok(convert::connector(&c))
    }

    async fn set_allowed_agents(
        &self,
        r: proto::UpdateAllowedAgentsRequest,
    ) -> Result<Versioned<ConnectorDoc>> {
        validate::connector_id("connector_id", &r.connector_id)?;
        let allowed = crate::agents::authz::normalize_allowed(&r.allowed_agents)
            .map_err(|m| Error::invalid("allowed_agents", m))?;
        let updated = self
            .app
            .stores
            .connectors
            .update(&r.connector_id, |c| {
                if c.deleted {
                    return Err(not_found(&r.connector_id));
                }
                c.ferry.allowed_agents = allowed.clone();
                // Refusals of agents that are allowed now are history.
                c.ferry.refused_agents.retain(|x| !allowed.contains(&x.agent_id));
                Ok(Change::Write(()))
            })
            .await?;
        let (c, ()) = updated.ok_or_else(|| not_found(&r.connector_id))?;
        self.app.registry.changed.notify_waiters();
        if allowed.is_empty() {
            tracing::warn!(connector_id = %c.id, "connector unbound: any agent with a certificate from the client CA may serve it");
        } else {
            tracing::info!(connector_id = %c.id, allowed_agents = ?allowed, "connector bound to agents");
        }
        Ok(c)
    }

    async fn update_scheduling(&self, r: proto::UpdateSchedulingRequest) -> Result<proto::Connector> {
        let s = r.scheduling.ok_or_else(|| Error::invalid("scheduling", "is required"))?;
        // Check before touching the document, so a bad request says so even
        // for an unknown connector id... after the id itself.
        validate::connector_id("connector_id", &r.connector_id)?;
        settings::apply_scheduling(&mut serde_json::json!({}), &s)?;
        let t = crate::model::now();
        let c = self
            .modify(&r.connector_id, |c| {
                for job_type in settings::apply_scheduling(&mut c.scheduling, &s)? {
                    // A changed schedule counts from now: no run for the
                    // time before it was set.
                    match job_type {
                        "full" => c.last_sync_scheduled_at = Some(t),
                        "incremental" => c.last_incremental_sync_scheduled_at = Some(t),
                        "access_control" => c.last_access_control_sync_scheduled_at = Some(t),
                        _ => {}
                    }
                }
                Ok(())
            })
            .await?;
        tracing::info!(connector_id = %r.connector_id, "scheduling updated");
        Ok(c)
    }

    async fn update_filtering(&self, r: proto::UpdateFilteringRequest) -> Result<proto::Connector> {
        validate::connector_id("connector_id", &r.connector_id)?;
        let draft = settings::build_draft(&r.rules, r.advanced_snippet.as_ref(), crate::model::now())?;
        let keep_rules = r.rules.is_empty() && r.advanced_snippet.is_some();
        let c = self
            .modify(&r.connector_id, |c| {
                settings::set_draft_keeping_rules(&mut c.filtering, draft.clone(), keep_rules);
                Ok(())
            })
            .await?;
        tracing::info!(connector_id = %r.connector_id, "filtering draft updated");
        Ok(c)
    }

    async fn update_index_name(&self, r: proto::UpdateIndexNameRequest) -> Result<proto::Connector> {
        validate::connector_id("connector_id", &r.connector_id)?;
        validate::index_name("index_name", &r.index_name)?;
        let others = self
            .app
            .stores
            .connectors
            .search(&serde_json::json!({
                "size": 1,
                "query": {"bool": {
                    "filter": [{"term": {"index_name": r.index_name}}],
                    "must_not": [{"term": {"deleted": true}}, {"ids": {"values": [r.connector_id]}}]
                }}
            }))
            .await?;
        if let Some(other) = others.hits.first() {
            return Err(Error::invalid(
                "index_name",
                format!(
                    "index {:?} is already the index of connector {:?}; two connectors writing one index would delete each other's documents",
                    r.index_name, other.id
                ),
            ));
        }
        self.modify(&r.connector_id, |c| {
            c.index_name = Some(r.index_name.clone());
            Ok(())
        })
        .await
    }

    async fn update_name(&self, r: proto::UpdateNameRequest) -> Result<proto::Connector> {
        validate::connector_id("connector_id", &r.connector_id)?;
        if r.name.trim().is_empty() {
            return Err(Error::invalid("name", "is required"));
        }
        if r.name.len() > 1024 || r.description.len() > 16 * 1024 {
            return Err(Error::invalid(
                if r.name.len() > 1024 { "name" } else { "description" },
                "is too long (name at most 1 KiB, description at most 16 KiB)",
            ));
        }
        self.modify(&r.connector_id, |c| {
            c.name = Some(r.name.trim().to_owned());
            c.description = (!r.description.is_empty()).then(|| r.description.clone());
            Ok(())
        })
        .await
    }

    async fn update_service_type(&self, r: proto::UpdateServiceTypeRequest) -> Result<proto::Connector> {
        validate::connector_id("connector_id", &r.connector_id)?;
        let st = r.service_type.trim();
        if st.is_empty() {
            return Err(Error::invalid("service_type", "is required, e.g. postgresql"));
        }
        if !st.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-') {
            return Err(Error::invalid(
                "service_type",
                format!("{st:?} must be lower-case letters, digits, '_' or '-'"),
            ));
        }
        let running = self
            .app
            .stores
            .jobs
            .search(&serde_json::json!({
                "size": 1,
                "query": {"bool": {"filter": [
                    {"term": {"connector.id": r.connector_id}},
                    {"terms": {"status": ["pending", "in_progress", "canceling"]}}
                ]}}
            }))
            .await?;
        if !running.hits.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "connector {:?} has a pending or running sync job ({}): cancel it before changing the source kind",
                r.connector_id, running.hits[0].id
            )));
        }
        let c = self
            .modify(&r.connector_id, |c| {
                if c.service_type.as_deref() == Some(st) {
                    return Ok(());
                }
                // Another kind of source: the old schema and values mean
                // nothing to it. Start over until its agent registers.
                c.service_type = Some(st.to_owned());
                c.configuration.clear();
                c.status = ConnectorStatus::Created;
                c.error = None;
                c.ferry.validated_revision = None;
                Ok(())
            })
            .await?;
        tracing::info!(connector_id = %r.connector_id, service_type = st, "service type updated");
        Ok(c)
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!(
        "connector {id:?} not found: create it with PutConnector, or list them with ListConnectors"
    ))
}

#[tonic::async_trait]
impl ConnectorService for Connectors {
    async fn put_connector(
        &self,
        request: Request<proto::PutConnectorRequest>,
    ) -> Result<Response<proto::PutConnectorResponse>, Status> {
        Ok(Response::new(self.put(request.into_inner()).await?))
    }

    async fn create_connector(
        &self,
        request: Request<proto::CreateConnectorRequest>,
    ) -> Result<Response<proto::CreateConnectorResponse>, Status> {
        let r = request.into_inner();
        let id = uuid::Uuid::new_v4().simple().to_string()[..20].to_owned();
        let put = proto::PutConnectorRequest {
            connector_id: id,
            name: r.name,
            description: r.description,
            index_name: r.index_name,
            service_type: r.service_type,
            language: r.language,
        };
        let resp = self.put(put).await?;
        Ok(Response::new(proto::CreateConnectorResponse { connector: resp.connector }))
    }

    type WatchConnectorStream = watch::WatchStream<proto::WatchConnectorResponse>;

    async fn watch_connector(
        &self,
        request: Request<proto::WatchConnectorRequest>,
    ) -> Result<Response<Self::WatchConnectorStream>, Status> {
        let id = request.into_inner().connector_id;
        validate::connector_id("connector_id", &id)?;
        let app = self.app.clone();
        let stream = watch::start(format!("connector {id:?}"), move || {
            let (me, id) = (Connectors { app: app.clone() }, id.clone());
            async move {
                let c = me.get_live(&id).await?;
                let message = convert::connector(&c);
                let key = proto::Connector { last_seen: None, ..message.clone() };
                Ok(watch::Snapshot {
                    message: proto::WatchConnectorResponse { connector: Some(message) },
                    key: proto::WatchConnectorResponse { connector: Some(key) },
                    last: false,
                })
            }
        })
        .await?;
        Ok(Response::new(stream))
    }

    async fn get_connector(
        &self,
        request: Request<proto::GetConnectorRequest>,
    ) -> Result<Response<proto::GetConnectorResponse>, Status> {
        let c = self.get_live(&request.into_inner().connector_id).await?;
        Ok(Response::new(proto::GetConnectorResponse { connector: Some(convert::connector(&c)) }))
    }

    async fn list_connectors(
        &self,
        request: Request<proto::ListConnectorsRequest>,
    ) -> Result<Response<proto::ListConnectorsResponse>, Status> {
        let r = request.into_inner();
        let mut filter = vec![];
        if !r.include_deleted {
            filter.push(serde_json::json!({"bool": {"must_not": [{"term": {"deleted": true}}]}}));
        }
        if !r.service_type.is_empty() {
            filter.push(serde_json::json!({"term": {"service_type": r.service_type}}));
        }
        if !r.index_name.is_empty() {
            filter.push(serde_json::json!({"term": {"index_name": r.index_name}}));
        }
        let size = super::page::size(r.size);
        let after = super::page::decode(&r.page_token)?;
        // (name, index_name): both indexed keywords on either distribution;
        // a connector is one index's, so the pair is unique in practice.
        let mut body = serde_json::json!({
            // One more than asked: tells whether a next page exists.
            "size": size + 1, "seq_no_primary_term": true,
            "track_total_hits": true,
            "query": {"bool": {"filter": filter}},
            "sort": [{"name": {"order": "asc"}}, {"index_name": {"order": "asc"}}]
        });
        match after {
            Some(a) => body["search_after"] = serde_json::Value::Array(a),
            None => body["from"] = serde_json::json!(r.from.max(0)),
        }
        let res = self.app.stores.connectors.search(&body).await.map_err(Status::from)?;
        let mut res = res;
        let next_page_token = super::page::take_page(&mut res.hits, size);
        let connectors = res
            .hits
            .into_iter()
            .map(|h| {
                let seq_no = h.seq_no().unwrap_or(crate::elasticsearch::SeqNo { seq_no: 0, primary_term: 1 });
                convert::connector(&Versioned { id: h.id, doc: h.source, seq_no })
            })
            .collect();
        Ok(Response::new(proto::ListConnectorsResponse {
            connectors,
            count: res.total as i64,
            next_page_token,
        }))
    }

    async fn delete_connector(
        &self,
        request: Request<proto::DeleteConnectorRequest>,
    ) -> Result<Response<proto::DeleteConnectorResponse>, Status> {
        let r = request.into_inner();
        validate::connector_id("connector_id", &r.connector_id)?;
        // All or nothing from the caller's side: the jobs go first, then the
        // connector is marked deleted. A call that fails half way leaves a
        // live connector (with fewer jobs), and retrying it finishes the
        // work; a retry after the connector was marked still removes jobs
        // left behind and answers OK.
        let existing = self.app.stores.connectors.get(&r.connector_id).await?;
        let already_deleted = match &existing {
            None => return Err(not_found(&r.connector_id).into()),
            Some(c) => c.doc.deleted,
        };
        if already_deleted && !r.delete_sync_jobs {
            return Err(not_found(&r.connector_id).into());
        }
        let mut deleted_jobs = 0;
        if r.delete_sync_jobs {
            deleted_jobs = self
                .app
                .stores
                .jobs
                .delete_by_query(&serde_json::json!({"term": {"connector.id": r.connector_id}}))
                .await? as i64;
        }
        if !already_deleted {
            self.app
                .stores
                .connectors
                .update(&r.connector_id, |c| {
                    if c.deleted {
                        return Ok(Change::Keep(()));
                    }
                    c.deleted = true;
                    Ok(Change::Write(()))
                })
                .await?;
            self.app.registry.changed.notify_waiters();
            if let Some(c) = &existing {
                release_on_agents(&self.app, &r.connector_id, &c.doc);
            }
        }
        tracing::info!(connector_id = %r.connector_id, deleted_jobs, "connector deleted");
        Ok(Response::new(proto::DeleteConnectorResponse {
            acknowledged: true,
            deleted_sync_jobs: deleted_jobs,
        }))
    }

    async fn update_configuration(
        &self,
        request: Request<proto::UpdateConfigurationRequest>,
    ) -> Result<Response<proto::UpdateConfigurationResponse>, Status> {
        let c = self.update_configuration(request.into_inner()).await?;
        Ok(Response::new(proto::UpdateConfigurationResponse { connector: Some(convert::connector(&c)) }))
    }

    async fn update_scheduling(
        &self,
        request: Request<proto::UpdateSchedulingRequest>,
    ) -> Result<Response<proto::UpdateSchedulingResponse>, Status> {
        let connector = self.update_scheduling(request.into_inner()).await?;
        Ok(Response::new(proto::UpdateSchedulingResponse { connector: Some(connector) }))
    }

    async fn update_filtering(
        &self,
        request: Request<proto::UpdateFilteringRequest>,
    ) -> Result<Response<proto::UpdateFilteringResponse>, Status> {
        let connector = self.update_filtering(request.into_inner()).await?;
        Ok(Response::new(proto::UpdateFilteringResponse { connector: Some(connector) }))
    }

    async fn update_pipeline(
        &self,
        request: Request<proto::UpdatePipelineRequest>,
    ) -> Result<Response<proto::UpdatePipelineResponse>, Status> {
        let r = request.into_inner();
        validate::connector_id("connector_id", &r.connector_id)?;
        settings::apply_pipeline(&mut serde_json::json!({}), r.pipeline.as_ref())?;
        let connector = self
            .modify(&r.connector_id, |c| settings::apply_pipeline(&mut c.pipeline, r.pipeline.as_ref()))
            .await?;
        Ok(Response::new(proto::UpdatePipelineResponse { connector: Some(connector) }))
    }

    async fn update_index_name(
        &self,
        request: Request<proto::UpdateIndexNameRequest>,
    ) -> Result<Response<proto::UpdateIndexNameResponse>, Status> {
        let connector = self.update_index_name(request.into_inner()).await?;
        Ok(Response::new(proto::UpdateIndexNameResponse { connector: Some(connector) }))
    }

    async fn update_name(
        &self,
        request: Request<proto::UpdateNameRequest>,
    ) -> Result<Response<proto::UpdateNameResponse>, Status> {
        let connector = self.update_name(request.into_inner()).await?;
        Ok(Response::new(proto::UpdateNameResponse { connector: Some(connector) }))
    }

    async fn update_service_type(
        &self,
        request: Request<proto::UpdateServiceTypeRequest>,
    ) -> Result<Response<proto::UpdateServiceTypeResponse>, Status> {
        let connector = self.update_service_type(request.into_inner()).await?;
        Ok(Response::new(proto::UpdateServiceTypeResponse { connector: Some(connector) }))
    }

    async fn update_allowed_agents(
        &self,
        request: Request<proto::UpdateAllowedAgentsRequest>,
    ) -> Result<Response<proto::UpdateAllowedAgentsResponse>, Status> {
        let c = self.set_allowed_agents(request.into_inner()).await?;
        Ok(Response::new(proto::UpdateAllowedAgentsResponse { connector: Some(convert::connector(&c)) }))
    }
}

/// Tells every agent connected here that may serve the deleted connector to
/// release what it holds on the source for it (`ReleaseConnector`): for
/// PostgreSQL the replication slot and publication, since an abandoned slot
/// keeps WAL until the server's disk fills. Best effort, never blocks the
/// delete: messages are queued without waiting (`AgentSession::send`).
/// An agent not connected to this instance at that moment is not told; the
/// log says so, with what to drop by hand.
fn release_on_agents(app: &App, connector_id: &str, doc: &ConnectorDoc) {
    let values: std::collections::BTreeMap<_, _> = doc
        .configuration
        .iter()
        .filter_map(|(k, e)| e.effective_value().map(|v| (k.clone(), v.clone())))
        .collect();
    let mut told = 0;
    for session in app.registry.serving(connector_id) {
        if !crate::agents::authz::verdict(doc, &session.agent_id, app.require_binding).may_serve() {
            continue;
        }
        // A stream still running would reconnect and re-create the slot
        // the release drops: stop it first (the agent reads in order).
        let runs: Vec<_> = session
            .jobs
            .lock()
            .expect("jobs lock")
            .values()
            .filter(|run| run.connector_id == connector_id)
            .cloned()
            .collect();
        for run in runs {
            if run.mark_cancel_sent() {
                crate::jobs::dispatcher::send_cancel(
                    &session,
                    &run.job_id,
                    &run.lease_id,
                    "the connector was deleted",
                );
            }
        }
        let msg = proto::ReleaseConnector {
            connector_id: connector_id.to_owned(),
            configuration: ferry_sdk::config_schema::values_to_proto(&values),
        };
        if session.send(proto::control_message::Message::ReleaseConnector(msg)) {
            told += 1;
            tracing::info!(connector_id, agent_id = %session.agent_id, "asked the agent to release the deleted connector");
        }
    }
    if told == 0 {
        tracing::warn!(
            connector_id,
            "no agent serving the deleted connector is connected here: what it holds on the source stays (for \
             PostgreSQL incremental sync, drop the replication slot and publication named ferry_<connector id>_<hash>: \
             SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'ferry_%')"
        );
    }
}
