//! The autoscaler's state per endpoint between passes: `sluice_core::autoscale::decide` is
//! pure; this keeps what it needs from one evaluation to the next (its state, when it last
//! decided, the gateway's request total then) and the decisions that changed the count, for
//! the reconciler to record (R4.7). Synchronous: the reconcile plan asks it inside a pure pass.
use std::collections::HashMap;

use sluice_core::{
    EndpointId, Millis,
    autoscale::{MetricsSnapshot, Preset, ScalerState, ScalingPolicy, audit::Replay, decide},
    reconcile::{Headcount, Intent},
    routing::EndpointTraffic,
};
use sluice_store::{ScalingEvent, ShadowPoint};

fn shadow_point(id: &EndpointId, p: Preset, at: Millis, count: u32) -> ShadowPoint {
    ShadowPoint { endpoint_id: id.clone(), policy: p.as_str().into(), at, count }
}

struct Scaler {
    state: ScalerState,
    last_eval: Option<Millis>,
    last_total: u64,
    /// Shadow policies: their own state on the same snapshots; never acted on.
    shadows: Vec<(Preset, ScalerState)>,
}

/// Every endpoint's autoscaler.
#[derive(Default)]
pub struct Scalers {
    scalers: HashMap<EndpointId, Scaler>,
    /// Changes of the count decided since the last [`Scalers::take_events`].
    events: Vec<ScalingEvent>,
    /// Shadow policies' changes since the last [`Scalers::take_shadow_points`].
    shadow_points: Vec<ShadowPoint>,
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
    ///
    /// Each of `shadows` is evaluated on the same snapshot with its own state, and its
    /// would-be count is kept when it changes; a decision that changes the count keeps what it
    /// started from (policy and state) for `sluice audit`.
    #[allow(clippy::too_many_arguments)]
    pub fn desired(
        &mut self,
        endpoint: &Intent,
        policy: &ScalingPolicy,
        shadows: &[ScalingPolicy],
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
            shadows: Vec::new(),
        });
        if !running {
            // A stopped endpoint's shadows would run nothing either.
            for (p, st) in sc.shadows.drain(..) {
                if st.target > 0 {
                    self.shadow_points.push(shadow_point(id, p, t, 0));
                }
            }
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
        let start = sc.state.clone();
        let before = start.target;
        let d = decide(policy, &mut sc.state, &snap, t);
        // Shadows: a changed list starts over from the count that runs.
        if sc.shadows.len() != shadows.len() || sc.shadows.iter().zip(shadows).any(|(a, b)| a.0 != b.preset) {
            sc.shadows = shadows
                .iter()
                .map(|p| {
                    (p.preset, ScalerState { target: live.clamp(p.min_workers, p.max_workers), ..Default::default() })
                })
                .collect();
            for (p, st) in &sc.shadows {
                self.shadow_points.push(shadow_point(id, *p, t, st.target));
            }
        }
        for ((preset, st), p) in sc.shadows.iter_mut().zip(shadows) {
            let was = st.target;
            let s = decide(p, st, &snap, t);
            if s.target != was {
                self.shadow_points.push(shadow_point(id, *preset, t, s.target));
            }
        }
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
                kind: sluice_store::EVENT_DECISION.into(),
                replay: serde_json::to_string(&Replay { policy: policy.clone(), state: start, now: t })
                    .unwrap_or_default(),
            });
        }
        d.target
    }

    /// The shadow policies' count changes since the last call, to record.
    pub fn take_shadow_points(&mut self) -> Vec<ShadowPoint> {
        std::mem::take(&mut self.shadow_points)
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
