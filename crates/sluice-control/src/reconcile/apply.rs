//! Applying a plan: each action through the runtime and the store, in the plan's order, in
//! phases that keep the slow parts concurrent (what the runtime lost, health and drains one by
//! one; every stop at once; new records; every launch at once). Every worker state change goes
//! through [`advance`], which checks the edge against `WorkerState::can_become` in debug builds.
use std::{collections::HashMap, collections::HashSet, time::Duration};

use futures_util::future::join_all;
use sluice_core::{
    EndpointId, Millis, WorkerId, WorkerState,
    placement::Allocation,
    reconcile::Action,
    worker::{Phase, describe_start, start_anatomy},
};
use sluice_runtime::{LaunchSpec, VolumeMount};
use sluice_store::{EndpointRecord, WorkerRecord};

use super::{
    Live, Reconciler, STOP_GRACE,
    calls::{Kind, SLEEP_TIMEOUT},
    is_pull,
};
use crate::now;

/// Moves a worker along its lifecycle; the edges are `WorkerState::can_become`'s (checked in
/// debug builds, which the integration tests use).
pub(super) fn advance(rec: &mut WorkerRecord, next: WorkerState) {
    debug_assert!(
        rec.state.can_become(next),
        "worker {}: {:?} -> {:?} is not a lifecycle edge",
        rec.id,
        rec.state,
        next
    );
    rec.state = next;
}

pub(super) fn finish(rec: &mut WorkerRecord, state: WorkerState, reason: &str, t: Millis) {
    advance(rec, state);
    rec.reason = Some(reason.to_owned());
    rec.stopped_at = Some(t);
}

impl Reconciler {
    async fn save(&self, rec: &WorkerRecord) {
        if let Err(e) = self.store.upsert_worker(rec).await {
            tracing::warn!(worker = %rec.id, error = %e, "could not record worker state");
        }
    }

    fn note_failure(&mut self, ep: &EndpointId, t: Millis) {
        let f = self.memory.failures.entry(ep.clone()).or_insert((0, t));
        f.0 += 1;
        f.1 = t;
    }

    /// Applies the plan's actions.
    pub(super) async fn apply(
        &mut self,
        actions: Vec<Action>,
        by_id: &HashMap<&EndpointId, &EndpointRecord>,
        t: Millis,
    ) {
        let mut stops = Vec::new();
        let mut launches = Vec::new();
        for a in actions {
            match a {
                Action::StopStray { worker } => {
                    tracing::warn!(%worker, "stopping a worker process the platform does not know");
                    if let Err(e) = self.runtime.stop(&worker, STOP_GRACE).await {
                        tracing::warn!(%worker, error = %e, "could not stop a stray worker");
                    }
                }
                Action::Lost { worker, reason, refreshed } => self.lost(&worker, &reason, refreshed, t).await,
                Action::Ready { worker, cold } => self.ready(&worker, cold, t).await,
                Action::Unready { worker, reason } => {
                    let Some(w) = self.workers.get_mut(&worker) else { continue };
                    advance(&mut w.rec, WorkerState::Starting);
                    w.rec.reason = Some(reason);
                    w.since = t;
                    tracing::warn!(%worker, "worker stopped answering its health check");
                    let rec = w.rec.clone();
                    self.save(&rec).await;
                }
                Action::Drain { worker, reason } => {
                    let Some(w) = self.workers.get_mut(&worker) else { continue };
                    advance(&mut w.rec, WorkerState::Draining);
                    w.rec.reason = Some(reason.clone());
                    w.since = t;
                    tracing::info!(%worker, "draining worker");
                    self.sig.logs.event(&w.rec.endpoint_id, Some(&worker), format!("worker draining: {reason}"));
                    let rec = w.rec.clone();
                    self.save(&rec).await;
                }
                Action::Stop { worker, state, reason } => stops.push((worker, state, reason)),
                Action::Create { worker, endpoint } => {
                    if !stops.is_empty() {
                        self.stop_workers(std::mem::take(&mut stops), t).await;
                    }
                    let Some(e) = by_id.get(&endpoint) else { continue };
                    self.create(worker, e, t).await;
                }
                Action::Forget { endpoint } => {
                    self.memory.launch_failures.remove(&endpoint);
                    self.memory.failures.remove(&endpoint);
                }
                Action::Wait { worker, reason, unplaceable } => {
                    if let Some(w) = self.workers.get_mut(&worker) {
                        w.unplaceable = unplaceable;
                    }
                    if self.set_pending_reason(&worker, reason.clone()).await {
                        tracing::info!(%worker, %reason, "worker waits");
                    }
                }
                Action::Launch { worker, allocation } => launches.push((worker, allocation)),
                Action::Sleep { worker } => self.sleep(&worker, by_id, t).await,
                Action::Wake { worker } => self.wake(&worker, by_id, t).await,
            }
        }
        if !stops.is_empty() {
            self.stop_workers(stops, t).await;
        }
        self.launch(launches, by_id, t).await;
    }

    /// The runtime lost a worker: record how it ended, and give its jobs back.
    async fn lost(&mut self, id: &WorkerId, reason: &str, refreshed: bool, t: Millis) {
        let Some(mut w) = self.workers.remove(id) else { return };
        self.calls.forget(id);
        // Reap stragglers of its process group (or container).
        if let Err(e) = self.runtime.stop(id, Duration::ZERO).await {
            tracing::debug!(worker = %id, error = %e, "reaping an ended worker");
        }
        if refreshed {
            // It exited by itself after its handler asked for refresh_worker: not a crash.
            tracing::info!(worker = %id, "worker exited for refresh_worker; replacing it");
            finish(&mut w.rec, WorkerState::Stopped, reason, t);
        } else {
            tracing::warn!(worker = %id, endpoint = %w.rec.endpoint_id, %reason, "worker failed");
            self.sig.logs.event(&w.rec.endpoint_id, Some(id), format!("worker failed: {reason}"));
            finish(&mut w.rec, WorkerState::Failed, reason, t);
            self.note_failure(&w.rec.endpoint_id, t);
        }
        self.save(&w.rec).await;
        self.requeue_jobs(id, "its worker failed", t).await;
        self.recorder.stopped(&w.rec, t);
        self.meter.ended(w.rec);
    }

    /// A drained worker goes to sleep: out of rotation (it already is), its sleep call made. It
    /// is billed as sleeping from when the call answered.
    async fn sleep(&mut self, id: &WorkerId, by_id: &HashMap<&EndpointId, &EndpointRecord>, t: Millis) {
        let Some(w) = self.workers.get_mut(id) else { return };
        let (Some(addr), Some(e)) = (w.addr, by_id.get(&w.rec.endpoint_id)) else { return };
        let Some(path) = e.spec.sleep.sleep_path.clone() else { return };
        advance(&mut w.rec, WorkerState::Sleeping);
        w.rec.reason = Some("asleep (scaled down)".into());
        w.since = t;
        tracing::info!(worker = %id, "putting worker to sleep");
        self.sig.logs.event(&w.rec.endpoint_id, Some(id), format!("worker going to sleep (POST {path})"));
        self.calls.start(id, addr, &path, Kind::Sleep, SLEEP_TIMEOUT);
        let rec = w.rec.clone();
        self.save(&rec).await;
    }

    /// A sleeper is woken: starting again, its wake call made; ready once the call answered and
    /// its health check passes.
    async fn wake(&mut self, id: &WorkerId, by_id: &HashMap<&EndpointId, &EndpointRecord>, t: Millis) {
        let Some(w) = self.workers.get_mut(id) else { return };
        let (Some(addr), Some(e)) = (w.addr, by_id.get(&w.rec.endpoint_id)) else { return };
        let Some(path) = e.spec.sleep.wake_path.clone() else { return };
        let asleep_for = t.saturating_sub(w.since) / 1000;
        // Billed as sleeping until now.
        self.meter.transition(w.rec.clone(), t);
        advance(&mut w.rec, WorkerState::Starting);
        w.rec.reason = Some("waking".into());
        w.rec.phase(Phase::WakeCalled, t);
        w.since = t;
        tracing::info!(worker = %id, "waking worker");
        self.sig.logs.event(
            &w.rec.endpoint_id,
            Some(id),
            format!("waking worker (asleep {asleep_for} s; POST {path})"),
        );
        let timeout = Duration::from_secs(u64::from(e.spec.timeouts.startup_timeout_secs));
        self.calls.start(id, addr, &path, Kind::Wake, timeout);
        let rec = w.rec.clone();
        self.save(&rec).await;
    }

    async fn ready(&mut self, id: &WorkerId, cold: bool, t: Millis) {
        let Some(w) = self.workers.get_mut(id) else { return };
        advance(&mut w.rec, WorkerState::Ready);
        w.rec.reason = None;
        w.rec.ready_at = Some(t);
        w.since = t;
        w.rec.phase(Phase::Healthy, t);
        tracing::info!(worker = %id, endpoint = %w.rec.endpoint_id, "worker ready");
        let took = w.rec.launched_at.map_or(0, |l| t.saturating_sub(l));
        if cold {
            self.sig.timings.observe(&w.rec.endpoint_id, t.saturating_sub(w.rec.created_at) as f64 / 1000.0);
        }
        // The anatomy of the start (or wake) that just ended: its event and its histograms.
        let woke = sluice_core::worker::woken(&w.rec.phases);
        if cold || woke {
            self.recorder.ready(&w.rec, t);
            for (part, ms) in start_anatomy(w.rec.created_at, &w.rec.phases) {
                self.sig.timings.phase(part, ms as f64 / 1000.0);
            }
        }
        let line = describe_start(w.rec.created_at, &w.rec.phases)
            .filter(|_| cold || woke)
            .unwrap_or_else(|| format!("{took} ms after launch"));
        self.sig.logs.event(&w.rec.endpoint_id, Some(id), format!("worker ready: {line}"));
        let rec = w.rec.clone();
        self.memory.failures.remove(&rec.endpoint_id);
        self.save(&rec).await;
    }

    async fn create(&mut self, id: WorkerId, e: &EndpointRecord, t: Millis) {
        let rec = WorkerRecord {
            id: id.clone(),
            endpoint_id: e.id.clone(),
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
            phases: Vec::new(),
        };
        self.save(&rec).await;
        self.workers.insert(id, Live { rec, addr: None, since: t, probe: None, unplaceable: false });
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

    /// Starts every placed worker concurrently (a container start takes the Engine hundreds of
    /// milliseconds, and a burst should not pay for them in sequence), then records each result.
    async fn launch(
        &mut self,
        launches: Vec<(WorkerId, Allocation)>,
        by_id: &HashMap<&EndpointId, &EndpointRecord>,
        t: Millis,
    ) {
        let mut specs = Vec::new();
        for (id, alloc) in launches {
            let Some(w) = self.workers.get_mut(&id) else { continue };
            w.unplaceable = false;
            let ep_id = w.rec.endpoint_id.clone();
            let Some(e) = by_id.get(&ep_id) else { continue };
            let mut env = e.spec.env.clone();
            if is_pull(e) {
                env.extend(self.sig.pull.env(&ep_id, &id, &e.spec.workers.gpu_type));
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
                host_network: is_pull(e) && sluice_core::pull::is_loopback_url(&self.sig.pull.base_url),
                health_path: e.spec.health_check_path.clone(),
                gpu_type: e.spec.workers.gpu_type.clone(),
                data_center: e.spec.data_center.clone(),
                models: self.sig.models.mount(&id, &e.spec),
            };
            specs.push((id, ep_id, e.updated_at, is_pull(e), e.spec.clone(), alloc, spec));
        }
        let runtime = &self.runtime;
        let results = join_all(specs.into_iter().map(|(id, ep, updated, pull, espec, alloc, spec)| async move {
            (id, ep, updated, pull, espec, alloc, runtime.start(spec).await)
        }))
        .await;
        for (id, ep_id, updated_at, pull, espec, alloc, result) in results {
            match result {
                Ok(l) => {
                    let probe = self.probe(pull, &id, l.addr, &espec);
                    let Some(w) = self.workers.get_mut(&id) else { continue };
                    // The anatomy: placed when this pass chose its GPUs, the image when the
                    // runtime had it, started now.
                    w.rec.phase(Phase::Placed, t);
                    if let Some(at) = l.image_at {
                        w.rec.phase(Phase::Image, at.max(t));
                    }
                    w.rec.phase(Phase::Started, now().max(t));
                    advance(&mut w.rec, WorkerState::Starting);
                    w.rec.reason = None;
                    w.rec.node = Some(alloc.node);
                    w.rec.gpus = alloc.gpus;
                    w.rec.port = Some(l.addr.port());
                    w.rec.pid = l.pid;
                    w.rec.launched_at = Some(t);
                    w.addr = Some(l.addr);
                    w.since = t;
                    w.probe = Some(probe);
                    tracing::info!(worker = %id, endpoint = %ep_id, addr = %l.addr, "worker launched");
                    let msg = format!("worker launched at {} with GPUs {:?}", l.addr, w.rec.gpus);
                    let rec = w.rec.clone();
                    self.sig.logs.follow(&ep_id, &id, self.runtime.log_paths(&ep_id, &id), false);
                    self.sig.logs.event(&ep_id, Some(&id), msg);
                    self.memory.launch_failures.remove(&ep_id);
                    self.save(&rec).await;
                }
                Err(err) => {
                    let Some(mut w) = self.workers.remove(&id) else { continue };
                    tracing::warn!(worker = %id, error = %err, "worker launch failed");
                    self.sig.logs.event(&ep_id, Some(&id), format!("worker launch failed: {err}"));
                    finish(&mut w.rec, WorkerState::Failed, &err.to_string(), t);
                    self.save(&w.rec).await;
                    self.note_failure(&ep_id, t);
                    // Counted per version of the endpoint: an update starts over.
                    let f = self.memory.launch_failures.entry(ep_id.clone()).or_insert((0, updated_at, String::new()));
                    if f.1 != updated_at {
                        *f = (0, updated_at, String::new());
                    }
                    f.0 += 1;
                    f.2 = err.to_string();
                }
            }
        }
    }

    /// Stops workers concurrently and records their final state.
    pub(super) async fn stop_workers(&mut self, stops: Vec<(WorkerId, WorkerState, String)>, t: Millis) {
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
            self.sig.pull.retire(&rec.id);
            self.calls.forget(&rec.id);
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
                self.recorder.stopped(&rec, done);
                self.meter.ended(rec.clone());
            }
            tracing::info!(worker = %rec.id, state = rec.state.as_str(), reason = rec.reason.as_deref().unwrap_or(""), "worker finished");
            self.sig.logs.event(
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

    /// Shutdown: nothing is routed any more, and every worker stops.
    pub(super) async fn stop_all(&mut self, reason: &str) {
        let t = now();
        self.publish_empty(t);
        let stops = self.workers.keys().map(|id| (id.clone(), WorkerState::Stopped, reason.to_owned())).collect();
        self.stop_workers(stops, t).await;
    }
}
