//! The reconciler: keeps each endpoint's workers at the desired count, level-triggered (every
//! pass looks at the whole state), and **the only caller of the [`WorkerRuntime`]**'s worker
//! methods. A pass is observe → plan → apply:
//!
//! - `observe` (here): the endpoints from the store, the traffic the gateway (or the queue)
//!   sees, what the runtime runs, what the health sources say;
//! - `plan`: `sluice_core::reconcile::plan`, pure, every decision with its reason (the
//!   autoscaler's counts come from [`Scalers`], asked inside it);
//! - `apply` (`apply.rs`): each action through the runtime and the store, every failure
//!   handled; then `publish.rs` hands the gateway its routing table and the API its counts, and
//!   [`Meter`] accrues usage.
mod apply;
mod calls;
mod publish;

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use sluice_api::{WorkerCounts, internal::RouteTable};
use sluice_core::{
    EndpointId, EndpointStatus, Millis, WorkerId, WorkerState,
    keys::Scope,
    placement::Node,
    reconcile::{
        Adoption, Gone, Headcount, Health, Intent, Memory, Observed, Remembered, SleepPolicy, Worker, adopt, plan,
    },
    routing::EndpointTraffic,
};
use sluice_runtime::WorkerRuntime;
use sluice_store::{EndpointRecord, Store, WorkerRecord};
use tokio::sync::{Notify, watch};

use crate::{
    DataPlane,
    health::{self, Probe, ProbeClient},
    metering::{Meter, MeteringConfig},
    new_id, now,
    scaler::Scalers,
};

/// How long a stopped worker gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Finished workers kept per endpoint for the API.
const KEEP_FINISHED: u32 = 20;
/// Scaling events kept per endpoint.
const KEEP_EVENTS: u32 = 10_000;

/// A worker the reconciler is responsible for (not yet stopped or failed).
struct Live {
    rec: WorkerRecord,
    addr: Option<SocketAddr>,
    /// When the current phase began: launch, loss of health, or start of drain.
    since: Millis,
    probe: Option<Probe>,
    /// Pending because no node had room for it (a rolling update then makes room).
    unplaceable: bool,
}

/// Whether the endpoint's workers take jobs with RunPod's worker protocol.
fn is_pull(e: &EndpointRecord) -> bool {
    e.spec.mode.is_pull()
}

pub type Counts = Arc<ArcSwap<HashMap<EndpointId, WorkerCounts>>>;

/// Live key digests → scope label (`sluice_core::keys::scope_label`), as published with the
/// routing table: what `/v2` checks keys against.
pub type Keys = Arc<ArcSwap<HashMap<[u8; 32], String>>>;

/// How the reconciler talks back: woken by, counts shown to, and passes awaited by the API.
pub struct Signals {
    /// Where the published routing table is kept for the job dispatcher.
    pub table: Arc<ArcSwap<RouteTable>>,
    pub keys: Keys,
    pub wake: Arc<Notify>,
    pub counts: Counts,
    pub passes_tx: watch::Sender<u64>,
    /// Pull workers' heartbeats and requests.
    pub pull: Arc<crate::v2::Registry>,
    /// Where worker output is copied and platform events are written.
    pub logs: Arc<crate::logs::Logs>,
    /// Cold starts and pass durations, for `/metrics`.
    pub timings: Arc<crate::metrics::Timings>,
    /// Load samples for the status page.
    pub series: Arc<crate::series::Series>,
    /// Low-credit notifications.
    pub webhooks: Arc<crate::v2::webhook::Webhooks>,
    /// The GPUs' measured utilization (empty without real GPUs).
    pub gpu_util: crate::GpuUtil,
    /// Models staged ahead of need: a worker waits for its endpoint's.
    pub models: Arc<crate::models::Models>,
}

pub struct Reconciler {
    store: Store,
    runtime: Arc<dyn WorkerRuntime>,
    plane: Arc<dyn DataPlane>,
    nodes: Vec<Node>,
    sig: Signals,
    probe_client: ProbeClient,
    workers: HashMap<WorkerId, Live>,
    /// Crash back-off and refused launches, per endpoint, across passes.
    memory: Memory,
    last_table: Arc<RouteTable>,
    meter: Meter,
    scalers: Scalers,
    /// Starts and stopped workers noted this pass, for the recorded traffic.
    recorder: crate::insight::Recorder,
    /// The SLO policy's settings and re-tunes.
    tuner: Arc<crate::insight::Tuner>,
    /// Sleep and wake calls on workers.
    calls: Arc<calls::Calls>,
    tick: Duration,
    passes: u64,
}

impl Reconciler {
    pub fn new(
        store: Store,
        runtime: Arc<dyn WorkerRuntime>,
        plane: Arc<dyn DataPlane>,
        nodes: Vec<Node>,
        sig: Signals,
        metering: MeteringConfig,
    ) -> Self {
        let meter = Meter::new(store.clone(), metering, sig.logs.clone(), sig.webhooks.clone(), sig.wake.clone());
        let probe_client = health::client();
        let calls = calls::Calls::new(probe_client.clone(), sig.wake.clone());
        Reconciler {
            recorder: Default::default(),
            tuner: Default::default(),
            calls,
            store,
            runtime,
            plane,
            nodes,
            sig,
            probe_client,
            workers: HashMap::new(),
            memory: Memory::default(),
            last_table: Arc::default(),
            meter,
            scalers: Scalers::default(),
            tick: Duration::from_millis(500),
            passes: 0,
        }
    }

    /// Runs until `shutdown` turns true, then stops every worker.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = self.adopt().await {
            tracing::error!(error = %e, "could not rebuild worker state at startup");
        }
        loop {
            if *shutdown.borrow() {
                break;
            }
            let started = tokio::time::Instant::now();
            if let Err(e) = self.pass(now()).await {
                tracing::warn!(error = %e, "reconcile pass failed; retrying");
            }
            self.sig.timings.pass_took(started.elapsed().as_secs_f64());
            self.sig.passes_tx.send_replace(self.passes);
            tokio::select! {
                () = self.sig.wake.notified() => {}
                () = tokio::time::sleep(self.tick) => {}
                _ = shutdown.changed() => {}
            }
        }
        self.stop_all("platform shut down").await;
        let t = now();
        let live: Vec<&WorkerRecord> = self.workers.values().map(|w| &w.rec).collect();
        self.meter.accrue(&[], &live, t).await;
    }

    /// Startup: rebuilds observed state from what the runtime actually runs, adopts the workers
    /// of the previous run that still belong to a running endpoint, stops the rest, and marks
    /// remembered workers that are gone (R8.2). The decisions are `sluice_core::reconcile::adopt`.
    async fn adopt(&mut self) -> pass_error::Result<()> {
        let t = now();
        let endpoints: HashMap<EndpointId, EndpointRecord> =
            self.store.list_endpoints(&Scope::All).await?.into_iter().map(|e| (e.id.clone(), e)).collect();
        let wanted: HashMap<EndpointId, u64> = endpoints
            .values()
            .filter(|e| e.status == EndpointStatus::Running)
            .map(|e| (e.id.clone(), e.generation))
            .collect();
        let mut records: HashMap<WorkerId, WorkerRecord> =
            self.store.list_unfinished_workers().await?.into_iter().map(|w| (w.id.clone(), w)).collect();
        let remembered: Vec<Remembered> = records
            .values()
            .map(|r| Remembered {
                id: r.id.clone(),
                endpoint: r.endpoint_id.clone(),
                generation: r.generation,
                state: r.state,
            })
            .collect();
        let observed: HashMap<WorkerId, sluice_runtime::Observed> = self
            .runtime
            .list()
            .await?
            .into_iter()
            .filter(|o| o.exited.is_none())
            .map(|o| (o.worker.clone(), o))
            .collect();
        let running: Vec<(WorkerId, bool)> = observed.values().map(|o| (o.worker.clone(), o.addr.is_some())).collect();
        for decision in adopt(&wanted, &remembered, &running) {
            match decision {
                Adoption::Adopt { worker } => {
                    let (Some(mut rec), Some(obs)) = (records.remove(&worker), observed.get(&worker)) else { continue };
                    let (Some(e), Some(addr)) = (endpoints.get(&rec.endpoint_id), obs.addr) else { continue };
                    tracing::info!(worker = %rec.id, endpoint = %rec.endpoint_id, %addr, "adopting worker from the previous run");
                    // A sleeper stays asleep; any other is probed back to ready.
                    if rec.state != WorkerState::Sleeping {
                        rec.state = WorkerState::Starting;
                        rec.reason = Some(sluice_core::reconcile::ADOPTED.into());
                    }
                    rec.port = Some(addr.port());
                    rec.pid = obs.pid;
                    self.store.upsert_worker(&rec).await?;
                    let probe = self.probe(is_pull(e), &rec.id, addr, &e.spec);
                    self.sig.logs.follow(
                        &rec.endpoint_id,
                        &rec.id,
                        self.runtime.log_paths(&rec.endpoint_id, &rec.id),
                        true,
                    );
                    self.sig.logs.event(&rec.endpoint_id, Some(&rec.id), "worker adopted after a platform restart");
                    let live = Live { rec, addr: Some(addr), since: t, probe: Some(probe), unplaceable: false };
                    self.workers.insert(worker, live);
                }
                Adoption::Stop { worker, reason, .. } => {
                    tracing::info!(%worker, "stopping a worker of the previous run that is no longer wanted");
                    if let Err(e) = self.runtime.stop(&worker, STOP_GRACE).await {
                        tracing::warn!(%worker, error = %e, "could not stop orphaned worker");
                    }
                    if let Some(mut rec) = records.remove(&worker) {
                        apply::finish(&mut rec, WorkerState::Stopped, &reason, t);
                        self.store.upsert_worker(&rec).await?;
                        self.requeue_jobs(&rec.id, "its worker was stopped", t).await;
                    }
                }
                Adoption::Gone { worker, state, reason } => {
                    let Some(mut rec) = records.remove(&worker) else { continue };
                    apply::finish(&mut rec, state, &reason, t);
                    self.store.upsert_worker(&rec).await?;
                    self.requeue_jobs(&rec.id, "its worker was gone after a platform restart", t).await;
                }
            }
        }
        Ok(())
    }

    /// The health source of a launched worker: its heartbeat for a pull worker, the runtime's
    /// readiness where the runtime reports it, else an HTTP probe of its health path.
    fn probe(&self, pull: bool, id: &WorkerId, addr: SocketAddr, spec: &sluice_core::EndpointSpec) -> Probe {
        if pull {
            health::spawn_heartbeat(self.sig.pull.clone(), id.clone(), self.sig.wake.clone())
        } else if self.runtime.reports_readiness() {
            health::reported()
        } else {
            let metrics = spec.metrics_path.clone().map(|path| health::Scrape { path, engine: spec.engine.clone() });
            health::spawn(
                self.probe_client.clone(),
                addr,
                spec.health_check_path.clone(),
                metrics,
                self.sig.wake.clone(),
            )
        }
    }

    /// Each endpoint's engine figures over its ready workers (those scraped): sums of running
    /// and waiting, the mean KV-cache usage; and each worker's running plus waiting.
    fn engine_load(&self) -> (HashMap<EndpointId, sluice_core::engine::EngineFigures>, HashMap<WorkerId, u32>) {
        let mut per_endpoint: HashMap<EndpointId, (sluice_core::engine::EngineFigures, u32)> = HashMap::new();
        let mut per_worker = HashMap::new();
        for w in self.workers.values().filter(|w| w.rec.state == WorkerState::Ready) {
            let Some(p) = &w.probe else { continue };
            let Some(f) = *p.state.engine.lock().unwrap_or_else(|e| e.into_inner()) else { continue };
            per_worker.insert(w.rec.id.clone(), (f.running + f.waiting).round() as u32);
            let (sum, kv_n) = per_endpoint.entry(w.rec.endpoint_id.clone()).or_default();
            sum.running += f.running;
            sum.waiting += f.waiting;
            if let Some(kv) = f.kv_cache_percent {
                sum.kv_cache_percent = Some(sum.kv_cache_percent.unwrap_or(0.0) + kv);
                *kv_n += 1;
            }
        }
        let per_endpoint = per_endpoint
            .into_iter()
            .map(|(e, (mut f, n))| {
                f.kv_cache_percent = f.kv_cache_percent.map(|s| s / f64::from(n.max(1)));
                (e, f)
            })
            .collect();
        (per_endpoint, per_worker)
    }

    /// A worker has ended: the jobs it was running go back to the queue (at-least-once, up to
    /// `MAX_RETRIES`; beyond, they fail with `why`), and what the protocol knew of it is dropped.
    async fn requeue_jobs(&self, id: &WorkerId, why: &str, t: Millis) {
        self.sig.pull.forget(id);
        self.sig.logs.unfollow(id);
        match self.store.requeue_worker_jobs(id.as_str(), sluice_core::jobs::MAX_RETRIES, why, t).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(worker = %id, jobs = n, "jobs of an ended worker went back to the queue"),
            Err(e) => tracing::warn!(worker = %id, error = %e, "could not requeue an ended worker's jobs"),
        }
    }

    /// What the gateway (for HTTP endpoints) or the queue (for queue endpoints: queued jobs wait,
    /// running ones are in flight) sees of each endpoint.
    async fn traffic(
        &self,
        endpoints: &[EndpointRecord],
        t: Millis,
    ) -> pass_error::Result<HashMap<EndpointId, EndpointTraffic>> {
        let mut traffic: HashMap<EndpointId, EndpointTraffic> =
            self.plane.traffic().into_iter().filter_map(|tr| Some((tr.endpoint.clone()?, tr))).collect();
        for e in endpoints.iter().filter(|e| e.spec.mode.is_queue()) {
            let c = self.store.job_counts(&e.id).await?;
            let busy = c.in_queue + c.in_progress > 0;
            let per_worker = self
                .store
                .jobs_in_progress_by_worker(&e.id)
                .await?
                .into_iter()
                .filter_map(|(w, n)| Some((WorkerId::parse(&w).ok()?, n)))
                .collect();
            traffic.insert(
                e.id.clone(),
                EndpointTraffic {
                    endpoint: Some(e.id.clone()),
                    in_flight: c.in_progress,
                    waiting: c.in_queue,
                    requests_total: c.in_queue + c.in_progress + c.completed + c.failed + c.cancelled + c.timed_out,
                    last_request_at: busy.then_some(t),
                    per_worker,
                    ..Default::default()
                },
            );
        }
        Ok(traffic)
    }

    /// One level-triggered pass: observe, plan, apply, publish, meter.
    async fn pass(&mut self, t: Millis) -> pass_error::Result<()> {
        self.passes += 1;
        // Observe.
        let endpoints: Vec<EndpointRecord> = self.store.list_endpoints(&Scope::All).await?;
        let traffic = self.traffic(&endpoints, t).await?;
        let listed = self.runtime.list().await?;
        for o in &listed {
            // Readiness the runtime itself reports (a cluster's probe) feeds the worker's health.
            if let (Some(ready), Some(Live { probe: Some(p), .. })) = (o.ready, self.workers.get(&o.worker)) {
                p.observe(ready);
            }
        }
        let running: HashSet<&WorkerId> = listed.iter().filter(|o| o.exited.is_none()).map(|o| &o.worker).collect();
        let mut gone: HashMap<WorkerId, Gone> = listed
            .iter()
            .filter(|o| self.workers.contains_key(&o.worker))
            .filter_map(|o| Some((o.worker.clone(), Gone::Exited(o.exited.clone()?))))
            .collect();
        for id in self.workers.keys() {
            if !running.contains(id) && !gone.contains_key(id) {
                gone.insert(id.clone(), Gone::Vanished);
            }
        }
        let strays: Vec<WorkerId> = listed
            .iter()
            .filter(|o| o.exited.is_none() && !self.workers.contains_key(&o.worker))
            .map(|o| o.worker.clone())
            .collect();
        let unhealthy =
            self.workers.keys().filter_map(|id| Some((id.clone(), self.sig.pull.unhealthy_reason(id)?))).collect();
        // Sleep and wake calls: the phases they reached go into the records.
        let (calls, reached) = self.calls.observe();
        for (id, phase, at) in reached {
            let Some(w) = self.workers.get_mut(&id) else { continue };
            if phase == sluice_core::worker::Phase::Slept {
                // Billed awake until it fell asleep.
                self.meter.transition(w.rec.clone(), at);
                self.sig.logs.event(&w.rec.endpoint_id, Some(&id), "worker asleep");
            }
            w.rec.phase(phase, at);
            let rec = w.rec.clone();
            if let Err(e) = self.store.upsert_worker(&rec).await {
                tracing::warn!(worker = %id, error = %e, "could not record a worker's phase");
            }
        }
        let none = EndpointTraffic::default();
        let workers: Vec<Worker> = self
            .workers
            .values()
            .map(|l| {
                let tr = traffic.get(&l.rec.endpoint_id).unwrap_or(&none);
                observe_worker(l, tr)
            })
            .collect();
        // Models: what every endpoint lists (never evicted), and who must wait for staging.
        // Staging starts (or is retried) here too, not only when an endpoint is written.
        self.sig.models.set_running(self.workers.keys());
        self.sig.models.set_listed(&endpoints.iter().map(|e| &e.spec).collect::<Vec<_>>());
        let staging = endpoints
            .iter()
            .filter_map(|e| {
                self.sig.models.stage(&e.spec);
                Some((e.id.clone(), self.sig.models.ready(&e.spec).err()?))
            })
            .collect();
        let obs = Observed {
            staging,
            workers,
            gone,
            strays,
            refresh: self.sig.pull.take_refresh(),
            unhealthy,
            memory: Some(&self.memory),
            nodes: &self.nodes,
            ping_ms: self.sig.pull.ping_ms,
            calls,
        };
        let intents: Vec<Intent> = endpoints.iter().map(intent).collect();
        let by_id: HashMap<&EndpointId, &EndpointRecord> = endpoints.iter().map(|e| (&e.id, e)).collect();

        // Plan (the autoscaler is asked inside, with the counts after this pass's health changes).
        let util = self.gpu_utilization();
        let (engines, engine_per_worker) = self.engine_load();
        let scalers = &mut self.scalers;
        let tuner = &self.tuner;
        let mut desire = |i: &Intent, count: Headcount| {
            let e = by_id[&i.id];
            let measured = crate::scaler::Measured {
                gpu_util_percent: util.get(&i.id).copied(),
                engine: engines.get(&i.id).copied(),
            };
            let (policy, shadows) = e.spec.policies(tuner.setting(&i.id));
            scalers.desired(i, &policy, &shadows, traffic.get(&i.id).unwrap_or(&none), count, measured, t)
        };
        let plan = plan(&intents, &obs, t, &mut desire, &mut || WorkerId::generate(new_id()));
        drop(obs);

        // Apply.
        for ev in self.scalers.take_events() {
            self.sig.logs.event(
                &ev.endpoint_id,
                None,
                format!("scaled from {} to {} workers: {}", ev.from, ev.to, ev.reason),
            );
            if let Err(err) = self.store.add_scaling_event(&ev).await {
                tracing::warn!(endpoint = %ev.endpoint_id, error = %err, "could not record scaling decision");
            }
        }
        self.apply(plan.actions, &by_id, t).await;
        self.record(&by_id, t).await;

        // Publish the routing table (with the live keys, for private endpoints) and the counts;
        // meter; now and then, prune.
        let mut keys = self.store.live_keys().await?;
        keys.sort();
        self.publish(&endpoints, &plan.desired, keys, &traffic, &engine_per_worker);
        let live: Vec<&WorkerRecord> = self.workers.values().map(|w| &w.rec).collect();
        self.meter.accrue(&endpoints, &live, t).await;
        if self.passes % 120 == 1 {
            if let Err(e) = self.store.prune_workers(KEEP_FINISHED).await {
                tracing::warn!(error = %e, "could not prune finished workers");
            }
            if let Err(e) = self.store.prune_scaling_events(KEEP_EVENTS).await {
                tracing::warn!(error = %e, "could not prune scaling events");
            }
            for e in &endpoints {
                let keep_ms = u64::from(e.spec.insight.trace_retention_hours) * 3_600_000;
                let max = u64::from(e.spec.insight.trace_max_mb) * 1_000_000;
                if let Err(err) = self.store.prune_recorded(&e.id, Millis(t.0.saturating_sub(keep_ms)), max).await {
                    tracing::warn!(endpoint = %e.id, error = %err, "could not prune recorded traffic");
                }
            }
            if let Err(e) = self.store.prune_recorded_orphans().await {
                tracing::warn!(error = %e, "could not prune the recorded traffic of deleted endpoints");
            }
            self.scalers.retain(|id| by_id.contains_key(id));
            self.sig.series.retain(|id| by_id.contains_key(id));
        }
        Ok(())
    }
}

impl Reconciler {
    /// Stores what was recorded this pass (the gateways' requests, starts, stopped workers,
    /// shadow counts) and starts the SLO re-tunes that are due.
    async fn record(&mut self, by_id: &HashMap<&EndpointId, &EndpointRecord>, t: Millis) {
        let recorded = |id: &EndpointId| by_id.get(id).is_some_and(|e| e.spec.insight.trace_retention_hours > 0);
        let chunks = self.recorder.chunks(self.plane.take_records(), recorded);
        let shadows = self.scalers.take_shadow_points();
        if let Err(e) = self.store.add_recorded(&chunks, &shadows).await {
            tracing::warn!(error = %e, "could not store recorded traffic");
        }
        let specs: Vec<(EndpointId, sluice_core::endpoint::EndpointSpec)> = by_id
            .values()
            .filter(|e| crate::insight::wants_slo(&e.spec))
            .map(|e| (e.id.clone(), e.spec.clone()))
            .collect();
        self.tuner.due(&self.store, &self.sig.logs, &specs, t);
    }

    /// Each endpoint's mean GPU utilization over its ready workers' GPUs, where the driver
    /// reports them.
    fn gpu_utilization(&self) -> HashMap<EndpointId, u32> {
        let util = self.sig.gpu_util.load();
        if util.is_empty() {
            return HashMap::new();
        }
        let mut sums: HashMap<EndpointId, (u64, u64)> = HashMap::new();
        for w in self.workers.values().filter(|w| w.rec.state == WorkerState::Ready) {
            let Some(node) = &w.rec.node else { continue };
            for g in &w.rec.gpus {
                if let Some(u) = util.get(&(node.clone(), *g)) {
                    let s = sums.entry(w.rec.endpoint_id.clone()).or_default();
                    s.0 += u64::from(*u);
                    s.1 += 1;
                }
            }
        }
        sums.into_iter().map(|(e, (sum, n))| (e, (sum / n.max(1)) as u32)).collect()
    }
}

/// An endpoint's intent, as the plan sees it.
fn intent(e: &EndpointRecord) -> Intent {
    Intent {
        id: e.id.clone(),
        running: e.status == EndpointStatus::Running,
        generation: e.generation,
        updated_at: e.updated_at,
        data_center: e.spec.data_center.clone(),
        gpu_type: e.spec.workers.gpu_type.clone(),
        gpus_per_worker: e.spec.workers.gpus_per_worker,
        startup_timeout_secs: e.spec.timeouts.startup_timeout_secs,
        execution_timeout_secs: e.spec.timeouts.execution_timeout_secs,
        health_path: e.spec.health_check_path.clone(),
        pull: is_pull(e),
        sleep: e.spec.sleep.enabled().then(|| SleepPolicy {
            max_sleeping: e.spec.sleep.max_sleeping,
            ttl_ms: u64::from(e.spec.sleep.sleep_ttl_secs) * 1000,
        }),
    }
}

/// A worker as the plan sees it: its record, its phase, what its health source says, what is in
/// flight on it.
fn observe_worker(l: &Live, tr: &EndpointTraffic) -> Worker {
    let health = l.probe.as_ref().map(|p| Health {
        healthy: p.state.healthy.load(std::sync::atomic::Ordering::Relaxed),
        failures: p.state.failures.load(std::sync::atomic::Ordering::Relaxed),
    });
    Worker {
        id: l.rec.id.clone(),
        endpoint: l.rec.endpoint_id.clone(),
        generation: l.rec.generation,
        state: l.rec.state,
        created_at: l.rec.created_at,
        since: l.since,
        was_ready: l.rec.ready_at.is_some(),
        adopted: l.rec.reason.as_deref() == Some(sluice_core::reconcile::ADOPTED),
        health,
        unplaceable: l.unplaceable,
        allocation: l
            .rec
            .node
            .clone()
            .map(|node| sluice_core::placement::Allocation { node, gpus: l.rec.gpus.clone() }),
        reason: l.rec.reason.clone(),
        in_flight: tr.worker_in_flight(&l.rec.id),
    }
}

/// Errors a pass can hit; logged and retried on the next pass.
mod pass_error {
    pub type Result<T> = std::result::Result<T, Error>;

    #[derive(Debug, thiserror::Error)]
    pub enum Error {
        #[error(transparent)]
        Store(#[from] sluice_store::Error),
        #[error(transparent)]
        Runtime(#[from] sluice_runtime::Error),
    }
}
