//! `AgentService` and `EnrollmentService` on the admin listener.
//!
//! Reflection on the admin port lists every service of the proto files,
//! including the two that are served only on the agents listener (mTLS). A
//! user calling them here would otherwise get tonic's bare `Unimplemented`
//! with no message; these stand-ins answer `Unimplemented` saying where the
//! service is served instead. They never touch state.

use std::net::SocketAddr;

use ferry_sdk::proto;
use tonic::{Request, Response, Status, Streaming};

/// Answers every call with `Unimplemented` naming the agents listener.
#[derive(Debug, Clone)]
pub struct ServedElsewhere {
    agents_listen: SocketAddr,
}

impl ServedElsewhere {
    pub fn new(agents_listen: SocketAddr) -> Self {
        Self { agents_listen }
    }

    fn status(&self, service: &str) -> Status {
        Status::unimplemented(format!(
            "ferry.v1.{service} is not served on the admin API: agents reach it on the agents \
             listener ({}, config key agents.listen) over mTLS with a client certificate from \
             agents.tls.client_ca",
            self.agents_listen
        ))
    }
}

#[tonic::async_trait]
impl proto::agent_service_server::AgentService for ServedElsewhere {
    type SessionStream = futures::stream::Empty<Result<proto::ControlMessage, Status>>;

    async fn session(
        &self,
        _request: Request<Streaming<proto::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        Err(self.status("AgentService"))
    }
}

#[tonic::async_trait]
impl proto::enrollment_service_server::EnrollmentService for ServedElsewhere {
    async fn get_ca_certificate(
        &self,
        _request: Request<proto::GetCaCertificateRequest>,
    ) -> Result<Response<proto::GetCaCertificateResponse>, Status> {
        Err(self.status("EnrollmentService"))
    }

    async fn enroll(
        &self,
        _request: Request<proto::EnrollRequest>,
    ) -> Result<Response<proto::EnrollResponse>, Status> {
        Err(self.status("EnrollmentService"))
    }

    async fn renew_certificate(
        &self,
        _request: Request<proto::RenewCertificateRequest>,
    ) -> Result<Response<proto::RenewCertificateResponse>, Status> {
        Err(self.status("EnrollmentService"))
    }
}
