//! Push delivery (R6): the dispatcher claims queued jobs of push endpoints and POSTs
//! `{"id", "input"}` to a ready worker's `job_path`, at most `concurrency_per_worker` at a time
//! per worker, and records the answer; and the job clocks (TTL, result retention, execution
//! timeout) for every queue endpoint.
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;
use sluice_api::{internal::RouteTable, v2::PushedJob};
use sluice_core::{
    EndpointId, EndpointStatus, Millis, WorkerId,
    jobs::{Due, JobState, MAX_RETRIES, due},
    keys::Scope,
};
use sluice_store::JobRecord;
use tokio::sync::{Notify, watch};

use crate::{AppState, now};

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
        let push_endpoints = || endpoints.iter().filter(|e| e.spec.mode.job_path().is_some());
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
                    if used >= e.spec.limits.concurrency_per_worker {
                        break;
                    }
                    let Ok(Some(job)) = st.store.claim_job(&e.id, w.id.as_str(), now()).await else { break };
                    let claim = (job.id.clone(), job.started_at.unwrap_or_default());
                    pushed.lock().unwrap().insert(claim.clone());
                    *busy.lock().unwrap().entry(w.id.clone()).or_default() += 1;
                    let (st, client, busy, freed, pushed) =
                        (st.clone(), client.clone(), busy.clone(), freed.clone(), pushed.clone());
                    let url = format!("http://{}{}", w.addr, e.spec.mode.job_path().unwrap_or("/"));
                    let worker = w.id.clone();
                    tokio::spawn(async move {
                        push(&st, &client, &url, &job, &worker).await;
                        pushed.lock().unwrap().remove(&claim);
                        if let Some(n) = busy.lock().unwrap().get_mut(&worker) {
                            *n = n.saturating_sub(1);
                        }
                        st.jobs.changed(&job.id);
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
                st.job_queued(e, &id);
                if state.is_final()
                    && let Ok(Some(j)) = st.store.get_job(e, &id).await
                {
                    st.webhooks.job_ended(&j);
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
        st.job_changed(&j.id, j.worker_id.as_deref());
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
    let body = serde_json::to_string(&PushedJob { id: job.id.clone(), input }).unwrap_or_default();
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
        && job.webhook.is_some()
        && let Ok(Some(j)) = st.store.get_job(&job.endpoint_id, &job.id).await
    {
        st.webhooks.job_ended(&j);
    }
}
