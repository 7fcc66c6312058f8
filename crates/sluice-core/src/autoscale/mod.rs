//! Autoscaling decisions (R4): one pure function, [`decide`], used by the live reconciler and
//! by the trace simulator with a virtual clock. It reads a [`ScalingPolicy`], the scaler's
//! [`ScalerState`] (updated in place: the state change is part of the result), a
//! [`MetricsSnapshot`] and `now`, and returns a [`Decision`] with the target worker count, the
//! reason and the inputs, which is what R4.7 records.
//!
//! Presets reproduce the scalers of the seeds and of the anchors (`../shared/AUTOSCALING-REFERENCE.md`
//! gives the source of every constant); `default` is Sluice's own.
pub mod audit;
pub mod plan;
mod presets;
pub mod sim;
pub mod tune;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::Millis;

/// Which load figure drives scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Concurrent requests (in flight + waiting) per worker; target = requests per worker.
    Concurrency,
    /// RunPod's request count: ceil((queued + in progress) / target).
    RequestCount,
    /// Add workers while the oldest waiting request is older than `target` seconds.
    QueueDelay,
    /// Requests per minute per worker.
    Rpm,
    /// Busy fraction of the workers' concurrency slots, target in percent.
    GpuUtilization,
    /// Requests waiting inside the engines (their own metrics, `metrics_path`), per worker.
    EngineQueue,
    /// The engines' KV-cache usage, target in percent.
    KvCache,
}

impl Signal {
    pub const ALL: [Signal; 7] = [
        Signal::Concurrency,
        Signal::RequestCount,
        Signal::QueueDelay,
        Signal::Rpm,
        Signal::GpuUtilization,
        Signal::EngineQueue,
        Signal::KvCache,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Concurrency => "concurrency",
            Signal::RequestCount => "request_count",
            Signal::QueueDelay => "queue_delay",
            Signal::Rpm => "rpm",
            Signal::GpuUtilization => "gpu_utilization",
            Signal::EngineQueue => "engine_queue",
            Signal::KvCache => "kv_cache",
        }
    }
    pub fn parse(s: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|x| x.as_str() == s)
    }
    /// The target used when none is given.
    pub fn default_target(self) -> u32 {
        match self {
            Signal::Concurrency => 100,
            Signal::RequestCount => 4,
            Signal::QueueDelay => 4,
            Signal::Rpm => 60,
            Signal::GpuUtilization => 80,
            Signal::EngineQueue => 2,
            Signal::KvCache => 80,
        }
    }
}

/// A scaling algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Sluice's default: immediate scale-up to what the demand fills, within the seed 000 rate
    /// limit; workers kept for their idle timeout and for the scale-down window's mean demand at
    /// 80% of the cap; scale-down one at a time.
    Default,
    /// Seed 000's rules.
    SeedAtlas,
    /// Seed 002: a 5-minute damping and delay on every change.
    SeedDamped,
    /// Seed 004: scale-up evaluated every 3 min, scale-down every 5 min, zero after 15 min idle.
    SeedHf,
    /// Seed 001: each worker kept for the idle timeout after its last request, nothing else.
    FixedKeepalive,
    /// Knative KPA: 60 s stable / 6 s panic windows, target 70% of capacity, 2 s tick.
    Knative,
    /// Kubernetes HPA: 15 s sync, 10% tolerance, up max(+4, x2) per 15 s, down 300 s window.
    Hpa,
    /// Ray Serve: target ongoing = 40% of the cap, 30 s upscale / 600 s downscale delays.
    RayServe,
    /// beta9: ceil(in flight / per-container), 180 s keep-warm after each container's last task.
    Beta9,
    /// Sluice's default with its parameters re-tuned now and then (`tune`) for the cheapest
    /// setting that keeps the end-to-end p99 under the endpoint's `slo_p99_secs`.
    Slo,
}

impl Preset {
    pub const ALL: [Preset; 9] = [
        Preset::Default,
        Preset::SeedAtlas,
        Preset::SeedDamped,
        Preset::SeedHf,
        Preset::FixedKeepalive,
        Preset::Knative,
        Preset::Hpa,
        Preset::RayServe,
        Preset::Beta9,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Default => "default",
            Preset::SeedAtlas => "seed-atlas",
            Preset::SeedDamped => "seed-damped",
            Preset::SeedHf => "seed-hf",
            Preset::FixedKeepalive => "fixed-keepalive",
            Preset::Knative => "knative",
            Preset::Hpa => "hpa",
            Preset::RayServe => "ray-serve",
            Preset::Beta9 => "beta9",
            Preset::Slo => "slo",
        }
    }
    /// A fixed preset of [`Preset::ALL`], or `slo`.
    pub fn parse(s: &str) -> Option<Preset> {
        Preset::ALL.into_iter().chain([Preset::Slo]).find(|p| p.as_str() == s)
    }
    pub fn names() -> String {
        format!("{}, slo", Preset::ALL.map(Preset::as_str).join(", "))
    }
}

/// Everything that shapes scaling for one endpoint. Windows and rates are endpoint settings;
/// the defaults are seed 000's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingPolicy {
    pub preset: Preset,
    pub signal: Signal,
    /// Per-worker target for the signal (requests, requests/min, seconds or percent).
    pub target: u32,
    /// Hard per-worker cap on concurrent requests (R3.6).
    pub concurrency_per_worker: u32,
    /// `active_workers`: never below this.
    pub min_workers: u32,
    pub max_workers: u32,
    /// An autoscaled worker stays until it has been unneeded this long.
    pub idle_timeout_ms: u64,
    /// Scale-up rate limit: at most `scale_up_max_percent` % of the capacity at the start of each
    /// window added within `scale_up_window_ms`.
    pub scale_up_window_ms: u64,
    pub scale_up_max_percent: u32,
    /// Scale down only after the load has been below the current count this long …
    pub scale_down_delay_ms: u64,
    /// … and remove at most this % of the capacity per scale-down window (one worker per step).
    pub scale_down_max_percent: u32,
}

impl ScalingPolicy {
    /// A policy with seed 000's windows for `preset`, bounded by `min..=max` workers.
    pub fn new(preset: Preset, min_workers: u32, max_workers: u32, concurrency_per_worker: u32) -> Self {
        ScalingPolicy {
            preset,
            signal: Signal::Concurrency,
            target: concurrency_per_worker.max(1),
            concurrency_per_worker: concurrency_per_worker.max(1),
            min_workers,
            max_workers: max_workers.max(min_workers),
            idle_timeout_ms: 10_000,
            scale_up_window_ms: 60_000,
            scale_up_max_percent: 200,
            scale_down_delay_ms: 60_000,
            scale_down_max_percent: 100,
        }
    }
}

/// What the gateway and the reconciler saw of one endpoint at one tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// Requests being served by workers.
    pub in_flight: u64,
    /// Requests waiting in the gateway queue.
    pub waiting: u64,
    /// Requests that arrived since the previous snapshot.
    pub arrivals: u64,
    /// Age of the oldest waiting request.
    pub oldest_wait_ms: u64,
    /// Workers ready to serve.
    pub ready: u32,
    /// Workers wanted and not yet stopped (pending + starting + ready).
    pub provisioned: u32,
    /// Workers asleep: a scale-up wakes these (a fraction of a cold start) before it starts any.
    pub sleeping: u32,
    /// The mean utilization of the ready workers' GPUs, as the driver reports it (NVML), when
    /// known: what the `gpu_utilization` signal reads (else it estimates from busy slots).
    pub gpu_util_percent: Option<u32>,
    /// What the ready workers' engines report (`metrics_path`), when scraped: requests running
    /// and waiting inside them (sums over the workers) and their mean KV-cache usage, percent.
    pub engine_running: Option<u32>,
    pub engine_waiting: Option<u32>,
    pub kv_cache_percent: Option<u32>,
}

impl MetricsSnapshot {
    pub fn demand(&self) -> u64 {
        self.in_flight + self.waiting
    }
}

/// One tick of history kept by the scaler.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub at: Millis,
    pub snap: MetricsSnapshot,
    /// The raw need the signal asked for at this tick.
    pub need: u32,
}

/// The scaler's memory. Create with `ScalerState::default()`; `decide` keeps it. Serializable:
/// a recorded decision keeps the state it started from, so an audit can run it again exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalerState {
    /// The last target returned.
    pub target: u32,
    /// Recent samples, oldest first (trimmed to the policy's longest window).
    pub history: VecDeque<Sample>,
    /// Recent target changes (at, old, new), for rate limits.
    pub changes: VecDeque<(Millis, u32, u32)>,
    /// Since when the need has been below the target (scale-down delay).
    pub below_since: Option<Millis>,
    /// Since when the need has been above the target (damped presets).
    pub above_since: Option<Millis>,
    /// Last evaluation of a cadence-driven preset (up, down).
    pub last_up_eval: Option<Millis>,
    pub last_down_eval: Option<Millis>,
    /// Knative panic mode: when it started (None: not panicking) and the max pods seen in it.
    pub panic_since: Option<Millis>,
    pub panic_max: u32,
    /// Ray Serve's consecutive-decision counter (positive: up, negative: down).
    pub streak: i64,
    /// Last time any request was seen (arrival, in flight or waiting).
    pub last_busy: Option<Millis>,
    /// HPA recommendations (at, desired) for its stabilization window.
    pub recs: VecDeque<(Millis, u32)>,
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub target: u32,
    /// Why, in words (e.g. "scale up: 450 concurrent requests need 5 workers; limited to 3 by +200%/60s").
    pub reason: String,
    pub inputs: DecisionInputs,
}

/// The figures a decision was based on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionInputs {
    pub preset: String,
    pub signal: String,
    pub previous: u32,
    pub need: u32,
    pub in_flight: u64,
    pub waiting: u64,
    pub arrivals: u64,
    pub oldest_wait_ms: u64,
    pub ready: u32,
    pub provisioned: u32,
    /// Workers asleep when it was made (decisions recorded before sleeping existed: 0).
    #[serde(default)]
    pub sleeping: u32,
    /// The GPUs' measured utilization, when the signal read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_util_percent: Option<u32>,
    /// What the ready workers' engines report (`metrics_path`): requests running and waiting
    /// inside them (sums), and their mean KV-cache usage in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_running: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_waiting: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_percent: Option<u32>,
}

fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b.max(1))
}

/// The raw number of workers the signal asks for, before windows, rates and bounds.
pub fn raw_need(p: &ScalingPolicy, st: &ScalerState, s: &MetricsSnapshot, now: Millis) -> u32 {
    let t = u64::from(p.target.max(1));
    let need = match p.signal {
        Signal::Concurrency | Signal::RequestCount => ceil_div(s.demand(), t),
        Signal::Rpm => {
            let since = now.0.saturating_sub(60_000);
            let per_min: u64 =
                st.history.iter().filter(|x| x.at.0 > since).map(|x| x.snap.arrivals).sum::<u64>() + s.arrivals;
            ceil_div(per_min, t)
        }
        Signal::QueueDelay => {
            let holding = ceil_div(s.in_flight, u64::from(p.concurrency_per_worker));
            if s.oldest_wait_ms > t * 1000 {
                u64::from(s.provisioned.max(st.target))
                    + ceil_div(s.waiting, u64::from(p.concurrency_per_worker)).max(1)
            } else if s.demand() == 0 {
                0
            } else {
                holding.max(u64::from(st.target).min(holding + u64::from(s.waiting > 0)))
            }
        }
        Signal::GpuUtilization => {
            let slots = u64::from(s.ready) * u64::from(p.concurrency_per_worker);
            if slots == 0 {
                u64::from(s.demand() > 0)
            } else if let Some(util) = s.gpu_util_percent {
                // Measured: as many workers as keep the mean at the target.
                ceil_div(u64::from(s.ready) * u64::from(util), t).max(u64::from(s.demand() > 0))
            } else {
                // Busy slots (plus the queue) at the target utilization.
                ceil_div((s.in_flight + s.waiting) * 100, u64::from(p.concurrency_per_worker) * t)
            }
        }
        // The engines' own figures, never fewer workers than the requests fill; without them
        // (no scrape yet), what the requests fill.
        Signal::EngineQueue => {
            let filled = ceil_div(s.demand(), u64::from(p.concurrency_per_worker));
            match s.engine_waiting {
                Some(w) => ceil_div(u64::from(w), t).max(filled).max(u64::from(s.ready) * u64::from(w > 0)),
                None => filled,
            }
        }
        Signal::KvCache => {
            let filled = ceil_div(s.demand(), u64::from(p.concurrency_per_worker));
            match s.kv_cache_percent {
                Some(kv) if s.ready > 0 => ceil_div(u64::from(s.ready) * u64::from(kv), t).max(filled.min(1)),
                _ => filled,
            }
        }
    };
    need.min(u64::from(u32::MAX)) as u32
}

/// Evaluates the policy at `now`. Updates `state` and returns the decision; the target is
/// always within `[min_workers, max_workers]`, and is 0 only when `min_workers` is 0.
pub fn decide(p: &ScalingPolicy, state: &mut ScalerState, snap: &MetricsSnapshot, now: Millis) -> Decision {
    let need = raw_need(p, state, snap, now);
    if snap.demand() > 0 || snap.arrivals > 0 {
        state.last_busy = Some(now);
    }
    let previous = state.target;
    let (mut target, mut reason) = presets::evaluate(p, state, snap, need, now);
    let bounded = target.clamp(p.min_workers, p.max_workers.max(p.min_workers));
    if bounded != target {
        reason = format!("{reason}; bounded to [{}, {}]", p.min_workers, p.max_workers);
        target = bounded;
    }
    state.history.push_back(Sample { at: now, snap: *snap, need });
    let keep = presets::history_ms(p);
    while state.history.front().is_some_and(|s| now.saturating_sub(s.at) > keep) {
        state.history.pop_front();
    }
    if target != previous {
        state.changes.push_back((now, previous, target));
    }
    while state
        .changes
        .front()
        .is_some_and(|c| now.saturating_sub(c.0) > p.scale_up_window_ms.max(p.scale_down_delay_ms).max(600_000))
    {
        state.changes.pop_front();
    }
    state.target = target;
    if target > previous && snap.sleeping > 0 {
        let woken = snap.sleeping.min(target - previous);
        reason = format!("{reason}; {woken} of them woken from sleep");
    }
    Decision {
        target,
        reason,
        inputs: DecisionInputs {
            preset: p.preset.as_str().into(),
            signal: p.signal.as_str().into(),
            previous,
            need,
            in_flight: snap.in_flight,
            waiting: snap.waiting,
            arrivals: snap.arrivals,
            oldest_wait_ms: snap.oldest_wait_ms,
            ready: snap.ready,
            provisioned: snap.provisioned,
            sleeping: snap.sleeping,
            gpu_util_percent: snap.gpu_util_percent,
            engine_running: snap.engine_running,
            engine_waiting: snap.engine_waiting,
            kv_cache_percent: snap.kv_cache_percent,
        },
    }
}

#[cfg(test)]
mod tests;
