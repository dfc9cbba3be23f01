//! Connecting to PostgreSQL: plain TCP, or TLS with rustls (ring) verifying
//! the server against `ssl_ca` (or the web PKI roots when `ssl_ca` is
//! empty). Failures become [`SourceError`]s that say what to fix.
//!
//! Connection attempts that fail for a transient reason (network, server
//! starting up) are retried `retry_count` times with a linear backoff;
//! authentication and configuration failures are not retried.

use std::sync::Arc;
use std::time::Duration;

use ferry_sdk::SourceError;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::config::{parse_ca, PostgresConfig};

/// Open a session to the configured database. The connection runs on a
/// spawned task and ends when the returned client is dropped.
pub async fn connect(cfg: &PostgresConfig) -> Result<Client, SourceError> {
    let mut attempt = 0u32;
    loop {
        match connect_once(cfg).await {
            Ok(c) => return Ok(c),
            Err((err, transient)) if transient && attempt < cfg.retry_count => {
                attempt += 1;
                tracing::warn!(address = %cfg.address(), attempt, error = %err, "connecting to PostgreSQL failed; retrying");
                tokio::time::sleep(Duration::from_millis(500) * attempt).await;
            }
            Err((err, _)) => return Err(err),
        }
    }
}

/// One attempt; the bool says whether retrying could help.
async fn connect_once(cfg: &PostgresConfig) -> Result<Client, (SourceError, bool)> {
    let mut pg = tokio_postgres::Config::new();
    pg.host(&cfg.host)
        .port(cfg.port)
        .user(&cfg.username)
        .password(cfg.password.as_bytes())
        .dbname(&cfg.database)
        .application_name("ferry-agent")
        .connect_timeout(cfg.connect_timeout());
    if cfg.ssl_enabled {
        pg.ssl_mode(SslMode::Require);
        let tls = tls_connector(cfg).map_err(|e| (e, false))?;
        let (client, conn) = pg.connect(tls).await.map_err(|e| map_connect_error(cfg, &e))?;
        spawn_connection(conn);
        Ok(client)
    } else {
        pg.ssl_mode(SslMode::Disable);
        let (client, conn) =
            pg.connect(tokio_postgres::NoTls).await.map_err(|e| map_connect_error(cfg, &e))?;
        spawn_connection(conn);
        Ok(client)
    }
}

fn spawn_connection<F>(conn: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended with an error");
        }
    });
}

pub(crate) fn tls_connector(
    cfg: &PostgresConfig,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, SourceError> {
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.ssl_ca {
        Some(pem) => {
            for cert in parse_ca(pem)? {
                roots.add(cert).map_err(|e| {
                    SourceError::Configuration(format!("`ssl_ca` holds a certificate rustls rejects: {e}"))
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SourceError::Internal(format!("set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Turn a connection failure into a message for the user, and whether a
/// retry could help.
fn map_connect_error(cfg: &PostgresConfig, e: &tokio_postgres::Error) -> (SourceError, bool) {
    let at = cfg.address();
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let msg = db.message();
        if *code == SqlState::INVALID_PASSWORD {
            return (SourceError::Unreachable(format!("{msg} at {at}: check username and password")), false);
        }
        if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            return (
                SourceError::Unreachable(format!(
                    "{msg} at {at}: check the username, and that pg_hba.conf allows this host, user and database"
                )),
                false,
            );
        }
        if *code == SqlState::INVALID_CATALOG_NAME {
            return (SourceError::Configuration(format!("{msg} at {at}: check `database`")), false);
        }
        if *code == SqlState::CANNOT_CONNECT_NOW || *code == SqlState::TOO_MANY_CONNECTIONS {
            return (
                SourceError::Unreachable(format!("PostgreSQL at {at} refused the connection: {msg}")),
                true,
            );
        }
        return (
            SourceError::Unreachable(format!("PostgreSQL at {at} refused the connection: {msg}")),
            false,
        );
    }
    // Not a server error: network, TLS or timeout. Walk the cause chain so the
    // message says e.g. "Connection refused" rather than just "error connecting".
    let mut detail = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        src = s.source();
    }
    let lower = detail.to_ascii_lowercase();
    // Certificate and password problems do not go away by retrying.
    let (hint, transient) = if lower.contains("certificate") || lower.contains("tls") || lower.contains("ssl")
    {
        ("check ssl_enabled and ssl_ca (the CA certificate that signed the server's certificate)", false)
    } else if lower.contains("password") {
        ("check username and password", false)
    } else {
        ("check host and port, and that the server accepts TCP connections from this agent", true)
    };
    (SourceError::Unreachable(format!("cannot connect to PostgreSQL at {at}: {detail}: {hint}")), transient)
}
