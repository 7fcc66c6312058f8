//! The reconciler's decisions, as one pure function: [`plan`] takes what each endpoint wants
//! ([`Intent`]), what is there ([`Observed`]: the workers the reconciler is responsible for, what
//! their health sources and the runtime say, what the gateway sees in flight) and the time, and
//! returns the [`Plan`]: every action of one pass, each with its reason. The control plane only
//! gathers the observation, calls `plan`, and applies the actions through the runtime and the
//! store (neon's intent / observed / plan; kube-rs's reconcile → `Action`).
//!
//! The order of the actions is the order they are applied in: what the runtime lost, health
//! transitions, drains and stops, new workers, launches. Later decisions see the earlier ones
//! (a worker that just became ready counts as ready for scaling; the GPUs of a worker stopped in
//! this pass are free for a launch in the same pass).
//!
//! [`adopt`] is the startup counterpart: which of the previous run's workers to keep.
mod rules;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};

pub use rules::{RolloutStep, WorkerBrief, drain_complete, pick_for_removal, rollout_step, startup_expired};

use crate::{
    EndpointId, Millis, WorkerId, WorkerState,
    placement::{Allocation, Node, Placer},
    pull::MISSED_PINGS_DEAD,
    worker::restart_backoff_ms,
};

/// Failed probes (or passes reported unready) in a row after which a ready worker leaves
/// rotation.
pub const UNHEALTHY_AFTER: u32 = 3;

/// Launches refused in a row (not crashes: the runtime could not start the worker at all)
/// before an endpoint stops trying until it is updated.
pub const MAX_LAUNCH_FAILURES: u32 = 5;

/// The reason an adopted worker carries until it is ready again (not a cold start).
pub const ADOPTED: &str = "adopted after platform restart";

/// The reason of a worker drained because its endpoint scaled down: the only drain that may
/// end in sleep rather than a stop.
pub const SCALED_DOWN: &str = "scaled down";

/// How an endpoint's workers sleep (issue 17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SleepPolicy {
    /// How many may sleep at once.
    pub max_sleeping: u32,
    /// A sleeper is stopped this long after it went to sleep.
    pub ttl_ms: u64,
}

/// What an endpoint wants, from the store and the autoscaler.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    pub id: EndpointId,
    /// `running`; a stopped or cut-off endpoint wants no workers (its `desired` is 0).
    pub running: bool,
    /// Workers of an older generation run an older version and are replaced.
    pub generation: u64,
    /// When the endpoint last changed: an update lets an endpoint that gave up launching try
    /// again.
    pub updated_at: Millis,
    pub data_center: String,
    pub gpu_type: String,
    pub gpus_per_worker: u32,
    pub startup_timeout_secs: u32,
    pub execution_timeout_secs: u32,
    /// What its HTTP workers are probed on (for the reasons recorded).
    pub health_path: String,
    /// Its workers take jobs with RunPod's protocol: their health is their heartbeat.
    pub pull: bool,
    /// Its scaled-down workers sleep instead of stopping (`None`: they stop).
    pub sleep: Option<SleepPolicy>,
}

/// What a worker's health source says (an HTTP probe, a heartbeat, or the runtime's readiness).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Health {
    /// The last check passed.
    pub healthy: bool,
    /// Failed checks in a row (for a pull worker: whole ping intervals missed).
    pub failures: u32,
}

/// A worker the reconciler is responsible for (not yet stopped or failed), as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Worker {
    pub id: WorkerId,
    pub endpoint: EndpointId,
    pub generation: u64,
    pub state: WorkerState,
    pub created_at: Millis,
    /// When its current phase began: launch, loss of health, or start of drain.
    pub since: Millis,
    /// It was ready once (a later loss of health is not a cold start).
    pub was_ready: bool,
    /// Adopted from the previous run and not yet ready again.
    pub adopted: bool,
    /// Launched: it has a health source (`None` while pending).
    pub health: Option<Health>,
    /// Pending because no node had room for it the last time (a rolling update then makes room).
    pub unplaceable: bool,
    /// Where it runs (launched workers).
    pub allocation: Option<Allocation>,
    /// Why it is where it is (pending workers: why they wait).
    pub reason: Option<String>,
    /// Requests (or jobs) in flight on it, as the gateway (or the queue) reports.
    pub in_flight: u64,
}

/// What the runtime says of a worker the reconciler knows, when it is not simply running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gone {
    /// It exited (the reason: "exited with status 1", "killed by signal 9").
    Exited(String),
    /// The runtime no longer lists it.
    Vanished,
}

/// A sleep or wake call on a worker, as far as it has gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// The wake call has not answered yet: the worker is not ready, whatever its health says
    /// (a sleeping engine still answers its health check).
    Waking,
    /// The last call (sleep or wake) failed; the reason.
    Failed(String),
}

/// Per endpoint, what earlier passes learned: failures in a row (the crash back-off) and
/// launches the runtime refused in a row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    /// Consecutive worker failures and when the last one happened.
    pub failures: HashMap<EndpointId, (u32, Millis)>,
    /// Consecutive refused launches, the endpoint's `updated_at` they were counted under, and
    /// the last reason.
    pub launch_failures: HashMap<EndpointId, (u32, Millis, String)>,
}

/// Everything [`plan`] looks at.
#[derive(Debug, Clone, Default)]
pub struct Observed<'a> {
    /// The live workers, in any order.
    pub workers: Vec<Worker>,
    /// Workers of `workers` that the runtime reports exited or no longer lists.
    pub gone: HashMap<WorkerId, Gone>,
    /// Running workers the runtime lists that are not in `workers` (another run's leftovers).
    pub strays: Vec<WorkerId>,
    /// Pull workers whose handler asked for `refresh_worker`.
    pub refresh: HashSet<WorkerId>,
    /// Pull workers that reported a failed fitness check, and why.
    pub unhealthy: HashMap<WorkerId, String>,
    pub memory: Option<&'a Memory>,
    /// The GPU inventory.
    pub nodes: &'a [Node],
    /// How often pull workers ping (for the reasons recorded).
    pub ping_ms: u64,
    /// Sleep and wake calls in progress or failed, by worker.
    pub calls: HashMap<WorkerId, Call>,
    /// Endpoints whose models are not staged yet, and why (their workers wait: no GPU time is
    /// billed for a download).
    pub staging: HashMap<EndpointId, String>,
}

/// One thing to do, with its reason.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Stop a process the platform does not know (no record).
    StopStray { worker: WorkerId },
    /// The runtime lost the worker (exited or vanished): record it ended. `refreshed`: it left
    /// after its handler asked for `refresh_worker`, which is not a crash.
    Lost { worker: WorkerId, reason: String, refreshed: bool },
    /// A starting worker answers its health check: into rotation. `cold`: its first start (not
    /// an adoption, not a return from a loss of health).
    Ready { worker: WorkerId, cold: bool },
    /// A ready worker stopped answering: out of rotation, back to starting.
    Unready { worker: WorkerId, reason: String },
    /// A ready worker leaves rotation and finishes what it has before it stops.
    Drain { worker: WorkerId, reason: String },
    /// Stop now: `Failed` (no grace: a hung or silent worker) or `Stopped`.
    Stop { worker: WorkerId, state: WorkerState, reason: String },
    /// A new pending worker of an endpoint.
    Create { worker: WorkerId, endpoint: EndpointId },
    /// An endpoint updated since it gave up launching: its failure counts start over.
    Forget { endpoint: EndpointId },
    /// A pending worker waits; `reason` says why (recorded when it changed).
    Wait { worker: WorkerId, reason: String, unplaceable: bool },
    /// Launch a pending worker on this node with these GPUs.
    Launch { worker: WorkerId, allocation: Allocation },
    /// A drained worker goes to sleep instead of stopping (its sleep call is made).
    Sleep { worker: WorkerId },
    /// A sleeper is woken for a scale-up (its wake call is made; it is starting until the call
    /// answered and its health check passes).
    Wake { worker: WorkerId },
}

/// The actions of one pass, in the order they apply, and the count each endpoint wanted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub desired: HashMap<EndpointId, u32>,
}

/// An endpoint's workers as [`Desire`] is told of them, after the pass's health changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Headcount {
    /// Pending, starting and ready.
    pub live: u32,
    pub ready: u32,
    /// Asleep, and wakeable (not stopping in this pass).
    pub sleeping: u32,
}

/// How many workers an endpoint should have, asked once per endpoint per pass: the autoscaler
/// in the control plane (0 for an endpoint that is not running), a table in tests.
pub trait Desire {
    fn desired(&mut self, endpoint: &Intent, count: Headcount) -> u32;
}

impl<F: FnMut(&Intent, Headcount) -> u32> Desire for F {
    fn desired(&mut self, endpoint: &Intent, count: Headcount) -> u32 {
        self(endpoint, count)
    }
}

/// A worker as the plan tracks it through the pass.
struct Slot<'a> {
    w: &'a Worker,
    state: WorkerState,
    /// Ended in this pass (lost or stopped): no longer counted, its GPUs free.
    ended: bool,
}

/// One reconcile pass's decisions. `desire` gives each endpoint's count; `new_id` names the
/// workers it creates (the caller's entropy; a counter in tests).
pub fn plan(
    intents: &[Intent],
    obs: &Observed,
    now: Millis,
    desire: &mut dyn Desire,
    new_id: &mut dyn FnMut() -> WorkerId,
) -> Plan {
    let mut actions = Vec::new();
    let mut desired_by: HashMap<EndpointId, u32> = HashMap::new();
    let by_id: HashMap<&EndpointId, &Intent> = intents.iter().map(|i| (&i.id, i)).collect();
    let none = Memory::default();
    let memory = obs.memory.unwrap_or(&none);
    let mut slots: BTreeMap<&WorkerId, Slot> =
        obs.workers.iter().map(|w| (&w.id, Slot { w, state: w.state, ended: false })).collect();

    // 1. What the runtime says: strays stop; workers it lost end (failed, or stopped after a
    // refresh_worker).
    for s in &obs.strays {
        actions.push(Action::StopStray { worker: s.clone() });
    }
    for (id, slot) in slots.iter_mut() {
        let Some(gone) = obs.gone.get(*id) else { continue };
        if !slot.state.has_runtime() {
            continue;
        }
        let refreshed = obs.refresh.contains(*id);
        let base = match gone {
            Gone::Exited(how) => format!("worker process {how}"),
            Gone::Vanished => "worker process is no longer running".to_owned(),
        };
        let reason = match (refreshed, obs.unhealthy.get(*id)) {
            (true, _) => "refresh_worker: replaced after its job".to_owned(),
            (false, Some(why)) => format!("{why}; {base}"),
            (false, None) => base,
        };
        actions.push(Action::Lost { worker: (*id).clone(), reason, refreshed });
        slot.ended = true;
    }

    // 2. Health: a refreshed worker stops; starting → ready; ready → out of rotation (or dead,
    // for a silent pull worker); starting past the startup timeout → failed.
    let mut stops: Vec<(WorkerId, WorkerState, String)> = Vec::new();
    for (id, slot) in slots.iter_mut().filter(|(_, s)| !s.ended) {
        if obs.refresh.contains(*id) && slot.state.is_live() {
            // It takes nothing more: a ready one drains what it still has, and it is replaced.
            stops.push(((*id).clone(), WorkerState::Stopped, "refresh_worker: replaced after its job".into()));
            continue;
        }
        let intent = by_id.get(&slot.w.endpoint);
        // A failed sleep stops the worker as if it had not been asked to sleep; a failed wake
        // stops it too, and the endpoint's count makes a fresh one.
        match (obs.calls.get(*id), slot.state) {
            (Some(Call::Failed(why)), WorkerState::Sleeping) => {
                stops.push(((*id).clone(), WorkerState::Stopped, format!("sleep failed ({why}); stopped instead")));
                continue;
            }
            (Some(Call::Failed(why)), WorkerState::Starting) => {
                stops.push(((*id).clone(), WorkerState::Failed, format!("wake failed: {why}")));
                continue;
            }
            _ => {}
        }
        if slot.state == WorkerState::Sleeping {
            // A deleted endpoint's sleepers stop with its other workers (below).
            let Some(intent) = intent else { continue };
            let h = slot.w.health.unwrap_or_default();
            let path = intent.health_path.as_str();
            match intent.sleep {
                _ if h.failures >= UNHEALTHY_AFTER => stops.push((
                    (*id).clone(),
                    WorkerState::Failed,
                    format!("asleep, and its health check {path} failing: removed, not replaced"),
                )),
                None => stops.push(((*id).clone(), WorkerState::Stopped, "sleep turned off for its endpoint".into())),
                Some(p) if now.saturating_sub(slot.w.since) >= p.ttl_ms => stops.push((
                    (*id).clone(),
                    WorkerState::Stopped,
                    format!("asleep for {} s (sleep_ttl_secs)", p.ttl_ms / 1000),
                )),
                Some(_) => {}
            }
            continue;
        }
        let Some(h) = slot.w.health else { continue };
        let startup = intent.map_or(600, |i| i.startup_timeout_secs);
        let pull = intent.is_some_and(|i| i.pull);
        match slot.state {
            // A woken worker is ready once its wake call answered, not before.
            WorkerState::Starting if h.healthy && obs.calls.get(*id) == Some(&Call::Waking) => {}
            WorkerState::Starting if h.healthy => {
                actions.push(Action::Ready { worker: (*id).clone(), cold: !slot.w.was_ready && !slot.w.adopted });
                slot.state = WorkerState::Ready;
            }
            WorkerState::Ready if pull && h.failures >= MISSED_PINGS_DEAD => {
                stops.push((
                    (*id).clone(),
                    WorkerState::Failed,
                    format!("missed {} heartbeats ({} ms apart): presumed dead", h.failures, obs.ping_ms),
                ));
            }
            WorkerState::Ready if h.failures >= UNHEALTHY_AFTER => {
                let path = intent.map_or("", |i| i.health_path.as_str());
                let reason = format!("health check {path} failing; out of rotation");
                actions.push(Action::Unready { worker: (*id).clone(), reason });
                slot.state = WorkerState::Starting;
            }
            WorkerState::Starting if startup_expired(slot.w.since, now, startup) => {
                let reason = if pull {
                    format!("did not call for jobs or ping within the startup timeout of {startup} s")
                } else if slot.w.was_ready {
                    format!("health check failing for {startup} s")
                } else {
                    let path = intent.map_or("", |i| i.health_path.as_str());
                    format!("did not answer 200 on {path} within the startup timeout of {startup} s")
                };
                stops.push(((*id).clone(), WorkerState::Failed, reason));
            }
            _ => {}
        }
    }

    // 3. Per endpoint: scale to the desired count, replace workers of an older version (one at
    // a time), and stop the workers of deleted endpoints.
    let mut groups: HashMap<&EndpointId, Vec<&Slot>> = HashMap::new();
    for slot in slots.values().filter(|s| !s.ended) {
        groups.entry(&slot.w.endpoint).or_default().push(slot);
    }
    let mut creates: Vec<(EndpointId, usize)> = Vec::new();
    let mut wakes: Vec<WorkerId> = Vec::new();
    let stopping: HashSet<WorkerId> = stops.iter().map(|(id, _, _)| id.clone()).collect();
    for e in intents {
        let mine = groups.get(&e.id).map_or(&[][..], Vec::as_slice);
        let live = mine.iter().filter(|s| s.state.is_live()).count() as u32;
        let ready = mine.iter().filter(|s| s.state == WorkerState::Ready).count() as u32;
        // Sleepers of this version that are not being stopped, most recently asleep first.
        let mut asleep: Vec<&&Slot> =
            mine.iter().filter(|s| s.state == WorkerState::Sleeping && !stopping.contains(&s.w.id)).collect();
        for s in asleep.iter().filter(|s| s.w.generation != e.generation || !e.running) {
            let why = if e.running { "replaced by a new version of the endpoint" } else { "endpoint stopped" };
            stops.push((s.w.id.clone(), WorkerState::Stopped, why.into()));
        }
        asleep.retain(|s| s.w.generation == e.generation && e.running);
        asleep.sort_by(|a, b| b.w.since.cmp(&a.w.since).then(a.w.id.cmp(&b.w.id)));
        let count = Headcount { live, ready, sleeping: asleep.len() as u32 };
        let desired = desire.desired(e, count);
        desired_by.insert(e.id.clone(), desired);
        let brief = |s: &&&Slot| WorkerBrief {
            id: s.w.id.clone(),
            state: s.state,
            created_at: s.w.created_at,
            in_flight: s.w.in_flight,
        };
        let current: Vec<&&Slot> =
            mine.iter().filter(|s| s.w.generation == e.generation && s.state.is_live()).collect();
        let outdated: Vec<&&Slot> =
            mine.iter().filter(|s| s.w.generation != e.generation && s.state.is_live()).collect();
        let old_ready: Vec<&&Slot> = outdated.iter().copied().filter(|s| s.state == WorkerState::Ready).collect();
        // Outdated workers not serving stop at once; serving ones are replaced one at a time.
        for s in outdated.iter().filter(|s| s.state != WorkerState::Ready) {
            stops.push((s.w.id.clone(), WorkerState::Stopped, "replaced by a new version of the endpoint".into()));
        }
        let rolling = !old_ready.is_empty();
        if rolling {
            let draining = mine.iter().filter(|s| s.state == WorkerState::Draining).count() as u32;
            let stuck = current.iter().filter(|s| s.state == WorkerState::Pending && s.w.unplaceable).count() as u32;
            let ready_current = current.iter().filter(|s| s.state == WorkerState::Ready).count() as u32;
            let step =
                rollout_step(desired, old_ready.len() as u32, current.len() as u32, ready_current, stuck, draining);
            let briefs: Vec<WorkerBrief> = old_ready.iter().map(brief).collect();
            for id in pick_for_removal(&briefs, step.drain as usize) {
                stops.push((
                    id,
                    WorkerState::Stopped,
                    "replaced by a new version of the endpoint (rolling update)".into(),
                ));
            }
            if step.start > 0 {
                creates.push((e.id.clone(), step.start as usize));
            }
        }
        if current.len() > desired as usize {
            let why = if e.running { SCALED_DOWN } else { "endpoint stopped" };
            let briefs: Vec<WorkerBrief> = current.iter().map(brief).collect();
            for id in pick_for_removal(&briefs, current.len() - desired as usize) {
                stops.push((id, WorkerState::Stopped, why.into()));
            }
        } else if current.len() < desired as usize && !rolling {
            // Sleepers first (most recently asleep first), then cold starts for the rest.
            let need = desired as usize - current.len();
            let woken = need.min(asleep.len());
            wakes.extend(asleep.iter().take(woken).map(|s| s.w.id.clone()));
            if need > woken {
                creates.push((e.id.clone(), need - woken));
            }
        }
    }
    for slot in slots.values().filter(|s| {
        !s.ended && (s.state.is_live() || s.state == WorkerState::Sleeping) && !by_id.contains_key(&s.w.endpoint)
    }) {
        stops.push((slot.w.id.clone(), WorkerState::Stopped, "endpoint deleted".into()));
    }
    let mut growing: HashSet<EndpointId> = creates.iter().map(|(e, _)| e.clone()).collect();
    for id in wakes {
        if let Some(slot) = slots.get_mut(&id) {
            growing.insert(slot.w.endpoint.clone());
            actions.push(Action::Wake { worker: id });
            slot.state = WorkerState::Starting;
        }
    }

    // 4. Removals: a ready worker asked to stop drains; any other live one stops now. A drained
    // worker stops once nothing is in flight (or its requests had the execution timeout), but
    // never in the pass that began its drain: the gateway may route to it until the table that
    // this pass publishes arrives, and only the next report counts what it sent meanwhile.
    let mut seen: HashSet<WorkerId> = HashSet::new();
    for (id, state, reason) in stops {
        if !seen.insert(id.clone()) {
            continue;
        }
        let Some(slot) = slots.get_mut(&id) else { continue };
        if slot.ended {
            continue;
        }
        if slot.state == WorkerState::Ready && state == WorkerState::Stopped {
            actions.push(Action::Drain { worker: id, reason });
            slot.state = WorkerState::Draining;
        } else if slot.state.is_live() || slot.state == WorkerState::Sleeping {
            actions.push(Action::Stop { worker: id, state, reason });
            slot.ended = true;
        }
    }
    // Sleepers per endpoint as they stand now, for the drains that may end in sleep. An
    // endpoint starting workers in this pass puts none to sleep (it would be woken, or its GPUs
    // taken, at once).
    let mut sleeping: HashMap<&EndpointId, u32> = HashMap::new();
    for slot in slots.values().filter(|s| !s.ended && s.state == WorkerState::Sleeping) {
        *sleeping.entry(&slot.w.endpoint).or_default() += 1;
    }
    for (id, slot) in slots.iter_mut() {
        if slot.ended || slot.w.state != WorkerState::Draining || slot.w.since >= now {
            continue;
        }
        let intent = by_id.get(&slot.w.endpoint);
        let timeout = intent.map_or(600, |i| i.execution_timeout_secs);
        if drain_complete(slot.w.since, now, slot.w.in_flight, timeout) {
            // A worker drained because its endpoint scaled down sleeps while there is room.
            let room = intent
                .filter(|i| i.running && i.generation == slot.w.generation && !growing.contains(&i.id))
                .and_then(|i| i.sleep)
                .is_some_and(|p| {
                    slot.w.reason.as_deref() == Some(SCALED_DOWN)
                        && sleeping.get(&slot.w.endpoint).copied().unwrap_or(0) < p.max_sleeping
                });
            if room {
                actions.push(Action::Sleep { worker: (*id).clone() });
                slot.state = WorkerState::Sleeping;
                *sleeping.entry(&slot.w.endpoint).or_default() += 1;
                continue;
            }
            let reason = slot.w.reason.clone().unwrap_or_else(|| "drained".into());
            actions.push(Action::Stop { worker: (*id).clone(), state: WorkerState::Stopped, reason });
            slot.ended = true;
        }
    }

    // 5. New workers, then every pending worker in creation order: back-off, give-up, placement
    // (each placement seeing the ones before it; the GPUs of what stopped above are free).
    let mut pending: Vec<(WorkerId, EndpointId, Millis, bool)> = slots
        .values()
        .filter(|s| !s.ended && s.state == WorkerState::Pending)
        .map(|s| (s.w.id.clone(), s.w.endpoint.clone(), s.w.created_at, s.w.reason.is_some()))
        .collect();
    for (ep, n) in creates {
        for _ in 0..n {
            let id = new_id();
            actions.push(Action::Create { worker: id.clone(), endpoint: ep.clone() });
            pending.push((id, ep.clone(), now, true));
        }
    }
    pending.sort_by(|a, b| a.2.cmp(&b.2).then(a.0.cmp(&b.0)));
    let allocated: Vec<Allocation> =
        slots.values().filter(|s| !s.ended && s.state.has_runtime()).filter_map(|s| s.w.allocation.clone()).collect();
    let mut placer = Placer::new(obs.nodes, &allocated);
    // Sleepers whose GPUs a start may take, longest asleep first (never one being woken).
    let mut reclaimable: Vec<(WorkerId, Millis, Allocation)> = slots
        .values()
        .filter(|s| !s.ended && s.state == WorkerState::Sleeping && s.w.state == WorkerState::Sleeping)
        .filter_map(|s| Some((s.w.id.clone(), s.w.since, s.w.allocation.clone()?)))
        .collect();
    reclaimable.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    let mut forgotten: HashSet<&EndpointId> = HashSet::new();
    for (id, ep, _, _) in &pending {
        let Some(e) = by_id.get(ep) else { continue };
        let wait = |reason: String, unplaceable: bool| Action::Wait { worker: id.clone(), reason, unplaceable };
        if let Some((n, counted_at, why)) = memory.launch_failures.get(ep)
            && *n >= MAX_LAUNCH_FAILURES
            && !forgotten.contains(ep)
        {
            if *counted_at == e.updated_at {
                actions.push(wait(
                    format!(
                        "gave up after {n} failed launches: {why}; update the endpoint (image, credentials) to try again"
                    ),
                    false,
                ));
                continue;
            }
            // Updated since: try again from a clean slate.
            actions.push(Action::Forget { endpoint: ep.clone() });
            forgotten.insert(ep);
        }
        if let Some(reason) = obs.staging.get(ep) {
            actions.push(wait(reason.clone(), false));
            continue;
        }
        if let Some((n, at)) = memory.failures.get(ep)
            && !forgotten.contains(ep)
            && now.saturating_sub(*at) < restart_backoff_ms(*n)
        {
            actions
                .push(wait(format!("restarting after {n} failure(s); back-off {} ms", restart_backoff_ms(*n)), false));
            continue;
        }
        match placer.place(&e.data_center, &e.gpu_type, e.gpus_per_worker) {
            Ok(allocation) => actions.push(Action::Launch { worker: id.clone(), allocation }),
            Err(reason) => {
                // Sleeping never blocks a real start: stop the longest-sleeping worker whose GPUs
                // make room, if one does.
                let freed = reclaimable.iter().position(|(_, _, a)| {
                    placer.release(a);
                    let fits = placer.fits(&e.data_center, &e.gpu_type, e.gpus_per_worker);
                    placer.reserve(a);
                    fits
                });
                let placed = freed.map(|i| reclaimable.remove(i)).and_then(|(sleeper, _, a)| {
                    placer.release(&a);
                    let allocation = placer.place(&e.data_center, &e.gpu_type, e.gpus_per_worker).ok()?;
                    Some((sleeper, allocation))
                });
                match placed {
                    Some((sleeper, allocation)) => {
                        actions.push(Action::Stop {
                            worker: sleeper,
                            state: WorkerState::Stopped,
                            reason: format!("asleep; stopped to free its GPUs for a worker of endpoint {ep}"),
                        });
                        actions.push(Action::Launch { worker: id.clone(), allocation });
                    }
                    None => actions.push(wait(reason, true)),
                }
            }
        }
    }
    Plan { actions, desired: desired_by }
}

/// A worker record of the previous run, as [`adopt`] sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Remembered {
    pub id: WorkerId,
    pub endpoint: EndpointId,
    pub generation: u64,
    pub state: WorkerState,
}

/// What to do with the previous run's workers at startup.
#[derive(Debug, Clone, PartialEq)]
pub enum Adoption {
    /// It runs and is still wanted: keep it (probed back to ready).
    Adopt { worker: WorkerId },
    /// It runs but is not wanted (its endpoint is gone, stopped or changed), or nobody
    /// remembers it: stop it. `remembered`: record it stopped.
    Stop { worker: WorkerId, remembered: bool, reason: String },
    /// Remembered but not running: record how it ended.
    Gone { worker: WorkerId, state: WorkerState, reason: String },
}

/// Startup (R8.2): the runtime's running workers (`running`: id and whether it has an address
/// to reach it) against the records of the previous run and the endpoints as stored (running
/// ones, with their generation). A worker is adopted when its record and endpoint are current.
pub fn adopt(
    endpoints: &HashMap<EndpointId, u64>,
    remembered: &[Remembered],
    running: &[(WorkerId, bool)],
) -> Vec<Adoption> {
    let mut records: HashMap<&WorkerId, &Remembered> = remembered.iter().map(|r| (&r.id, r)).collect();
    let mut out = Vec::new();
    for (id, reachable) in running {
        let rec = records.remove(id);
        let keep = rec.is_some_and(|r| *reachable && endpoints.get(&r.endpoint) == Some(&r.generation));
        out.push(if keep {
            Adoption::Adopt { worker: id.clone() }
        } else {
            Adoption::Stop {
                worker: id.clone(),
                remembered: rec.is_some(),
                reason: "stopped after platform restart: no longer wanted".into(),
            }
        });
    }
    let mut rest: Vec<&Remembered> = records.into_values().collect();
    rest.sort_by(|a, b| a.id.cmp(&b.id));
    for r in rest {
        out.push(match r.state {
            WorkerState::Pending => Adoption::Gone {
                worker: r.id.clone(),
                state: WorkerState::Stopped,
                reason: "platform restarted before launch".into(),
            },
            _ => Adoption::Gone {
                worker: r.id.clone(),
                state: WorkerState::Failed,
                reason: "not running after platform restart".into(),
            },
        });
    }
    out
}
