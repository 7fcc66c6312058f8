//! The trace simulator (R4.8): replays requests through the *same* [`decide`] with a virtual
//! clock, simulated workers (cold starts drawn from a fixed value or an empirical sample,
//! seeded), the gateway's queueing rules (bounded FIFO queue with a wait timeout, a hard
//! per-worker concurrency cap) and per-second GPU metering.
//!
//! With sleeping workers (issue 17), a worker the scaler removes sleeps instead of stopping
//! while fewer than `max_sleeping` sleep; a scale-up wakes sleepers (the wake time, not a cold
//! start) before it starts any; sleeping seconds are metered at their own rate.
//!
//! Idle time costs nothing to simulate: when nothing is in flight, queued or starting and the
//! scaler has been at rest for its longest window, the clock jumps to the next arrival.
use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
};

use serde::Serialize;

use super::{MetricsSnapshot, ScalerState, ScalingPolicy, decide};
use crate::{FieldError, Millis};

/// One request of a trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceRequest {
    pub arrival_ms: u64,
    pub service_ms: u64,
}

/// A trace: requests per endpoint (one group when the trace has no `endpoint` column).
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub endpoints: Vec<(String, Vec<TraceRequest>)>,
}

/// Parses the canonical CSV (`arrival_s,service_s[,endpoint]` with a header). Errors name the
/// line and the column.
pub fn parse_trace(text: &str) -> Result<Trace, FieldError> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| FieldError::new("trace", "is empty"))?;
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(a), Some(s)) = (col("arrival_s"), col("service_s")) else {
        return Err(FieldError::new("trace", format!("header must have arrival_s and service_s, got {header:?}")));
    };
    let e = col("endpoint");
    let mut groups: Vec<(String, Vec<TraceRequest>)> = Vec::new();
    let mut last = f64::NEG_INFINITY;
    for (i, line) in lines {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let num = |idx: usize, name: &str| -> Result<f64, FieldError> {
            let raw = f
                .get(idx)
                .ok_or_else(|| FieldError::new(format!("line {}", i + 1), format!("missing column {name}")))?;
            let v: f64 = raw
                .parse()
                .map_err(|_| FieldError::new(format!("line {}", i + 1), format!("{name} {raw:?} is not a number")))?;
            if !v.is_finite() || v < 0.0 {
                return Err(FieldError::new(format!("line {}", i + 1), format!("{name} must be a finite number >= 0")));
            }
            Ok(v)
        };
        let arrival = num(a, "arrival_s")?;
        let service = num(s, "service_s")?;
        if arrival < last {
            return Err(FieldError::new(format!("line {}", i + 1), "arrival_s must be sorted ascending"));
        }
        last = arrival;
        let ep = e.and_then(|e| f.get(e)).map_or("", |v| *v);
        let req = TraceRequest {
            arrival_ms: (arrival * 1000.0).round() as u64,
            service_ms: (service * 1000.0).round().max(1.0) as u64,
        };
        match groups.iter_mut().find(|(name, _)| name == ep) {
            Some((_, v)) => v.push(req),
            None => groups.push((ep.to_owned(), vec![req])),
        }
    }
    if groups.is_empty() {
        return Err(FieldError::new("trace", "has no requests"));
    }
    Ok(Trace { endpoints: groups })
}

/// How long a new worker takes to become ready.
#[derive(Debug, Clone, PartialEq)]
pub enum ColdStart {
    Fixed {
        ms: u64,
    },
    /// Drawn uniformly from these samples with a seeded generator.
    Empirical {
        samples_ms: Vec<u64>,
    },
}

/// Parses a cold-start file: a CSV with a `cold_start_s` column (or one number per line).
pub fn parse_cold_starts(text: &str) -> Result<ColdStart, FieldError> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().ok_or_else(|| FieldError::new("cold_starts", "is empty"))?;
    let (idx, mut rest): (usize, Vec<&str>) = match first.split(',').position(|c| c.trim() == "cold_start_s") {
        Some(i) => (i, lines.collect()),
        None => (0, std::iter::once(first).chain(lines).collect()),
    };
    let mut samples = Vec::new();
    for (n, l) in rest.drain(..).enumerate() {
        let raw = l.split(',').nth(idx).unwrap_or("").trim();
        let v: f64 = raw
            .parse()
            .map_err(|_| FieldError::new(format!("cold_starts line {}", n + 2), format!("{raw:?} is not a number")))?;
        if !v.is_finite() || v < 0.0 {
            return Err(FieldError::new(format!("cold_starts line {}", n + 2), "must be >= 0"));
        }
        samples.push((v * 1000.0).round() as u64);
    }
    if samples.is_empty() {
        return Err(FieldError::new("cold_starts", "has no samples"));
    }
    Ok(ColdStart::Empirical { samples_ms: samples })
}

/// Sleeping workers in a simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSleep {
    pub max_sleeping: u32,
    /// How long a wake takes (fixed, or drawn from samples like cold starts).
    pub wake: ColdStart,
    /// A sleeper is stopped this long after it went to sleep.
    pub ttl_ms: u64,
    /// Price of one sleeping GPU-second.
    pub usd_per_gpu_second: f64,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub policy: ScalingPolicy,
    pub cold_start: ColdStart,
    /// Workers sleep instead of stopping (`None`: they stop).
    pub sleep: Option<SimSleep>,
    /// Gateway queue capacity and wait timeout.
    pub queue_capacity: usize,
    pub queue_timeout_ms: u64,
    pub gpus_per_worker: u32,
    /// Price of one GPU-second (autoscaling price).
    pub usd_per_gpu_second: f64,
    pub seed: u64,
}

/// What one policy did on one trace. The keys of the JSON lines of `sluice sim --json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct SimResult {
    pub policy: String,
    pub requests: u64,
    pub completed: u64,
    pub rejected: u64,
    pub rejected_queue_full: u64,
    pub rejected_timeout: u64,
    pub p50_s: f64,
    pub p95_s: f64,
    pub p99_s: f64,
    pub cold_start_hits: u64,
    /// Requests that waited for a sleeping worker to wake (counted in `cold_start_hits` too).
    pub wake_hits: u64,
    pub wakes: u64,
    pub gpu_seconds: f64,
    /// GPU-seconds asleep (metered at the sleeping rate; not in `gpu_seconds`).
    pub sleeping_gpu_seconds: f64,
    pub cost_usd: f64,
    pub busy_fraction: f64,
    pub scale_events: u64,
    pub scale_events_per_hour: f64,
    /// The most workers the policy asked for at once (of any one endpoint of the trace): below
    /// `max_workers`, the ceiling never bound.
    #[serde(default)]
    pub peak_workers: u32,
}

struct Worker {
    ready_at: u64,
    /// Start of its current awake stretch.
    started_at: u64,
    busy: u32,
    draining: bool,
    stopped_at: Option<u64>,
    /// Asleep since (it is not provisioned while asleep).
    asleep_since: Option<u64>,
    /// Closed stretches: (from, to, asleep).
    stretches: Vec<(u64, u64, bool)>,
    /// Its latest start was a wake.
    woken: bool,
}

impl Worker {
    fn new(now: u64, ready_at: u64) -> Worker {
        Worker {
            ready_at,
            started_at: now,
            busy: 0,
            draining: false,
            stopped_at: None,
            asleep_since: None,
            stretches: Vec::new(),
            woken: false,
        }
    }

    fn serving(&self) -> bool {
        !self.draining && self.stopped_at.is_none() && self.asleep_since.is_none()
    }
}

struct Queued {
    arrival: u64,
    service: u64,
}

/// SplitMix64: small, seeded, deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
}

struct Endpoint<'a> {
    cfg: &'a SimConfig,
    /// The policy now (the config's, unless a re-tune replaced it).
    policy: ScalingPolicy,
    rng: Rng,
    workers: Vec<Worker>,
    queue: VecDeque<Queued>,
    /// (finish time, worker index)
    running: BinaryHeap<Reverse<(u64, usize)>>,
    /// Times at which starting workers become ready.
    readying: BinaryHeap<Reverse<u64>>,
    state: ScalerState,
    latencies: Vec<u64>,
    out: SimResult,
    arrivals_since_tick: u64,
    busy_slot_ms: u128,
    /// When the last request completed: the end of the metering horizon.
    last_done: u64,
    /// Worker lifetimes (ms) of stopped workers whose slots were reused.
    retired_ms: u64,
    /// When the scaler last changed its target (however the evaluation was triggered).
    last_change_at: u64,
}

impl<'a> Endpoint<'a> {
    fn cold_start(&mut self) -> u64 {
        match &self.cfg.cold_start {
            ColdStart::Fixed { ms } => *ms,
            ColdStart::Empirical { samples_ms } => samples_ms[(self.rng.next() % samples_ms.len() as u64) as usize],
        }
    }

    fn cap(&self) -> u32 {
        self.policy.concurrency_per_worker
    }

    fn wake_time(&mut self) -> u64 {
        match self.cfg.sleep.as_ref().map(|s| &s.wake) {
            Some(ColdStart::Fixed { ms }) => *ms,
            Some(ColdStart::Empirical { samples_ms }) => {
                let n = samples_ms.len() as u64;
                samples_ms[(self.rng.next() % n) as usize]
            }
            None => 0,
        }
    }

    fn sleeping(&self) -> u32 {
        self.workers.iter().filter(|w| w.asleep_since.is_some() && w.stopped_at.is_none()).count() as u32
    }

    /// A drained worker: asleep while there is room, else stopped.
    fn retire(&mut self, i: usize, now: u64) {
        let room = self.cfg.sleep.as_ref().is_some_and(|s| self.sleeping() < s.max_sleeping);
        let w = &mut self.workers[i];
        if room {
            w.stretches.push((w.started_at, now, false));
            w.draining = false;
            w.asleep_since = Some(now);
        } else {
            w.stopped_at = Some(now);
        }
    }

    /// Sleepers past their time stop.
    fn expire_sleepers(&mut self, now: u64) {
        let Some(ttl) = self.cfg.sleep.as_ref().map(|s| s.ttl_ms) else { return };
        for w in &mut self.workers {
            if let Some(since) = w.asleep_since
                && w.stopped_at.is_none()
                && now.saturating_sub(since) >= ttl
            {
                w.stretches.push((since, now, true));
                w.asleep_since = None;
                w.stopped_at = Some(now);
                // Nothing awake is open any more: its last awake stretch closed when it slept.
                w.started_at = now;
            }
        }
    }

    /// A ready, non-draining worker with a free slot: the least busy (least outstanding).
    fn free_worker(&self, now: u64) -> Option<usize> {
        let cap = self.cap();
        self.workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.serving() && w.ready_at <= now && w.busy < cap)
            .min_by_key(|(_, w)| w.busy)
            .map(|(i, _)| i)
    }

    fn start(&mut self, i: usize, now: u64, arrival: u64, service: u64) {
        self.workers[i].busy += 1;
        self.busy_slot_ms += u128::from(service);
        self.running.push(Reverse((now + service, i)));
        self.latencies.push(now - arrival + service);
    }

    /// Hands free slots to queued requests, oldest first.
    fn drain_queue(&mut self, now: u64) {
        while !self.queue.is_empty() {
            let Some(i) = self.free_worker(now) else { break };
            let q = self.queue.pop_front().expect("non-empty");
            self.start(i, now, q.arrival, q.service);
        }
    }

    fn provisioned(&self) -> u32 {
        self.workers.iter().filter(|w| w.serving()).count() as u32
    }

    fn tick(&mut self, now: u64) {
        // Queue timeout.
        while self.queue.front().is_some_and(|q| now - q.arrival >= self.cfg.queue_timeout_ms) {
            self.queue.pop_front();
            self.out.rejected_timeout += 1;
        }
        self.expire_sleepers(now);
        // One pass over the workers for all three figures.
        let (mut in_flight, mut ready, mut provisioned) = (0u64, 0u32, 0u32);
        for w in &self.workers {
            in_flight += u64::from(w.busy);
            if w.serving() {
                provisioned += 1;
                ready += u32::from(w.ready_at <= now);
            }
        }
        let snap = MetricsSnapshot {
            in_flight,
            waiting: self.queue.len() as u64,
            arrivals: std::mem::take(&mut self.arrivals_since_tick),
            oldest_wait_ms: self.queue.front().map_or(0, |q| now - q.arrival),
            ready,
            provisioned,
            sleeping: self.sleeping(),
            gpu_util_percent: None,
            engine_running: None,
            engine_waiting: None,
            kv_cache_percent: None,
        };
        let before = self.state.target;
        let d = decide(&self.policy, &mut self.state, &snap, Millis(now));
        if d.target != before {
            self.out.scale_events += 1;
            self.out.peak_workers = self.out.peak_workers.max(d.target);
            self.last_change_at = now;
        }
        self.apply(d.target, now, provisioned);
    }

    /// Moves the provisioned count (`have`, counted by the caller) to `target`.
    fn apply(&mut self, target: u32, now: u64, have: u32) {
        if target > have {
            // Sleepers first, most recently asleep first; cold starts for the rest.
            let mut asleep: Vec<usize> = (0..self.workers.len())
                .filter(|&i| self.workers[i].asleep_since.is_some() && self.workers[i].stopped_at.is_none())
                .collect();
            asleep.sort_by_key(|&i| Reverse(self.workers[i].asleep_since));
            let mut woken = asleep.into_iter();
            for _ in have..target {
                if let Some(i) = woken.next() {
                    let wake = self.wake_time();
                    let w = &mut self.workers[i];
                    let since = w.asleep_since.take().unwrap_or(now);
                    w.stretches.push((since, now, true));
                    w.started_at = now;
                    w.ready_at = now + wake;
                    w.woken = true;
                    self.readying.push(Reverse(now + wake));
                    self.out.wakes += 1;
                    continue;
                }
                let cs = self.cold_start();
                self.readying.push(Reverse(now + cs));
                self.workers.push(Worker::new(now, now + cs));
            }
        } else if target < have {
            // Remove starting workers first, then the least busy ready ones; they drain.
            let mut order: Vec<usize> = (0..self.workers.len()).filter(|&i| self.workers[i].serving()).collect();
            order.sort_by_key(|&i| {
                (self.workers[i].ready_at <= now, self.workers[i].busy, Reverse(self.workers[i].started_at))
            });
            for &i in order.iter().take((have - target) as usize) {
                let w = &mut self.workers[i];
                w.draining = true;
                if w.busy == 0 {
                    // A worker still starting stops; only one that served may sleep.
                    if w.ready_at > now {
                        w.stopped_at = Some(now);
                    } else {
                        self.retire(i, now);
                    }
                }
            }
        }
    }

    fn finish(&mut self, now: u64, i: usize) {
        let w = &mut self.workers[i];
        w.busy -= 1;
        if w.draining && w.busy == 0 {
            self.retire(i, now);
        }
        self.out.completed += 1;
        self.last_done = self.last_done.max(now);
    }

    fn arrive(&mut self, now: u64, r: TraceRequest) {
        self.out.requests += 1;
        self.arrivals_since_tick += 1;
        if let Some(i) = self.free_worker(now) {
            self.start(i, now, r.arrival_ms, r.service_ms);
            return;
        }
        if self.queue.len() >= self.cfg.queue_capacity {
            self.out.rejected_queue_full += 1;
            return;
        }
        let starting = self.workers.iter().any(|w| w.serving() && w.ready_at > now);
        let waking = self.workers.iter().any(|w| w.serving() && w.ready_at > now && w.woken);
        self.out.cold_start_hits += u64::from(starting || self.provisioned() == 0);
        self.out.wake_hits += u64::from(waking || (self.provisioned() == 0 && self.sleeping() > 0));
        self.queue.push_back(Queued { arrival: r.arrival_ms, service: r.service_ms });
        if self.provisioned() == 0 {
            // The gateway asks for a worker at once instead of waiting for the next tick.
            self.tick(now);
        }
    }

    fn idle(&self, now: u64) -> bool {
        self.queue.is_empty()
            && self.running.is_empty()
            && self.workers.iter().all(|w| !w.serving() || w.ready_at <= now)
    }
}

/// A policy that changes itself during a run: every `every_ms` of virtual time, `f(now, the
/// requests arrived so far)` may return a new policy (the SLO policy's re-tune).
pub struct Retune<'a> {
    pub every_ms: u64,
    pub f: RetuneFn<'a>,
}

/// `f(now, the requests arrived so far)`: a new policy, or none to keep the current one.
pub type RetuneFn<'a> = Box<dyn FnMut(u64, &[TraceRequest]) -> Option<ScalingPolicy> + Send + 'a>;

/// Runs one endpoint's requests.
fn run_endpoint(
    cfg: &SimConfig,
    reqs: &[TraceRequest],
    seed: u64,
    mut retune: Option<&mut Retune<'_>>,
) -> (SimResult, Vec<u64>, u128, (u64, u64)) {
    let mut next_retune = retune.as_ref().map_or(u64::MAX, |r| r.every_ms);
    let mut ep = Endpoint {
        cfg,
        policy: cfg.policy.clone(),
        rng: Rng(seed),
        workers: Vec::new(),
        queue: VecDeque::new(),
        running: BinaryHeap::new(),
        readying: BinaryHeap::new(),
        state: ScalerState { target: 0, ..Default::default() },
        latencies: Vec::with_capacity(reqs.len()),
        out: SimResult::default(),
        arrivals_since_tick: 0,
        busy_slot_ms: 0,
        last_done: 0,
        retired_ms: 0,
        last_change_at: 0,
    };
    // The baseline is running when the trace begins (an endpoint's active workers are warm).
    ep.apply(cfg.policy.min_workers, 0, 0);
    for w in &mut ep.workers {
        w.ready_at = 0;
    }
    ep.readying.clear();
    ep.state.target = cfg.policy.min_workers;
    ep.out.peak_workers = cfg.policy.min_workers;
    const TICK: u64 = 1000;
    let rest_ms = super::presets::rest_ms(&cfg.policy);
    let mut next_tick = 0u64;
    let mut i = 0;
    let end_of_trace = reqs.last().map_or(0, |r| r.arrival_ms);
    loop {
        let next_arrival = reqs.get(i).map(|r| r.arrival_ms);
        let next_finish = ep.running.peek().map(|Reverse((t, _))| *t);
        let next_ready = ep.readying.peek().map(|Reverse(t)| *t);
        // Done: trace over, nothing in the system, and the scaler at rest.
        if next_arrival.is_none() && ep.idle(next_tick) && next_tick > end_of_trace + rest_ms {
            break;
        }
        let mut now = next_tick;
        for t in [next_arrival, next_finish, next_ready].into_iter().flatten() {
            now = now.min(t);
        }
        if now == next_tick {
            if now >= next_retune
                && let Some(r) = retune.as_deref_mut()
            {
                if let Some(p) = (r.f)(now, &reqs[..i]) {
                    ep.policy = p;
                }
                next_retune = now + r.every_ms;
            }
            ep.tick(now);
            ep.drain_queue(now);
            next_tick += TICK;
            // Skip idle stretches once the scaler has been at rest for its longest window.
            if let Some(a) = next_arrival
                && a > next_tick + TICK
                && now - ep.last_change_at.max(ep.state.last_busy.map_or(0, |b| b.0)) > rest_ms
                && ep.idle(now)
            {
                next_tick = a - a % TICK;
            }
            continue;
        }
        if next_finish == Some(now) {
            let Reverse((_, w)) = ep.running.pop().expect("peeked");
            ep.finish(now, w);
            ep.drain_queue(now);
        } else if next_arrival == Some(now) {
            let r = reqs[i];
            i += 1;
            ep.arrive(now, r);
        } else {
            ep.readying.pop();
            ep.drain_queue(now);
        }
    }
    // Workers are metered until they stop or the last request is done, whichever comes first,
    // so every policy is charged over the same horizon.
    let horizon = ep.last_done.max(end_of_trace);
    // Every stretch capped at the horizon: closed ones, then the open one (awake until it
    // stopped, or asleep since it went to sleep).
    let capped = |from: u64, to: u64| to.min(horizon).saturating_sub(from);
    let (mut worker_ms, mut asleep_ms) = (ep.retired_ms, 0u64);
    for w in &ep.workers {
        for &(from, to, asleep) in &w.stretches {
            *(if asleep { &mut asleep_ms } else { &mut worker_ms }) += capped(from, to);
        }
        match (w.asleep_since, w.stopped_at) {
            (Some(since), None) => asleep_ms += capped(since, horizon),
            (None, end) if w.stretches.last().is_none_or(|s| s.1 <= w.started_at) => {
                worker_ms += capped(w.started_at, end.unwrap_or(horizon));
            }
            _ => {}
        }
    }
    let lat = std::mem::take(&mut ep.latencies);
    (ep.out, lat, ep.busy_slot_ms, (worker_ms, asleep_ms))
}

/// The value at fraction `q` (0-1) of sorted numbers, by the nearest rank; `None` when empty.
pub(crate) fn rank(sorted: &[u64], q: f64) -> Option<u64> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[((q * last as f64).round() as usize).min(last)])
}

/// Percentile `p` (0-100) of sorted milliseconds, in seconds (0 when empty).
pub(crate) fn percentile(sorted: &[u64], p: f64) -> f64 {
    rank(sorted, p / 100.0).map_or(0.0, |v| v as f64 / 1000.0)
}

/// Replays every endpoint of `trace` with `cfg` and sums the results.
pub fn simulate(cfg: &SimConfig, trace: &Trace) -> SimResult {
    simulate_with(cfg, trace, &mut |_| None)
}

/// [`simulate`], with a policy that may re-tune itself: `retune(endpoint index)` gives each
/// endpoint of the trace its own.
pub fn simulate_with<'a>(
    cfg: &SimConfig,
    trace: &Trace,
    retune: &mut dyn FnMut(usize) -> Option<Retune<'a>>,
) -> SimResult {
    let mut total = SimResult { policy: cfg.policy.preset.as_str().into(), ..Default::default() };
    let mut all = Vec::new();
    let mut busy: u128 = 0;
    let mut worker_ms: u128 = 0;
    let mut asleep_ms: u128 = 0;
    let mut span_ms = 0u64;
    for (n, (_, reqs)) in trace.endpoints.iter().enumerate() {
        let mut own = retune(n);
        let (r, lat, b, w) = run_endpoint(cfg, reqs, cfg.seed.wrapping_add(n as u64), own.as_mut());
        total.requests += r.requests;
        total.completed += r.completed;
        total.rejected_queue_full += r.rejected_queue_full;
        total.rejected_timeout += r.rejected_timeout;
        total.cold_start_hits += r.cold_start_hits;
        total.wake_hits += r.wake_hits;
        total.wakes += r.wakes;
        total.scale_events += r.scale_events;
        total.peak_workers = total.peak_workers.max(r.peak_workers);
        all.extend(lat);
        busy += b;
        worker_ms += u128::from(w.0);
        asleep_ms += u128::from(w.1);
        span_ms = span_ms.max(reqs.last().map_or(0, |r| r.arrival_ms));
    }
    all.sort_unstable();
    total.rejected = total.rejected_queue_full + total.rejected_timeout;
    total.p50_s = percentile(&all, 50.0);
    total.p95_s = percentile(&all, 95.0);
    total.p99_s = percentile(&all, 99.0);
    total.gpu_seconds = (worker_ms as f64 / 1000.0) * f64::from(cfg.gpus_per_worker);
    total.sleeping_gpu_seconds = (asleep_ms as f64 / 1000.0) * f64::from(cfg.gpus_per_worker);
    total.cost_usd = total.gpu_seconds * cfg.usd_per_gpu_second
        + total.sleeping_gpu_seconds * cfg.sleep.as_ref().map_or(0.0, |s| s.usd_per_gpu_second);
    let slot_ms = worker_ms as f64 * f64::from(cfg.policy.concurrency_per_worker);
    total.busy_fraction = if slot_ms > 0.0 { busy as f64 / slot_ms } else { 0.0 };
    let hours = (span_ms as f64 / 3_600_000.0).max(1.0 / 60.0);
    total.scale_events_per_hour = total.scale_events as f64 / hours;
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscale::Preset;

    fn cfg(preset: Preset, cpw: u32, cold_ms: u64) -> SimConfig {
        SimConfig {
            policy: ScalingPolicy::new(preset, 0, 10, cpw),
            cold_start: ColdStart::Fixed { ms: cold_ms },
            sleep: None,
            queue_capacity: 1000,
            queue_timeout_ms: 600_000,
            gpus_per_worker: 1,
            usd_per_gpu_second: 0.001,
            seed: 1,
        }
    }

    #[test]
    fn parses_traces_and_reports_bad_lines() {
        let t = parse_trace("arrival_s,service_s,endpoint\n0,1.5,a\n0.5,2,b\n1,1,a\n").unwrap();
        assert_eq!(t.endpoints.len(), 2);
        assert_eq!(t.endpoints[0].1[1], TraceRequest { arrival_ms: 1000, service_ms: 1000 });
        for (bad, what) in [
            ("", "empty"),
            ("a,b\n1,2", "header"),
            ("arrival_s,service_s\n1,x", "line 2"),
            ("arrival_s,service_s\n2,1\n1,1", "sorted"),
            ("arrival_s,service_s\n-1,1", ">= 0"),
            ("arrival_s,service_s\n", "no requests"),
        ] {
            let e = parse_trace(bad).unwrap_err();
            assert!(e.to_string().contains(what), "{bad:?}: {e}");
        }
        assert_eq!(
            parse_cold_starts("model,cold_start_s\nx,1.5\ny,2\n").unwrap(),
            ColdStart::Empirical { samples_ms: vec![1500, 2000] }
        );
        assert!(parse_cold_starts("cold_start_s\nabc\n").is_err());
    }

    #[test]
    fn one_request_at_zero_pays_one_cold_start_and_costs_the_keepalive() {
        let trace = parse_trace("arrival_s,service_s\n10,2\n").unwrap();
        let r = simulate(&cfg(Preset::FixedKeepalive, 1, 5_000), &trace);
        assert_eq!((r.requests, r.completed, r.rejected, r.cold_start_hits), (1, 1, 0, 1));
        assert!((r.p50_s - 7.0).abs() < 0.01, "{r:?}");
        // Started at 10 s, ready at 15 s, served until 17 s: metered until the last request is done.
        assert!((r.gpu_seconds - 7.0).abs() <= 0.01, "{r:?}");
        assert_eq!(r.scale_events, 2);
    }

    #[test]
    fn deterministic_and_queue_limits_apply() {
        let mut text = String::from("arrival_s,service_s\n");
        for i in 0..200 {
            text.push_str(&format!("{},{}\n", f64::from(i) * 0.05, 1.0));
        }
        let trace = parse_trace(&text).unwrap();
        let mut c = cfg(Preset::Default, 2, 3_000);
        c.cold_start = ColdStart::Empirical { samples_ms: vec![1000, 3000, 9000] };
        let a = simulate(&c, &trace);
        assert_eq!(a, simulate(&c, &trace), "same seed, same result");
        assert_eq!(a.completed + a.rejected, 200);
        c.queue_capacity = 5;
        let b = simulate(&c, &trace);
        assert!(b.rejected_queue_full > 0, "{b:?}");
        c.queue_capacity = 1000;
        c.queue_timeout_ms = 500;
        let t = simulate(&c, &trace);
        assert!(t.rejected_timeout > 0, "{t:?}");
    }

    #[test]
    fn skipping_idle_time_does_not_change_results() {
        // Sessions separated by long gaps: with the skip, workers must still scale down on
        // their own timers before the gap, exactly as if every second were simulated.
        let trace = parse_trace("arrival_s,service_s\n0,1\n10000,1\n20000,1\n").unwrap();
        for p in crate::autoscale::Preset::ALL {
            let r = simulate(&cfg(p, 1, 5_000), &trace);
            if p != crate::autoscale::Preset::Hpa && p != crate::autoscale::Preset::RayServe {
                assert!(r.gpu_seconds < 3_000.0, "{p:?} kept a worker through the gap: {r:?}");
            }
        }
    }

    #[test]
    fn long_idle_gaps_are_skipped_not_simulated() {
        // Two requests three days apart, with HPA (which never scales to zero).
        let trace = parse_trace("arrival_s,service_s\n0,1\n259200,1\n").unwrap();
        let r = simulate(&cfg(Preset::Hpa, 1, 1_000), &trace);
        assert_eq!(r.completed, 2);
        // One worker for three days.
        assert!(r.gpu_seconds > 259_000.0, "{r:?}");
    }

    #[test]
    fn sleepers_turn_cold_starts_into_wakes_for_sleeping_seconds() {
        // Bursts five minutes apart: the scaler goes to zero between them, so every burst
        // starts cold, or wakes a sleeper.
        let reqs: Vec<TraceRequest> = (0..120u64)
            .flat_map(|b| (0..4u64).map(move |k| TraceRequest { arrival_ms: b * 300_000 + k * 10, service_ms: 1000 }))
            .collect();
        let trace = Trace { endpoints: vec![(String::new(), reqs)] };
        let cold = simulate(&cfg(Preset::Default, 8, 30_000), &trace);
        let mut c = cfg(Preset::Default, 8, 30_000);
        c.sleep = Some(SimSleep {
            max_sleeping: 1,
            wake: ColdStart::Fixed { ms: 300 },
            ttl_ms: 3_600_000,
            usd_per_gpu_second: 0.0001,
        });
        let warm = simulate(&c, &trace);
        assert_eq!((cold.wakes, cold.sleeping_gpu_seconds), (0, 0.0));
        assert_eq!(warm.wakes, 119, "every burst after the first wakes the sleeper: {warm:?}");
        assert!(warm.p99_s < 2.0 && cold.p99_s > 30.0, "{} vs {}", warm.p99_s, cold.p99_s);
        assert!(warm.sleeping_gpu_seconds > 1000.0, "{warm:?}");
        assert_eq!(warm.completed, cold.completed);
        // A short TTL stops the sleeper before the next burst: cold again.
        c.sleep.as_mut().unwrap().ttl_ms = 60_000;
        let expired = simulate(&c, &trace);
        assert_eq!(expired.wakes, 0);
        assert!(expired.p99_s > 30.0);
    }
}
