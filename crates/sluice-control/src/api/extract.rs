//! A JSON body extractor whose rejections are the API's JSON errors: 415 for a wrong content
//! type, 413 for an oversized body, 400 for malformed JSON, 422 naming the field for a body
//! of the wrong shape (unknown field, wrong type).
use std::sync::Arc;

use axum::{
    extract::{FromRequest, Request},
    http::header::CONTENT_TYPE,
};
use serde::de::DeserializeOwned;

use crate::{AppError, AppState};

pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, AppError> {
        let json =
            req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
                v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !json {
            return Err(AppError::UnsupportedMediaType);
        }
        let limit = state.cfg.max_body_bytes;
        let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| AppError::BodyTooLarge(limit))?;
        sluice_api::parse_json::<T>(&bytes).map(JsonBody).map_err(|e| {
            if e.syntax {
                AppError::InvalidJson(e.message)
            } else {
                AppError::InvalidField { field: e.field, message: e.message }
            }
        })
    }
}

/// A query string, or a 400 for one that does not parse (its message scrubbed of submitted
/// values, like a body's).
pub fn query<T>(q: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>) -> Result<T, AppError> {
    q.map(|q| q.0).map_err(|e| {
        let text = e.body_text();
        let text = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text);
        AppError::InvalidQuery(sluice_api::scrub(text))
    })
}
