use std::fmt;

/// A validation failure that names the offending field (`"name"`, `"env.MY_VAR"`,
/// `"network_volume.mount_path"`), so that the API can answer
/// `{"error": {"code": "invalid_field", "field": .., "message": ..}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}
