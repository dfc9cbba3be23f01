//! The agent's limits on its PostgreSQL sessions, and canceling what a
//! session runs.
//!
//! Contracts:
//! - **Limits** ([`SessionLimits`]) are the agent's, not the connector's:
//!   they are set in the agent's configuration (`postgresql.lock_timeout`,
//!   `postgresql.statement_timeout`, `postgresql.idle_in_transaction_timeout`)
//!   by whoever runs the database, and apply to every session the agent
//!   opens. Defaults: a lock is waited for at most 60 s (a migration holding
//!   `ACCESS EXCLUSIVE` fails the job with a message instead of stalling it);
//!   statements are not limited (a table is read by one streaming statement,
//!   which legitimately runs as long as the table takes); a transaction left
//!   idle for 5 min is ended by the server (so a stuck agent cannot pin the
//!   xmin horizon).
//! - **Cancel** ([`interruptible`]): when a job's cancel token fires, the
//!   server is sent PostgreSQL's cancel request for the session's backend
//!   (over the same TLS as the session, within the connect timeout), and the
//!   job's work is dropped at once, whatever it awaits (a lock, `pg_sleep`,
//!   the control plane). Dropping the client then closes the session, so the
//!   backend ends too.

use std::future::Future;
use std::time::Duration;

use ferry_sdk::{SourceError, SyncStopped};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::config::PostgresConfig;

/// Server-side timeouts of every session; `Duration::ZERO` is "off".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// `lock_timeout`: longest wait for a table lock.
    pub lock_timeout: Duration,
    /// `statement_timeout`: longest statement (a whole table read is one).
    pub statement_timeout: Duration,
    /// `idle_in_transaction_session_timeout`.
    pub idle_in_transaction_timeout: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            lock_timeout: Duration::from_secs(60),
            statement_timeout: Duration::ZERO,
            idle_in_transaction_timeout: Duration::from_secs(300),
        }
    }
}

/// The largest value PostgreSQL accepts for its timeouts (`INT_MAX` ms).
pub const MAX_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

impl SessionLimits {
    /// The `SET` statements applying the limits.
    pub fn sql(&self) -> String {
        format!(
            "SET lock_timeout = {}; SET statement_timeout = {}; SET idle_in_transaction_session_timeout = {}",
            ms(self.lock_timeout),
            ms(self.statement_timeout),
            ms(self.idle_in_transaction_timeout)
        )
    }
}

fn ms(d: Duration) -> u128 {
    d.min(MAX_TIMEOUT).as_millis()
}

/// Runs `work` (which uses `client`) until it ends or `cancel` fires. On
/// cancel the running statement is canceled on the server and the result is
/// [`SyncStopped::Canceled`].
pub async fn interruptible<T, F>(
    cfg: &PostgresConfig,
    client: &Client,
    cancel: &CancellationToken,
    work: F,
) -> Result<T, SourceError>
where
    F: Future<Output = Result<T, SourceError>>,
{
    let token = client.cancel_token();
    tokio::select! {
        // Cancel first: `work` may be ready with rows forever.
        biased;
        _ = cancel.cancelled() => {
            cancel_backend(cfg, &token).await;
            Err(SyncStopped::Canceled.into())
        }
        r = work => r,
    }
}

/// Sends PostgreSQL's cancel request for `token`'s backend. Best effort: a
/// failure is logged (the session is closed right after anyway, which ends
/// the backend once its statement returns).
pub async fn cancel_backend(cfg: &PostgresConfig, token: &tokio_postgres::CancelToken) {
    let sent = tokio::time::timeout(cfg.connect_timeout(), async {
        if cfg.ssl_enabled {
            let tls = super::connect::tls_connector(cfg).map_err(|e| e.to_string())?;
            token.cancel_query(tls).await.map_err(|e| e.to_string())
        } else {
            token.cancel_query(tokio_postgres::NoTls).await.map_err(|e| e.to_string())
        }
    })
    .await;
    match sent {
        Ok(Ok(())) => tracing::debug!(address = %cfg.address(), "sent PostgreSQL a cancel request"),
        Ok(Err(e)) => {
            tracing::warn!(address = %cfg.address(), error = %e, "sending PostgreSQL a cancel request failed")
        }
        Err(_) => {
            tracing::warn!(address = %cfg.address(), "PostgreSQL did not take the cancel request in time")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_sets_every_limit_in_milliseconds() {
        let l = SessionLimits::default();
        assert_eq!(
            l.sql(),
            "SET lock_timeout = 60000; SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 300000"
        );
        let huge = SessionLimits { statement_timeout: Duration::from_secs(u64::MAX / 2), ..l };
        assert!(huge.sql().contains(&format!("statement_timeout = {}", i32::MAX)));
    }
}
