//! The request path: find the endpoint, pick (or wait for) a ready worker, forward, stream the
//! answer back. Reads only the in-memory table; never the store or the runtime.
use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
    header::{self, HOST},
    uri::PathAndQuery,
};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sluice_core::{
    EndpointStatus,
    keys::{self, label_admits},
    recording::{Outcome, RequestRecord},
    routing::{endpoint_from_host, endpoint_from_path, pick},
};
use tokio::time::Instant;

use crate::{
    Inner, UpstreamClient,
    affinity::{self, Affinity},
    body::{BodySlot, BoxBody, ClientBodyError, DeadlineBody, empty},
    error::{Error, caused_by},
    host::{host_is, host_of, request_host},
    now_ms,
    table::{EndpointEntry, EndpointStats, WorkerEntry},
};

/// A request holding one of a worker's concurrency slots (reserved by `pick_worker`); counts as
/// in flight until dropped, then hands the slot to the longest waiter.
pub struct InFlight {
    stats: Arc<EndpointStats>,
    worker: Arc<WorkerEntry>,
    /// The request's record, once the worker answered: completed (service time, bytes) and
    /// kept when the slot frees.
    rec: Option<RequestRecord>,
    /// When the request went to the worker (the slot's start).
    sent: Instant,
    bytes_out: u64,
}

impl InFlight {
    /// Takes over a slot already reserved on `worker`.
    fn new(stats: Arc<EndpointStats>, worker: Arc<WorkerEntry>) -> Self {
        stats.in_flight.fetch_add(1, Relaxed);
        InFlight { stats, worker, rec: None, sent: Instant::now(), bytes_out: 0 }
    }
}

impl crate::body::BodyGuard for InFlight {
    fn sent(&mut self, bytes: u64) {
        self.bytes_out += bytes;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(mut r) = self.rec.take() {
            r.service_ms = ms(self.sent.elapsed());
            r.bytes_out = self.bytes_out;
            self.stats.records.push(r);
        }
        self.stats.in_flight.fetch_sub(1, Relaxed);
        self.worker.outstanding.fetch_sub(1, Relaxed);
        if self.stats.waiting.load(Relaxed) > 0 {
            self.stats.slot_freed.notify_one();
        }
    }
}

/// Counts a request as waiting for a worker until dropped.
struct Waiting {
    stats: Arc<EndpointStats>,
    seq: u64,
}

impl Waiting {
    fn new(stats: Arc<EndpointStats>) -> Self {
        let seq = stats.waiter_seq.fetch_add(1, Relaxed);
        stats.waiters.lock().unwrap().insert(seq, now_ms());
        stats.waiting.fetch_add(1, Relaxed);
        Waiting { stats, seq }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.stats.waiting.fetch_sub(1, Relaxed);
        self.stats.waiters.lock().unwrap().remove(&self.seq);
    }
}

/// The client connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub remote: SocketAddr,
    /// Over TLS that this gateway terminated.
    pub https: bool,
}

pub async fn handle(gw: Arc<Inner>, client: UpstreamClient, req: Request<Incoming>, conn: Conn) -> Response<BoxBody> {
    let mut resp = route(&gw, &client, req, conn).await;
    if conn.https
        && let Some(hsts) = gw.tls.as_ref().and_then(|t| t.hsts.clone())
    {
        resp.headers_mut().insert(http::header::STRICT_TRANSPORT_SECURITY, hsts);
    }
    resp
}

/// `/v2/` goes to the queue API; the API's host (but for path-form endpoint URLs, `/e/…`) to
/// the API; the rest to workers.
async fn route(gw: &Arc<Inner>, client: &UpstreamClient, req: Request<Incoming>, conn: Conn) -> Response<BoxBody> {
    let path = req.uri().path();
    if !path.starts_with("/v2/")
        && !path.starts_with("/e/")
        && let Some(api) = gw.api.load_full()
        && request_host(&req).is_some_and(|h| host_is(h, &api.0))
    {
        return (api.1)(req).await;
    }
    if req.uri().path().starts_with("/v2/")
        && let Some(side) = gw.side.load_full()
    {
        return side(req).await;
    }
    let arrived = Instant::now();
    let mut seen = Seen { arrived: Some(arrived), ..Seen::default() };
    if let Some(path) = crate::openai::path_of(request_host(&req), req.uri().path(), &gw.domain) {
        let path = path.to_owned();
        let resp = match crate::openai::handle(gw, req, &path).await {
            crate::openai::Front::Answer(resp) => resp,
            crate::openai::Front::Forward { id, path_and_query, parts, body } => {
                let host = host_of(&parts.headers, &parts.uri).map(str::to_owned);
                let target = Target { id, rewritten: Some(path_and_query), prefix: None, host, authorized: true };
                match forward(gw, client, target, parts, ReqBody::Whole(body), None, conn, &mut seen).await {
                    Ok(resp) => resp,
                    Err(e) => {
                        if let Some(s) = &seen.stats {
                            s.metrics.errors[e.fault() as usize].fetch_add(1, Relaxed);
                        }
                        seen.record_error(&e);
                        crate::openai::from_gateway(e)
                    }
                }
            }
        };
        if let Some(s) = seen.stats {
            s.metrics.record(resp.status().as_u16(), arrived.elapsed(), seen.upstream);
        }
        return resp;
    }
    let resp = match proxy(gw, client, req, conn, &mut seen).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(error = %e, fault = ?e.fault(), "gateway error");
            if let Some(s) = &seen.stats {
                s.metrics.errors[e.fault() as usize].fetch_add(1, Relaxed);
                match e {
                    Error::RateLimited { .. } => s.metrics.rate_limited.fetch_add(1, Relaxed),
                    Error::ConcurrencyLimit { .. } => s.metrics.concurrency_limited.fetch_add(1, Relaxed),
                    _ => 0,
                };
            }
            seen.record_error(&e);
            e.into_response()
        }
    };
    if let Some(s) = seen.stats {
        s.metrics.record(resp.status().as_u16(), arrived.elapsed(), seen.upstream);
    }
    resp
}

/// What the request path learned, for the metrics: the endpoint, and how long the worker took
/// to send the response head.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) stats: Option<Arc<EndpointStats>>,
    pub(crate) upstream: Option<Duration>,
    /// When the request arrived (time to first token counts from here).
    pub(crate) arrived: Option<Instant>,
    /// The record of an admitted request of a recorded endpoint, until a worker's answer takes
    /// it over (else the error that ended it completes it).
    pub(crate) record: Option<RequestRecord>,
    /// When it was sent to a worker (an error after that is the worker's).
    pub(crate) sent: Option<Instant>,
    /// Since when it has been waiting for a worker, and whether none was ready (a start).
    pub(crate) waiting: Option<(Instant, bool)>,
}

fn ms(d: Duration) -> u32 {
    d.as_millis().min(u128::from(u32::MAX)) as u32
}

impl Seen {
    /// Keeps the record of a request that ended in a gateway error: the queue refused it, no
    /// worker came in time, the rate limit, or a worker that failed. Errors before admission
    /// (no key, unknown endpoint) and the client's own (a broken body) are not recorded.
    pub(crate) fn record_error(&mut self, e: &Error) {
        let (Some(stats), Some(mut r)) = (&self.stats, self.record.take()) else { return };
        r.outcome = match e {
            Error::RateLimited { .. } => Outcome::RateLimited,
            Error::ConcurrencyLimit { .. } => Outcome::QueueFull,
            Error::NoWorker { .. } => Outcome::QueueTimeout,
            Error::ExecutionTimeout(_) if self.sent.is_none() => Outcome::QueueTimeout,
            Error::ExecutionTimeout(_) | Error::WorkerUnreachable(_) | Error::WorkerFailed(_) => Outcome::WorkerFailed,
            _ => return,
        };
        r.status = e.status().as_u16();
        r.service_ms = self.sent.map_or(0, |s| ms(s.elapsed()));
        // Refused while waiting: that wait counts (queue, or start when none was ready).
        if let Some((since, start)) = self.waiting {
            let waited = ms(since.elapsed());
            if start {
                r.start_ms = r.start_ms.saturating_add(waited);
            } else {
                r.queue_ms = r.queue_ms.saturating_add(waited);
            }
        }
        stats.records.push(r);
    }
}

/// Picks a worker with a free slot and reserves the slot (compare-and-swap, so concurrent
/// requests never exceed the cap); an affine request goes where its session or prefix says.
fn pick_worker(ep: &EndpointEntry, exclude: Option<&WorkerEntry>, aff: &Affinity) -> Option<Arc<WorkerEntry>> {
    let n = ep.workers.len();
    let cap = u64::from(ep.route.concurrency_per_worker.max(1));
    let excl = exclude.and_then(|x| ep.workers.iter().position(|w| w.id == x.id));
    for _ in 0..4 {
        let i = match aff {
            Affinity::None if ep.route.load_balancing == sluice_core::LoadBalancing::LeastEngineLoad => {
                let counter = ep.stats.cursor.fetch_add(1, Relaxed);
                let out = |i: usize| ep.workers[i].outstanding.load(Relaxed);
                let engine = |i: usize| ep.engine_load.get(i).copied().unwrap_or(0);
                sluice_core::routing::pick_by_load(n, |i| engine(i) + out(i), out, counter, excl, cap)?
            }
            Affinity::None => {
                let counter = ep.stats.cursor.fetch_add(1, Relaxed);
                pick(ep.route.load_balancing, n, |i| ep.workers[i].outstanding.load(Relaxed), counter, excl, cap)?
            }
            _ => affinity::choose(ep, aff, excl, cap)?,
        };
        let w = &ep.workers[i];
        if w.outstanding.fetch_update(Relaxed, Relaxed, |o| (o < cap).then_some(o + 1)).is_ok() {
            affinity::taken(aff, w);
            return Some(w.clone());
        }
    }
    None
}

/// Why a request could not get a worker.
fn refused(ep: &EndpointEntry, why: &'static str, waited_ms: u64) -> Error {
    let id = ep.route.id.to_string();
    if ep.route.at_max {
        Error::ConcurrencyLimit {
            endpoint: id,
            why,
            limit: u64::from(ep.route.max_workers) * u64::from(ep.route.concurrency_per_worker),
            max_workers: ep.route.max_workers,
            per_worker: ep.route.concurrency_per_worker,
        }
    } else {
        Error::NoWorker { endpoint: id, why, waited_ms }
    }
}

/// A worker slot for the endpoint. Without a free slot (no ready worker, or all at their cap),
/// the request waits in the endpoint's bounded queue, in arrival order, up to the queue timeout,
/// and the control plane is asked for capacity at once.
async fn acquire(
    gw: &Inner,
    ep: Arc<EndpointEntry>,
    exclude: Option<&WorkerEntry>,
    aff: &Affinity,
) -> Result<(Arc<EndpointEntry>, Arc<WorkerEntry>), Error> {
    // The caller has tried the fast path (a free slot with nobody waiting).
    if ep.stats.waiting.load(Relaxed) >= u64::from(ep.route.queue_capacity) {
        return Err(refused(&ep, "the queue is full", 0));
    }
    let _waiting = Waiting::new(ep.stats.clone());
    (gw.on_demand)(&ep.route.id);
    let started = Instant::now();
    let deadline = started + Duration::from_millis(ep.route.queue_timeout_ms);
    let mut rx = gw.changed.subscribe();
    let id = ep.route.id.to_string();
    let stats = ep.stats.clone();
    drop(ep);
    let mut cur: Arc<EndpointEntry>;
    loop {
        let freed = stats.slot_freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        {
            let table = gw.routes.load();
            let Some(now) = table.endpoints.get(&id) else { return Err(Error::EndpointNotFound(id)) };
            match now.route.status {
                EndpointStatus::Running => {}
                EndpointStatus::Stopped => return Err(Error::EndpointStopped(id)),
                EndpointStatus::StoppedNoCredit => return Err(Error::NoCredit(id)),
            }
            cur = now.clone();
        }
        // Only an excluded lone worker: use it anyway rather than fail (a fresh connection may
        // succeed where a pooled one did not).
        if let Some(w) = pick_worker(&cur, exclude, aff).or_else(|| exclude.and_then(|_| pick_worker(&cur, None, aff)))
        {
            return Ok((cur, w));
        }
        tokio::select! {
            () = &mut freed => {}
            _ = rx.changed() => {}
            () = tokio::time::sleep_until(deadline) => {
                return Err(refused(&cur, "no worker slot freed in time", started.elapsed().as_millis() as u64));
            }
        }
    }
}

/// Headers that describe one hop's connection and must not be forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Removes hop-by-hop headers, including those the `Connection` header names. Allocates only
/// when a `Connection` header is present.
fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // Taken first: `Connection: upgrade` names the Upgrade header itself.
    let upgrade = if keep_upgrade { h.get(header::UPGRADE).cloned() } else { None };
    if h.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
    if let Some(u) = upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, u);
    }
}

fn wants_upgrade(h: &HeaderMap) -> bool {
    let conn_upgrade = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    conn_upgrade && h.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|u| !u.eq_ignore_ascii_case("h2c"))
}

fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// Adds the `X-Forwarded-*` headers. Over TLS that this gateway terminated, the protocol is
/// `https` whatever the client claimed; over plain HTTP a proxy in front may have said it.
fn append_forwarded(h: &mut HeaderMap, conn: Conn, host: Option<&str>, prefix: Option<&str>) {
    let ip = conn.remote.ip().to_string();
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert("x-forwarded-for", v);
    }
    if let Some(host) = host.and_then(|v| HeaderValue::from_str(v).ok()) {
        h.insert("x-forwarded-host", host);
    }
    if conn.https {
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    } else if !h.contains_key("x-forwarded-proto") {
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if let Some(p) = prefix.and_then(|p| HeaderValue::from_str(p).ok()) {
        h.insert("x-forwarded-prefix", p);
    }
}

async fn proxy(
    gw: &Inner,
    client: &UpstreamClient,
    mut req: Request<Incoming>,
    conn: Conn,
    seen: &mut Seen,
) -> Result<Response<BoxBody>, Error> {
    // 1. Which endpoint: host form first, then path form.
    let host: Option<String> = request_host(&req).map(str::to_owned);
    let (id, rewritten): (String, Option<PathAndQuery>) =
        match host.as_deref().and_then(|h| endpoint_from_host(h, &gw.domain)) {
            Some((id, _dc)) => (id.to_owned(), None),
            None => {
                let Some((id, rest)) = endpoint_from_path(req.uri().path()) else {
                    return Err(Error::NoEndpointInRequest { domain: gw.domain.clone() });
                };
                let pq = match req.uri().query() {
                    Some(q) => format!("{rest}?{q}"),
                    None => rest.to_owned(),
                };
                (id.to_owned(), Some(pq.parse().map_err(|_| Error::NoEndpointInRequest { domain: gw.domain.clone() })?))
            }
        };
    let upgrade = wants_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let prefix = rewritten.as_ref().map(|_| format!("/e/{id}"));
    let target = Target { id, rewritten, prefix, host, authorized: false };
    forward(gw, client, target, parts, ReqBody::Stream(body), upgrade, conn, seen).await
}

/// Where a request goes, once its endpoint is known.
pub(crate) struct Target {
    pub id: String,
    /// The path and query the worker gets, when not the request's own (path form).
    pub rewritten: Option<PathAndQuery>,
    /// `X-Forwarded-Prefix`.
    pub prefix: Option<String>,
    pub host: Option<String>,
    /// The caller's key was checked already (the OpenAI front door): no key check here, and
    /// the key is not forwarded.
    pub authorized: bool,
}

/// A request body: still coming from the client, or read whole already.
pub(crate) enum ReqBody {
    Stream(Incoming),
    Whole(bytes::Bytes),
}

/// Forwards a request to `target`'s endpoint: key, status and rate checks, a worker (or the
/// queue), one retry on another worker when it is safe, and the answer streamed back.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn forward(
    gw: &Inner,
    client: &UpstreamClient,
    target: Target,
    mut parts: http::request::Parts,
    body: ReqBody,
    downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
    conn: Conn,
    seen: &mut Seen,
) -> Result<Response<BoxBody>, Error> {
    let Target { id, rewritten, prefix, host, authorized } = target;
    let ep = {
        let table = gw.routes.load();
        let ep = table.endpoints.get(&id).cloned().ok_or_else(|| Error::EndpointNotFound(id.clone()))?;
        seen.stats = Some(ep.stats.clone());
        if authorized {
            parts.headers.remove(hyper::header::AUTHORIZATION);
        } else if !ep.route.public {
            // R3.5: a key of the owning account (or the admin's). No key or an unknown one: 401;
            // another account's key: 404, as if the endpoint did not exist. The key is ours and
            // is not forwarded to the worker.
            let key = parts
                .headers
                .remove(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok().and_then(keys::key_from_header).map(keys::digest_bytes));
            match key.and_then(|d| table.keys.get(&d)) {
                None => return Err(Error::Unauthorized(id)),
                Some(label) if !label_admits(label, &ep.route.account) => {
                    return Err(Error::EndpointNotFound(id));
                }
                Some(_) => {}
            }
        }
        ep
    };
    match ep.route.status {
        EndpointStatus::Running => {}
        EndpointStatus::Stopped => return Err(Error::EndpointStopped(id)),
        EndpointStatus::StoppedNoCredit => return Err(Error::NoCredit(id)),
    }
    // Admitted (its key and the endpoint's state are good): recorded from here on, a refusal
    // by the rate limit included.
    if ep.route.record {
        let bytes_in = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .or(match &body {
                ReqBody::Whole(b) => Some(b.len() as u64),
                ReqBody::Stream(_) => None,
            })
            .unwrap_or(0);
        seen.record = Some(RequestRecord {
            at: now_ms(),
            queue_ms: 0,
            start_ms: 0,
            woke: false,
            service_ms: 0,
            status: 0,
            outcome: Outcome::Served,
            bytes_in,
            bytes_out: 0,
        });
    }
    if let Some(rate) = ep.stats.rate.load().as_ref()
        && let Err(not_until) = rate.1.check()
    {
        use governor::clock::Clock as _;
        let wait = not_until.wait_time_from(governor::clock::MonotonicClock.now());
        return Err(Error::RateLimited {
            endpoint: id,
            rpm: rate.0,
            retry_after_secs: wait.as_secs_f64().ceil() as u64,
        });
    }
    ep.stats.requests_total.fetch_add(1, Relaxed);
    ep.stats.last_request_ms.store(now_ms(), Relaxed);
    let timeout_secs = ep.route.execution_timeout_ms / 1000;
    let deadline = Instant::now() + Duration::from_millis(ep.route.execution_timeout_ms);

    // 2. Prepare what is forwarded.
    let upgrade = downstream_upgrade.is_some();
    let pq = match rewritten {
        Some(pq) => pq,
        None => parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")),
    };
    strip_hop_by_hop(&mut parts.headers, upgrade);
    append_forwarded(&mut parts.headers, conn, host.as_deref(), prefix.as_deref());
    if !parts.headers.contains_key(HOST)
        && let Some(h) = host.as_deref().and_then(|h| HeaderValue::from_str(h).ok())
    {
        parts.headers.insert(HOST, h);
    }
    // The affinity choices look at a bounded start of the body first (then forward it whole).
    let (slot, aff) = match body {
        ReqBody::Stream(body) => affinity::prepare(&ep, &parts.headers, body).await?,
        ReqBody::Whole(bytes) => affinity::prepare_whole(&ep, &parts.headers, bytes),
    };

    // 3. Forward; one retry on another worker when it is safe (R3.8).
    let mut exclude: Option<Arc<WorkerEntry>> = None;
    // What the request waited for before a worker took it, for `x-sluice-wait`; and how long
    // in the queue and for a start or wake, for `Server-Timing`.
    let mut waited: Option<HeaderValue> = None;
    let (mut queue_wait, mut start_wait) = (Duration::ZERO, Duration::ZERO);
    let mut ep = ep;
    for attempt in 0..2 {
        // Fast path without a timer: a free slot, nobody waiting.
        let fast = if ep.stats.waiting.load(Relaxed) == 0 { pick_worker(&ep, exclude.as_deref(), &aff) } else { None };
        let (cur, worker) = match fast {
            Some(w) => (ep.clone(), w),
            None => {
                let (from, none_ready) = (Instant::now(), ep.workers.is_empty());
                seen.waiting = Some((from, none_ready));
                let (cur, w) = tokio::time::timeout_at(deadline, acquire(gw, ep.clone(), exclude.as_deref(), &aff))
                    .await
                    .map_err(|_| Error::ExecutionTimeout(timeout_secs))??;
                let took = from.elapsed();
                seen.waiting = None;
                let woke = woken(&cur, &w);
                waited = Some(wait_header(none_ready, woke, took));
                if none_ready {
                    start_wait += took;
                } else {
                    queue_wait += took;
                }
                if let Some(r) = seen.record.as_mut() {
                    (r.queue_ms, r.start_ms) = (ms(queue_wait), ms(start_wait));
                    r.woke |= none_ready && woke;
                }
                (cur, w)
            }
        };
        ep = cur;
        let uri = Uri::builder()
            .scheme("http")
            .authority(worker.authority.clone())
            .path_and_query(pq.clone())
            .build()
            .map_err(|e| Error::WorkerUnreachable(e.to_string()))?;
        let mut up = Request::new(match &slot {
            Some(s) => http_body_util::BodyExt::boxed_unsync(s.body()),
            None => empty(),
        });
        *up.method_mut() = parts.method.clone();
        *up.uri_mut() = uri;
        *up.version_mut() = Version::HTTP_11;
        *up.headers_mut() = parts.headers.clone();
        let mut guard = InFlight::new(ep.stats.clone(), worker.clone());
        let sent = guard.sent;
        seen.sent = Some(sent);
        let result = tokio::time::timeout_at(deadline, client.request(up)).await;
        let mut resp = match result {
            Err(_) => return Err(Error::ExecutionTimeout(timeout_secs)),
            Ok(Ok(resp)) => {
                seen.upstream = Some(sent.elapsed());
                resp
            }
            Ok(Err(e)) => {
                drop(guard);
                // The client's body broke: its fault. Answered 400 (if it is still there to
                // read it), never retried elsewhere, never counted against the worker.
                if let Some(body) = caused_by::<ClientBodyError>(&e) {
                    tracing::debug!(worker = %worker.id, error = %body, "the client's request body failed");
                    return Err(Error::ClientBody(body.0.to_string()));
                }
                // Resend only what never reached the worker, or an idempotent request without
                // a body; a body already (partly) sent cannot be sent again.
                let can_resend = slot.as_ref().is_none_or(BodySlot::untouched);
                let safe = can_resend && (e.is_connect() || (slot.is_none() && is_idempotent(&parts.method)));
                tracing::debug!(worker = %worker.id, error = %e, attempt, safe, "forward failed");
                if attempt == 0 && safe {
                    exclude = Some(worker);
                    seen.sent = None;
                    continue;
                }
                return Err(if e.is_connect() {
                    Error::WorkerUnreachable(e.to_string())
                } else {
                    Error::WorkerFailed(e.to_string())
                });
            }
        };
        guard.rec = seen.record.take().map(|r| RequestRecord { status: resp.status().as_u16(), ..r });
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(down) = downstream_upgrade
        {
            let up = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let _guard = guard;
                let (Ok(down), Ok(up)) = tokio::join!(down, up) else { return };
                let (mut d, mut u) = (TokioIo::new(down), TokioIo::new(up));
                let _ = tokio::time::timeout_at(deadline, tokio::io::copy_bidirectional(&mut d, &mut u)).await;
            });
            let (mut rparts, _) = resp.into_parts();
            strip_hop_by_hop(&mut rparts.headers, true);
            return Ok(Response::from_parts(rparts, empty()));
        }
        let (mut rparts, rbody) = resp.into_parts();
        strip_hop_by_hop(&mut rparts.headers, false);
        // The anatomy of the request: the gateway's queue, a start or wake it waited for, the
        // worker (to its response head), and the gateway's own part.
        let upstream = seen.upstream.unwrap_or_default();
        let total = seen.arrived.map_or(upstream, |a| a.elapsed());
        let phases = crate::metrics::Phases {
            queue: queue_wait,
            start: start_wait,
            upstream,
            gateway: total.saturating_sub(queue_wait + start_wait + upstream),
        };
        ep.stats.metrics.phases(&phases);
        if let Ok(v) = HeaderValue::from_str(&phases.header()) {
            rparts.headers.append(SERVER_TIMING, v);
        }
        let body = DeadlineBody::new(rbody, deadline, timeout_secs, guard);
        if let Some(w) = waited {
            rparts.headers.insert(WAIT_HEADER, w);
        }
        if crate::tokens::is_token_stream(pq.as_str(), &rparts.headers) {
            let arrived = seen.arrived.unwrap_or(sent);
            let metered = crate::tokens::Metered::new(BodyExt::boxed_unsync(body), ep.stats.clone(), arrived);
            return Ok(Response::from_parts(rparts, BodyExt::boxed_unsync(metered)));
        }
        return Ok(Response::from_parts(rparts, BodyExt::boxed_unsync(body)));
    }
    unreachable!("the loop returns on its second attempt")
}

/// The response header that says a request waited before a worker took it, and for what:
/// `cold-start; 48211ms` (no worker was ready; the one that took it was started for it),
/// `wake; 312ms` (a sleeping worker was woken for it) or `queue; 12ms` (every worker was busy).
pub const WAIT_HEADER: &str = "x-sluice-wait";

/// The W3C `Server-Timing` header (browsers' developer tools show it).
pub const SERVER_TIMING: &str = "server-timing";

fn wait_header(none_ready: bool, woken: bool, waited: Duration) -> HeaderValue {
    let what = match (none_ready, woken) {
        (true, true) => "wake",
        (true, false) => "cold-start",
        (false, _) => "queue",
    };
    HeaderValue::from_str(&format!("{what}; {}ms", waited.as_millis())).unwrap_or(HeaderValue::from_static("queue"))
}

/// Whether the worker's latest start was a wake, as the routing table says.
fn woken(ep: &EndpointEntry, w: &WorkerEntry) -> bool {
    ep.route.workers.iter().any(|r| r.id == w.id && r.woken)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_wait_header_names_what_was_waited_for() {
        let ms = Duration::from_millis;
        assert_eq!(wait_header(true, true, ms(312)), "wake; 312ms");
        assert_eq!(wait_header(true, false, ms(48_211)), "cold-start; 48211ms");
        assert_eq!(wait_header(false, true, ms(12)), "queue; 12ms");
    }

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("content-type", "text/plain"),
            ("authorization", "Bearer end-to-end"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "content-type"]);
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let mut h = headers(&[("connection", "Upgrade"), ("upgrade", "websocket"), ("sec-websocket-key", "k")]);
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "k");
        assert!(!wants_upgrade(&headers(&[("connection", "upgrade"), ("upgrade", "h2c")])));
        assert!(!wants_upgrade(&headers(&[("upgrade", "websocket")])));
        assert!(wants_upgrade(&headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")])));
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = headers(&[("x-forwarded-for", "10.0.0.1"), ("x-forwarded-proto", "https")]);
        let conn = |https| Conn { remote: "127.0.0.1:5000".parse().unwrap(), https };
        append_forwarded(&mut h, conn(false), Some("ep.local.localhost"), Some("/e/ep"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https", "a proxy in front said so");
        let mut spoofed = headers(&[("x-forwarded-proto", "gopher")]);
        append_forwarded(&mut spoofed, conn(true), None, None);
        assert_eq!(spoofed["x-forwarded-proto"], "https", "over our own TLS, whatever the client says");
        let mut plain = headers(&[]);
        append_forwarded(&mut plain, conn(false), None, None);
        assert_eq!(plain["x-forwarded-proto"], "http");
        assert!(host_is("API.example.com:443", "api.example.com") && host_is("api.example.com.", "api.example.com"));
        assert!(!host_is("api.example.com.evil", "api.example.com"));
        assert_eq!(h["x-forwarded-host"], "ep.local.localhost");
        assert_eq!(h["x-forwarded-prefix"], "/e/ep");
        assert!(is_idempotent(&Method::PUT) && !is_idempotent(&Method::POST));
    }
}
