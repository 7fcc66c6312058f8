//! The data plane as separate gateway processes see it (R8.3, `sluice control` + `sluice
//! gateway`): the control plane publishes each routing table to a watch that gateways long-poll
//! (`GET /v1/internal/routes?after=VERSION`), answered with the changes since that version while
//! the last [`HISTORY`] are kept (a one-worker change is a few hundred bytes, whatever the size
//! of the table), else the whole table; and gateways report their traffic every second
//! (`POST /v1/internal/traffic`); the autoscaler sees the sum of the fresh reports. The TLS
//! bundle (issued certificates, pending ACME challenges) is long-polled the same way
//! (`GET /v1/internal/tls?after=VERSION`), and each report says which bundle its gateway serves.
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Query, State},
    routing::{get, post},
};
use bytes::Bytes;
use serde::Deserialize;
use sluice_api::internal::{
    EndpointRecords, ReportTaken, RouteTable, RoutesDelta, RoutesUpdate, TlsBundle, TrafficReport,
};

/// Recorded requests held for the reconciler at most (it takes them every pass).
pub const MAX_HELD_RECORDS: usize = 800_000;
use sluice_core::{
    metrics::{GatewayFigures, merge_figures},
    routing::{EndpointTraffic, merge_traffic},
};
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

use crate::DataPlane;

/// A report older than this no longer counts (its gateway is gone or cut off).
pub const REPORT_TTL: Duration = Duration::from_secs(5);
/// How long a routes poll is held when nothing changes.
pub const ROUTES_HOLD: Duration = Duration::from_secs(25);

/// When, what it saw, its figures, and the TLS bundle version it serves.
type Report = (Instant, Vec<EndpointTraffic>, GatewayFigures, u64);

/// Deltas kept for gateways that are behind (one per published table).
pub const HISTORY: usize = 64;

/// A published routing table: its version, the table (its JSON serialized once, the first
/// time a gateway needs it whole), and the latest deltas, each serialized once: (from, to, JSON).
struct Published {
    version: u64,
    table: Arc<RouteTable>,
    full: OnceLock<Bytes>,
    history: VecDeque<(u64, u64, Bytes)>,
}

impl Published {
    /// The answer for a gateway at version `after`: the deltas from there when they are all
    /// kept, else the whole table.
    fn update_for(&self, after: u64) -> Bytes {
        if after != 0 && after == self.version {
            return Bytes::from_static(br#"{"deltas":[]}"#);
        }
        if after != 0
            && let Some(start) = self.history.iter().position(|(from, _, _)| *from == after)
        {
            let mut out = Vec::from(&br#"{"deltas":["#[..]);
            for (i, (_, _, json)) in self.history.iter().skip(start).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(json);
            }
            out.extend_from_slice(b"]}");
            return Bytes::from(out);
        }
        self.full
            .get_or_init(|| serde_json::to_vec(&RoutesUpdate::Full((*self.table).clone())).unwrap_or_default().into())
            .clone()
    }
}

pub struct RemotePlane {
    table: watch::Sender<Arc<Published>>,
    /// Per gateway: when it last reported, and what.
    reports: Mutex<HashMap<String, Report>>,
    wake: Arc<Notify>,
    tls: watch::Sender<Arc<TlsBundle>>,
    /// Recorded requests reported and not yet taken by the reconciler (bounded).
    records: Mutex<Vec<EndpointRecords>>,
}

impl RemotePlane {
    /// `wake`: the reconciler's, woken when a gateway reports a request waiting for a worker.
    pub fn new(wake: Arc<Notify>) -> Arc<Self> {
        Arc::new(RemotePlane {
            table: watch::channel(Arc::new(Published {
                version: 0,
                table: Arc::default(),
                full: OnceLock::new(),
                history: VecDeque::new(),
            }))
            .0,
            reports: Mutex::default(),
            wake,
            tls: watch::channel(Arc::new(TlsBundle::default())).0,
            records: Mutex::default(),
        })
    }

    /// Keeps a report's recorded requests for the reconciler (beyond the bound, they are
    /// counted as dropped: no reconciler has taken them).
    pub fn add_records(&self, records: Vec<EndpointRecords>) {
        let mut kept = self.records.lock().unwrap();
        let mut held: usize = kept.iter().map(|r| r.requests.len()).sum();
        for mut r in records {
            if held + r.requests.len() > MAX_HELD_RECORDS {
                r.dropped += r.requests.len() as u64;
                r.requests.clear();
            }
            held += r.requests.len();
            kept.push(r);
        }
    }

    pub fn report(&self, gateway: String, traffic: Vec<EndpointTraffic>, figures: GatewayFigures, tls_version: u64) {
        let demand = traffic.iter().any(|t| t.waiting > 0);
        self.reports.lock().unwrap().insert(gateway, (Instant::now(), traffic, figures, tls_version));
        if demand {
            self.wake.notify_one();
        }
    }

    /// The gateways that reported within [`REPORT_TTL`].
    pub fn gateways(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .reports
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, (at, ..))| at.elapsed() < REPORT_TTL)
            .map(|(g, _)| g.clone())
            .collect();
        v.sort();
        v
    }
}

impl DataPlane for RemotePlane {
    fn publish(&self, table: Arc<RouteTable>, delta: &RoutesDelta) {
        let mut history = self.table.borrow().history.clone();
        match serde_json::to_vec(delta) {
            Ok(json) => history.push_back((delta.from, delta.version, json.into())),
            Err(e) => {
                tracing::error!(error = %e, "could not serialize a routing delta; gateways get the whole table");
                history.clear();
            }
        }
        // A chain must be unbroken to be usable; only the latest deltas are kept.
        if history.len() >= 2 && history[history.len() - 2].1 != delta.from {
            history.drain(..history.len() - 1);
        }
        while history.len() > HISTORY {
            history.pop_front();
        }
        self.table.send_replace(Arc::new(Published { version: table.version, table, full: OnceLock::new(), history }));
    }

    fn take_records(&self) -> Vec<EndpointRecords> {
        std::mem::take(&mut *self.records.lock().unwrap())
    }

    fn traffic(&self) -> Vec<EndpointTraffic> {
        let mut reports = self.reports.lock().unwrap();
        reports.retain(|_, (at, ..)| at.elapsed() < REPORT_TTL * 12);
        merge_traffic(reports.values().filter(|(at, ..)| at.elapsed() < REPORT_TTL).map(|(_, t, ..)| t.as_slice()))
    }

    /// The sum of the fresh reports' figures (a gateway that stopped reporting drops out).
    fn figures(&self) -> GatewayFigures {
        let reports = self.reports.lock().unwrap();
        let fresh: Vec<GatewayFigures> =
            reports.values().filter(|(at, ..)| at.elapsed() < REPORT_TTL).map(|(_, _, f, _)| f.clone()).collect();
        merge_figures(&fresh)
    }

    fn publish_tls(&self, bundle: Arc<TlsBundle>) {
        self.tls.send_replace(bundle);
    }

    /// Every gateway that reports serves `version` or later (none reporting: nothing to wait for).
    fn tls_applied(&self, version: u64) -> bool {
        let reports = self.reports.lock().unwrap();
        reports.values().filter(|(at, ..)| at.elapsed() < REPORT_TTL).all(|(.., v)| *v >= version)
    }
}

#[derive(Deserialize)]
struct RoutesQuery {
    after: Option<u64>,
}

async fn routes(State(p): State<Arc<RemotePlane>>, Query(q): Query<RoutesQuery>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let after = q.after.unwrap_or(0);
    let mut rx = p.table.subscribe();
    let deadline = Instant::now() + ROUTES_HOLD;
    let send =
        |t: &Published| ([(http::header::CONTENT_TYPE, "application/json")], t.update_for(after)).into_response();
    loop {
        let t = rx.borrow_and_update().clone();
        // Any other version is news (versions grow across restarts: `routing::next_version`).
        if t.version != after || after == 0 {
            return send(&t);
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return send(&t) },
            () = tokio::time::sleep_until(deadline) => return send(&t),
        }
    }
}

/// The TLS bundle when its version is not `after`; else held until it changes (204 after the
/// hold: nothing new).
async fn tls(State(p): State<Arc<RemotePlane>>, Query(q): Query<RoutesQuery>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let after = q.after.unwrap_or(0);
    let mut rx = p.tls.subscribe();
    let deadline = Instant::now() + ROUTES_HOLD;
    loop {
        let b = rx.borrow_and_update().clone();
        if b.version != after {
            return Json((*b).clone()).into_response();
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return http::StatusCode::NO_CONTENT.into_response() },
            () = tokio::time::sleep_until(deadline) => return http::StatusCode::NO_CONTENT.into_response(),
        }
    }
}

async fn traffic(State(p): State<Arc<RemotePlane>>, Json(r): Json<TrafficReport>) -> Json<ReportTaken> {
    p.add_records(r.records);
    p.report(r.gateway, r.traffic, r.figures, r.tls_version);
    Json(ReportTaken {})
}

/// The internal routes gateways call (the caller adds authentication).
pub fn router(plane: Arc<RemotePlane>) -> Router {
    Router::new()
        .route("/v1/internal/routes", get(routes))
        // A report carries up to 20,000 recorded requests (about 1 MB); room for a few times that.
        .route("/v1/internal/traffic", post(traffic).layer(axum::extract::DefaultBodyLimit::max(16 << 20)))
        .route("/v1/internal/tls", get(tls))
        .with_state(plane)
}
