//! The control API's one error type and its one mapping to HTTP (`AppError: IntoResponse`).
use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use sluice_api::ErrorBody;
use sluice_core::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{message}")]
    InvalidField { field: Option<String>, message: String },
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the query string does not parse: {0}")]
    InvalidQuery(String),
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("missing or invalid API key (send Authorization: Bearer <key>)")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    PaymentRequired(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<FieldError> for AppError {
    fn from(e: FieldError) -> Self {
        AppError::InvalidField { field: Some(e.field), message: e.message }
    }
}

impl From<sluice_store::Error> for AppError {
    fn from(e: sluice_store::Error) -> Self {
        match e {
            sluice_store::Error::Conflict(m) => AppError::Conflict(m),
            e @ sluice_store::Error::Stale(_) => AppError::Conflict(e.to_string()),
            sluice_store::Error::NotFound => AppError::NotFound("not found".into()),
            other => AppError::Internal(Box::new(other)),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            AppError::InvalidField { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            AppError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            AppError::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            AppError::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            AppError::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            AppError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AppError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            AppError::PaymentRequired(_) => (StatusCode::PAYMENT_REQUIRED, "insufficient_credit"),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AppError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            AppError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            AppError::Internal(e) => {
                tracing::error!(error = %e, "internal error in control API");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let field = match &self {
            AppError::InvalidField { field, .. } => field.clone(),
            _ => None,
        };
        let mut resp = (status, Json(ErrorBody::new(code, self.to_string(), field))).into_response();
        if matches!(self, AppError::Unauthorized) {
            resp.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
