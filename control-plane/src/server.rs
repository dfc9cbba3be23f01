//! Wiring and lifecycle of one control plane instance.
//!
//! Start-up: Elasticsearch version handshake (refuse unsupported servers),
//! state indices, then the background loops, then the two listeners.
//! Shutdown (SIGTERM/SIGINT): the token fires → listeners stop accepting →
//! agent sessions end and hand their jobs back for resume (in-flight bulk
//! requests are drained first) → loops stop; all under [`SHUTDOWN_DEADLINE`].

use std::sync::Arc;
use std::time::Duration;

use ferry_sdk::proto;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::admin::{connectors::Connectors, sync_jobs::SyncJobs};
use crate::agents::registry::Registry;
use crate::agents::service::AgentService;
use crate::app::App;
use crate::config::{Config, ServerTls};
use crate::elasticsearch::{handshake, BulkConfig, BulkIndexer, EsClient, EsClientConfig};
use crate::store::Stores;

pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
const HTTP2_STREAM_WINDOW: u32 = 16 * 1024 * 1024;
const HTTP2_CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Elasticsearch(#[from] crate::elasticsearch::EsError),
    #[error("{0}")]
    Store(#[from] crate::error::Error),
    #[error("cannot read {what} {path}: {source}")]
    ReadFile { what: &'static str, path: String, source: std::io::Error },
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: std::net::SocketAddr, source: std::io::Error },
    #[error("{what} listener failed: {source}")]
    Serve { what: &'static str, source: tonic::transport::Error },
}

fn read(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|source| ServerError::ReadFile {
        what,
        path: path.display().to_string(),
        source,
    })
}

fn tls_config(t: &ServerTls) -> Result<ServerTlsConfig, ServerError> {
    let mut cfg = ServerTlsConfig::new()
        .identity(Identity::from_pem(read("TLS certificate", &t.cert)?, read("TLS key", &t.key)?));
    if let Some(ca) = &t.client_ca {
        cfg = cfg.client_ca_root(Certificate::from_pem(read("client CA", ca)?)).client_auth_optional(false);
    }
    Ok(cfg)
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServerError> {
    let mut es_cfg = EsClientConfig::new(config.elasticsearch.url.clone());
    es_cfg.auth = config.elasticsearch.auth.clone();
    es_cfg.ca_file = config.elasticsearch.ca.clone();
    let es = EsClient::new(&es_cfg)?;
    let version = handshake(&es).await?;
    tracing::info!(url = %config.elasticsearch.url, version = ?version, "search server accepted");
    crate::store::indices::ensure_state_indices(&es, version.distribution).await?;
    let bulk = BulkIndexer::new(
        es.clone(),
        BulkConfig { max_request_bytes: config.elasticsearch.bulk_max_bytes as usize, ..Default::default() },
    );
    let enrollment = match &config.enrollment {
        None => None,
        Some(e) => {
            let ca = config.agents_tls.client_ca.as_ref().expect("validated: agents.tls.client_ca");
            let signer = crate::enrollment::Signer::load(ca, &e.ca_key, e.certificate_ttl)
                .map_err(|m| ServerError::Store(crate::error::Error::Internal(m)))?;
            tracing::info!(
                ca_fingerprint = signer.ca_fingerprint(),
                certificate_ttl_s = e.certificate_ttl.as_secs(),
                "enrollment on: agents may connect without a certificate to enroll"
            );
            Some(Arc::new(signer))
        }
    };
    let app = Arc::new(App {
        enrollment,
        revoked: Arc::new(crate::enrollment::Revoked::default()),
        stores: Stores::new(es),
        connector_cache: Default::default(),
        last_seen: Default::default(),
        bulk,
        registry: Arc::new(Registry::default()),
        jobs: config.jobs.clone(),
        require_binding: config.agents_require_binding,
        send_timeout: config.agents_send_timeout,
        instance_id: format!("{}-{}", hostname(), &uuid::Uuid::new_v4().simple().to_string()[..8]),
        shutdown: shutdown.clone(),
    });

    // Sessions start from a complete picture of the connectors.
    if let Err(e) = app.connector_cache.refresh(&app.stores.connectors).await {
        tracing::warn!("reading the connectors failed (retrying in the background): {e}");
    }
    let loops = TaskTracker::new();
    loops.spawn(crate::store::cache::run_refresh(app.clone()));
    loops.spawn(crate::agents::registration::run_last_seen(app.clone()));
    loops.spawn(crate::jobs::dispatcher::run_dispatcher(app.clone()));
    loops.spawn(crate::jobs::dispatcher::run_progress(app.clone()));
    loops.spawn(crate::jobs::scheduler::run_scheduler(app.clone()));
    loops.spawn(crate::admin::fleet::run_recorder(app.clone()));
    loops.spawn(crate::enrollment::run_revoked_refresh(app.clone()));
    loops.close();

    let agents_listener = tokio::net::TcpListener::bind(config.agents_listen)
        .await
        .map_err(|source| ServerError::Bind { what: "agents", addr: config.agents_listen, source })?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .map_err(|source| ServerError::Bind { what: "admin", addr: config.admin_listen, source })?;

    if let Some(addr) = config.metrics_listen {
        ferry_sdk::metrics::spawn_server(addr, crate::metrics::registry(), shutdown.clone())
            .await
            .map_err(|source| ServerError::Bind { what: "metrics", addr, source })?;
    }

    let agent_service = proto::agent_service_server::AgentServiceServer::new(AgentService::new(app.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
        // Agents on slow links may compress their stream (agent setting
        // `control_plane.compression`); the size limit applies decompressed.
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd);
    // TLS is terminated in agents::tls (not by tonic) so refused handshakes are logged.
    let agents_tls = Arc::new(
        crate::agents::tls::ReloadableConfig::load(&config.agents_tls, config.enrollment.is_some())
            .map_err(|e| ServerError::Store(crate::error::Error::Internal(e)))?,
    );
    tokio::spawn(crate::agents::tls::reload_on_sighup(agents_tls.clone(), shutdown.clone()));
    let agents_server = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        // HTTP/2's default 64 KiB stream window would make every multi-MiB
        // batch wait for dozens of WINDOW_UPDATE round trips. Ferry's own
        // flow control (unacknowledged batches per job) bounds memory, so
        // the transport window only needs to cover one window of batches.
        .initial_stream_window_size(Some(HTTP2_STREAM_WINDOW))
        .initial_connection_window_size(Some(HTTP2_CONNECTION_WINDOW))
        .add_service(agent_service)
        .add_service(proto::enrollment_service_server::EnrollmentServiceServer::new(
            crate::enrollment::EnrollmentService::new(app.clone()),
        ));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<proto::connector_service_server::ConnectorServiceServer<Connectors>>()
        .await;
    health_reporter.set_serving::<proto::sync_job_service_server::SyncJobServiceServer<SyncJobs>>().await;
    health_reporter
        .set_serving::<proto::fleet_service_server::FleetServiceServer<crate::admin::fleet::Fleet>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Store(crate::error::Error::Internal(format!("reflection: {e}"))))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServerError::Store(crate::error::Error::Internal(format!("reflection: {e}"))))?;
    let mut admin_builder = Server::builder();
    // Health and reflection stay open to any certificate from the admin CA:
    // they reveal nothing a client of the proto would not know.
    let admin_identities = crate::admin::identity::AdminIdentities::new(
        config.admin_tls.as_ref().map(|t| t.allowed_identities.as_slice()).unwrap_or_default(),
    );
    if let Some(t) = &config.admin_tls {
        admin_builder = admin_builder
            .tls_config(tls_config(t)?)
            .map_err(|source| ServerError::Serve { what: "admin", source })?;
    }
    let admin_server = admin_builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(proto::connector_service_server::ConnectorServiceServer::with_interceptor(
            Connectors::new(app.clone()),
            admin_identities.clone(),
        ))
        .add_service(proto::sync_job_service_server::SyncJobServiceServer::with_interceptor(
            SyncJobs::new(app.clone()),
            admin_identities.clone(),
        ))
        .add_service(proto::fleet_service_server::FleetServiceServer::with_interceptor(
            crate::admin::fleet::Fleet::new(app.clone()),
            admin_identities,
        ))
        // Listed by reflection here but served on the agents listener: say so.
        .add_service(proto::agent_service_server::AgentServiceServer::new(
            crate::admin::elsewhere::ServedElsewhere::new(config.agents_listen),
        ))
        .add_service(proto::enrollment_service_server::EnrollmentServiceServer::new(
            crate::admin::elsewhere::ServedElsewhere::new(config.agents_listen),
        ));

    tracing::info!(
        agents = %config.agents_listen, admin = %config.admin_listen,
        admin_tls = config.admin_tls.is_some(), instance = %app.instance_id,
        "control plane listening"
    );
    let s1 = shutdown.clone();
    let s2 = shutdown.clone();
    let agents = tokio::spawn(agents_server.serve_with_incoming_shutdown(
        crate::agents::tls::incoming(agents_listener, agents_tls, shutdown.clone()),
        async move { s1.cancelled().await },
    ));
    let admin = tokio::spawn(
        admin_server.serve_with_incoming_shutdown(TcpListenerStream::new(admin_listener), async move {
            s2.cancelled().await
        }),
    );
    shutdown.cancelled().await;
    tracing::info!("shutting down: stopping listeners, handing running jobs back for resume");
    let drain = async {
        for (what, handle) in [("agents", agents), ("admin", admin)] {
            match handle.await {
                Ok(Err(e)) => tracing::warn!("{what} listener ended with an error: {e}"),
                Err(e) => tracing::warn!("{what} listener task failed: {e}"),
                Ok(Ok(())) => {}
            }
        }
        loops.wait().await;
        // Sessions hand their jobs back (pending, checkpoint kept) and then
        // leave the registry.
        while !app.registry.all().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(SHUTDOWN_DEADLINE, drain).await.is_err() {
        tracing::warn!(
            "shutdown did not finish within {} s; exiting anyway (job leases will expire and resume)",
            SHUTDOWN_DEADLINE.as_secs()
        );
    }
    Ok(())
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_owned()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "control-plane".into())
}
