//! Auditing the autoscaler (issue 20): every recorded decision keeps what it started from (the
//! policy and the scaler's state, [`Replay`]) beside its inputs, so that [`reproduce`] can run
//! [`decide`] again on exactly that and say whether the same target and reason come out.
use serde::{Deserialize, Serialize};

use super::{DecisionInputs, MetricsSnapshot, ScalerState, ScalingPolicy, decide};
use crate::Millis;

/// What a decision started from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replay {
    pub policy: ScalingPolicy,
    pub state: ScalerState,
    pub now: Millis,
}

/// The snapshot a decision read, from its recorded inputs.
pub fn snapshot_of(i: &DecisionInputs) -> MetricsSnapshot {
    MetricsSnapshot {
        in_flight: i.in_flight,
        waiting: i.waiting,
        arrivals: i.arrivals,
        oldest_wait_ms: i.oldest_wait_ms,
        ready: i.ready,
        provisioned: i.provisioned,
        sleeping: i.sleeping,
        gpu_util_percent: i.gpu_util_percent,
        engine_running: i.engine_running,
        engine_waiting: i.engine_waiting,
        kv_cache_percent: i.kv_cache_percent,
    }
}

/// Runs the decision again. `Ok` when target, reason and inputs come out as recorded; else
/// what differs, in words.
pub fn reproduce(replay: &Replay, inputs: &DecisionInputs, target: u32, reason: &str) -> Result<(), String> {
    let mut state = replay.state.clone();
    let d = decide(&replay.policy, &mut state, &snapshot_of(inputs), replay.now);
    let mut diffs = Vec::new();
    if d.target != target {
        diffs.push(format!("target {} (recorded {target})", d.target));
    }
    if d.reason != reason {
        diffs.push(format!("reason {:?} (recorded {reason:?})", d.reason));
    }
    if &d.inputs != inputs {
        diffs.push("inputs differ".to_owned());
    }
    if diffs.is_empty() { Ok(()) } else { Err(diffs.join("; ")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscale::{Preset, Signal};

    /// Drives a scaler through a load pattern, keeping every decision's replay the way the
    /// live scaler does, and checks each reproduces after a JSON round trip (as stored).
    #[test]
    fn every_decision_of_every_preset_reproduces_from_its_stored_replay() {
        let loads: Vec<u64> =
            (0..400u64).map(|t| if (60..200).contains(&t) { 5 + (t * 7) % 40 } else { t % 3 }).collect();
        for preset in Preset::ALL.into_iter().chain([Preset::Slo]) {
            let mut checked = 0;
            for signal in [Signal::Concurrency, Signal::Rpm, Signal::QueueDelay] {
                let mut p = ScalingPolicy::new(preset, 0, 20, 4);
                p.signal = signal;
                let mut st = ScalerState::default();
                for (t, &load) in loads.iter().enumerate() {
                    let now = Millis(1_000_000 + t as u64 * 1000);
                    let snap = MetricsSnapshot {
                        in_flight: load.min(u64::from(st.target) * 4),
                        waiting: load.saturating_sub(u64::from(st.target) * 4),
                        arrivals: load / 2,
                        oldest_wait_ms: if load > u64::from(st.target) * 4 { 6_000 } else { 0 },
                        ready: st.target,
                        provisioned: st.target,
                        ..Default::default()
                    };
                    let before = st.clone();
                    let d = decide(&p, &mut st, &snap, now);
                    if d.target != before.target {
                        let replay = Replay { policy: p.clone(), state: before, now };
                        let stored: Replay = serde_json::from_str(&serde_json::to_string(&replay).unwrap()).unwrap();
                        let inputs: DecisionInputs =
                            serde_json::from_str(&serde_json::to_string(&d.inputs).unwrap()).unwrap();
                        reproduce(&stored, &inputs, d.target, &d.reason)
                            .unwrap_or_else(|e| panic!("{preset:?}/{signal:?} at {t}: {e}"));
                        checked += 1;
                    }
                }
            }
            assert!(checked > 2, "{preset:?} hardly changed its count: {checked}");
        }
    }

    #[test]
    fn a_changed_input_or_state_is_reported() {
        let p = ScalingPolicy::new(Preset::Default, 0, 10, 1);
        let mut st = ScalerState::default();
        let snap = MetricsSnapshot { waiting: 3, arrivals: 3, ..Default::default() };
        let before = st.clone();
        let d = decide(&p, &mut st, &snap, Millis(5_000));
        let replay = Replay { policy: p.clone(), state: before, now: Millis(5_000) };
        assert_eq!(reproduce(&replay, &d.inputs, d.target, &d.reason), Ok(()));
        let mut other = d.inputs.clone();
        other.waiting = 7;
        let e = reproduce(&replay, &other, d.target, &d.reason).unwrap_err();
        assert!(e.contains("target 7"), "{e}");
        let e = reproduce(&replay, &d.inputs, d.target, "something else").unwrap_err();
        assert!(e.contains("reason"), "{e}");
    }
}
