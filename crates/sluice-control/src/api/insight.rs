//! What the autoscaler did and would have done (issue 20): its decisions (`events`), the
//! recorded traffic as a trace (`trace`), that traffic replayed through every policy beside
//! what really happened (`replay`), every decision run again (`audit`), and the shadow
//! policies' worker counts (`shadow`).

use axum::{
    Extension, Json,
    extract::{Path, Query},
    http::header::CONTENT_TYPE,
    response::{IntoResponse, Response},
};
use sluice_api::{
    AuditMismatch, AuditView, ErrorBody, ReplayView, ScalingEventList, ScalingEventView, ShadowLine, ShadowView,
    TrafficView,
};
use sluice_core::{
    Millis,
    autoscale::{
        DecisionInputs, Preset,
        audit::{Replay, reproduce},
        sim::{Trace, simulate},
        tune::simulate_slo,
    },
    logs::parse_when,
    recording::{self, Actual},
    rfc3339,
};
use sluice_store::{EVENT_DECISION, EndpointRecord};

use super::{Caller, S, extract, load};
use crate::{AppError, AppState, insight, now};

fn bad(field: &str, message: impl Into<String>) -> AppError {
    AppError::InvalidField { field: Some(field.into()), message: message.into() }
}

/// The longest window a trace, replay, audit or shadow view covers.
const MAX_WINDOW_MS: u64 = 31 * 86_400_000;
/// The slo policy re-tunes itself all along a replay: a day of it at most.
const MAX_SLO_REPLAY_MS: u64 = 86_400_000;
/// Replays running at once (each on a blocking thread).
static REPLAYS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
/// Trace exports and traffic views reading recorded requests at once (a window may hold
/// millions, each read parsed in memory): the others wait their turn.
static READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct WindowQuery {
    /// Start: `2026-11-24T10:00:00Z`, Unix ms, or an age (`90m`, `24h`, `7d`); default 24h.
    since: Option<String>,
    /// End (default now).
    until: Option<String>,
    /// `trace`: `requests` (default, the canonical trace CSV), `starts` (`cold_start_s`) or
    /// `wakes` (`wake_s`). Ignored elsewhere.
    kind: Option<String>,
    /// `replay`: policies, comma-separated, or `all` (default; `slo` too when the endpoint has
    /// an SLO target).
    policy: Option<String>,
    /// `replay`: the SLO policy's target for this replay (default the endpoint's).
    slo_p99_secs: Option<f64>,
    /// `traffic`: how many equal slices of the window (1-1000, default 60).
    buckets: Option<usize>,
}

fn window(q: &WindowQuery) -> Result<(Millis, Millis), AppError> {
    let t = now();
    let when = |field: &str, v: &Option<String>, default: Millis| match v {
        None => Ok(default),
        Some(s) => parse_when(field, s, t).map_err(|e| bad(field, e.message)),
    };
    let since = when("since", &q.since, Millis(t.0.saturating_sub(86_400_000)))?;
    let until = when("until", &q.until, t)?;
    for (field, v) in [("since", since), ("until", until)] {
        if v.0 > t.0.saturating_add(86_400_000) {
            return Err(bad(field, "is more than a day ahead"));
        }
    }
    if until <= since {
        return Err(bad("until", "must be after since"));
    }
    if until.0 - since.0 > MAX_WINDOW_MS {
        return Err(bad("since", "the window is at most 31 days"));
    }
    Ok((since, until))
}

async fn endpoint_and_window(
    st: &AppState,
    caller: &Caller,
    id: &str,
    query: Result<Query<WindowQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<(EndpointRecord, WindowQuery, Millis, Millis), AppError> {
    let q = extract::query(query)?;
    let e = load(st, caller, id).await?;
    let (since, until) = window(&q)?;
    Ok((e, q, since, until))
}

#[utoipa::path(get, path = "/v1/endpoints/{id}/trace", tag = "endpoints", params(("id" = String, Path), WindowQuery),
    responses((status = 200, content_type = "text/csv", description = "arrival_s,service_s (or cold_start_s / wake_s)"),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn trace(
    axum::extract::State(st): S,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<WindowQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    let (e, q, since, until) = endpoint_and_window(&st, &caller, &id, query).await?;
    let _turn = READS.acquire().await.map_err(|e| AppError::Internal(format!("trace: {e}").into()))?;
    let rec = insight::load(&st.store, &e.id, since, until).await?;
    let csv = match q.kind.as_deref().unwrap_or("requests") {
        "requests" => recording::trace_csv(&rec.requests),
        "starts" => recording::starts_csv(&rec.starts, false),
        "wakes" => recording::starts_csv(&rec.starts, true),
        _ => return Err(bad("kind", "must be requests, starts or wakes")),
    };
    Ok(([(CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response())
}

#[utoipa::path(get, path = "/v1/endpoints/{id}/traffic", tag = "endpoints", params(("id" = String, Path), WindowQuery),
    responses((status = 200, body = TrafficView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn traffic(
    axum::extract::State(st): S,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<WindowQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TrafficView>, AppError> {
    let (e, q, since, until) = endpoint_and_window(&st, &caller, &id, query).await?;
    let n = q.buckets.unwrap_or(60);
    if !(1..=1000).contains(&n) {
        return Err(bad("buckets", "must be between 1 and 1000"));
    }
    let _turn = READS.acquire().await.map_err(|e| AppError::Internal(format!("traffic: {e}").into()))?;
    let rec = insight::load(&st.store, &e.id, since, until).await?;
    let buckets = recording::buckets(&rec.requests, &rec.starts, &rec.spans, since.0, until.0, n);
    Ok(Json(TrafficView { since: rfc3339(since), until: rfc3339(until), buckets }))
}

#[utoipa::path(get, path = "/v1/endpoints/{id}/replay", tag = "endpoints", params(("id" = String, Path), WindowQuery),
    responses((status = 200, body = ReplayView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn replay(
    axum::extract::State(st): S,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<WindowQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ReplayView>, AppError> {
    let (e, q, since, until) = endpoint_and_window(&st, &caller, &id, query).await?;
    let slo = match q.slo_p99_secs {
        Some(s) if !(s.is_finite() && s > 0.0 && s <= 3600.0) => {
            return Err(bad("slo_p99_secs", "must be a number of seconds above 0 and at most 3600"));
        }
        s => s.or(e.spec.insight.slo_p99_secs),
    };
    let presets: Vec<Preset> = match q.policy.as_deref().unwrap_or("all") {
        "all" => Preset::ALL.into_iter().chain(slo.map(|_| Preset::Slo)).collect(),
        list => list
            .split(',')
            .map(|n| {
                Preset::parse(n.trim())
                    .ok_or_else(|| bad("policy", format!("unknown policy; known: all, {}", Preset::names())))
            })
            .collect::<Result<_, _>>()?,
    };
    if presets.contains(&Preset::Slo) && slo.is_none() {
        return Err(bad("slo_p99_secs", "the slo policy needs a target: slo_p99_secs"));
    }
    if presets.contains(&Preset::Slo) && until.0 - since.0 > MAX_SLO_REPLAY_MS {
        return Err(bad("since", "a replay of the slo policy covers at most 24 hours"));
    }
    // Replays are CPU work: a few at a time, the others wait their turn.
    let _turn = REPLAYS.acquire().await.map_err(|e| AppError::Internal(format!("replay: {e}").into()))?;
    let rec = insight::load(&st.store, &e.id, since, until).await?;
    let trace = recording::to_trace(&rec.requests);
    if trace.is_empty() {
        return Err(bad("since", "no recorded requests in this window"));
    }
    let requests = trace.len() as u64;
    let cold_starts = rec.starts.iter().filter(|s| !s.wake).count() as u64;
    let spec = e.spec.clone();
    let starts = rec.starts.clone();
    let trace = Trace { endpoints: vec![(String::new(), trace)] };
    let mut results = tokio::task::spawn_blocking(move || {
        presets
            .into_iter()
            .map(|p| {
                let cfg = insight::sim_config(&spec, p, &starts);
                if p == Preset::Slo {
                    simulate_slo(&cfg, &trace, slo.unwrap_or(f64::MAX))
                } else {
                    simulate(&cfg, &trace)
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| AppError::Internal(format!("replay failed: {e}").into()))?;
    let events = st.store.scaling_events_between(&e.id, since, until, false).await?;
    let price = sluice_core::catalog::per_second(&e.spec.workers.gpu_type).unwrap_or(0.0);
    results.push(
        Actual {
            records: &rec.requests,
            starts: &rec.starts,
            spans: &rec.spans,
            since: since.0,
            until: until.0,
            scale_events: events.iter().filter(|x| x.kind == EVENT_DECISION).count() as u64,
            peak_workers: events.iter().filter(|x| x.kind == EVENT_DECISION).map(|x| x.to).max().unwrap_or(0),
            usd_per_gpu_second: price,
            usd_per_sleeping_gpu_second: price * sluice_core::billing::DEFAULT_SLEEPING_SHARE,
            concurrency_per_worker: e.spec.limits.concurrency_per_worker,
        }
        .result(),
    );
    Ok(Json(ReplayView { since: rfc3339(since), until: rfc3339(until), requests, cold_starts, results }))
}

#[utoipa::path(get, path = "/v1/endpoints/{id}/audit", tag = "endpoints", params(("id" = String, Path), WindowQuery),
    responses((status = 200, body = AuditView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn audit(
    axum::extract::State(st): S,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<WindowQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditView>, AppError> {
    let (e, _, since, until) = endpoint_and_window(&st, &caller, &id, query).await?;
    let events = st.store.scaling_events_between(&e.id, since, until, true).await?;
    let mut view = AuditView {
        since: rfc3339(since),
        until: rfc3339(until),
        decisions: 0,
        reproduced: 0,
        unchecked: 0,
        mismatches: vec![],
    };
    for ev in events.iter().filter(|x| x.kind == EVENT_DECISION) {
        view.decisions += 1;
        if ev.replay.is_empty() {
            view.unchecked += 1;
            continue;
        }
        let outcome =
            match (serde_json::from_str::<Replay>(&ev.replay), serde_json::from_str::<DecisionInputs>(&ev.inputs)) {
                (Ok(r), Ok(i)) => reproduce(&r, &i, ev.to, &ev.reason),
                (Err(x), _) | (_, Err(x)) => Err(format!("unreadable record: {x}")),
            };
        match outcome {
            Ok(()) => view.reproduced += 1,
            Err(detail) => view.mismatches.push(AuditMismatch { event_id: ev.id, at: rfc3339(ev.at), detail }),
        }
    }
    Ok(Json(view))
}

/// Worker-seconds of a step line over `[since, until)`.
fn worker_seconds(points: &[(u64, u32)], since: u64, until: u64) -> f64 {
    let mut total = 0u64;
    for (i, &(at, n)) in points.iter().enumerate() {
        let from = at.max(since);
        let to = points.get(i + 1).map_or(until, |p| p.0).min(until);
        total += to.saturating_sub(from) * u64::from(n);
    }
    total as f64 / 1000.0
}

#[utoipa::path(get, path = "/v1/endpoints/{id}/shadow", tag = "endpoints", params(("id" = String, Path), WindowQuery),
    responses((status = 200, body = ShadowView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn shadow(
    axum::extract::State(st): S,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<WindowQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ShadowView>, AppError> {
    let (e, _, since, until) = endpoint_and_window(&st, &caller, &id, query).await?;
    let gpus = f64::from(e.spec.workers.gpus_per_worker);
    // What the autoscaler set: the count at `since` (the change before it), then its changes.
    let events: Vec<_> = st
        .store
        .scaling_events_between(&e.id, since, until, false)
        .await?
        .into_iter()
        .filter(|x| x.kind == EVENT_DECISION)
        .collect();
    let start = match st.store.last_decision_before(&e.id, since).await? {
        Some(x) => x.to,
        None => events.first().map_or(0, |x| x.from),
    };
    let mut actual = vec![(since.0, start)];
    actual.extend(events.iter().map(|x| (x.at.0, x.to)));
    let spans = insight::spans(&st.store, &e.id, since, until).await?;
    let (awake, _) = recording::gpu_ms(&spans, since.0, until.0);
    let mut lines = vec![ShadowLine { policy: "actual".into(), points: actual, gpu_seconds: awake as f64 / 1000.0 }];
    for p in st.store.shadow_points(&e.id, since, until).await? {
        let point = (p.at.0.max(since.0), p.count);
        match lines.iter_mut().find(|l| l.policy == p.policy) {
            Some(l) => l.points.push(point),
            None => lines.push(ShadowLine { policy: p.policy, points: vec![point], gpu_seconds: 0.0 }),
        }
    }
    for l in lines.iter_mut().skip(1) {
        l.gpu_seconds = worker_seconds(&l.points, since.0, until.0) * gpus;
    }
    Ok(Json(ShadowView { since: rfc3339(since), until: rfc3339(until), lines }))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    /// Page size, 1-1000 (default 100).
    limit: Option<u32>,
    /// Only events with an id below this (the previous page's `next_before`).
    before: Option<i64>,
}

#[utoipa::path(get, path = "/v1/endpoints/{id}/events", tag = "endpoints", params(("id" = String, Path), EventsQuery),
    responses((status = 200, body = ScalingEventList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn list_events(
    axum::extract::State(st): S,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<axum::extract::Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ScalingEventList>, AppError> {
    let q = extract::query(query)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::InvalidField {
            field: Some("limit".into()),
            message: "must be between 1 and 1000".into(),
        });
    }
    let e = load(&st, &caller, &id).await?;
    let evs = st.store.list_scaling_events(&e.id, q.before, limit).await?;
    let next_before = (evs.len() as u32 == limit).then(|| evs.last().map(|x| x.id)).flatten();
    Ok(Json(ScalingEventList {
        events: evs
            .into_iter()
            .map(|x| ScalingEventView {
                id: x.id,
                at: rfc3339(x.at),
                from: x.from,
                to: x.to,
                reason: x.reason,
                inputs: serde_json::from_str(&x.inputs).unwrap_or(serde_json::Value::Null),
                kind: x.kind,
            })
            .collect(),
        next_before,
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn worker_seconds_of_a_step_line() {
        // (points, since, until) → worker-seconds
        type Case<'a> = (&'a [(u64, u32)], u64, u64, f64);
        let cases: [Case; 4] = [
            (&[], 0, 10_000, 0.0),
            (&[(0, 2)], 0, 10_000, 20.0),
            (&[(0, 1), (4_000, 3), (6_000, 0)], 0, 10_000, 4.0 + 6.0),
            (&[(0, 1), (4_000, 3)], 5_000, 7_000, 6.0),
        ];
        for (points, since, until, want) in cases {
            assert_eq!(super::worker_seconds(points, since, until), want, "{points:?}");
        }
    }
}
