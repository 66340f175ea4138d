//! The service layer's error: each variant maps to one HTTP status, and every message says
//! what went wrong and, where it can, what to do.

use riposte_store::StoreError;

/// An error of a server operation.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooManyAttempts(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        // A row this change refers to went away meanwhile (a group deleted while a device
        // was moved into it, by another request or another server process): the
        // database refused the change whole, so nothing changed.
        if e.refers_to_missing_row() {
            return ServiceError::Conflict(
                "something this change refers to was changed or deleted meanwhile; nothing \
                 was changed: check and try again"
                    .into(),
            );
        }
        if e.is_unstorable_text() {
            return ServiceError::BadRequest(
                "the request holds a NUL character, which no name nor value may hold".into(),
            );
        }
        match e {
            StoreError::NotFound(m) => ServiceError::NotFound(m),
            StoreError::Conflict(m) => ServiceError::Conflict(m),
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

impl From<riposte_model::Denied> for ServiceError {
    fn from(d: riposte_model::Denied) -> Self {
        ServiceError::Forbidden(d.0)
    }
}

impl From<riposte_model::AccountError> for ServiceError {
    fn from(e: riposte_model::AccountError) -> Self {
        use riposte_model::AccountError::*;
        match e {
            SpecialAccountExists | SpecialPasswordImmutable => {
                ServiceError::Conflict(e.to_string())
            }
            NoSpecialAccount => ServiceError::NotFound(e.to_string()),
            _ => ServiceError::BadRequest(e.to_string()),
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;
