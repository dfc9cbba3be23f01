//! The control plane's error type and its one mapping to gRPC status codes.
//! Messages are for the operator: they say what is wrong and what to do.

use crate::elasticsearch::EsError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    /// Bad input; `field` is the request field at fault.
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0}")]
    FailedPrecondition(String),
    /// Optimistic concurrency kept losing; the caller may retry.
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("the control plane is shutting down; retry against another instance")]
    Shutdown,
    #[error(transparent)]
    Elasticsearch(#[from] EsError),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Error::InvalidArgument { field: field.to_owned(), message: message.into() }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Code;
        let code = match &e {
            Error::NotFound(_) => Code::NotFound,
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Aborted(_) => Code::Aborted,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::Shutdown => Code::Unavailable,
            Error::Elasticsearch(es) if es.is_retryable() => Code::Unavailable,
            Error::Elasticsearch(EsError::Auth { .. }) => Code::Unavailable,
            Error::Elasticsearch(_) | Error::Internal(_) => Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
