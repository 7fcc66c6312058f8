//! Health probing: one task per launched worker polls its health path (every 100 ms while it
//! is starting, every second once healthy) and wakes the reconciler when the answer changes.
//! The probe only observes; the reconciler decides what a result means.
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering::Relaxed},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::{sync::Notify, task::AbortHandle};

pub type ProbeClient = Client<HttpConnector, Empty<Bytes>>;

pub fn client() -> ProbeClient {
    let mut c = HttpConnector::new();
    c.set_connect_timeout(Some(Duration::from_millis(500)));
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1).build(c)
}

/// What the probe has seen.
#[derive(Debug, Default)]
pub struct ProbeState {
    /// The last probe answered 200.
    pub healthy: AtomicBool,
    /// Failed probes in a row since the last success.
    pub failures: AtomicU32,
    /// The engine's own load, from its metrics page, as last read (while healthy).
    pub engine: std::sync::Mutex<Option<sluice_core::engine::EngineFigures>>,
}

/// What a worker's engine metrics are read from: its metrics path and whose names.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub path: String,
    pub engine: String,
}

/// Reads the engine's figures from `uri` (bounded in time and size).
async fn scrape(client: &ProbeClient, uri: hyper::Uri, engine: &str) -> Option<sluice_core::engine::EngineFigures> {
    use http_body_util::BodyExt;
    let resp = tokio::time::timeout(Duration::from_secs(1), client.get(uri)).await.ok()?.ok()?;
    if resp.status() != hyper::StatusCode::OK {
        return None;
    }
    let body = tokio::time::timeout(
        Duration::from_secs(1),
        http_body_util::Limited::new(resp.into_body(), crate::engine::MAX_BYTES).collect(),
    )
    .await
    .ok()?
    .ok()?
    .to_bytes();
    crate::engine::parse(engine, &String::from_utf8_lossy(&body))
}

pub struct Probe {
    pub state: Arc<ProbeState>,
    handle: Option<AbortHandle>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(h) = &self.handle {
            h.abort();
        }
    }
}

pub use sluice_core::reconcile::UNHEALTHY_AFTER;

pub fn spawn(client: ProbeClient, addr: SocketAddr, path: String, metrics: Option<Scrape>, wake: Arc<Notify>) -> Probe {
    let state = Arc::new(ProbeState::default());
    let st = state.clone();
    let uri: Option<hyper::Uri> = format!("http://{addr}{path}").parse().ok();
    let metrics: Option<(hyper::Uri, String)> =
        metrics.and_then(|m| Some((format!("http://{addr}{}", m.path).parse().ok()?, m.engine)));
    let handle = tokio::spawn(async move {
        let Some(uri) = uri else { return };
        loop {
            let ok = matches!(
                tokio::time::timeout(Duration::from_secs(2), client.get(uri.clone())).await,
                Ok(Ok(resp)) if resp.status() == hyper::StatusCode::OK
            );
            let was = st.healthy.swap(ok, Relaxed);
            if ok {
                st.failures.store(0, Relaxed);
            } else {
                let n = st.failures.fetch_add(1, Relaxed) + 1;
                if n == UNHEALTHY_AFTER {
                    wake.notify_one();
                }
            }
            if ok != was {
                wake.notify_one();
            }
            // The engine's own load, read once a healthy probe answered.
            if let Some((m, engine)) = &metrics {
                let figures = if ok { scrape(&client, m.clone(), engine).await } else { None };
                *st.engine.lock().unwrap_or_else(|p| p.into_inner()) = figures;
            }
            let every = if ok { Duration::from_secs(1) } else { Duration::from_millis(100) };
            tokio::time::sleep(every).await;
        }
    })
    .abort_handle();
    Probe { state, handle: Some(handle) }
}

/// Health as the runtime reports it (`WorkerRuntime::reports_readiness`): no task; the
/// reconciler sets it from each `list` (see [`Probe::observe`]).
pub fn reported() -> Probe {
    Probe { state: Arc::new(ProbeState::default()), handle: None }
}

impl Probe {
    /// The runtime says whether the worker is ready: ready resets the failures, not ready adds one
    /// (so a ready worker leaves rotation after `UNHEALTHY_AFTER` passes that saw it unready).
    pub fn observe(&self, ready: bool) {
        self.state.healthy.store(ready, Relaxed);
        if ready {
            self.state.failures.store(0, Relaxed);
        } else {
            self.state.failures.fetch_add(1, Relaxed);
        }
    }
}

/// The health of a pull worker: its heartbeat (any protocol call counts), checked every
/// 100 ms until it is first heard from and every 500 ms after. `failures` counts the whole ping
/// intervals missed.
pub fn spawn_heartbeat(reg: Arc<crate::v2::Registry>, worker: sluice_core::WorkerId, wake: Arc<Notify>) -> Probe {
    let state = Arc::new(ProbeState::default());
    let st = state.clone();
    let handle = tokio::spawn(async move {
        loop {
            let (ok, missed) = crate::v2::registry::heartbeat(&reg, &worker, crate::now());
            let was = st.healthy.swap(ok, Relaxed);
            let before = st.failures.swap(missed, Relaxed);
            if ok != was || (missed != before && missed >= UNHEALTHY_AFTER) {
                wake.notify_one();
            }
            let every = if reg.last_seen(&worker).is_some() { 500 } else { 100 };
            tokio::time::sleep(Duration::from_millis(every)).await;
        }
    })
    .abort_handle();
    Probe { state, handle: Some(handle) }
}
