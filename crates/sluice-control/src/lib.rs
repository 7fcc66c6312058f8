//! The control plane: the `/v1` REST API, the reconciler that keeps workers at their desired
//! count, and health probing.
//!
//! **The control plane never sits on the request path.** It tells the gateway where to route
//! through [`DataPlane::publish`] and learns about traffic through [`DataPlane::traffic`].
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod certs;
mod engine;
mod error;
mod health;
pub mod images;
pub mod insight;
pub mod leader;
pub mod logs;
pub mod metering;
pub mod metrics;
pub mod models;
pub mod plane;
pub mod reconcile;
mod scaler;
pub mod series;
pub mod v2;

use sluice_core::keys::Scope;
use std::{
    collections::HashMap,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
pub use error::AppError;
use sluice_api::internal::{RouteTable, RoutesDelta, TlsBundle};
use sluice_core::{EndpointId, Millis, RuntimeKind, ValidationContext, placement::Node, routing::EndpointTraffic};
use sluice_runtime::WorkerRuntime;
use sluice_store::Store;
use tokio::sync::{Notify, watch};

use crate::reconcile::{Counts, Reconciler};

/// The gateway as the control plane sees it: somewhere to publish routes, something that
/// reports traffic.
pub trait DataPlane: Send + Sync + 'static {
    /// A new routing table, and the changes from the previous one (which a gateway that has the
    /// previous one applies instead).
    fn publish(&self, table: Arc<RouteTable>, delta: &RoutesDelta);
    fn traffic(&self) -> Vec<EndpointTraffic>;
    /// The requests the gateways recorded since the last call (issue 20).
    fn take_records(&self) -> Vec<sluice_api::internal::EndpointRecords> {
        Vec::new()
    }
    /// The gateway's figures for `/metrics`.
    fn figures(&self) -> sluice_core::metrics::GatewayFigures {
        sluice_core::metrics::GatewayFigures::default()
    }
    /// What gateways serve HTTPS with: the issued certificates and the pending ACME challenges.
    fn publish_tls(&self, _bundle: Arc<TlsBundle>) {}
    /// Whether every gateway serves the TLS bundle `version` (or a later one) by now.
    fn tls_applied(&self, _version: u64) -> bool {
        true
    }
}

#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Domain of host-form endpoint URLs.
    pub domain: String,
    /// `host:port` where the gateway listens, for the URLs the API shows.
    pub gateway_addr: String,
    /// The GPU inventory (declared in config, or discovered).
    pub nodes: Vec<Node>,
    /// Where the inventory came from: `declared` (simulated, from the config) or `nvml`.
    pub gpu_source: String,
    /// GPU types endpoints may ask for; the first is the default.
    pub gpu_types: Vec<String>,
    /// Cap on `max_workers` (the account quota, R5.5).
    pub max_workers_quota: u32,
    pub runtime: RuntimeKind,
    /// Largest accepted request body on the control API.
    pub max_body_bytes: usize,
    /// Prices and accrual interval for metering (R5.2, R5.3).
    pub metering: metering::MeteringConfig,
    /// RunPod-protocol (pull) workers: how they reach the platform and how often they ping.
    pub pull: PullConfig,
    /// How long log lines are kept, and how much per endpoint.
    pub log_retention: logs::Retention,
    /// HTTPS: certificates (files, ACME) and what outbound TLS trusts.
    pub tls: certs::TlsConfig,
    /// Cached models: where, from which hub, how large at most.
    pub models: models::ModelsConfig,
}

/// Settings for workers that take jobs with RunPod's worker protocol.
#[derive(Debug, Clone)]
pub struct PullConfig {
    /// The platform's address as workers reach it (their `/v2/…` URLs start with it).
    pub api_url: String,
    /// Kept for the life of the data directory; worker tokens are derived from it.
    pub token_secret: String,
    /// `RUNPOD_PING_INTERVAL`; three missed intervals make a worker dead.
    pub ping_interval_ms: u64,
}

impl ControlConfig {
    /// The URL clients reach `host` at through the gateway (`https://` when it serves TLS; the
    /// scheme's default port left out).
    pub fn gateway_url(&self, host: &str) -> String {
        let port = self.gateway_addr.rsplit_once(':').map_or("", |(_, p)| p);
        let (scheme, default) = if self.tls.enabled { ("https", "443") } else { ("http", "80") };
        if port.is_empty() || port == default {
            format!("{scheme}://{host}/")
        } else {
            format!("{scheme}://{host}:{port}/")
        }
    }

    /// Data centers in the order their first node appears.
    pub fn data_centers(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for n in &self.nodes {
            if !v.contains(&n.data_center) {
                v.push(n.data_center.clone());
            }
        }
        v
    }

    pub fn validation(&self) -> ValidationContext {
        ValidationContext {
            gpu_types: self.gpu_types.clone(),
            data_centers: self.data_centers(),
            max_workers_quota: self.max_workers_quota,
            runtime: self.runtime,
        }
    }
}

/// The GPUs' utilization as the driver reports it (NVML, with the `nvml` feature): percent by
/// (node, GPU index). Empty without real GPUs; the `gpu_utilization` signal then estimates.
pub type GpuUtil = Arc<ArcSwap<HashMap<(String, u32), u32>>>;

/// State shared by the API handlers.
pub struct AppState {
    pub store: Store,
    pub cfg: ControlConfig,
    pub wake: Arc<Notify>,
    pub counts: Counts,
    /// Completed reconcile passes, so the API can wait for one that saw its change.
    pub passes: watch::Receiver<u64>,
    passes_tx: watch::Sender<u64>,
    /// Image pulls ahead of need.
    pub images: Arc<images::Images>,
    /// Per-job wake-ups (runsync and status-sync waits).
    pub jobs: Arc<v2::Jobs>,
    /// Wakes the dispatcher: a job was queued (keeps a permit, so a wake is never lost).
    pub dispatch_wake: Notify,
    /// The routing table the reconciler last published (ready workers, for job dispatch).
    pub table: Arc<ArcSwap<RouteTable>>,
    /// The live key digests published with it (`/v2`'s key check).
    pub keys: reconcile::Keys,
    /// Pull workers between their calls (heartbeats, held jobs, requests to be replaced).
    pub pull: Arc<v2::Registry>,
    /// Worker output and platform events.
    pub logs: Arc<logs::Logs>,
    /// The data plane, for its figures.
    pub plane: Arc<dyn DataPlane>,
    /// Cold starts per endpoint and reconcile pass durations.
    pub timings: Arc<metrics::Timings>,
    /// Each endpoint's load over the last hour.
    pub series: Arc<series::Series>,
    /// HTTPS certificates: listed, and issued over ACME.
    pub certs: Arc<certs::Certs>,
    /// Job and low-credit notifications.
    pub webhooks: Arc<v2::webhook::Webhooks>,
    /// GPU utilization from the driver, for `/metrics` and the `gpu_utilization` signal.
    pub gpu_util: GpuUtil,
    /// Models staged ahead of need.
    pub models: Arc<models::Models>,
}

impl AppState {
    /// Wakes the reconciler and waits (bounded) until a pass that started after this call has
    /// completed, so that when a mutating API call returns, the routing table already reflects
    /// it (a request right after `start` is not answered "stopped").
    pub async fn settle(&self) {
        let target = *self.passes.borrow() + 2;
        self.wake.notify_one();
        self.certs.wake();
        let mut rx = self.passes.clone();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), rx.wait_for(|n| *n >= target)).await;
    }
}

pub struct Control {
    state: Arc<AppState>,
    runtime: Arc<dyn WorkerRuntime>,
    plane: Arc<dyn DataPlane>,
}

impl Control {
    /// The control plane. `wake` is created first so that the gateway's demand callback can
    /// hold it before the control plane exists.
    pub fn with_waker(
        store: Store,
        runtime: Arc<dyn WorkerRuntime>,
        plane: Arc<dyn DataPlane>,
        cfg: ControlConfig,
        wake: Arc<Notify>,
    ) -> Self {
        let (passes_tx, passes) = watch::channel(0);
        let images = images::Images::new(runtime.clone(), cfg.nodes.clone());
        let pull = Arc::new(v2::Registry::new(
            cfg.pull.token_secret.clone().into_bytes(),
            cfg.pull.api_url.clone(),
            cfg.pull.ping_interval_ms,
        ));
        let logs = logs::Logs::new(cfg.log_retention);
        let webhooks = v2::webhook::Webhooks::new(cfg.tls.client.clone(), logs.clone(), store.clone());
        let certs =
            certs::Certs::new(store.clone(), cfg.tls.clone(), cfg.domain.clone(), cfg.data_centers(), plane.clone());
        let models = models::Models::new(&cfg.models, cfg.tls.client.clone(), cfg.nodes.clone(), wake.clone());
        let state = Arc::new(AppState {
            certs,
            webhooks,
            models,
            gpu_util: Arc::default(),
            pull,
            logs,
            plane: plane.clone(),
            timings: Arc::default(),
            series: Arc::default(),
            images,
            jobs: Arc::default(),
            dispatch_wake: Notify::new(),
            table: Arc::new(ArcSwap::from_pointee(RouteTable::default())),
            keys: Arc::default(),
            store,
            cfg,
            wake,
            passes,
            passes_tx,
            counts: Arc::new(ArcSwap::from_pointee(HashMap::new())),
        });
        Control { state, runtime, plane }
    }

    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// Wakes the reconciler (the gateway calls this when a request finds no ready worker).
    pub fn waker(&self) -> Arc<Notify> {
        self.state.wake.clone()
    }

    /// Prewarms the image of every endpoint (at startup: shows their state, pulls what is missing).
    pub async fn prewarm_endpoints(&self) -> Result<(), sluice_store::Error> {
        for e in self.state.store.list_endpoints(&Scope::All).await? {
            if let Some(image) = &e.spec.image {
                self.state.images.prewarm(&e.account, image, e.spec.registry_auth.clone(), Some(&e.spec.data_center));
            }
            self.state.models.stage(&e.spec);
        }
        Ok(())
    }

    /// The `/v2` routes without their 404 fallback, to serve beside `/v1` on the API address.
    pub fn v2_routes(&self) -> axum::Router {
        v2::routes(self.state.clone())
    }

    /// The routes separate gateway processes call (`/v1/internal/…`, admin key).
    pub fn internal_router(&self, plane: Arc<plane::RemotePlane>) -> axum::Router {
        api::admin_only(plane::router(plane), self.state.clone())
    }

    /// RunPod's client API for queue endpoints, `/v2/{id}/…` (served on the gateway's address).
    pub fn v2_router(&self) -> axum::Router {
        v2::router(self.state.clone())
    }

    /// Where the GPUs' measured utilization goes (fed by whoever reads the driver).
    pub fn gpu_util(&self) -> GpuUtil {
        self.state.gpu_util.clone()
    }

    /// The HTTPS certificates (listed, kept in sync, issued).
    pub fn certs(&self) -> Arc<certs::Certs> {
        self.state.certs.clone()
    }

    /// Starts the certificate manager (the leader only): issues and renews over ACME until
    /// `shutdown` turns true.
    pub fn spawn_cert_manager(&self, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.state.certs.clone().run(shutdown))
    }

    /// Starts pushing queued jobs to workers; it stops once `shutdown` turns true.
    pub fn spawn_dispatcher(&self, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(v2::push::dispatch(self.state.clone(), self.state.table.clone(), shutdown))
    }

    /// Starts storing log lines; once `shutdown` turns true it stores what is queued and ends.
    pub fn spawn_log_writer(&self, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.state.logs.clone().run_writer(self.state.store.clone(), shutdown))
    }

    /// Ends the job-take and job-stop polls that workers hold (platform shutdown).
    pub fn close_polls(&self) {
        self.state.pull.close();
    }

    /// How many reconcile passes have finished (benchmarks wait on it).
    pub fn passes(&self) -> watch::Receiver<u64> {
        self.state.passes.clone()
    }

    /// Resolves once the reconciler has finished its first pass: the workers of a previous
    /// run are adopted and the gateway has its routing table.
    pub async fn first_pass(&self) {
        let mut rx = self.state.passes.clone();
        let _ = rx.wait_for(|n| *n >= 1).await;
    }

    /// Starts the reconciler; it stops every worker once `shutdown` turns true.
    pub fn spawn_reconciler(&self, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let r = Reconciler::new(
            self.state.store.clone(),
            self.runtime.clone(),
            self.plane.clone(),
            self.state.cfg.nodes.clone(),
            reconcile::Signals {
                table: self.state.table.clone(),
                keys: self.state.keys.clone(),
                wake: self.state.wake.clone(),
                counts: self.state.counts.clone(),
                passes_tx: self.state.passes_tx.clone(),
                pull: self.state.pull.clone(),
                logs: self.state.logs.clone(),
                timings: self.state.timings.clone(),
                series: self.state.series.clone(),
                webhooks: self.state.webhooks.clone(),
                gpu_util: self.state.gpu_util.clone(),
                models: self.state.models.clone(),
            },
            self.state.cfg.metering.clone(),
        );
        tokio::spawn(r.run(shutdown))
    }
}

/// The wall clock, read only at the edges and passed into pure code.
pub fn now() -> Millis {
    Millis(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
}

/// Entropy for new ids.
pub fn new_id() -> [u8; 16] {
    rand::random()
}

/// Wakes the reconciler for an endpoint that has demand.
pub fn demand_fn(wake: Arc<Notify>) -> impl Fn(&EndpointId) + Send + Sync + 'static {
    move |_| wake.notify_one()
}
