//! The OpenAI-compatible front door: one base URL for an account's models (`/openai/v1` on the
//! gateway's address, or the host `openai.{domain}`). `POST /v1/chat/completions`,
//! `/v1/completions` and `/v1/embeddings` go, by the body's `model`, to the caller's endpoint
//! that lists it in `served_models`, and from there exactly as a request to that endpoint (scale
//! from zero, the queue, limits, billing, routing); `GET /v1/models` lists the caller's models.
//! The key is required (it says whose models) and is not forwarded. Errors have OpenAI's shape,
//! `{"error": {"message", "type", "code"}}`, so OpenAI's SDKs raise their own exceptions.
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use sluice_core::keys::{self, label_admits};

use crate::{
    Inner,
    body::{BoxBody, full},
    error::Error,
    host::host_is,
};

/// The front door's path prefix on the gateway's own address.
pub const PREFIX: &str = "/openai";
/// The largest request body the front door reads (it must read the body to find `model`).
pub const MAX_BODY: usize = 32 << 20;

/// Whether a request is for the front door; the path the front door sees (`/v1/…`).
pub fn path_of<'a>(host: Option<&str>, path: &'a str, domain: &str) -> Option<&'a str> {
    if let Some(rest) = path.strip_prefix(PREFIX)
        && (rest.is_empty() || rest.starts_with('/'))
    {
        return Some(rest);
    }
    host.filter(|h| host_is(h, &format!("openai.{domain}"))).map(|_| path)
}

/// An answer in OpenAI's error shape.
pub fn error(status: StatusCode, message: &str, code: &str) -> Response<BoxBody> {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "invalid_request_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    let body = json!({"error": {"message": message, "type": kind, "code": code, "param": null}});
    let mut resp = Response::new(full(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A gateway error in OpenAI's shape, keeping its status and `Retry-After`.
pub fn from_gateway(e: Error) -> Response<BoxBody> {
    let message = e.to_string();
    let plain = e.into_response();
    let code = match plain.status() {
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_exceeded",
        StatusCode::PAYMENT_REQUIRED => "insufficient_quota",
        StatusCode::NOT_FOUND => "model_not_found",
        s if s.is_server_error() => "server_error",
        _ => "invalid_request",
    };
    let mut resp = error(plain.status(), &message, code);
    if let Some(r) = plain.headers().get(header::RETRY_AFTER) {
        resp.headers_mut().insert(header::RETRY_AFTER, r.clone());
    }
    resp
}

#[derive(serde::Deserialize)]
struct ModelOnly {
    model: Option<serde_json::Value>,
}

/// What the front door makes of a request: an answer of its own, or a request for one of the
/// caller's endpoints (its id, the worker's path, and the body, read whole).
pub(crate) enum Front {
    Answer(Response<BoxBody>),
    Forward { id: String, path_and_query: http::uri::PathAndQuery, parts: http::request::Parts, body: Bytes },
}

/// Handles a front-door request (`path`: what follows the prefix, `/v1/…`).
pub(crate) async fn handle(gw: &Inner, req: Request<Incoming>, path: &str) -> Front {
    answer(gw, req, path).await.unwrap_or_else(Front::Answer)
}

async fn answer(gw: &Inner, req: Request<Incoming>, path: &str) -> Result<Front, Response<BoxBody>> {
    let table = gw.routes.load();
    // Whose models: the key's account (or the admin's, who sees all).
    let label = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(keys::key_from_header)
        .map(keys::digest_bytes)
        .and_then(|d| table.keys.get(&d).cloned());
    let Some(label) = label else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "send an API key of your account as `Authorization: Bearer <key>`",
            "invalid_api_key",
        ));
    };
    // The caller's endpoints serving `model`, first by id.
    let serving = |model: &str| -> Option<String> {
        table
            .served
            .get(model)?
            .iter()
            .find(|id| table.endpoints.get(*id).is_some_and(|e| label_admits(&label, &e.route.account)))
            .cloned()
    };
    let route = path.trim_end_matches('/');
    match (req.method(), route) {
        (&Method::GET, "/v1/models") => {
            let mut names: Vec<(&String, &str)> = table
                .served
                .iter()
                .flat_map(|(m, ids)| ids.iter().map(move |id| (m, id.as_str())))
                .filter(|(_, id)| table.endpoints.get(*id).is_some_and(|e| label_admits(&label, &e.route.account)))
                .collect();
            names.sort_unstable();
            names.dedup_by(|a, b| a.0 == b.0);
            let data: Vec<serde_json::Value> = names
                .iter()
                .map(|(m, id)| json!({"id": m, "object": "model", "created": 0, "owned_by": format!("sluice:{id}")}))
                .collect();
            Ok(Front::Answer(json_ok(&json!({"object": "list", "data": data}))))
        }
        (&Method::GET, r) if r.starts_with("/v1/models/") => {
            let m = &r["/v1/models/".len()..];
            let id = serving(m).ok_or_else(|| {
                error(StatusCode::NOT_FOUND, "no endpoint of yours serves this model", "model_not_found")
            })?;
            Ok(Front::Answer(json_ok(
                &json!({"id": m, "object": "model", "created": 0, "owned_by": format!("sluice:{id}")}),
            )))
        }
        (&Method::POST, "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings") => {
            let route = route.to_owned();
            let (parts, body) = req.into_parts();
            let bytes = read(body).await?;
            let model = match serde_json::from_slice::<ModelOnly>(&bytes) {
                Ok(ModelOnly { model: Some(serde_json::Value::String(m)) }) => m,
                Ok(_) => {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        "the body needs a `model` (a string)",
                        "invalid_request",
                    ));
                }
                Err(_) => return Err(error(StatusCode::BAD_REQUEST, "the body is not a JSON object", "invalid_json")),
            };
            // The name is the caller's own input: not repeated (it may be anything).
            let id = serving(&model).ok_or_else(|| {
                error(
                    StatusCode::NOT_FOUND,
                    "no endpoint of yours serves this model (GET /v1/models lists them)",
                    "model_not_found",
                )
            })?;
            let pq = match parts.uri.query() {
                Some(q) => format!("{route}?{q}"),
                None => route,
            };
            let path_and_query = pq
                .parse()
                .map_err(|_| error(StatusCode::BAD_REQUEST, "the query string is not usable", "invalid_request"))?;
            Ok(Front::Forward { id, path_and_query, parts, body: bytes })
        }
        _ => Err(error(
            StatusCode::NOT_FOUND,
            "the OpenAI front door serves /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models",
            "unknown_url",
        )),
    }
}

fn json_ok(v: &serde_json::Value) -> Response<BoxBody> {
    let mut resp = Response::new(full(Bytes::from(v.to_string())));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The whole body, up to `MAX_BODY`.
async fn read(mut body: Incoming) -> Result<Bytes, Response<BoxBody>> {
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|_| error(StatusCode::BAD_REQUEST, "the request body could not be read", "invalid_request"))?;
        if let Ok(d) = frame.into_data() {
            if out.len() + d.len() > MAX_BODY {
                return Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the request body is larger than {MAX_BODY} bytes"),
                    "request_too_large",
                ));
            }
            out.extend_from_slice(&d);
        }
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_front_door_is_a_prefix_or_a_host() {
        assert_eq!(path_of(None, "/openai/v1/models", "example.com"), Some("/v1/models"));
        assert_eq!(path_of(None, "/openai", "example.com"), Some(""));
        assert_eq!(path_of(None, "/openaix/v1", "example.com"), None);
        assert_eq!(path_of(Some("openai.example.com:443"), "/v1/models", "example.com"), Some("/v1/models"));
        assert_eq!(path_of(Some("api.example.com"), "/v1/models", "example.com"), None);
        let e = from_gateway(Error::RateLimited { endpoint: "e".into(), rpm: 1, retry_after_secs: 7 });
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.headers()[header::RETRY_AFTER], "7");
    }
}
