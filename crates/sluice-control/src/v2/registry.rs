//! What the platform knows of its pull workers between their calls (RunPod's worker protocol,
//! R6.2): when each was last heard from, the jobs it holds, what it asked for, and the wake-ups
//! of its held polls. Shared by the protocol handlers (`worker`) and the reconciler (which turns
//! silence into a dead worker and `refresh_worker` into a replacement).
use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use sluice_core::{
    EndpointId, Millis, WorkerId,
    pull::{Held, MISSED_PINGS_DEAD, Misses, missed_pings, token},
};
use tokio::sync::Notify;

/// What the platform knows of its pull workers between their calls: when each was last heard
/// from, which jobs it holds, and what it asked for. Shared by the protocol handlers and the
/// reconciler (which turns silence into a dead worker and `refresh_worker` into a replacement).
pub struct Registry {
    pub(super) secret: Vec<u8>,
    /// Where workers reach the platform's `/v2` API.
    pub base_url: String,
    pub ping_ms: u64,
    pub(super) seen: Mutex<HashMap<WorkerId, Millis>>,
    pub(super) held: Mutex<HashMap<WorkerId, HashMap<String, Held>>>,
    /// Workers being stopped: their polls end at once, so the SDK sees its SIGTERM promptly.
    pub(super) retired: Mutex<HashSet<WorkerId>>,
    /// Per endpoint: woken once per queued job, so that one held take claims it (rather than
    /// every held take querying the store for one job).
    pub(super) queued: Mutex<HashMap<EndpointId, Arc<Notify>>>,
    pub(super) refresh: Mutex<HashSet<WorkerId>>,
    pub(super) unhealthy: Mutex<HashMap<WorkerId, String>>,
    /// Per worker: pings in a row that left out a job the store says it runs
    /// (`sluice_core::pull::lost_jobs`).
    pub(super) misses: Mutex<HashMap<WorkerId, Misses>>,
    /// Per worker: woken when one of the jobs it holds stops running on it (its `job-stop` poll
    /// looks again).
    pub(super) stops: Mutex<HashMap<WorkerId, Arc<Notify>>>,
    /// Workers known to list the jobs they hold in their pings: one of their pings listed a job,
    /// or carried `runpod_version` (RunPod's SDK, which always lists them). Only their pings can
    /// say a job is lost; a worker that never lists anything keeps its jobs until it ends.
    pub(super) lists_jobs: Mutex<HashSet<WorkerId>>,
    pub(super) closing: AtomicBool,
    pub(super) closed: Notify,
}

impl Registry {
    pub fn new(secret: Vec<u8>, base_url: String, ping_ms: u64) -> Self {
        Registry {
            secret,
            base_url,
            ping_ms,
            seen: Mutex::default(),
            held: Mutex::default(),
            retired: Mutex::default(),
            queued: Mutex::default(),
            refresh: Mutex::default(),
            unhealthy: Mutex::default(),
            misses: Mutex::default(),
            lists_jobs: Mutex::default(),
            stops: Mutex::default(),
            closing: AtomicBool::new(false),
            closed: Notify::new(),
        }
    }

    /// The variables a worker of `endpoint` is started with.
    pub fn env(&self, endpoint: &EndpointId, worker: &WorkerId, gpu: &str) -> Vec<(String, String)> {
        let tok = token(&self.secret, endpoint.as_str(), worker.as_str());
        sluice_core::pull::worker_env(&self.base_url, endpoint.as_str(), worker.as_str(), gpu, &tok, self.ping_ms)
    }

    pub(super) fn queued(&self, e: &EndpointId) -> Arc<Notify> {
        self.queued.lock().unwrap().entry(e.clone()).or_default().clone()
    }

    /// A job was queued on `e`: one held take (of a worker in rotation) wakes to claim it.
    pub fn job_queued(&self, e: &EndpointId) {
        if let Some(n) = self.queued.lock().unwrap().get(e) {
            n.notify_one();
        }
    }

    /// When the worker was last heard from.
    pub fn last_seen(&self, w: &WorkerId) -> Option<Millis> {
        self.seen.lock().unwrap().get(w).copied()
    }

    /// Records a call from the worker; the first one wakes the reconciler at once (a starting
    /// worker that calls in is ready).
    pub(super) fn saw(&self, w: &WorkerId, t: Millis, wake: &Notify) {
        if self.seen.lock().unwrap().insert(w.clone(), t).is_none() {
            wake.notify_one();
        }
    }

    pub(super) fn hold(&self, w: &WorkerId, jobs: impl IntoIterator<Item = String>) {
        let mut held = self.held.lock().unwrap();
        let h = held.entry(w.clone()).or_default();
        for j in jobs {
            h.entry(j).or_default();
        }
    }

    pub(super) fn release(&self, w: &WorkerId, job: &str) {
        if let Some(h) = self.held.lock().unwrap().get_mut(w) {
            h.remove(job);
        }
    }

    /// Workers whose handler asked for `refresh_worker` since the last call.
    pub fn take_refresh(&self) -> HashSet<WorkerId> {
        std::mem::take(&mut *self.refresh.lock().unwrap())
    }

    /// Why a worker declared itself unhealthy (a failed fitness check), if it did.
    pub fn unhealthy_reason(&self, w: &WorkerId) -> Option<String> {
        self.unhealthy.lock().unwrap().get(w).cloned()
    }

    /// Forgets a worker that has ended.
    pub fn forget(&self, w: &WorkerId) {
        self.seen.lock().unwrap().remove(w);
        self.held.lock().unwrap().remove(w);
        self.unhealthy.lock().unwrap().remove(w);
        self.retired.lock().unwrap().remove(w);
        self.misses.lock().unwrap().remove(w);
        self.lists_jobs.lock().unwrap().remove(w);
        self.stops.lock().unwrap().remove(w);
    }

    /// The worker is about to be stopped: its held polls end now (204), and so do new ones.
    pub fn retire(&self, w: &WorkerId) {
        self.retired.lock().unwrap().insert(w.clone());
        self.closed.notify_waiters();
    }

    pub(super) fn polls_end(&self, w: &WorkerId) -> bool {
        self.is_closing() || self.retired.lock().unwrap().contains(w)
    }

    /// A ping's list of the jobs the worker has: they are held (after a restart, this is how
    /// the stop channel learns them), and a job it was told to stop and no longer lists is
    /// gone from it.
    pub(super) fn running_per_ping(&self, w: &WorkerId, ids: Vec<String>) {
        let mut held = self.held.lock().unwrap();
        let h = held.entry(w.clone()).or_default();
        h.retain(|j, x| x.tells == 0 || ids.contains(j));
        for j in ids {
            h.entry(j).or_default();
        }
    }

    /// What wakes `w`'s `job-stop` poll.
    pub(super) fn stop_notify(&self, w: &WorkerId) -> Arc<Notify> {
        self.stops.lock().unwrap().entry(w.clone()).or_default().clone()
    }

    /// A job held by `w` stopped running on it (cancelled, timed out, expired, taken back).
    pub fn stops_changed(&self, w: &WorkerId) {
        if let Some(n) = self.stops.lock().unwrap().get(w) {
            n.notify_waiters();
        }
    }

    /// Ends every held poll at once (platform shutdown), so the gateway can close.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        self.closed.notify_waiters();
    }

    pub(super) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }
}

/// Heartbeat health for the reconciler: whether the worker has been heard from and has not
/// missed [`MISSED_PINGS_DEAD`] intervals, and how many it has missed.
pub fn heartbeat(reg: &Registry, w: &WorkerId, t: Millis) -> (bool, u32) {
    match reg.last_seen(w) {
        None => (false, 0),
        Some(last) => {
            let missed = missed_pings(last, t, reg.ping_ms);
            (missed < MISSED_PINGS_DEAD, missed)
        }
    }
}
