//! Gateway errors, tagged with who is at fault, and the one function that turns them into HTTP
//! answers (`into_response`).
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{BoxBody, full};

/// Who caused a failure, logged with every gateway error (pingora's `ErrorSource`); the
/// foundation for deciding whether a failure counts against a worker's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client (bad target, unknown endpoint, a broken request body).
    Downstream = 0,
    /// The worker (refused, reset, too slow).
    Upstream = 1,
    /// The platform (no capacity, stopped endpoint).
    Platform = 2,
}

impl Fault {
    pub const ALL: [Fault; 3] = [Fault::Downstream, Fault::Upstream, Fault::Platform];

    /// The `fault` label of `sluice_gateway_errors_total`.
    pub fn label(self) -> &'static str {
        match self {
            Fault::Downstream => "client",
            Fault::Upstream => "worker",
            Fault::Platform => "platform",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no endpoint in the request: use http://{{endpoint_id}}.{{data_center}}.{domain}/ or /e/{{endpoint_id}}/")]
    NoEndpointInRequest { domain: String },
    #[error("endpoint {0} does not exist")]
    EndpointNotFound(String),
    #[error("endpoint {0} is private: send a key of its account as `Authorization: Bearer <key>`")]
    Unauthorized(String),
    #[error("endpoint {0} is stopped; start it with `sluice endpoint start {0}`")]
    EndpointStopped(String),
    #[error(
        "endpoint {0} is turned off: its account's credit is below $10; add credit, then `sluice endpoint start {0}`"
    )]
    NoCredit(String),
    #[error(
        "no worker of endpoint {endpoint} could take the request: {why} (waited {waited_ms} ms); capacity is being added, retry shortly"
    )]
    NoWorker { endpoint: String, why: &'static str, waited_ms: u64 },
    #[error(
        "endpoint {endpoint} is at its fully autoscaled concurrency limit of {limit} requests ({max_workers} workers x {per_worker} each): {why}"
    )]
    ConcurrencyLimit { endpoint: String, why: &'static str, limit: u64, max_workers: u32, per_worker: u32 },
    #[error("endpoint {endpoint} allows {rpm} requests per minute; retry in {retry_after_secs} s")]
    RateLimited { endpoint: String, rpm: u32, retry_after_secs: u64 },
    #[error("the worker could not be reached: {0}")]
    WorkerUnreachable(String),
    #[error("the worker failed while answering: {0}")]
    WorkerFailed(String),
    #[error("the request ran longer than the endpoint's execution timeout of {0} s")]
    ExecutionTimeout(u64),
    #[error("the request body was malformed or incomplete: {0}")]
    ClientBody(String),
}

/// The first `E` in `e`'s `source()` chain, `e` included (linkerd's `is_caused_by`).
pub fn caused_by<'a, E: std::error::Error + 'static>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a E> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        cur = err.source();
    }
    None
}

impl Error {
    pub fn fault(&self) -> Fault {
        match self {
            Error::NoEndpointInRequest { .. } | Error::EndpointNotFound(_) | Error::Unauthorized(_) => {
                Fault::Downstream
            }
            Error::EndpointStopped(_) | Error::NoWorker { .. } | Error::ConcurrencyLimit { .. } => Fault::Platform,
            Error::RateLimited { .. } | Error::NoCredit(_) | Error::ClientBody(_) => Fault::Downstream,
            Error::WorkerUnreachable(_) | Error::WorkerFailed(_) | Error::ExecutionTimeout(_) => Fault::Upstream,
        }
    }

    /// The HTTP status it is answered with.
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::NoEndpointInRequest { .. } => (StatusCode::NOT_FOUND, "no_endpoint"),
            Error::EndpointNotFound(_) => (StatusCode::NOT_FOUND, "endpoint_not_found"),
            Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::EndpointStopped(_) => (StatusCode::SERVICE_UNAVAILABLE, "endpoint_stopped"),
            Error::NoWorker { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_worker_available"),
            Error::ConcurrencyLimit { .. } => (StatusCode::TOO_MANY_REQUESTS, "concurrency_limit"),
            Error::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limit"),
            Error::NoCredit(_) => (StatusCode::PAYMENT_REQUIRED, "insufficient_credit"),
            Error::WorkerUnreachable(_) => (StatusCode::BAD_GATEWAY, "worker_unreachable"),
            Error::WorkerFailed(_) => (StatusCode::BAD_GATEWAY, "worker_failed"),
            Error::ExecutionTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, "execution_timeout"),
            Error::ClientBody(_) => (StatusCode::BAD_REQUEST, "bad_request_body"),
        }
    }

    /// The one place gateway errors become HTTP: a JSON body
    /// `{"error": {"code", "message"}}`, and `Retry-After` where waiting helps.
    pub fn into_response(self) -> Response<BoxBody> {
        let (status, code) = self.status_and_code();
        let body = sluice_api::ErrorBody::new(code, self.to_string(), None);
        let mut resp = Response::new(full(Bytes::from(serde_json::to_vec(&body).unwrap_or_default())));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if matches!(self, Error::NoWorker { .. } | Error::ConcurrencyLimit { .. } | Error::EndpointStopped(_)) {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if let Error::RateLimited { retry_after_secs, .. } = self {
            h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
        }
        resp
    }
}
