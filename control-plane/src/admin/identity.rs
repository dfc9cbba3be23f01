//! Who may call the admin API when `admin.tls.allowed_identities` is set:
//! a client certificate (already verified against `admin.tls.client_ca` by
//! the TLS layer) whose Subject CN is in the list, compared exactly. An
//! empty list lets any certificate from `admin.tls.client_ca` in (the
//! configuration refuses that when that CA also signs agents, see
//! `config::check_trust_roots`).

use std::sync::Arc;

use tonic::{Request, Status};
use x509_parser::prelude::*;

/// A tonic interceptor on the admin services.
#[derive(Clone)]
pub struct AdminIdentities {
    allowed: Arc<[String]>,
}

impl AdminIdentities {
    pub fn new(allowed: &[String]) -> Self {
        AdminIdentities { allowed: allowed.into() }
    }

    /// The caller's CN when it may call; otherwise why not.
    pub fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if self.allowed.is_empty() {
            return Ok(());
        }
        let certs = request.peer_certs().ok_or_else(|| {
            Status::unauthenticated(
                "the admin API needs a client certificate whose CN is listed in admin.tls.allowed_identities",
            )
        })?;
        let first =
            certs.first().ok_or_else(|| Status::unauthenticated("no client certificate was presented"))?;
        let cn = common_name(first.as_ref()).ok_or_else(|| {
            Status::permission_denied("the client certificate has no Subject CN: admin identities are CNs")
        })?;
        if self.allowed.contains(&cn) {
            Ok(())
        } else {
            tracing::warn!(identity = %cn, "admin call refused: the identity is not in admin.tls.allowed_identities");
            Err(Status::permission_denied(format!(
                "certificate CN {cn:?} may not use the admin API: it is not in admin.tls.allowed_identities \
                 (an agent certificate? use an operator's certificate, or add the CN to the list)"
            )))
        }
    }
}

impl tonic::service::Interceptor for AdminIdentities {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(&request)?;
        Ok(request)
    }
}

/// The Subject CN, as written (no trimming: identities compare exactly).
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    Some(cn)
}
