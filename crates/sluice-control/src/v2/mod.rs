//! RunPod's `/v2` wing (R6), served on the gateway's address through
//! `Gateway::set_side_service` (and on the API address beside `/v1`):
//!
//! - `client`: RunPod's client API (`run`, `runsync`, `status`, `stream`, `cancel`, …);
//! - `worker`: RunPod's worker protocol (`job-take`, `job-done`, `job-stop`, `ping`) for pull
//!   workers, and `registry`, what the platform knows of them between their calls;
//! - `push`: the dispatcher that POSTs jobs to push workers, and the job clocks;
//! - `webhook`: job and account notifications;
//! - `Jobs` (here): the one place a queued job fans out, and per-job and per-worker wake-ups.
//!
//! One error type, [`V2Error`]; wire types from `sluice_api::v2`. The modules import this one,
//! never each other in a circle (`client` → `webhook`; `worker` → `registry`, `webhook`; `push`
//! → `webhook`).
pub mod client;
pub mod push;
pub mod registry;
pub mod webhook;
pub mod worker;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    body::Bytes,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use sluice_core::{EndpointId, WorkerId};
use tokio::sync::Notify;

pub use self::registry::Registry;
use crate::AppState;

/// Largest `/run` body (RunPod's limit).
pub const MAX_RUN_BODY: usize = 10 * 1024 * 1024;
/// Largest `/runsync` body (RunPod's limit).
pub const MAX_RUNSYNC_BODY: usize = 20 * 1024 * 1024;

/// A `/v2` error: RunPod's clients read the status code; the body (`{"error": …}`) says what
/// happened.
#[derive(Debug)]
pub struct V2Error(pub StatusCode, pub String);

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        (self.0, Json(sluice_api::v2::V2Error { error: self.1 })).into_response()
    }
}

impl From<sluice_store::Error> for V2Error {
    fn from(e: sluice_store::Error) -> Self {
        tracing::error!(error = %e, "store error in the queue API");
        V2Error(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
    }
}

/// The `/v2` router with its 404 fallback (the gateway's side service).
pub fn router(state: Arc<AppState>) -> Router {
    routes(state).fallback(|| async { V2Error(StatusCode::NOT_FOUND, "no such operation".into()) })
}

/// The `/v2` routes without a fallback, to merge into another router.
pub fn routes(state: Arc<AppState>) -> Router {
    client::routes()
        .merge(worker::routes())
        // Workers' results (job-done, job-stream); /run and /runsync read their own bodies.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_RUNSYNC_BODY))
        .with_state(state)
}

/// Reads a request body of at most `limit` bytes; a larger one is a 413 with a JSON body.
pub(crate) async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes, V2Error> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_big = std::error::Error::source(&e)
            .is_some_and(|s| s.downcast_ref::<http_body_util::LengthLimitError>().is_some())
            || e.to_string().contains("length limit");
        if too_big {
            V2Error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is over the limit of {} MB", limit >> 20))
        } else {
            V2Error(StatusCode::BAD_REQUEST, format!("could not read the request body: {e}"))
        }
    })
}

/// Wake-ups about jobs: the waiters of one job (`runsync`, `status-sync`) wake when that job
/// changes, not on every job's change; a worker's `job-stop` poll wakes when one of its jobs
/// stops running on it.
#[derive(Default)]
pub struct Jobs {
    watched: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
}

/// A waiter's hold on a job's wake-ups; dropped, the job is no longer watched by it.
pub struct Watching {
    jobs: Arc<Jobs>,
    job: String,
    pub changed: Arc<Notify>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut w = self.jobs.watched.lock().unwrap();
        if let Some((_, n)) = w.get_mut(&self.job) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.job);
            }
        }
    }
}

impl Jobs {
    /// Starts watching `job`.
    pub fn watch(self: &Arc<Self>, job: &str) -> Watching {
        let mut w = self.watched.lock().unwrap();
        let entry = w.entry(job.to_owned()).or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Watching { jobs: self.clone(), job: job.to_owned(), changed: entry.0.clone() }
    }

    /// `job` changed: its waiters look again.
    pub fn changed(&self, job: &str) {
        if let Some((n, _)) = self.watched.lock().unwrap().get(job) {
            n.notify_waiters();
        }
    }
}

impl AppState {
    /// A job of `e` went (back) into the queue: its waiters look again, the push dispatcher and
    /// one held pull take wake, and so does the autoscaler (a queued job is demand). The one
    /// fan-out for every way a job is queued.
    pub fn job_queued(&self, e: &EndpointId, job: &str) {
        self.jobs.changed(job);
        self.dispatch_wake.notify_one();
        self.pull.job_queued(e);
        self.wake.notify_one();
    }

    /// Job `job` changed (ended, progressed, cancelled); `worker`: the worker it ran on, whose
    /// `job-stop` poll looks again.
    pub fn job_changed(&self, job: &str, worker: Option<&str>) {
        self.jobs.changed(job);
        if let Some(w) = worker.and_then(|w| WorkerId::parse(w).ok()) {
            self.pull.stops_changed(&w);
        }
    }
}
