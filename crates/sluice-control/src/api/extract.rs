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
