//! The autoscaler's state per endpoint between passes: `sluice_core::autoscale::decide` is
//! pure; this keeps what it needs from one evaluation to the next (its state, when it last
//! decided, the gateway's request total then) and the decisions that changed the count, for
//! the reconciler to record (R4.7). Synchronous: the reconcile plan asks it inside a pure pass.
use std::collections::HashMap;

use sluice_core::{
    EndpointId, Millis,
    autoscale::{MetricsSnapshot, ScalerState, ScalingPolicy, decide},
    reconcile::{Headcount, Intent},
    routing::EndpointTraffic,
};
use sluice_store::ScalingEvent;

struct Scaler {
    state: ScalerState,
    last_eval: Option<Millis>,
    last_total: u64,
}

/// Every endpoint's autoscaler.
#[derive(Default)]
pub struct Scalers {
    scalers: HashMap<EndpointId, Scaler>,
    /// Changes of the count decided since the last [`Scalers::take_events`].
    events: Vec<ScalingEvent>,
}

/// What was measured of an endpoint's workers, beside the traffic: the GPUs' utilization
/// (NVML) and the engines' own load (their metrics pages).
#[derive(Debug, Clone, Copy, Default)]
pub struct Measured {
    pub gpu_util_percent: Option<u32>,
    pub engine: Option<sluice_core::engine::EngineFigures>,
}

impl Scalers {
    /// The endpoint's desired worker count: 0 when it is not running, else the autoscaler's
    /// decision, evaluated once a second (and at once when a request waits at zero). A change is
    /// kept as an event, with its reason and inputs.
    pub fn desired(
        &mut self,
        endpoint: &Intent,
        policy: &ScalingPolicy,
        tr: &EndpointTraffic,
        count: Headcount,
        measured: Measured,
        t: Millis,
    ) -> u32 {
        let Measured { gpu_util_percent, engine } = measured;
        let Headcount { live, ready, sleeping } = count;
        let (id, running) = (&endpoint.id, endpoint.running);
        let sc = self.scalers.entry(id.clone()).or_insert_with(|| Scaler {
            // A restarted platform starts from what runs, so it does not scale down on a whim.
            state: ScalerState { target: live.clamp(policy.min_workers, policy.max_workers), ..Default::default() },
            last_eval: None,
            last_total: tr.requests_total,
        });
        if !running {
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
            sleeping,
            gpu_util_percent,
            engine_running: engine.map(|e| e.running.round() as u32),
            engine_waiting: engine.map(|e| e.waiting.round() as u32),
            kv_cache_percent: engine.and_then(|e| e.kv_cache_percent).map(|k| k.round() as u32),
        };
        sc.last_total = tr.requests_total;
        sc.last_eval = Some(t);
        let before = sc.state.target;
        let d = decide(policy, &mut sc.state, &snap, t);
        if d.target != before {
            tracing::info!(endpoint = %id, from = before, to = d.target, reason = %d.reason, "scaling decision");
            self.events.push(ScalingEvent {
                id: 0,
                endpoint_id: id.clone(),
                at: t,
                from: before,
                to: d.target,
                reason: d.reason.clone(),
                inputs: serde_json::to_string(&d.inputs).unwrap_or_default(),
            });
        }
        d.target
    }

    /// The count changes decided since the last call, to record.
    pub fn take_events(&mut self) -> Vec<ScalingEvent> {
        std::mem::take(&mut self.events)
    }

    /// Forgets endpoints that no longer exist.
    pub fn retain(&mut self, keep: impl Fn(&EndpointId) -> bool) {
        self.scalers.retain(|id, _| keep(id));
    }
}
