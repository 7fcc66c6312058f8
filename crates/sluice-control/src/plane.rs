//! The data plane as separate gateway processes see it (R8.3, `sluice control` + `sluice
//! gateway`): the control plane publishes each routing table to a watch that gateways long-poll
//! (`GET /v1/internal/routes?after=VERSION`), and gateways report their traffic every second
//! (`POST /v1/internal/traffic`); the autoscaler sees the sum of the fresh reports.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Query, State},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use sluice_core::{
    metrics::{GatewayFigures, merge_figures},
    routing::{EndpointTraffic, RouteTable, merge_traffic},
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

type Report = (Instant, Vec<EndpointTraffic>, GatewayFigures);

/// A published routing table: its version, and its JSON, serialized once for every gateway.
struct Published {
    version: u64,
    json: bytes::Bytes,
}

pub struct RemotePlane {
    table: watch::Sender<Arc<Published>>,
    /// Per gateway: when it last reported, and what.
    reports: Mutex<HashMap<String, Report>>,
    wake: Arc<Notify>,
}

impl RemotePlane {
    /// `wake`: the reconciler's, woken when a gateway reports a request waiting for a worker.
    pub fn new(wake: Arc<Notify>) -> Arc<Self> {
        Arc::new(RemotePlane {
            table: watch::channel(Arc::new(Published {
                version: 0,
                json: serde_json::to_vec(&RouteTable::default()).unwrap_or_default().into(),
            }))
            .0,
            reports: Mutex::default(),
            wake,
        })
    }

    pub fn report(&self, gateway: String, traffic: Vec<EndpointTraffic>, figures: GatewayFigures) {
        let demand = traffic.iter().any(|t| t.waiting > 0);
        self.reports.lock().unwrap().insert(gateway, (Instant::now(), traffic, figures));
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
            .filter(|(_, (at, _, _))| at.elapsed() < REPORT_TTL)
            .map(|(g, _)| g.clone())
            .collect();
        v.sort();
        v
    }
}

impl DataPlane for RemotePlane {
    fn publish(&self, table: RouteTable) {
        match serde_json::to_vec(&table) {
            Ok(json) => {
                self.table.send_replace(Arc::new(Published { version: table.version, json: json.into() }));
            }
            Err(e) => tracing::error!(error = %e, "could not serialize the routing table"),
        }
    }

    fn traffic(&self) -> Vec<EndpointTraffic> {
        let mut reports = self.reports.lock().unwrap();
        reports.retain(|_, (at, _, _)| at.elapsed() < REPORT_TTL * 12);
        merge_traffic(reports.values().filter(|(at, _, _)| at.elapsed() < REPORT_TTL).map(|(_, t, _)| t.as_slice()))
    }

    /// The sum of the fresh reports' figures (a gateway that stopped reporting drops out).
    fn figures(&self) -> GatewayFigures {
        let reports = self.reports.lock().unwrap();
        let fresh: Vec<GatewayFigures> =
            reports.values().filter(|(at, _, _)| at.elapsed() < REPORT_TTL).map(|(_, _, f)| f.clone()).collect();
        merge_figures(&fresh)
    }
}

#[derive(Deserialize)]
struct RoutesQuery {
    after: Option<u64>,
}

/// A gateway's report.
#[derive(Debug, Serialize, Deserialize)]
pub struct TrafficReport {
    pub gateway: String,
    pub traffic: Vec<EndpointTraffic>,
    #[serde(default)]
    pub figures: GatewayFigures,
}

async fn routes(State(p): State<Arc<RemotePlane>>, Query(q): Query<RoutesQuery>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let after = q.after.unwrap_or(0);
    let mut rx = p.table.subscribe();
    let deadline = Instant::now() + ROUTES_HOLD;
    let send = |t: &Published| ([(http::header::CONTENT_TYPE, "application/json")], t.json.clone()).into_response();
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

async fn traffic(State(p): State<Arc<RemotePlane>>, Json(r): Json<TrafficReport>) -> Json<serde_json::Value> {
    p.report(r.gateway, r.traffic, r.figures);
    Json(serde_json::json!({}))
}

/// The internal routes gateways call (the caller adds authentication).
pub fn router(plane: Arc<RemotePlane>) -> Router {
    Router::new()
        .route("/v1/internal/routes", get(routes))
        .route("/v1/internal/traffic", post(traffic))
        .with_state(plane)
}
