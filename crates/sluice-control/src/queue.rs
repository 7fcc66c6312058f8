//! Queue endpoints (R6), first part: RunPod's client API under `/v2/{endpoint}/…` (served on the
//! gateway's address through `Gateway::set_side_service`) and the push dispatcher, which POSTs
//! `{"id", "input"}` to a ready worker's `job_path` and records the answer. Jobs live in the store,
//! so an accepted job survives a restart.
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::{Value, json};
use sluice_core::{
    EndpointId, EndpointStatus, Millis, WorkerId,
    endpoint::{Delivery, EndpointKind},
    jobs::{Due, JobPolicy, JobState, MAX_RETRIES, PolicyInput, due, is_job_id, job_id},
    keys::{Scope, digest, key_from_header},
    routing::RouteTable,
};
use sluice_store::{EndpointRecord, JobRecord};
use tokio::sync::{Notify, watch};

use crate::{AppState, new_id, now};

/// Largest `/run` body (RunPod's limit).
pub const MAX_RUN_BODY: usize = 10 * 1024 * 1024;
/// Largest `/runsync` body (RunPod's limit).
pub const MAX_RUNSYNC_BODY: usize = 20 * 1024 * 1024;

/// Reads a request body of at most `limit` bytes; a larger one is a 413 with a JSON body.
pub(crate) async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes, (StatusCode, String)> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_big = std::error::Error::source(&e)
            .is_some_and(|s| s.downcast_ref::<http_body_util::LengthLimitError>().is_some())
            || e.to_string().contains("length limit");
        if too_big {
            (StatusCode::PAYLOAD_TOO_LARGE, format!("request body is over the limit of {} MB", limit >> 20))
        } else {
            (StatusCode::BAD_REQUEST, format!("could not read the request body: {e}"))
        }
    })
}

type S = State<Arc<AppState>>;

/// A `/v2` error: RunPod's clients read the status code; the body says what happened.
pub(crate) struct V2Error(pub StatusCode, pub String);

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<sluice_store::Error> for V2Error {
    fn from(e: sluice_store::Error) -> Self {
        tracing::error!(error = %e, "store error in the queue API");
        V2Error(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    routes(state).fallback(|| async { V2Error(StatusCode::NOT_FOUND, "no such operation".into()) })
}

/// The `/v2` routes without a fallback, to merge into another router.
pub fn routes(state: Arc<AppState>) -> Router {
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
        .merge(crate::pull::routes())
        // Workers' results (job-done, job-stream); /run and /runsync read their own bodies.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_RUNSYNC_BODY))
        .with_state(state)
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
        let Some(rec) = st.store.find_key(&digest(k)).await? else {
            return Err(V2Error(StatusCode::UNAUTHORIZED, "unknown or revoked API key".into()));
        };
        if !Scope::of_key(&rec.account, &rec.role).admits(&e.account) {
            return Err(missing());
        }
    }
    if e.spec.kind != EndpointKind::Queue {
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

/// RunPod's status envelope.
pub fn envelope(j: &JobRecord, now: Millis) -> Value {
    let mut v = json!({ "id": j.id, "status": j.state.as_str() });
    let delay = j.started_at.unwrap_or(now).saturating_sub(j.created_at);
    v["delayTime"] = json!(delay);
    if let Some(s) = j.started_at {
        v["executionTime"] = json!(j.finished_at.unwrap_or(now).saturating_sub(s));
    }
    if let Some(o) = &j.output {
        v["output"] = serde_json::from_str(o).unwrap_or_else(|_| Value::String(o.clone()));
    }
    if let Some(e) = &j.error {
        v["error"] = Value::String(e.clone());
    }
    if j.retries > 0 {
        v["retries"] = json!(j.retries);
    }
    if let Some(w) = &j.worker_id {
        v["workerId"] = Value::String(w.clone());
    }
    v
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
    let v: Value = serde_json::from_slice(body)
        .map_err(|x| bad(format!("body is not JSON: {}", sluice_api::scrub(&x.to_string()))))?;
    let input = v.get("input").filter(|i| !i.is_null()).ok_or_else(|| bad("\"input\" is required".into()))?;
    let policy_in: Option<PolicyInput> = match v.get("policy") {
        None | Some(Value::Null) => None,
        Some(p) => Some(
            serde_json::from_value(p.clone())
                .map_err(|x| bad(format!("policy: {}", sluice_api::scrub(&x.to_string()))))?,
        ),
    };
    let policy = JobPolicy::validate(policy_in.as_ref()).map_err(|f| bad(format!("{}: {}", f.field, f.message)))?;
    let webhook = match v.get("webhook") {
        None | Some(Value::Null) => None,
        Some(Value::String(w)) if w.starts_with("http://") || w.starts_with("https://") => Some(w.clone()),
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
        st.job_queued(&e.id);
    }
    Ok(job)
}

async fn run(
    State(st): S,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Value>, V2Error> {
    let e = endpoint(&st, &headers, &id).await?;
    let body = read_body(body, MAX_RUN_BODY).await.map_err(|(c, m)| V2Error(c, m))?;
    let job = submit(&st, &e, &headers, &body, false).await?;
    Ok(Json(json!({ "id": job.id, "status": job.state.as_str() })))
}

#[derive(serde::Deserialize)]
struct WaitQuery {
    wait: Option<u64>,
}

/// Waits (bounded) until the job is final or gone; returns it as it is then.
async fn wait_final(st: &AppState, ep: &EndpointId, id: &str, wait_ms: u64) -> Result<Option<JobRecord>, V2Error> {
    let until = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    loop {
        let changed = st.jobs_changed.notified();
        let j = st.store.get_job(ep, id).await?;
        if j.as_ref().is_none_or(|j| j.state.is_final()) || tokio::time::Instant::now() >= until {
            return Ok(j);
        }
        // Woken by any job change; a timer covers what no notification announces.
        let _ =
            tokio::time::timeout_at(until.min(tokio::time::Instant::now() + Duration::from_millis(250)), changed).await;
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
) -> Result<Json<Value>, V2Error> {
    let e = endpoint(&st, &headers, &id).await?;
    let body = read_body(body, MAX_RUNSYNC_BODY).await.map_err(|(c, m)| V2Error(c, m))?;
    let job = submit(&st, &e, &headers, &body, true).await?;
    let j = wait_final(&st, &e.id, &job.id, wait_ms(&q)).await?.unwrap_or(job);
    Ok(Json(envelope(&j, now())))
}

async fn status(
    State(st): S,
    Path((id, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, V2Error> {
    let e = endpoint(&st, &headers, &id).await?;
    let gone = job_ref(&job)?;
    let j = st.store.get_job(&e.id, &job).await?.ok_or_else(gone)?;
    Ok(Json(envelope(&j, now())))
}

async fn status_sync(
    State(st): S,
    Path((id, job)): Path<(String, String)>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, V2Error> {
    let e = endpoint(&st, &headers, &id).await?;
    let gone = job_ref(&job)?;
    let j = wait_final(&st, &e.id, &job, wait_ms(&q)).await?.ok_or_else(gone)?;
    Ok(Json(envelope(&j, now())))
}

async fn stream(
    State(st): S,
    Path((id, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, V2Error> {
    let e = endpoint(&st, &headers, &id).await?;
    let gone = job_ref(&job)?;
    let j = st.store.get_job(&e.id, &job).await?.ok_or_else(gone)?;
    let chunks = st.store.take_stream_chunks(&job).await?;
    let stream: Vec<Value> = chunks
        .iter()
        .map(|c| json!({ "output": serde_json::from_str::<Value>(c).unwrap_or_else(|_| Value::String(c.clone())) }))
        .collect();
    // The "stream" key is always there: RunPod's clients index it even when it is empty.
    Ok(Json(json!({ "status": j.state.as_str(), "stream": stream })))
}

async fn cancel(
    State(st): S,
    Path((id, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, V2Error> {
    let e = endpoint(&st, &headers, &id).await?;
    let gone = job_ref(&job)?;
    let j = st.store.cancel_job(&e.id, &job, now()).await?.ok_or_else(gone)?;
    st.jobs_changed.notify_waiters();
    Ok(Json(json!({ "id": j.id, "status": j.state.as_str() })))
}

async fn retry(
    State(st): S,
    Path((id, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, V2Error> {
    let e = endpoint(&st, &headers, &id).await?;
    let gone = job_ref(&job)?;
    let (retried, j) = st.store.retry_job(&e.id, &job).await?.ok_or_else(gone)?;
    if !retried {
        return Err(V2Error(
            StatusCode::BAD_REQUEST,
            format!("job {job} is {}; only FAILED and TIMED_OUT jobs can be retried", j.state.as_str()),
        ));
    }
    st.job_queued(&e.id);
    Ok(Json(json!({ "id": j.id, "status": JobState::InQueue.as_str() })))
}

async fn purge(State(st): S, Path(id): Path<String>, headers: HeaderMap) -> Result<Json<Value>, V2Error> {
    let e = endpoint(&st, &headers, &id).await?;
    let removed = st.store.purge_queue(&e.id).await?;
    Ok(Json(json!({ "removed": removed, "status": "completed" })))
}

async fn health(State(st): S, Path(id): Path<String>, headers: HeaderMap) -> Result<Json<Value>, V2Error> {
    let e = endpoint(&st, &headers, &id).await?;
    let c = st.store.job_counts(&e.id).await?;
    let w = st.counts.load().get(&e.id).cloned().unwrap_or_default();
    let busy = u64::from(w.ready).min(c.in_progress);
    Ok(Json(json!({
        "jobs": { "completed": c.completed, "failed": c.failed + c.timed_out, "inProgress": c.in_progress,
                  "inQueue": c.in_queue, "retried": c.retried },
        "workers": { "idle": u64::from(w.ready) - busy, "initializing": w.starting + w.pending, "ready": w.ready,
                     "running": busy, "throttled": 0, "unhealthy": 0 },
    })))
}

/// Pushes queued jobs to ready workers of push-delivery queue endpoints, at most
/// `concurrency_per_worker` at a time per worker, until `shutdown`.
pub async fn dispatch(
    st: Arc<AppState>,
    table: Arc<arc_swap::ArcSwap<RouteTable>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let client: Client<HttpConnector, http_body_util::Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let busy: Arc<Mutex<HashMap<WorkerId, u32>>> = Arc::new(Mutex::new(HashMap::new()));
    // The jobs this process has pushed and not yet recorded the end of. A push endpoint's job
    // in progress that is not here was pushed by a process that is gone (killed, or the
    // previous leader): its answer can never arrive, so it goes back to the queue.
    // Keyed by the claim (job id and when it was claimed): a job claimed again while an older
    // push of it is still unwinding is a different claim.
    let pushed: Arc<Mutex<HashSet<(String, Millis)>>> = Arc::default();
    let freed = Arc::new(Notify::new());
    let mut last_sweep = Millis(0);
    loop {
        if *shutdown.borrow() {
            break;
        }
        let endpoints = st.store.list_endpoints(&Scope::All).await.unwrap_or_default();
        let push_endpoints =
            || endpoints.iter().filter(|e| e.spec.kind == EndpointKind::Queue && e.spec.delivery == Delivery::Push);
        if now().saturating_sub(last_sweep) >= 1_000 {
            last_sweep = now();
            sweep(&st, last_sweep).await;
            for e in push_endpoints() {
                settle_orphans(&st, &e.id, &pushed, last_sweep).await;
            }
        }
        let routes = table.load();
        for e in push_endpoints().filter(|e| e.status == EndpointStatus::Running) {
            let Some(route) = routes.endpoints.iter().find(|r| r.id == e.id) else { continue };
            for w in &route.workers {
                loop {
                    let used = busy.lock().unwrap().get(&w.id).copied().unwrap_or(0);
                    if used >= e.spec.concurrency_per_worker {
                        break;
                    }
                    let Ok(Some(job)) = st.store.claim_job(&e.id, w.id.as_str(), now()).await else { break };
                    let claim = (job.id.clone(), job.started_at.unwrap_or_default());
                    pushed.lock().unwrap().insert(claim.clone());
                    *busy.lock().unwrap().entry(w.id.clone()).or_default() += 1;
                    let (st, client, busy, freed, pushed) =
                        (st.clone(), client.clone(), busy.clone(), freed.clone(), pushed.clone());
                    let url = format!("http://{}{}", w.addr, e.spec.job_path);
                    let worker = w.id.clone();
                    tokio::spawn(async move {
                        push(&st, &client, &url, &job, &worker).await;
                        pushed.lock().unwrap().remove(&claim);
                        if let Some(n) = busy.lock().unwrap().get_mut(&worker) {
                            *n = n.saturating_sub(1);
                        }
                        st.jobs_changed.notify_waiters();
                        st.wake.notify_one();
                        freed.notify_one();
                    });
                }
            }
        }
        tokio::select! {
            () = st.dispatch_wake.notified() => {}
            () = freed.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Jobs of push endpoint `e` in progress that this process did not push (see `pushed` in
/// [`dispatch`]) go back to the queue, counting a retry: at least once.
async fn settle_orphans(st: &AppState, e: &EndpointId, pushed: &Mutex<HashSet<(String, Millis)>>, t: Millis) {
    let running = match st.store.running_jobs(e).await {
        Ok(r) => r,
        Err(err) => return tracing::warn!(endpoint = %e, error = %err, "could not read jobs in progress"),
    };
    // Read after the store: a job claimed since is not in `running`, and one pushed before is in
    // `pushed` until its end is recorded.
    let orphans: Vec<(String, String)> = {
        let pushed = pushed.lock().unwrap();
        running.into_iter().filter(|(id, _, at)| !pushed.contains(&(id.clone(), *at))).map(|(i, w, _)| (i, w)).collect()
    };
    for (id, worker) in orphans {
        let why = "its push was cut off (the platform restarted or the leader changed while it ran)";
        match st.store.requeue_job(&id, &worker, MAX_RETRIES, why, t).await {
            Ok(Some(state)) => {
                tracing::warn!(job = %id, %worker, to = state.as_str(), "a job pushed by a process that is gone goes back to the queue");
                if let Ok(w) = WorkerId::parse(&worker) {
                    st.logs.event(e, Some(&w), format!("job {id}: its push was cut off; now {}", state.as_str()));
                }
                st.job_queued(e);
                if state.is_final()
                    && let Ok(Some(j)) = st.store.get_job(e, &id).await
                    && let Some(hook) = &j.webhook
                {
                    notify_webhook(&j, hook);
                }
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(job = %id, error = %err, "could not requeue a job"),
        }
    }
}

/// Applies the job clocks (`sluice_core::jobs::due`): TTL and result retention delete, a job
/// running past its execution timeout is TIMED_OUT.
async fn sweep(st: &AppState, t: Millis) {
    let jobs = match st.store.jobs_maybe_due(t, 500).await {
        Ok(j) => j,
        Err(e) => return tracing::warn!(error = %e, "could not read jobs to expire"),
    };
    for j in jobs {
        let r = match due(j.state, &j.policy, j.sync, j.created_at, j.started_at, j.finished_at, t) {
            Due::Nothing => Ok(()),
            Due::Delete => st.store.delete_job(&j.id).await,
            Due::TimeOut => {
                st.store.finish_job(&j.id, JobState::TimedOut, None, Some("execution timeout"), t).await.map(drop)
            }
        };
        if let Err(e) = r {
            tracing::warn!(job = %j.id, error = %e, "could not expire a job");
        }
        st.jobs_changed.notify_waiters();
    }
}

/// One job to one worker: its answer is the output (a 2xx) or the error; no answer within the
/// execution timeout is TIMED_OUT.
async fn push(
    st: &AppState,
    client: &Client<HttpConnector, http_body_util::Full<Bytes>>,
    url: &str,
    job: &JobRecord,
    worker: &WorkerId,
) {
    use http_body_util::BodyExt as _;
    let input: Value = serde_json::from_str(&job.input).unwrap_or(Value::Null);
    let body = json!({ "id": job.id, "input": input }).to_string();
    let req = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(Bytes::from(body)));
    let Ok(req) = req else { return };
    let timeout = Duration::from_millis(job.policy.execution_timeout_ms);
    let outcome = tokio::time::timeout(timeout, async {
        let resp = client.request(req).await.map_err(|e| format!("worker unreachable: {e}"))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| format!("reading the answer: {e}"))?.to_bytes();
        Ok::<_, String>((status, bytes))
    })
    .await;
    let t = now();
    // Every end is recorded only while the job still runs on this worker (it may have been
    // cancelled, timed out, or taken back meanwhile).
    let w = Some(worker.as_str());
    let result = match outcome {
        Err(_) => st.store.finish_job_of(&job.id, w, JobState::TimedOut, None, Some("execution timeout"), t).await,
        // No answer at all: the worker went away. At least once: the job goes back to the queue
        // (or fails, past its retries).
        Ok(Err(e)) => st
            .store
            .requeue_job(&job.id, worker.as_str(), MAX_RETRIES, &e, t)
            .await
            .map(|s| s.filter(|s| s.is_final()).map(|_| None)),
        Ok(Ok((status, bytes))) => {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let output = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)).to_string();
            if status.is_success() {
                st.store.finish_job_of(&job.id, w, JobState::Completed, Some(&output), None, t).await
            } else {
                let error = format!("worker answered {status}: {output}");
                st.store.finish_job_of(&job.id, w, JobState::Failed, None, Some(&error), t).await
            }
        }
    };
    let ended = match result {
        Ok(ended) => ended.is_some(),
        Err(e) => {
            tracing::warn!(job = %job.id, error = %e, "could not record a job's end");
            false
        }
    };
    // The webhook gets the job as it ended here (read again only when there is one).
    if ended
        && let Some(url) = &job.webhook
        && let Ok(Some(j)) = st.store.get_job(&job.endpoint_id, &job.id).await
    {
        notify_webhook(&j, url);
    }
}

/// When a job with a webhook has ended: POST its status envelope (with `input` and `webhook`,
/// as RunPod sends it) to the webhook; retried twice, 10 s apart.
pub(crate) fn notify_webhook(j: &JobRecord, url: &str) {
    if !j.state.is_final() {
        return;
    }
    let mut body = envelope(j, now());
    body["input"] = serde_json::from_str(&j.input).unwrap_or(Value::Null);
    body["webhook"] = Value::String(url.to_owned());
    crate::health::notify(url.to_owned(), body);
}
