//! RunPod's client API for queue endpoints (R6.1), under `/v2/{endpoint}/…`: `run`,
//! `runsync`, `status`, `status-sync`, `stream`, `cancel`, `retry`, `purge-queue`, `health`.
//! Jobs live in the store, so an accepted job survives a restart. A key is checked against the
//! live key digests kept in memory (as the gateway does), the store only for a key not yet
//! published.
use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use serde_json::Value;
use sluice_api::v2::{
    EndpointHealth, JobRef, JobStatus, JobTotals, Purged, RunRequest, StreamBatch, StreamChunk, WorkerTotals,
};
use sluice_core::{
    EndpointId, Millis,
    jobs::{JobPolicy, JobState, PolicyInput, is_job_id, job_id},
    keys::{Scope, digest, digest_bytes, key_from_header, label_admits},
};
use sluice_store::{EndpointRecord, JobRecord};

use super::{MAX_RUN_BODY, MAX_RUNSYNC_BODY, V2Error, read_body};
use crate::{AppState, new_id, now};

type S = State<Arc<AppState>>;

/// The client API's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2/{id}/run", post(run))
        .route("/v2/{id}/runsync", post(runsync))
        .route("/v2/{id}/status/{job}", get(status).post(status))
        .route("/v2/{id}/status-sync/{job}", get(status_sync).post(status_sync))
        .route("/v2/{id}/stream/{job}", get(stream).post(stream))
        .route("/v2/{id}/cancel/{job}", post(cancel))
        .route("/v2/{id}/retry/{job}", post(retry))
        .route("/v2/{id}/purge-queue", post(purge))
        .route("/v2/{id}/health", get(health))
}

/// The endpoint a `/v2` call names, checked like the gateway does: a private endpoint needs a
/// key of its account (or the admin's), Bearer or bare; another account's key sees 404.
async fn endpoint(st: &AppState, headers: &HeaderMap, id: &str) -> Result<EndpointRecord, V2Error> {
    let missing = || V2Error(StatusCode::NOT_FOUND, format!("endpoint {id} does not exist"));
    let id = EndpointId::parse(id).map_err(|_| missing())?;
    let e = st.store.get_endpoint(&id).await?.ok_or_else(missing)?;
    if !e.spec.public {
        let key =
            headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(key_from_header);
        let Some(k) = key else {
            return Err(V2Error(StatusCode::UNAUTHORIZED, "send an API key as Authorization".into()));
        };
        // The live digests the reconciler publishes (as the gateway has them); a key created
        // since the last publish is looked up in the store.
        let label = st.keys.load().get(&digest_bytes(k)).cloned();
        let admitted = match label {
            Some(label) => label_admits(&label, &e.account),
            None => match st.store.find_key(&digest(k)).await? {
                Some(rec) => Scope::of_key(&rec.account, &rec.role).admits(&e.account),
                None => return Err(V2Error(StatusCode::UNAUTHORIZED, "unknown or revoked API key".into())),
            },
        };
        if !admitted {
            return Err(missing());
        }
    }
    if !e.spec.mode.is_queue() {
        return Err(V2Error(
            StatusCode::BAD_REQUEST,
            format!("endpoint {id} is not a queue endpoint (type = \"http\")"),
        ));
    }
    Ok(e)
}

/// Checks a job id from a path: malformed ones are 404 without touching the store. Returns the
/// 404 to answer when the store does not have the job.
fn job_ref(job: &str) -> Result<impl Fn() -> V2Error + '_, V2Error> {
    let gone = move || V2Error(StatusCode::NOT_FOUND, format!("job {job} does not exist or has expired"));
    if is_job_id(job) { Ok(gone) } else { Err(gone()) }
}

/// RunPod's status envelope, with the timings once its worker's readiness is known
/// (`worker_ready`: when the worker that took it last became ready).
pub fn envelope(j: &JobRecord, now: Millis, worker_ready: Option<Millis>) -> JobStatus {
    JobStatus {
        timings: j
            .started_at
            .zip(worker_ready)
            .map(|(s, w)| sluice_core::jobs::timings(j.created_at, s, j.finished_at, w, now)),
        id: j.id.clone(),
        status: j.state.as_str().into(),
        delay_time: j.started_at.unwrap_or(now).saturating_sub(j.created_at),
        execution_time: j.started_at.map(|s| j.finished_at.unwrap_or(now).saturating_sub(s)),
        output: j.output.as_ref().map(|o| serde_json::from_str(o).unwrap_or_else(|_| Value::String(o.clone()))),
        error: j.error.clone(),
        retries: (j.retries > 0).then_some(j.retries),
        worker_id: j.worker_id.clone(),
    }
}

/// The envelope with the timings (a look at the worker that took it).
async fn status_of(st: &AppState, j: &JobRecord) -> JobStatus {
    let ready = match (&j.worker_id, j.started_at) {
        (Some(w), Some(_)) => st.store.worker_ready_at(w).await.ok().flatten(),
        _ => None,
    };
    envelope(j, now(), ready)
}

/// Accepts a job from a `/run` or `/runsync` body.
async fn submit(
    st: &AppState,
    e: &EndpointRecord,
    headers: &HeaderMap,
    body: &Bytes,
    sync: bool,
) -> Result<JobRecord, V2Error> {
    let bad = |m: String| V2Error(StatusCode::BAD_REQUEST, m);
    let v: RunRequest = sluice_api::parse_json(body).map_err(|x| {
        let what = if x.syntax { "body is not JSON" } else { "body must be a JSON object with \"input\"" };
        bad(format!("{what}: {}", x.message))
    })?;
    let input = Some(v.input).filter(|i| !i.is_null()).ok_or_else(|| bad("\"input\" is required".into()))?;
    let policy_in: Option<PolicyInput> = match v.policy {
        None | Some(Value::Null) => None,
        Some(p) => {
            Some(serde_json::from_value(p).map_err(|x| bad(format!("policy: {}", sluice_api::scrub(&x.to_string()))))?)
        }
    };
    let policy = JobPolicy::validate(policy_in.as_ref()).map_err(|f| bad(format!("{}: {}", f.field, f.message)))?;
    let webhook = match v.webhook {
        None | Some(Value::Null) => None,
        Some(Value::String(w)) if w.starts_with("http://") || w.starts_with("https://") => Some(w),
        Some(_) => return Err(bad("webhook: must be an http(s) URL".into())),
    };
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 200) {
        return Err(bad("Idempotency-Key: 1 to 200 characters".into()));
    }
    let job = JobRecord {
        id: job_id(new_id(), sync),
        endpoint_id: e.id.clone(),
        account: e.account.clone(),
        state: JobState::InQueue,
        input: input.to_string(),
        output: None,
        error: None,
        policy,
        sync,
        webhook,
        idempotency_key: key,
        worker_id: None,
        retries: 0,
        created_at: now(),
        started_at: None,
        finished_at: None,
    };
    let (job, new) = st.store.create_job(&job).await?;
    if new {
        tracing::debug!(job = %job.id, endpoint = %e.id, "job queued");
        st.job_queued(&e.id, &job.id);
    }
    Ok(job)
}

async fn run(
    State(st): S,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<JobRef>, V2Error> {
    let e = endpoint(&st, &headers, &id).await?;
    let body = read_body(body, MAX_RUN_BODY).await?;
    let job = submit(&st, &e, &headers, &body, false).await?;
    Ok(Json(JobRef { id: job.id, status: job.state.as_str().into() }))
}

#[derive(serde::Deserialize)]
struct WaitQuery {
    wait: Option<u64>,
}

/// Waits (bounded) until the job is final or gone; returns it as it is then. Woken when this
/// job changes; a timer covers what no notification announces (a worker's jobs failed in bulk
/// when it ended past their retries, a TTL).
async fn wait_final(st: &AppState, ep: &EndpointId, id: &str, wait_ms: u64) -> Result<Option<JobRecord>, V2Error> {
    let until = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let watching = st.jobs.watch(id);
    loop {
        let changed = watching.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let j = st.store.get_job(ep, id).await?;
        if j.as_ref().is_none_or(|j| j.state.is_final()) || tokio::time::Instant::now() >= until {
            return Ok(j);
        }
        let _ = tokio::time::timeout_at(until.min(tokio::time::Instant::now() + Duration::from_secs(1)), changed).await;
    }
}

fn wait_ms(q: &WaitQuery) -> u64 {
    q.wait.unwrap_or(90_000).clamp(1_000, 300_000)
}

async fn runsync(
    State(st): S,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<JobStatus>, V2Error> {
    let e = endpoint(&st, &headers, &id).await?;
    let body = read_body(body, MAX_RUNSYNC_BODY).await?;
    let job = submit(&st, &e, &headers, &body, true).await?;
    let j = wait_final(&st, &e.id, &job.id, wait_ms(&q)).await?.unwrap_or(job);
    Ok(Json(status_of(&st, &j).await))
}

async fn status(
    State(st): S,
    Path((id, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<JobStatus>, V2Error> {
    let e = endpoint(&st, &headers, &id).await?;
    let gone = job_ref(&job)?;
    let j = st.store.get_job(&e.id, &job).await?.ok_or_else(gone)?;
    Ok(Json(status_of(&st, &j).await))
}

async fn status_sync(
    State(st): S,
    Path((id, job)): Path<(String, String)>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
) -> Result<Json<JobStatus>, V2Error> {
    let e = endpoint(&st, &headers, &id).await?;
    let gone = job_ref(&job)?;
    let j = wait_final(&st, &e.id, &job, wait_ms(&q)).await?.ok_or_else(gone)?;
    Ok(Json(status_of(&st, &j).await))
}

async fn stream(
    State(st): S,
    Path((id, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<StreamBatch>, V2Error> {
    let e = endpoint(&st, &headers, &id).await?;
    let gone = job_ref(&job)?;
    let j = st.store.get_job(&e.id, &job).await?.ok_or_else(gone)?;
    let chunks = st.store.take_stream_chunks(&job).await?;
    let stream = chunks
        .into_iter()
        .map(|c| StreamChunk { output: serde_json::from_str::<Value>(&c).unwrap_or(Value::String(c)) })
        .collect();
    Ok(Json(StreamBatch { status: j.state.as_str().into(), stream }))
}

async fn cancel(
    State(st): S,
    Path((id, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<JobRef>, V2Error> {
    let e = endpoint(&st, &headers, &id).await?;
    let gone = job_ref(&job)?;
    let j = st.store.cancel_job(&e.id, &job, now()).await?.ok_or_else(gone)?;
    st.job_changed(&j.id, j.worker_id.as_deref());
    Ok(Json(JobRef { id: j.id, status: j.state.as_str().into() }))
}

async fn retry(
    State(st): S,
    Path((id, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<JobRef>, V2Error> {
    let e = endpoint(&st, &headers, &id).await?;
    let gone = job_ref(&job)?;
    let (retried, j) = st.store.retry_job(&e.id, &job).await?.ok_or_else(gone)?;
    if !retried {
        return Err(V2Error(
            StatusCode::BAD_REQUEST,
            format!("job {job} is {}; only FAILED and TIMED_OUT jobs can be retried", j.state.as_str()),
        ));
    }
    st.job_queued(&e.id, &j.id);
    Ok(Json(JobRef { id: j.id, status: JobState::InQueue.as_str().into() }))
}

async fn purge(State(st): S, Path(id): Path<String>, headers: HeaderMap) -> Result<Json<Purged>, V2Error> {
    let e = endpoint(&st, &headers, &id).await?;
    let removed = st.store.purge_queue(&e.id).await?;
    Ok(Json(Purged { removed, status: "completed".into() }))
}

async fn health(State(st): S, Path(id): Path<String>, headers: HeaderMap) -> Result<Json<EndpointHealth>, V2Error> {
    let e = endpoint(&st, &headers, &id).await?;
    let c = st.store.job_counts(&e.id).await?;
    let w = st.counts.load().get(&e.id).cloned().unwrap_or_default();
    let busy = u64::from(w.ready).min(c.in_progress);
    Ok(Json(EndpointHealth {
        jobs: JobTotals {
            completed: c.completed,
            failed: c.failed + c.timed_out,
            in_progress: c.in_progress,
            in_queue: c.in_queue,
            retried: c.retried,
        },
        workers: WorkerTotals {
            idle: u64::from(w.ready) - busy,
            initializing: w.starting + w.pending,
            ready: w.ready,
            running: busy,
            throttled: 0,
            unhealthy: 0,
        },
    }))
}
