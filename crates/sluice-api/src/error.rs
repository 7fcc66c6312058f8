//! The error body of the control API and the gateway.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{"error": {"code": .., "message": .., "field": ..}}`: the body of every 4xx/5xx answer of the
/// control API and the gateway.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code, e.g. `invalid_field`, `not_found`, `conflict`, `unauthorized`.
    pub code: String,
    pub message: String,
    /// The offending field, for validation errors (`name`, `env.FOO`, `network_volume.mount_path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>, field: Option<String>) -> Self {
        ErrorBody { error: ErrorDetail { code: code.into(), message: message.into(), field } }
    }
}
