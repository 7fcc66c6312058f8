//! `GET /v1/endpoints/{id}/logs`: search an endpoint's log (worker output and platform events),
//! or follow it live as server-sent events (`?follow=true`, resumable with `Last-Event-ID`).
use std::{collections::VecDeque, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Extension, Json,
    extract::{Path, Query, State},
    http::HeaderMap,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use serde::Deserialize;
use sluice_api::{LogLineView, LogList};
use sluice_core::{
    EndpointId,
    logs::{STREAMS, like_pattern, matches, parse_when},
    rfc3339,
};
use sluice_store::{LogLine, LogQuery, Store};
use tokio::sync::broadcast;

use super::{Caller, S, load};
use crate::{AppError, now};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only this worker's lines (platform events about it included).
    worker: Option<String>,
    /// `stdout`, `stderr` or `platform`.
    stream: Option<String>,
    /// From: RFC 3339, Unix ms, or an age like `10m`.
    since: Option<String>,
    /// Until (same forms).
    until: Option<String>,
    /// A substring to look for (case-insensitive); `*` matches anything.
    q: Option<String>,
    /// Lines to return (the newest that match), 1-5000, default 100.
    limit: Option<u32>,
    /// Stream new lines as server-sent events.
    follow: Option<bool>,
}

fn view(l: &LogLine) -> LogLineView {
    LogLineView {
        id: l.id,
        time: rfc3339(l.ts),
        ts_ms: l.ts.0,
        worker: l.worker_id.clone(),
        stream: l.stream.clone(),
        line: l.line.clone(),
    }
}

fn bad(field: &str, message: String) -> AppError {
    AppError::InvalidField { field: Some(field.into()), message }
}

/// The query as the store reads it, and the substring for live filtering.
fn to_query(q: &LogsQuery) -> Result<(LogQuery, Option<String>), AppError> {
    let t = now();
    let limit = q.limit.unwrap_or(100);
    if !(1..=5000).contains(&limit) {
        return Err(bad("limit", "must be between 1 and 5000".into()));
    }
    if let Some(s) = &q.stream
        && !STREAMS.contains(&s.as_str())
    {
        return Err(bad("stream", format!("must be one of {}", STREAMS.join(", "))));
    }
    if q.q.as_ref().is_some_and(|p| p.len() > 500) {
        return Err(bad("q", "at most 500 characters".into()));
    }
    let when = |field: &str, v: &Option<String>| v.as_deref().map(|s| parse_when(field, s, t)).transpose();
    let since = when("since", &q.since).map_err(|e| bad("since", e.message))?;
    let until = when("until", &q.until).map_err(|e| bad("until", e.message))?;
    Ok((
        LogQuery {
            worker: q.worker.clone(),
            stream: q.stream.clone(),
            since,
            until,
            like: q.q.as_deref().filter(|p| !p.is_empty()).map(like_pattern),
            after_id: None,
            limit,
        },
        q.q.clone().filter(|p| !p.is_empty()),
    ))
}

#[utoipa::path(get, path = "/v1/endpoints/{id}/logs", tag = "endpoints", params(("id" = String, Path), LogsQuery),
    responses((status = 200, body = LogList, description = "JSON, or text/event-stream with follow=true"),
              (status = 400, body = sluice_api::ErrorBody), (status = 404, body = sluice_api::ErrorBody)))]
pub async fn endpoint_logs(
    State(st): S,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    let q = super::extract::query(query)?;
    let e = load(&st, &caller, &id).await?;
    let (lq, pattern) = to_query(&q)?;
    if !q.follow.unwrap_or(false) {
        let lines = st.store.query_logs(&e.id, &lq).await?;
        return Ok(
            Json(LogList { lines: lines.iter().map(view).collect(), dropped: st.logs.dropped(&e.id) }).into_response()
        );
    }
    // Subscribe before reading the past, so no line falls between the two.
    let rx = st.logs.subscribe();
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<i64>().ok());
    let past = match resume {
        Some(after) => {
            st.store.query_logs(&e.id, &LogQuery { after_id: Some(after), limit: 5000, ..lq.clone() }).await?
        }
        None => st.store.query_logs(&e.id, &lq).await?,
    };
    let last = past.last().map(|l| l.id).or(resume).unwrap_or(0);
    let follow =
        Follow { store: st.store.clone(), endpoint: e.id.clone(), query: lq, pattern, pending: past.into(), last, rx };
    let stream = futures_util::stream::unfold(follow, |mut f| async move {
        let line = f.next().await?;
        let event = Event::default()
            .id(line.id.to_string())
            .event("log")
            .data(serde_json::to_string(&view(&line)).unwrap_or_default());
        Some((Ok::<_, Infallible>(event), f))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

/// A follower: lines read from the store first, then the live ones that match.
struct Follow {
    store: Store,
    endpoint: EndpointId,
    query: LogQuery,
    pattern: Option<String>,
    pending: VecDeque<LogLine>,
    last: i64,
    rx: broadcast::Receiver<Arc<LogLine>>,
}

impl Follow {
    fn wanted(&self, l: &LogLine) -> bool {
        let q = &self.query;
        l.endpoint_id == self.endpoint
            && l.id > self.last
            && q.worker.as_ref().is_none_or(|w| l.worker_id.as_ref() == Some(w))
            && q.stream.as_ref().is_none_or(|s| &l.stream == s)
            && q.until.is_none_or(|u| l.ts <= u)
            && self.pattern.as_ref().is_none_or(|p| matches(p, &l.line))
    }

    async fn next(&mut self) -> Option<LogLine> {
        loop {
            if let Some(l) = self.pending.pop_front() {
                self.last = self.last.max(l.id);
                return Some(l);
            }
            match self.rx.recv().await {
                Ok(l) if self.wanted(&l) => {
                    self.last = l.id;
                    return Some((*l).clone());
                }
                Ok(_) => {}
                // Fell behind the live feed: catch up from the store.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let q = LogQuery { after_id: Some(self.last), limit: 5000, ..self.query.clone() };
                    self.pending = self.store.query_logs(&self.endpoint, &q).await.ok()?.into();
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
