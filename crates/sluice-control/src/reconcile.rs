//! The reconciler: keeps each endpoint's workers at the desired count. It is level-triggered
//! (every pass looks at the whole state: intent in the store, what the runtime runs, what the
//! probes and the gateway see) and it is **the only caller of the [`WorkerRuntime`]**.
//!
//! Decisions come from pure functions in `sluice_core::reconcile` and `sluice_core::placement`;
//! this module applies them and records every worker transition in the store.
use sluice_core::keys::Scope;
use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use futures_util::future::join_all;
use sluice_api::WorkerCounts;
use sluice_core::{
    EndpointId, EndpointStatus, Millis, WorkerId, WorkerState,
    autoscale::{MetricsSnapshot, ScalerState, decide},
    billing::{Class, Price, classify, cost_nanos, credit_verdict, hourly_cost_nanos, seconds_due, usd},
    placement::{Allocation, Node},
    reconcile::{WorkerBrief, drain_complete, pick_for_removal, rollout_step, startup_expired},
    routing::{EndpointRoute, EndpointTraffic, RouteTable, WorkerRoute},
    worker::restart_backoff_ms,
};
use sluice_runtime::{LaunchSpec, VolumeMount, WorkerRuntime};
use sluice_store::{EndpointRecord, ScalingEvent, Store, UsageEntry, WorkerRecord};
use tokio::sync::{Notify, watch};

use crate::{
    DataPlane,
    health::{self, Probe, ProbeClient, UNHEALTHY_AFTER},
    new_id, now,
};

/// How long a stopped worker gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Finished workers kept per endpoint for the API.
const KEEP_FINISHED: u32 = 20;
/// Scaling events kept per endpoint.
const KEEP_EVENTS: u32 = 10_000;

struct Scaler {
    state: ScalerState,
    last_eval: Option<Millis>,
    last_total: u64,
}

/// A worker the reconciler is responsible for (not yet stopped or failed).
struct Live {
    rec: WorkerRecord,
    addr: Option<SocketAddr>,
    /// When the current phase began: launch, loss of health, or start of drain.
    since: Millis,
    health_path: String,
    execution_timeout_secs: u32,
    probe: Option<Probe>,
    /// Takes jobs with RunPod's worker protocol: its health is its heartbeat, not an HTTP probe.
    pull: bool,
    /// Pending because no node has room for it (a rolling update then makes room).
    unplaceable: bool,
}

/// Workers as the removal choice sees them.
fn briefs(workers: &[&Live], tr: &EndpointTraffic) -> Vec<WorkerBrief> {
    workers
        .iter()
        .map(|w| WorkerBrief {
            id: w.rec.id.clone(),
            state: w.rec.state,
            created_at: w.rec.created_at,
            in_flight: tr.worker_in_flight(&w.rec.id),
        })
        .collect()
}

/// Whether the endpoint's workers take jobs with RunPod's worker protocol.
fn is_pull(e: &EndpointRecord) -> bool {
    e.spec.kind == sluice_core::endpoint::EndpointKind::Queue
        && e.spec.delivery == sluice_core::endpoint::Delivery::Pull
}

pub type Counts = Arc<ArcSwap<HashMap<EndpointId, WorkerCounts>>>;

/// The reason an adopted worker carries until it is ready again (not a cold start).
const ADOPTED: &str = "adopted after platform restart";

/// Launches refused in a row (not crashes: the runtime could not start the worker at all)
/// before an endpoint stops trying until it is updated.
pub const MAX_LAUNCH_FAILURES: u32 = 5;

/// How usage is metered.
#[derive(Debug, Clone)]
pub struct MeteringConfig {
    pub prices: Vec<Price>,
    /// Running workers are accrued at least this often (R5.3: at least once a minute).
    pub interval_ms: u64,
}

pub struct Reconciler {
    store: Store,
    runtime: Arc<dyn WorkerRuntime>,
    plane: Arc<dyn DataPlane>,
    nodes: Vec<Node>,
    wake: Arc<Notify>,
    counts: Counts,
    probe_client: ProbeClient,
    workers: HashMap<WorkerId, Live>,
    /// Consecutive worker failures per endpoint and when the last one happened (crash back-off).
    failures: HashMap<EndpointId, (u32, Millis)>,
    /// Consecutive launches that the runtime refused (e.g. an image that cannot be pulled), per
    /// endpoint, with the endpoint's last update time and the last reason. After
    /// [`MAX_LAUNCH_FAILURES`] the endpoint stops trying until it is updated.
    launch_failures: HashMap<EndpointId, (u32, Millis, String)>,
    last_table: RouteTable,
    shared_table: Arc<arc_swap::ArcSwap<RouteTable>>,
    /// Metering (R5.3): prices, how often running workers are accrued, seconds already billed
    /// per worker (with its class and endpoint), workers finished since the last accrual, and
    /// what each endpoint is billed as (account, GPU type, active workers).
    prices: Vec<Price>,
    metering_interval_ms: u64,
    last_meter: Millis,
    billed: HashMap<WorkerId, (u64, Class, EndpointId)>,
    billed_loaded: bool,
    finished: Vec<WorkerRecord>,
    billing_of: HashMap<EndpointId, (String, String, u32)>,
    /// Per endpoint: the autoscaler's state, when it last decided, and the gateway's request
    /// total then (to count arrivals).
    scalers: HashMap<EndpointId, Scaler>,
    tick: Duration,
    passes: u64,
    passes_tx: watch::Sender<u64>,
    pull: Arc<crate::pull::Registry>,
    logs: Arc<crate::logs::Logs>,
    timings: Arc<crate::metrics::Timings>,
    series: Arc<crate::series::Series>,
}

/// How the reconciler talks back: woken by, counts shown to, and passes awaited by the API.
pub struct Signals {
    /// Where the published routing table is kept for the job dispatcher.
    pub table: Arc<arc_swap::ArcSwap<RouteTable>>,
    pub wake: Arc<Notify>,
    pub counts: Counts,
    pub passes_tx: watch::Sender<u64>,
    /// Pull workers' heartbeats and requests.
    pub pull: Arc<crate::pull::Registry>,
    /// Where worker output is copied and platform events are written.
    pub logs: Arc<crate::logs::Logs>,
    /// Cold starts and pass durations, for `/metrics`.
    pub timings: Arc<crate::metrics::Timings>,
    /// Load samples for the status page.
    pub series: Arc<crate::series::Series>,
}

impl Reconciler {
    pub fn new(
        store: Store,
        runtime: Arc<dyn WorkerRuntime>,
        plane: Arc<dyn DataPlane>,
        nodes: Vec<Node>,
        signals: Signals,
        metering: MeteringConfig,
    ) -> Self {
        let Signals { table, wake, counts, passes_tx, pull, logs, timings, series } = signals;
        Reconciler {
            store,
            runtime,
            plane,
            nodes,
            wake,
            counts,
            probe_client: health::client(),
            workers: HashMap::new(),
            failures: HashMap::new(),
            launch_failures: HashMap::new(),
            last_table: RouteTable::default(),
            shared_table: table,
            prices: metering.prices,
            metering_interval_ms: metering.interval_ms,
            last_meter: Millis(0),
            billed: HashMap::new(),
            billed_loaded: false,
            finished: Vec::new(),
            billing_of: HashMap::new(),
            scalers: HashMap::new(),
            tick: Duration::from_millis(500),
            passes: 0,
            passes_tx,
            pull,
            logs,
            timings,
            series,
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
            self.timings.pass_took(started.elapsed().as_secs_f64());
            self.passes_tx.send_replace(self.passes);
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.tick) => {}
                _ = shutdown.changed() => {}
            }
        }
        self.stop_all("platform shut down").await;
        self.meter(&[], now()).await;
    }

    /// Startup: rebuilds observed state from what the runtime actually runs, adopts the workers
    /// of the previous run that still belong to a running endpoint, stops the rest, and marks
    /// remembered workers that are gone as failed (R8.2).
    async fn adopt(&mut self) -> pass_error::Result<()> {
        let t = now();
        let endpoints: HashMap<EndpointId, EndpointRecord> =
            self.store.list_endpoints(&Scope::All).await?.into_iter().map(|e| (e.id.clone(), e)).collect();
        let mut records: HashMap<WorkerId, WorkerRecord> =
            self.store.list_unfinished_workers().await?.into_iter().map(|w| (w.id.clone(), w)).collect();
        let observed = self.runtime.list().await?;
        for obs in observed.into_iter().filter(|o| o.exited.is_none()) {
            let rec = records.remove(&obs.worker);
            let keep = match (&rec, obs.addr) {
                (Some(r), Some(_)) => endpoints
                    .get(&r.endpoint_id)
                    .is_some_and(|e| e.status == EndpointStatus::Running && e.generation == r.generation),
                _ => false,
            };
            match (rec, keep) {
                (Some(mut rec), true) => {
                    let ep = &endpoints[&rec.endpoint_id];
                    let addr = obs.addr.expect("checked above");
                    tracing::info!(worker = %rec.id, endpoint = %rec.endpoint_id, %addr, "adopting worker from the previous run");
                    rec.state = WorkerState::Starting;
                    rec.reason = Some(ADOPTED.into());
                    rec.port = Some(addr.port());
                    rec.pid = obs.pid;
                    self.store.upsert_worker(&rec).await?;
                    let probe = self.probe(is_pull(ep), &rec.id, addr, &ep.spec.health_check_path);
                    self.logs.follow(
                        &rec.endpoint_id,
                        &rec.id,
                        self.runtime.log_paths(&rec.endpoint_id, &rec.id),
                        true,
                    );
                    self.logs.event(&rec.endpoint_id, Some(&rec.id), "worker adopted after a platform restart");
                    self.workers.insert(
                        rec.id.clone(),
                        Live {
                            rec,
                            addr: Some(addr),
                            since: t,
                            health_path: ep.spec.health_check_path.clone(),
                            execution_timeout_secs: ep.spec.execution_timeout_secs,
                            probe: Some(probe),
                            pull: is_pull(ep),
                            unplaceable: false,
                        },
                    );
                }
                (rec, _) => {
                    tracing::info!(worker = %obs.worker, "stopping a worker of the previous run that is no longer wanted");
                    if let Err(e) = self.runtime.stop(&obs.worker, STOP_GRACE).await {
                        tracing::warn!(worker = %obs.worker, error = %e, "could not stop orphaned worker");
                    }
                    if let Some(mut rec) = rec {
                        finish(&mut rec, WorkerState::Stopped, "stopped after platform restart: no longer wanted", t);
                        self.store.upsert_worker(&rec).await?;
                        self.requeue_jobs(&rec.id, "its worker was stopped", t).await;
                    }
                }
            }
        }
        for (_, mut rec) in records {
            let reason = if rec.state == WorkerState::Pending {
                "platform restarted before launch"
            } else {
                "not running after platform restart"
            };
            let state = if rec.state == WorkerState::Pending { WorkerState::Stopped } else { WorkerState::Failed };
            finish(&mut rec, state, reason, t);
            self.store.upsert_worker(&rec).await?;
            self.requeue_jobs(&rec.id, "its worker was gone after a platform restart", t).await;
        }
        Ok(())
    }

    /// The health source of a launched worker: its heartbeat for a pull worker, else an HTTP
    /// probe of its health path.
    fn probe(&self, pull: bool, id: &WorkerId, addr: SocketAddr, path: &str) -> Probe {
        if pull {
            health::spawn_heartbeat(self.pull.clone(), id.clone(), self.wake.clone())
        } else if self.runtime.reports_readiness() {
            health::reported()
        } else {
            health::spawn(self.probe_client.clone(), addr, path.to_owned(), self.wake.clone())
        }
    }

    /// A worker has ended: the jobs it was running go back to the queue (at-least-once, up to
    /// `MAX_RETRIES`; beyond, they fail with `why`), and what the protocol knew of it is dropped.
    async fn requeue_jobs(&self, id: &WorkerId, why: &str, t: Millis) {
        self.pull.forget(id);
        self.logs.unfollow(id);
        match self.store.requeue_worker_jobs(id.as_str(), sluice_core::jobs::MAX_RETRIES, why, t).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(worker = %id, jobs = n, "jobs of an ended worker went back to the queue"),
            Err(e) => tracing::warn!(worker = %id, error = %e, "could not requeue an ended worker's jobs"),
        }
    }

    async fn save(&self, rec: &WorkerRecord) {
        if let Err(e) = self.store.upsert_worker(rec).await {
            tracing::warn!(worker = %rec.id, error = %e, "could not record worker state");
        }
    }

    /// Why a pending worker is still pending; recorded only when it changes. Returns whether it did.
    async fn set_pending_reason(&mut self, id: &WorkerId, reason: String) -> bool {
        let Some(w) = self.workers.get_mut(id) else { return false };
        if w.rec.reason.as_deref() == Some(reason.as_str()) {
            return false;
        }
        w.rec.reason = Some(reason);
        let rec = w.rec.clone();
        self.save(&rec).await;
        true
    }

    /// The ids of the workers of each endpoint.
    fn by_endpoint(&self) -> HashMap<EndpointId, Vec<WorkerId>> {
        let mut groups: HashMap<EndpointId, Vec<WorkerId>> = HashMap::new();
        for (id, w) in &self.workers {
            groups.entry(w.rec.endpoint_id.clone()).or_default().push(id.clone());
        }
        groups
    }

    fn note_failure(&mut self, ep: &EndpointId, t: Millis) {
        let f = self.failures.entry(ep.clone()).or_insert((0, t));
        f.0 += 1;
        f.1 = t;
    }

    /// One level-triggered pass over everything.
    async fn pass(&mut self, t: Millis) -> pass_error::Result<()> {
        self.passes += 1;
        let endpoints: Vec<EndpointRecord> = self.store.list_endpoints(&Scope::All).await?;
        let by_id: HashMap<&EndpointId, &EndpointRecord> = endpoints.iter().map(|e| (&e.id, e)).collect();
        let mut traffic: HashMap<EndpointId, EndpointTraffic> =
            self.plane.traffic().into_iter().filter_map(|tr| Some((tr.endpoint.clone()?, tr))).collect();
        // Queue endpoints' load is their jobs: queued ones wait, running ones are in flight.
        for e in endpoints.iter().filter(|e| e.spec.kind == sluice_core::endpoint::EndpointKind::Queue) {
            let c = self.store.job_counts(&e.id).await?;
            let busy = c.in_queue + c.in_progress > 0;
            let total = c.in_queue + c.in_progress + c.completed + c.failed + c.cancelled + c.timed_out;
            traffic.insert(
                e.id.clone(),
                EndpointTraffic {
                    endpoint: Some(e.id.clone()),
                    in_flight: c.in_progress,
                    waiting: c.in_queue,
                    requests_total: total,
                    last_request_at: busy.then_some(t),
                    per_worker: self
                        .store
                        .jobs_in_progress_by_worker(&e.id)
                        .await?
                        .into_iter()
                        .filter_map(|(w, n)| Some((WorkerId::parse(&w).ok()?, n)))
                        .collect(),
                    ..Default::default()
                },
            );
        }
        let none = EndpointTraffic::default();

        // 1. What the runtime says: exits, and workers that vanished.
        let observed = self.runtime.list().await?;
        let running: HashSet<&WorkerId> = observed.iter().filter(|o| o.exited.is_none()).map(|o| &o.worker).collect();
        for o in &observed {
            if let (Some(ready), Some(Live { probe: Some(p), pull: false, .. })) =
                (o.ready, self.workers.get(&o.worker))
            {
                p.observe(ready);
            }
        }
        let mut failed: Vec<(WorkerId, String)> = Vec::new();
        for o in observed.iter().filter(|o| o.exited.is_some()) {
            if self.workers.get(&o.worker).is_some_and(|w| w.rec.state.has_runtime()) {
                failed.push((o.worker.clone(), format!("worker process {}", o.exited.as_deref().unwrap_or("exited"))));
            }
        }
        for (id, w) in &self.workers {
            if w.rec.state.has_runtime() && !running.contains(id) && !failed.iter().any(|(f, _)| f == id) {
                failed.push((id.clone(), "worker process is no longer running".into()));
            }
        }
        let strays: Vec<WorkerId> = observed
            .iter()
            .filter(|o| o.exited.is_none() && !self.workers.contains_key(&o.worker))
            .map(|o| o.worker.clone())
            .collect();
        for id in strays {
            tracing::warn!(worker = %id, "stopping a worker process the platform does not know");
            let _ = self.runtime.stop(&id, STOP_GRACE).await;
        }
        let refresh = self.pull.take_refresh();
        for (id, reason) in failed {
            let Some(mut w) = self.workers.remove(&id) else { continue };
            let _ = self.runtime.stop(&id, Duration::ZERO).await; // reap stragglers of its group
            if refresh.contains(&id) {
                // It exited by itself after its handler asked for refresh_worker: not a crash.
                tracing::info!(worker = %id, "worker exited for refresh_worker; replacing it");
                finish(&mut w.rec, WorkerState::Stopped, "refresh_worker: replaced after its job", t);
            } else {
                let reason = match self.pull.unhealthy_reason(&id) {
                    Some(why) => format!("{why}; {reason}"),
                    None => reason,
                };
                tracing::warn!(worker = %id, endpoint = %w.rec.endpoint_id, %reason, "worker failed");
                self.logs.event(&w.rec.endpoint_id, Some(&id), format!("worker failed: {reason}"));
                finish(&mut w.rec, WorkerState::Failed, &reason, t);
                self.note_failure(&w.rec.endpoint_id, t);
            }
            self.save(&w.rec).await;
            self.requeue_jobs(&id, "its worker failed", t).await;
            self.finished.push(w.rec.clone());
        }

        // 2. Health: starting → ready, ready → starting (out of rotation), startup timeout → failed.
        let mut to_stop: Vec<(WorkerId, WorkerState, String)> = Vec::new();
        for id in refresh.into_iter().filter(|id| self.workers.get(id).is_some_and(|w| w.rec.state.is_live())) {
            // Not drained: the handler that asked is done, and the worker takes nothing more.
            to_stop.push((id, WorkerState::Stopped, "refresh_worker: replaced after its job".into()));
        }
        let ids: Vec<WorkerId> = self.workers.keys().cloned().collect();
        for id in ids {
            let w = self.workers.get_mut(&id).expect("listed above");
            let Some(p) = &w.probe else { continue };
            let healthy = p.state.healthy.load(std::sync::atomic::Ordering::Relaxed);
            let fails = p.state.failures.load(std::sync::atomic::Ordering::Relaxed);
            let startup = by_id.get(&w.rec.endpoint_id).map_or(600, |e| e.spec.startup_timeout_secs);
            match w.rec.state {
                WorkerState::Starting if healthy => {
                    let cold = w.rec.ready_at.is_none() && w.rec.reason.as_deref() != Some(ADOPTED);
                    advance(&mut w.rec, WorkerState::Ready);
                    w.rec.reason = None;
                    w.rec.ready_at = Some(t);
                    w.since = t;
                    tracing::info!(worker = %id, endpoint = %w.rec.endpoint_id, "worker ready");
                    let took = w.rec.launched_at.map_or(0, |l| t.saturating_sub(l));
                    if cold {
                        self.timings.observe(&w.rec.endpoint_id, t.saturating_sub(w.rec.created_at) as f64 / 1000.0);
                    }
                    self.logs.event(&w.rec.endpoint_id, Some(&id), format!("worker ready, {took} ms after launch"));
                    let rec = w.rec.clone();
                    self.failures.remove(&rec.endpoint_id);
                    self.save(&rec).await;
                }
                WorkerState::Ready if w.pull && fails >= sluice_core::pull::MISSED_PINGS_DEAD => {
                    let every = self.pull.ping_ms;
                    to_stop.push((
                        id.clone(),
                        WorkerState::Failed,
                        format!("missed {fails} heartbeats ({every} ms apart): presumed dead"),
                    ));
                }
                WorkerState::Ready if fails >= UNHEALTHY_AFTER => {
                    advance(&mut w.rec, WorkerState::Starting);
                    w.rec.reason = Some(format!("health check {} failing; out of rotation", w.health_path));
                    w.since = t;
                    tracing::warn!(worker = %id, "worker stopped answering its health check");
                    let rec = w.rec.clone();
                    self.save(&rec).await;
                }
                WorkerState::Starting if startup_expired(w.since, t, startup) => {
                    let reason = if w.pull {
                        format!("did not call for jobs or ping within the startup timeout of {startup} s")
                    } else if w.rec.ready_at.is_some() {
                        format!("health check failing for {startup} s")
                    } else {
                        format!("did not answer 200 on {} within the startup timeout of {startup} s", w.health_path)
                    };
                    to_stop.push((id.clone(), WorkerState::Failed, reason));
                }
                _ => {}
            }
        }

        // 3. Per endpoint: desired count, scale, replace outdated workers. Workers are grouped by
        // endpoint once, so a pass is linear in workers, not endpoints × workers.
        let mut to_start: Vec<(EndpointId, usize)> = Vec::new();
        let mut desired_by_ep: HashMap<EndpointId, u32> = HashMap::new();
        let groups = self.by_endpoint();
        for e in &endpoints {
            let tr = traffic.get(&e.id).unwrap_or(&none);
            let ids = groups.get(&e.id).map_or(&[][..], Vec::as_slice);
            let (live, ready) = ids.iter().filter_map(|id| self.workers.get(id)).fold((0u32, 0u32), |(l, r), w| {
                (l + u32::from(w.rec.state.is_live()), r + u32::from(w.rec.state == WorkerState::Ready))
            });
            let desired = self.autoscale(e, tr, live, ready, t).await;
            desired_by_ep.insert(e.id.clone(), desired);
            let mine: Vec<&Live> = ids.iter().filter_map(|id| self.workers.get(id)).collect();
            let current: Vec<&Live> =
                mine.iter().copied().filter(|w| w.rec.generation == e.generation && w.rec.state.is_live()).collect();
            let ready_current = current.iter().filter(|w| w.rec.state == WorkerState::Ready).count();
            // Outdated workers: those not serving stop at once; serving ones are replaced one at
            // a time (`rollout_step`: one extra worker at most, never fewer than desired ready).
            let outdated: Vec<&Live> =
                mine.iter().copied().filter(|w| w.rec.generation != e.generation && w.rec.state.is_live()).collect();
            let old_ready: Vec<&Live> =
                outdated.iter().copied().filter(|w| w.rec.state == WorkerState::Ready).collect();
            for w in outdated.iter().filter(|w| w.rec.state != WorkerState::Ready) {
                to_stop.push((
                    w.rec.id.clone(),
                    WorkerState::Stopped,
                    "replaced by a new version of the endpoint".into(),
                ));
            }
            let rolling = !old_ready.is_empty();
            if rolling {
                let draining = mine.iter().filter(|w| w.rec.state == WorkerState::Draining).count() as u32;
                let stuck =
                    current.iter().filter(|w| w.rec.state == WorkerState::Pending && w.unplaceable).count() as u32;
                let step = rollout_step(
                    desired,
                    old_ready.len() as u32,
                    current.len() as u32,
                    ready_current as u32,
                    stuck,
                    draining,
                );
                for id in pick_for_removal(&briefs(&old_ready, tr), step.drain as usize) {
                    to_stop.push((
                        id,
                        WorkerState::Stopped,
                        "replaced by a new version of the endpoint (rolling update)".into(),
                    ));
                }
                if step.start > 0 {
                    to_start.push((e.id.clone(), step.start as usize));
                }
            }
            if current.len() > desired as usize {
                let why = if e.status != EndpointStatus::Running { "endpoint stopped" } else { "scaled down" };
                for id in pick_for_removal(&briefs(&current, tr), current.len() - desired as usize) {
                    to_stop.push((id, WorkerState::Stopped, why.into()));
                }
            } else if current.len() < desired as usize && !rolling {
                // New workers are recorded as pending at once; the crash back-off is applied
                // when they are launched, so the API shows why they wait.
                to_start.push((e.id.clone(), desired as usize - current.len()));
            }
        }
        // Workers of deleted endpoints.
        for w in self.workers.values() {
            if !by_id.contains_key(&w.rec.endpoint_id) && w.rec.state.is_live() {
                to_stop.push((w.rec.id.clone(), WorkerState::Stopped, "endpoint deleted".into()));
            }
        }

        // 4. Apply removals: ready workers drain; the others stop now.
        let mut stops = Vec::new();
        for (id, state, reason) in to_stop {
            let Some(w) = self.workers.get_mut(&id) else { continue };
            if w.rec.state == WorkerState::Ready && state == WorkerState::Stopped {
                advance(&mut w.rec, WorkerState::Draining);
                w.rec.reason = Some(reason);
                w.since = t;
                tracing::info!(worker = %id, "draining worker");
                self.logs.event(
                    &w.rec.endpoint_id,
                    Some(&id),
                    format!("worker draining: {}", w.rec.reason.as_deref().unwrap_or("")),
                );
                let rec = w.rec.clone();
                self.save(&rec).await;
            } else if w.rec.state.is_live() {
                stops.push((id, state, reason));
            }
        }
        // Drained workers stop once their requests are done (bounded by the execution timeout),
        // but never in the pass that began the drain: the gateway may route to them until this
        // pass publishes the table without them, and only the next traffic report counts what
        // it sent them meanwhile.
        for w in self.workers.values() {
            if w.rec.state == WorkerState::Draining && w.since < t {
                let in_flight = traffic.get(&w.rec.endpoint_id).map_or(0, |tr| tr.worker_in_flight(&w.rec.id));
                if drain_complete(w.since, t, in_flight, w.execution_timeout_secs) {
                    stops.push((
                        w.rec.id.clone(),
                        WorkerState::Stopped,
                        w.rec.reason.clone().unwrap_or_else(|| "drained".into()),
                    ));
                }
            }
        }
        self.stop_workers(stops, t).await;

        // 5. Starts: new pending workers, then placement and launch of every pending worker.
        for (ep, n) in to_start {
            let e = by_id[&ep];
            for _ in 0..n {
                let rec = WorkerRecord {
                    id: WorkerId::generate(new_id()),
                    endpoint_id: ep.clone(),
                    generation: e.generation,
                    state: WorkerState::Pending,
                    reason: Some("waiting for placement".into()),
                    node: None,
                    gpus: Vec::new(),
                    port: None,
                    pid: None,
                    created_at: t,
                    launched_at: None,
                    ready_at: None,
                    stopped_at: None,
                };
                self.save(&rec).await;
                self.workers.insert(
                    rec.id.clone(),
                    Live {
                        rec,
                        addr: None,
                        since: t,
                        health_path: e.spec.health_check_path.clone(),
                        execution_timeout_secs: e.spec.execution_timeout_secs,
                        probe: None,
                        pull: is_pull(e),
                        unplaceable: false,
                    },
                );
            }
        }
        self.launch_pending(&by_id, t).await;

        // 6. Publish the routing table (with the live keys, for private endpoints) and the counts.
        let mut keys = self.store.live_keys().await?;
        keys.sort();
        self.publish(&endpoints, &desired_by_ep, keys, &traffic);
        self.meter(&endpoints, t).await;
        if self.passes % 120 == 1 {
            let _ = self.store.prune_workers(KEEP_FINISHED).await;
            let _ = self.store.prune_scaling_events(KEEP_EVENTS).await;
            self.scalers.retain(|id, _| by_id.contains_key(id));
            self.series.retain(|id| by_id.contains_key(id));
        }
        Ok(())
    }

    /// The endpoint's desired worker count: 0 when stopped, else the autoscaler's decision,
    /// evaluated once a second (and at once when a request waits at zero). Every change is
    /// recorded with its reason and inputs (R4.7).
    async fn autoscale(&mut self, e: &EndpointRecord, tr: &EndpointTraffic, live: u32, ready: u32, t: Millis) -> u32 {
        let policy = e.spec.scaling();
        let sc = self.scalers.entry(e.id.clone()).or_insert_with(|| Scaler {
            // A restarted platform starts from what runs, so it does not scale down on a whim.
            state: ScalerState { target: live.clamp(policy.min_workers, policy.max_workers), ..Default::default() },
            last_eval: None,
            last_total: tr.requests_total,
        });
        if e.status != EndpointStatus::Running {
            sc.state = ScalerState::default();
            sc.last_total = tr.requests_total;
            return 0;
        }
        let waiting_at_zero = sc.state.target == 0 && (tr.waiting > 0 || tr.in_flight > 0);
        if !waiting_at_zero && sc.last_eval.is_some_and(|l| t.saturating_sub(l) < 1000) {
            return sc.state.target.clamp(policy.min_workers, policy.max_workers);
        }
        let snap = MetricsSnapshot {
            in_flight: tr.in_flight,
            waiting: tr.waiting,
            arrivals: tr.requests_total.saturating_sub(sc.last_total),
            oldest_wait_ms: tr.oldest_wait_ms,
            ready,
            provisioned: live,
        };
        sc.last_total = tr.requests_total;
        sc.last_eval = Some(t);
        let before = sc.state.target;
        let d = decide(&policy, &mut sc.state, &snap, t);
        if d.target != before {
            tracing::info!(endpoint = %e.id, from = before, to = d.target, reason = %d.reason, "scaling decision");
            self.logs.event(&e.id, None, format!("scaled from {before} to {} workers: {}", d.target, d.reason));
            let ev = ScalingEvent {
                id: 0,
                endpoint_id: e.id.clone(),
                at: t,
                from: before,
                to: d.target,
                reason: d.reason.clone(),
                inputs: serde_json::to_string(&d.inputs).unwrap_or_default(),
            };
            if let Err(err) = self.store.add_scaling_event(&ev).await {
                tracing::warn!(endpoint = %e.id, error = %err, "could not record scaling decision");
            }
        }
        d.target
    }

    async fn launch_pending(&mut self, by_id: &HashMap<&EndpointId, &EndpointRecord>, t: Millis) {
        let mut pending: Vec<WorkerId> =
            self.workers.values().filter(|w| w.rec.state == WorkerState::Pending).map(|w| w.rec.id.clone()).collect();
        pending.sort_by_key(|id| self.workers[id].rec.created_at);
        // Place every launchable worker first (in creation order, each placement seeing the
        // ones before it), then start them all concurrently: a container start takes the
        // Engine hundreds of milliseconds, and a burst should not pay for them in sequence.
        if pending.is_empty() {
            return;
        }
        let allocated: Vec<Allocation> = self
            .workers
            .values()
            .filter(|w| w.rec.state.has_runtime())
            .filter_map(|w| Some(Allocation { node: w.rec.node.clone()?, gpus: w.rec.gpus.clone() }))
            .collect();
        let mut placer = sluice_core::placement::Placer::new(&self.nodes, &allocated);
        let mut launches = Vec::new();
        for id in pending {
            let ep_id = self.workers[&id].rec.endpoint_id.clone();
            let Some(e) = by_id.get(&ep_id) else { continue };
            if let Some((n, generation, why)) = self.launch_failures.get(&ep_id)
                && *n >= MAX_LAUNCH_FAILURES
            {
                if *generation == e.updated_at {
                    let reason = format!(
                        "gave up after {n} failed launches: {why}; update the endpoint (image, credentials) to try again"
                    );
                    if self.set_pending_reason(&id, reason.clone()).await {
                        tracing::warn!(endpoint = %ep_id, %reason, "not launching");
                    }
                    continue;
                }
                // Updated since: try again from a clean slate.
                self.launch_failures.remove(&ep_id);
                self.failures.remove(&ep_id);
            }
            if let Some((n, at)) = self.failures.get(&ep_id)
                && t.saturating_sub(*at) < restart_backoff_ms(*n)
            {
                let reason = format!("restarting after {n} failure(s); back-off {} ms", restart_backoff_ms(*n));
                self.set_pending_reason(&id, reason).await;
                continue;
            }
            let placed = placer.place(&e.spec.data_center, &e.spec.gpu_type, e.spec.gpus_per_worker);
            if let Some(w) = self.workers.get_mut(&id) {
                w.unplaceable = placed.is_err();
            }
            let alloc = match placed {
                Ok(a) => a,
                Err(reason) => {
                    if self.set_pending_reason(&id, reason.clone()).await {
                        tracing::info!(worker = %id, %reason, "worker cannot be placed yet");
                    }
                    continue;
                }
            };
            let mut env = e.spec.env.clone();
            if is_pull(e) {
                env.extend(self.pull.env(&ep_id, &id, &e.spec.gpu_type));
            }
            let spec = LaunchSpec {
                worker: id.clone(),
                endpoint: ep_id.clone(),
                shell: e.spec.shell.clone(),
                start_command: e.spec.start_command.clone(),
                image: e.spec.image.clone(),
                env,
                gpus: alloc.gpus.clone(),
                http_port: e.spec.http_port,
                volume: e
                    .spec
                    .network_volume
                    .as_ref()
                    .map(|v| VolumeMount { name: v.name.clone(), mount_path: v.mount_path.clone() }),
                registry: e.spec.registry_auth.clone(),
                host_network: is_pull(e) && sluice_core::pull::is_loopback_url(&self.pull.base_url),
                health_path: e.spec.health_check_path.clone(),
                gpu_type: e.spec.gpu_type.clone(),
                data_center: e.spec.data_center.clone(),
            };
            launches.push((id, ep_id, e.updated_at, alloc, spec));
        }
        let runtime = &self.runtime;
        let results = futures_util::future::join_all(
            launches.into_iter().map(|(id, ep_id, generation, alloc, spec)| async move {
                (id, ep_id, generation, alloc, runtime.start(spec).await)
            }),
        )
        .await;
        for (id, ep_id, generation, alloc, result) in results {
            let w = self.workers.get_mut(&id).expect("listed");
            match result {
                Ok(l) => {
                    advance(&mut w.rec, WorkerState::Starting);
                    w.rec.reason = None;
                    w.rec.node = Some(alloc.node);
                    w.rec.gpus = alloc.gpus;
                    let alloc_gpus = w.rec.gpus.clone();
                    w.rec.port = Some(l.addr.port());
                    w.rec.pid = l.pid;
                    w.rec.launched_at = Some(t);
                    w.addr = Some(l.addr);
                    w.since = t;
                    let (pull, path) = (w.pull, w.health_path.clone());
                    let probe = self.probe(pull, &id, l.addr, &path);
                    let w = self.workers.get_mut(&id).expect("listed");
                    w.probe = Some(probe);
                    tracing::info!(worker = %id, endpoint = %ep_id, addr = %l.addr, "worker launched");
                    self.logs.follow(&ep_id, &id, self.runtime.log_paths(&ep_id, &id), false);
                    self.logs.event(
                        &ep_id,
                        Some(&id),
                        format!("worker launched at {} with GPUs {:?}", l.addr, alloc_gpus),
                    );
                    self.launch_failures.remove(&ep_id);
                    let rec = w.rec.clone();
                    self.save(&rec).await;
                }
                Err(err) => {
                    let mut w = self.workers.remove(&id).expect("listed");
                    tracing::warn!(worker = %id, error = %err, "worker launch failed");
                    self.logs.event(&ep_id, Some(&id), format!("worker launch failed: {err}"));
                    finish(&mut w.rec, WorkerState::Failed, &err.to_string(), t);
                    self.save(&w.rec).await;
                    self.note_failure(&ep_id, t);
                    let f = self.launch_failures.entry(ep_id.clone()).or_insert((0, generation, String::new()));
                    if f.1 != generation {
                        *f = (0, generation, String::new());
                    }
                    f.0 += 1;
                    f.2 = err.to_string();
                }
            }
        }
    }

    /// Stops workers concurrently and records their final state.
    async fn stop_workers(&mut self, stops: Vec<(WorkerId, WorkerState, String)>, t: Millis) {
        let mut seen = HashSet::new();
        let mut recs = Vec::new();
        for (id, state, reason) in stops {
            if !seen.insert(id.clone()) {
                continue;
            }
            if let Some(mut w) = self.workers.remove(&id) {
                w.probe = None;
                let had_runtime = w.rec.state.has_runtime();
                finish(&mut w.rec, state, &reason, t);
                recs.push((w.rec, had_runtime));
            }
        }
        for (rec, _) in &recs {
            self.pull.retire(&rec.id);
        }
        let runtime = self.runtime.clone();
        join_all(recs.iter().filter(|(_, r)| *r).map(|(rec, _)| {
            let runtime = runtime.clone();
            // A failed worker (hung, silent, never ready) gets no grace: nothing it does now counts.
            let grace = if rec.state == WorkerState::Failed { Duration::ZERO } else { STOP_GRACE };
            async move {
                if let Err(e) = runtime.stop(&rec.id, grace).await {
                    tracing::warn!(worker = %rec.id, error = %e, "stop failed");
                }
            }
        }))
        .await;
        let done = now();
        for (mut rec, had_runtime) in recs {
            if had_runtime && rec.launched_at.is_some() {
                // Metered until the runtime confirmed the stop, not when it was decided.
                rec.stopped_at = Some(done);
                self.finished.push(rec.clone());
            }
            tracing::info!(worker = %rec.id, state = rec.state.as_str(), reason = rec.reason.as_deref().unwrap_or(""), "worker finished");
            self.logs.event(
                &rec.endpoint_id,
                Some(&rec.id),
                format!("worker {}: {}", rec.state.as_str(), rec.reason.as_deref().unwrap_or("")),
            );
            if rec.state == WorkerState::Failed {
                self.note_failure(&rec.endpoint_id, t);
            }
            self.save(&rec).await;
            self.requeue_jobs(&rec.id, "its worker was stopped", t).await;
        }
    }

    /// Accrues usage (R5.3): every `metering_interval_ms` for running workers (whole seconds so
    /// far), and for every worker that finished since (its lifetime rounded up). Entries are
    /// written in one transaction and the billed seconds advance only once it committed, so a
    /// crash loses at most one interval and nothing is counted twice.
    async fn meter(&mut self, endpoints: &[EndpointRecord], t: Millis) {
        for e in endpoints {
            self.billing_of.insert(e.id.clone(), (e.account.clone(), e.spec.gpu_type.clone(), e.spec.active_workers));
        }
        let periodic = t.saturating_sub(self.last_meter) >= self.metering_interval_ms;
        if !periodic && self.finished.is_empty() {
            return;
        }
        if !self.billed_loaded {
            let ids: Vec<WorkerId> = self
                .workers
                .values()
                .map(|w| w.rec.id.clone())
                .chain(self.finished.iter().map(|r| r.id.clone()))
                .collect();
            match self.store.billed(&ids).await {
                Ok(b) => {
                    for (id, (secs, class)) in b {
                        let ep = self
                            .workers
                            .get(&id)
                            .map(|w| w.rec.endpoint_id.clone())
                            .or_else(|| self.finished.iter().find(|r| r.id == id).map(|r| r.endpoint_id.clone()));
                        if let Some(ep) = ep {
                            self.billed.insert(id, (secs, class, ep));
                        }
                    }
                    self.billed_loaded = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the usage ledger; metering later");
                    return;
                }
            }
        }
        // (record, end of interval, stopped)
        let mut due: Vec<(WorkerRecord, Millis, bool)> =
            self.finished.iter().filter_map(|r| Some((r.clone(), r.stopped_at?, true))).collect();
        if periodic {
            let mut live: Vec<&Live> = self.workers.values().filter(|w| w.rec.launched_at.is_some()).collect();
            live.sort_by_key(|w| (w.rec.created_at, w.rec.id.clone()));
            due.extend(live.into_iter().map(|w| (w.rec.clone(), t, false)));
        }
        let mut updates: HashMap<WorkerId, (u64, Class, EndpointId)> = HashMap::new();
        let mut entries = Vec::new();
        for (rec, end, stopped) in &due {
            let Some(start) = rec.launched_at else { continue };
            let Some((account, gpu_type, active)) = self.billing_of.get(&rec.endpoint_id).cloned() else { continue };
            let (billed, class) = match updates.get(&rec.id).or(self.billed.get(&rec.id)) {
                Some((b, c, _)) => (*b, *c),
                None => {
                    let baseline = self
                        .billed
                        .iter()
                        .chain(updates.iter())
                        .filter(|(id, (_, c, ep))| {
                            *c == Class::Baseline && *ep == rec.endpoint_id && self.workers.contains_key(*id)
                        })
                        .count() as u32;
                    (0, classify(baseline, active))
                }
            };
            let secs = seconds_due(start, *end, *stopped, billed);
            updates.insert(rec.id.clone(), (billed + secs, class, rec.endpoint_id.clone()));
            if secs == 0 {
                continue;
            }
            let gpus = rec.gpus.len() as u32;
            let rate = self.prices.iter().find(|p| p.gpu_type == gpu_type).map_or(0, |p| p.nanos_per_gpu_second(class));
            entries.push(UsageEntry {
                account,
                endpoint_id: rec.endpoint_id.clone(),
                worker_id: rec.id.clone(),
                class,
                gpu_type,
                gpus,
                seconds: secs,
                cost_nanos: cost_nanos(secs, gpus, rate),
                at: *end,
            });
        }
        if let Err(e) = self.store.add_usage(&entries).await {
            tracing::warn!(error = %e, "could not write usage; will retry at the next accrual");
            return;
        }
        for (id, v) in updates {
            self.billed.insert(id, v);
        }
        for r in std::mem::take(&mut self.finished) {
            self.billed.remove(&r.id);
        }
        if periodic {
            self.last_meter = t;
        }
        self.check_credit(t).await;
    }

    /// Credit rules (R5.4) after each accrual: warn once per crossing below 10 hours of the
    /// account's current runtime cost (event, and the webhook if set), and turn every endpoint
    /// off below $10.
    async fn check_credit(&mut self, t: Millis) {
        let accounts = match self.store.list_accounts(&Scope::All).await {
            Ok(a) => a,
            Err(e) => return tracing::warn!(error = %e, "could not read accounts for the credit check"),
        };
        for a in accounts {
            let Some(balance) = a.balance_nanos else { continue };
            let hourly: i64 = self
                .workers
                .values()
                .filter(|w| w.rec.launched_at.is_some())
                .filter_map(|w| {
                    let (acct, gpu_type, _) = self.billing_of.get(&w.rec.endpoint_id)?;
                    (*acct == a.name).then_some(())?;
                    let class = self.billed.get(&w.rec.id).map_or(Class::Autoscaled, |b| b.1);
                    let price = self.prices.iter().find(|p| p.gpu_type == *gpu_type);
                    Some(hourly_cost_nanos(&[(w.rec.gpus.len() as u32, class)], price))
                })
                .sum();
            let v = credit_verdict(balance, hourly, a.low_credit_warned);
            if v.warn {
                let msg = format!(
                    "low credit: the balance of ${:.2} covers less than 10 hours of the current runtime cost (${:.2} per hour)",
                    usd(balance),
                    usd(hourly)
                );
                tracing::warn!(account = %a.name, "{msg}");
                for (ep, (account, _, _)) in &self.billing_of {
                    if *account == a.name {
                        self.logs.event(ep, None, msg.clone());
                    }
                }
                let _ = self.store.set_low_credit_warned(&a.name, true).await;
                let _ = self.store.add_account_event(&a.name, t, "low_credit", &msg).await;
                if let Some(url) = &a.webhook_url {
                    health::notify(
                        url.clone(),
                        serde_json::json!({"event": "low_credit", "account": a.name, "balance_usd": usd(balance),
                                           "cost_per_hour_usd": usd(hourly), "message": msg}),
                    );
                }
            } else if v.rearm {
                let _ = self.store.set_low_credit_warned(&a.name, false).await;
            }
            if v.turn_off {
                match self.store.turn_off_account(&a.name, t).await {
                    Ok(ids) if !ids.is_empty() => {
                        let msg = format!(
                            "credit below $10 (${:.2}): turned off {}; add credit, then start them again",
                            usd(balance),
                            ids.join(", ")
                        );
                        tracing::warn!(account = %a.name, "{msg}");
                        for id in ids.iter().filter_map(|i| EndpointId::parse(i).ok()) {
                            self.logs.event(&id, None, format!("endpoint turned off: {msg}"));
                        }
                        let _ = self.store.add_account_event(&a.name, t, "turned_off", &msg).await;
                        self.wake.notify_one();
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(account = %a.name, error = %e, "could not turn endpoints off"),
                }
            }
        }
    }

    async fn stop_all(&mut self, reason: &str) {
        let t = now();
        // Nothing is routed any more.
        self.plane.publish(RouteTable {
            version: sluice_core::routing::next_version(self.last_table.version, t.0),
            endpoints: Vec::new(),
            keys: Vec::new(),
        });
        let stops = self.workers.keys().map(|id| (id.clone(), WorkerState::Stopped, reason.to_owned())).collect();
        self.stop_workers(stops, t).await;
    }

    fn publish(
        &mut self,
        endpoints: &[EndpointRecord],
        desired: &HashMap<EndpointId, u32>,
        keys: Vec<(String, String)>,
        traffic: &HashMap<EndpointId, EndpointTraffic>,
    ) {
        let mut routes = Vec::with_capacity(endpoints.len());
        let mut counts: HashMap<EndpointId, WorkerCounts> = HashMap::new();
        let groups = self.by_endpoint();
        for e in endpoints {
            let mine: Vec<&Live> =
                groups.get(&e.id).map_or(&[][..], Vec::as_slice).iter().filter_map(|id| self.workers.get(id)).collect();
            let mut ready: Vec<&Live> = mine.iter().copied().filter(|w| w.rec.state == WorkerState::Ready).collect();
            ready.sort_by(|a, b| a.rec.created_at.cmp(&b.rec.created_at).then(a.rec.id.cmp(&b.rec.id)));
            routes.push(EndpointRoute {
                id: e.id.clone(),
                status: e.status,
                account: e.account.clone(),
                public: e.spec.public,
                max_requests_per_minute: e.spec.max_requests_per_minute,
                max_workers: e.spec.max_workers,
                load_balancing: e.spec.load_balancing,
                execution_timeout_ms: u64::from(e.spec.execution_timeout_secs) * 1000,
                queue_timeout_ms: u64::from(e.spec.queue_timeout_secs) * 1000,
                queue_capacity: e.spec.queue_capacity,
                concurrency_per_worker: e.spec.concurrency_per_worker,
                at_max: mine.iter().filter(|w| w.rec.state.is_live()).count() as u32 >= e.spec.max_workers,
                workers: ready
                    .iter()
                    .filter_map(|w| Some(WorkerRoute { id: w.rec.id.clone(), addr: w.addr?.to_string() }))
                    .collect(),
            });
            let tr = traffic.get(&e.id);
            let mut c = WorkerCounts {
                desired: desired.get(&e.id).copied().unwrap_or(0),
                running: tr.map_or(0, |t| t.in_flight),
                queued: tr.map_or(0, |t| t.waiting),
                ..Default::default()
            };
            for w in &mine {
                match w.rec.state {
                    WorkerState::Pending => c.pending += 1,
                    WorkerState::Starting => c.starting += 1,
                    WorkerState::Ready => c.ready += 1,
                    WorkerState::Draining => c.draining += 1,
                    _ => {}
                }
                if w.rec.generation != e.generation && w.rec.state.has_runtime() {
                    c.outdated += 1;
                } else if w.rec.generation == e.generation && w.rec.state == WorkerState::Ready {
                    c.updated += 1;
                }
            }
            self.series.record(&e.id, crate::now(), c.running, c.queued, c.ready);
            counts.insert(e.id.clone(), c);
        }
        self.counts.store(Arc::new(counts));
        if routes != self.last_table.endpoints || keys != self.last_table.keys {
            let version = sluice_core::routing::next_version(self.last_table.version, crate::now().0);
            let table = RouteTable { version, endpoints: routes, keys };
            self.plane.publish(table.clone());
            self.shared_table.store(Arc::new(table.clone()));
            self.last_table = table;
        }
    }
}

/// Moves a worker along its lifecycle; the edges are `WorkerState::can_become`'s (checked in
/// debug builds, which the integration tests use).
fn advance(rec: &mut WorkerRecord, next: WorkerState) {
    debug_assert!(
        rec.state.can_become(next),
        "worker {}: {:?} -> {:?} is not a lifecycle edge",
        rec.id,
        rec.state,
        next
    );
    rec.state = next;
}

fn finish(rec: &mut WorkerRecord, state: WorkerState, reason: &str, t: Millis) {
    advance(rec, state);
    rec.reason = Some(reason.to_owned());
    rec.stopped_at = Some(t);
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
