//! RunPod's worker protocol (R6.2), the server side: what an unmodified worker built on
//! `runpod.serverless.start()` calls when the platform started it with `RUNPOD_*` variables
//! (`sluice_core::pull::worker_env`). All under `/v2/{endpoint}/` on the gateway's address:
//!
//! - `GET job-take/{worker}` and `GET job-take-batch/{worker}?batch_size=N`: long-poll for jobs
//!   (held [`HOLD_MS`], then 204); only a ready worker is handed jobs.
//! - `POST job-done/{worker}/{job}`: the result, or a progress update (`status: IN_PROGRESS`).
//! - `POST job-stream/{worker}/{job}`: one chunk of a generator's output.
//! - `GET job-stop/{worker}`: long-poll for jobs to stop (cancelled, timed out, expired).
//! - `GET ping/{worker}`: the heartbeat; a worker silent for three intervals is presumed dead.
//!
//! Every call carries the worker's token (`RUNPOD_AI_API_KEY`) as the raw `Authorization`
//! header; it is valid for that endpoint and worker only, never for the client API.
use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::Value;
use sluice_api::v2::{Accepted, JobsToStop, Pong, TakenJob};
use sluice_core::{
    EndpointId, EndpointStatus, Millis, WorkerId,
    jobs::{JobState, MAX_RETRIES},
    keys::key_from_header,
    pull::{
        HOLD_MS, Held, Report, batch_size, jobs_to_stop, lost_jobs, parse_chunk, parse_job_ids, parse_report, token,
        token_matches,
    },
};
use tokio::sync::Notify;

use super::V2Error as Refusal;
use crate::{AppState, now};

type S = State<Arc<AppState>>;

/// The protocol's routes, merged into the `/v2` router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2/{id}/job-take/{worker}", get(take_one))
        .route("/v2/{id}/job-take-batch/{worker}", get(take_batch))
        .route("/v2/{id}/job-stop/{worker}", get(stop_poll))
        .route("/v2/{id}/job-done/{worker}/{job}", post(done))
        .route("/v2/{id}/job-stream/{worker}/{job}", post(stream_chunk))
        .route("/v2/{id}/ping/{worker}", get(ping))
}

/// Checks the worker token for this endpoint and worker; returns both ids.
fn authorize(st: &AppState, headers: &HeaderMap, ep: &str, worker: &str) -> Result<(EndpointId, WorkerId), Refusal> {
    let unauthorized =
        || Refusal(StatusCode::UNAUTHORIZED, "send this worker's RUNPOD_AI_API_KEY as Authorization".into());
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(key_from_header)
        .ok_or_else(unauthorized)?;
    let (Ok(e), Ok(w)) = (EndpointId::parse(ep), WorkerId::parse(worker)) else {
        return Err(unauthorized());
    };
    if !token_matches(presented, &token(&st.pull.secret, e.as_str(), w.as_str())) {
        return Err(unauthorized());
    }
    Ok((e, w))
}

/// Whether `w` is a ready (in rotation, not draining) worker of a running endpoint.
fn in_rotation(st: &AppState, e: &EndpointId, w: &WorkerId) -> bool {
    st.table
        .load()
        .endpoints
        .iter()
        .any(|r| &r.id == e && r.status == EndpointStatus::Running && r.workers.iter().any(|x| &x.id == w))
}

#[derive(serde::Deserialize)]
struct TakeQuery {
    batch_size: Option<String>,
}

async fn take_one(
    State(st): S,
    Path((id, worker)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    take(st, &id, &worker, &headers, None).await
}

async fn take_batch(
    State(st): S,
    Path((id, worker)): Path<(String, String)>,
    Query(q): Query<TakeQuery>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let n = batch_size(q.batch_size.as_deref());
    take(st, &id, &worker, &headers, Some(n)).await
}

/// Waits until `check` yields something: it is tried again when `wake()`'s notify fires (none:
/// only the timer) or a second passes. Ends early when the hold is over, the worker is being
/// stopped or the platform shuts down; `None` when the hold ended empty.
async fn hold<T, F, Fut>(
    st: &AppState,
    w: &WorkerId,
    wake: impl Fn() -> Option<Arc<Notify>>,
    mut check: F,
) -> Result<Option<T>, Refusal>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, Refusal>>,
{
    let until = tokio::time::Instant::now() + Duration::from_millis(HOLD_MS);
    let never = Notify::new();
    loop {
        let source = wake();
        let changed = source.as_deref().unwrap_or(&never).notified();
        let closed = st.pull.closed.notified();
        tokio::pin!(changed, closed);
        changed.as_mut().enable();
        closed.as_mut().enable();
        if let Some(v) = check().await? {
            return Ok(Some(v));
        }
        if st.pull.polls_end(w) || tokio::time::Instant::now() >= until {
            return Ok(None);
        }
        let tick = until.min(tokio::time::Instant::now() + Duration::from_secs(1));
        tokio::select! {
            () = changed => {}
            () = closed => {}
            () = tokio::time::sleep_until(tick) => {}
        }
    }
}

/// `job-take` (`batch`: `None`) and `job-take-batch`: the oldest queued jobs, once the worker is
/// in rotation. A single take answers an object, a batch an array.
async fn take(
    st: Arc<AppState>,
    id: &str,
    worker: &str,
    headers: &HeaderMap,
    batch: Option<u32>,
) -> Result<Response, Refusal> {
    let (e, w) = authorize(&st, headers, id, worker)?;
    st.pull.saw(&w, now(), &st.wake);
    let want = batch.unwrap_or(1);
    // Only a worker in rotation listens for queued jobs: a starting one would take the wake-up
    // and claim nothing.
    let queued = st.pull.queued(&e);
    let wake = || in_rotation(&st, &e, &w).then(|| queued.clone());
    let jobs = hold(&st, &w, wake, || {
        let (st, e, w) = (st.clone(), e.clone(), w.clone());
        async move {
            if !in_rotation(&st, &e, &w) {
                return Ok(None);
            }
            let mut jobs = Vec::new();
            while jobs.len() < want as usize {
                match st.store.claim_job(&e, w.as_str(), now()).await? {
                    Some(j) => jobs.push(j),
                    None => break,
                }
            }
            Ok((!jobs.is_empty()).then_some(jobs))
        }
    })
    .await?;
    let Some(jobs) = jobs else { return Ok(StatusCode::NO_CONTENT.into_response()) };
    st.pull.hold(&w, jobs.iter().map(|j| j.id.clone()));
    for j in &jobs {
        st.jobs.changed(&j.id);
    }
    st.wake.notify_one();
    let mut items: Vec<TakenJob> = jobs
        .iter()
        .map(|j| TakenJob { id: j.id.clone(), input: serde_json::from_str(&j.input).unwrap_or(Value::Null) })
        .collect();
    tracing::debug!(worker = %w, jobs = items.len(), "jobs taken");
    Ok(match batch {
        None => Json(items.remove(0)).into_response(),
        Some(_) => Json(items).into_response(),
    })
}

/// `job-stop`: the jobs this worker holds that no longer run on it.
async fn stop_poll(
    State(st): S,
    Path((id, worker)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let (_, w) = authorize(&st, &headers, &id, &worker)?;
    let stop = hold(
        &st,
        &w,
        || Some(st.pull.stop_notify(&w)),
        || {
            let (st, w) = (st.clone(), w.clone());
            async move {
                let held: HashMap<String, Held> = st.pull.held.lock().unwrap().get(&w).cloned().unwrap_or_default();
                if held.is_empty() {
                    return Ok(None);
                }
                let running: Vec<String> =
                    st.store.running_on(w.as_str()).await?.into_iter().map(|(id, _)| id).collect();
                let stop = jobs_to_stop(&held, &running, now());
                Ok((!stop.is_empty()).then_some(stop))
            }
        },
    )
    .await?;
    let Some(stop) = stop else { return Ok(StatusCode::NO_CONTENT.into_response()) };
    // Kept, marked told: told again in RETELL_MS while the worker still has it (a stop that
    // arrives between the SDK's take and the start of its handler finds nothing to cancel).
    let t = now();
    if let Some(h) = st.pull.held.lock().unwrap().get_mut(&w) {
        for j in &stop {
            if let Some(x) = h.get_mut(j) {
                x.tells += 1;
                x.last_told = t;
            }
        }
    }
    tracing::info!(worker = %w, jobs = ?stop, "telling a worker to stop jobs");
    Ok(Json(JobsToStop { jobs_to_stop: stop }).into_response())
}

/// `job-done`: a result, or a progress update. Answered 200 even when the job no longer runs
/// on this worker (cancelled, timed out): there is nothing for the worker to retry.
async fn done(
    State(st): S,
    Path((id, worker, job)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let (e, w) = authorize(&st, &headers, &id, &worker)?;
    let t = now();
    st.pull.saw(&w, t, &st.wake);
    let report = parse_report(&body).map_err(|m| Refusal(StatusCode::BAD_REQUEST, m))?;
    let accepted = match report {
        Report::Progress(v) => st.store.set_job_progress(&job, w.as_str(), &v.to_string()).await?,
        Report::Done { output, error, stop_pod } => {
            if stop_pod {
                tracing::info!(worker = %w, "the handler asked for refresh_worker: the worker will be replaced");
                st.pull.refresh.lock().unwrap().insert(w.clone());
            }
            // Released first: a stop poll never sees a finished job as one to stop.
            st.pull.release(&w, &job);
            let output = output.map(|o| o.to_string());
            let (state, error) = match error {
                Some(e) => (JobState::Failed, Some(e)),
                None => (JobState::Completed, None),
            };
            let ended =
                st.store.finish_job_of(&job, Some(w.as_str()), state, output.as_deref(), error.as_deref(), t).await?;
            // The webhook gets the job as it ended (read again only when there is one).
            if let Some(Some(_)) = &ended
                && let Ok(Some(j)) = st.store.get_job(&e, &job).await
            {
                st.webhooks.job_ended(&j);
            }
            st.wake.notify_one();
            ended.is_some()
        }
    };
    if !accepted {
        tracing::debug!(worker = %w, %job, "report for a job that no longer runs on this worker");
    }
    st.jobs.changed(&job);
    Ok(Json(Accepted { accepted }).into_response())
}

/// `job-stream`: one chunk of a generator's output, for `/stream`.
async fn stream_chunk(
    State(st): S,
    Path((id, worker, job)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let (_, w) = authorize(&st, &headers, &id, &worker)?;
    st.pull.saw(&w, now(), &st.wake);
    let chunk = parse_chunk(&body).map_err(|m| Refusal(StatusCode::BAD_REQUEST, m))?;
    let accepted = match chunk {
        Ok(v) if st.store.job_runs_on(&job, w.as_str()).await? => {
            st.store.add_stream_chunk(&job, &v.to_string()).await?;
            st.jobs.changed(&job);
            true
        }
        // A generator's error ends the job on job-done, which follows.
        _ => false,
    };
    Ok(Json(Accepted { accepted }).into_response())
}

#[derive(serde::Deserialize)]
struct PingQuery {
    job_id: Option<String>,
    runpod_version: Option<String>,
    status: Option<String>,
    check: Option<String>,
    reason: Option<String>,
}

/// `ping`: the heartbeat, with the jobs the worker is running (after a platform restart, this
/// is how the stop channel learns what each worker holds). `status=unhealthy` is a failed
/// fitness check, reported just before the worker exits.
async fn ping(
    State(st): S,
    Path((id, worker)): Path<(String, String)>,
    Query(q): Query<PingQuery>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let (e, w) = authorize(&st, &headers, &id, &worker)?;
    if q.status.as_deref() == Some("unhealthy") {
        let why = format!(
            "worker reported itself unhealthy: {} check failed: {}",
            q.check.as_deref().unwrap_or("a"),
            q.reason.as_deref().unwrap_or("no reason given")
        );
        tracing::warn!(worker = %w, %why);
        st.pull.unhealthy.lock().unwrap().insert(w.clone(), why);
        st.wake.notify_one();
        return Ok(Json(Pong {}).into_response());
    }
    let t = now();
    st.pull.saw(&w, t, &st.wake);
    let listed = parse_job_ids(q.job_id.as_deref());
    st.pull.running_per_ping(&w, listed.clone());
    let lists_jobs = {
        let mut known = st.pull.lists_jobs.lock().unwrap();
        if !listed.is_empty() || q.runpod_version.is_some() {
            known.insert(w.clone());
        }
        known.contains(&w)
    };
    if lists_jobs {
        settle_lost(&st, &e, &w, &listed, t).await?;
    }
    Ok(Json(Pong {}).into_response())
}

/// Jobs the store has running on `w` that its pings no longer list go back to the queue
/// (`sluice_core::pull::lost_jobs`): after a restart of the platform, the SDK has dropped the
/// results it could not deliver while the platform was down, and nothing else would ever settle
/// those jobs. At least once: a job whose result was lost runs again.
async fn settle_lost(st: &AppState, e: &EndpointId, w: &WorkerId, listed: &[String], t: Millis) -> Result<(), Refusal> {
    let running = st.store.running_on(w.as_str()).await?;
    let before = st.pull.misses.lock().unwrap().remove(w).unwrap_or_default();
    let (keep, lost) = lost_jobs(&running, listed, &before, t, st.pull.ping_ms);
    st.pull.misses.lock().unwrap().insert(w.clone(), keep);
    for job in lost {
        st.pull.release(w, &job);
        let why = "its worker no longer had it (its result never arrived, e.g. while the platform restarted)";
        if let Some(state) = st.store.requeue_job(&job, w.as_str(), MAX_RETRIES, why, t).await? {
            tracing::warn!(worker = %w, %job, to = state.as_str(), "a job its worker no longer holds goes back to the queue");
            st.logs.event(e, Some(w), format!("job {job} was lost by its worker; now {}", state.as_str()));
            st.job_queued(e, &job);
            if state.is_final()
                && let Some(j) = st.store.get_job(e, &job).await?
            {
                st.webhooks.job_ended(&j);
            }
        }
    }
    Ok(())
}
