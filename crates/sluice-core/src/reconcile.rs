//! The reconciler's decisions, as pure functions: which workers to remove when an endpoint has
//! too many, and when startup and drain are over. (How many it should have: `autoscale`.) The control plane applies them.
use crate::{Millis, WorkerId, WorkerState};

/// A live worker as the removal choice sees it.
#[derive(Debug, Clone)]
pub struct WorkerBrief {
    pub id: WorkerId,
    pub state: WorkerState,
    pub created_at: Millis,
    pub in_flight: u64,
}

/// Chooses `n` workers to remove: pending first (they serve nothing), then starting, then ready
/// ones with the fewest requests in flight; newest first within each group.
pub fn pick_for_removal(workers: &[WorkerBrief], n: usize) -> Vec<WorkerId> {
    let rank = |s: WorkerState| match s {
        WorkerState::Pending => 0,
        WorkerState::Starting => 1,
        _ => 2,
    };
    let mut v: Vec<&WorkerBrief> = workers.iter().filter(|w| w.state.is_live()).collect();
    v.sort_by(|a, b| {
        rank(a.state)
            .cmp(&rank(b.state))
            .then(a.in_flight.cmp(&b.in_flight))
            .then(b.created_at.cmp(&a.created_at))
            .then(a.id.cmp(&b.id))
    });
    v.into_iter().take(n).map(|w| w.id.clone()).collect()
}

/// Whether a starting worker has run out of time to become healthy.
pub fn startup_expired(launched_at: Millis, now: Millis, startup_timeout_secs: u32) -> bool {
    now.saturating_sub(launched_at) >= u64::from(startup_timeout_secs) * 1000
}

/// Whether a draining worker may be stopped: nothing in flight, or its requests have had the
/// full execution timeout to finish.
pub fn drain_complete(draining_since: Millis, now: Millis, in_flight: u64, execution_timeout_secs: u32) -> bool {
    in_flight == 0 || now.saturating_sub(draining_since) >= u64::from(execution_timeout_secs) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(id: &str, state: WorkerState, created: u64, in_flight: u64) -> WorkerBrief {
        WorkerBrief { id: WorkerId::parse(id).unwrap(), state, created_at: Millis(created), in_flight }
    }

    #[test]
    fn removal_order() {
        let ws = [
            w("ready-old-idle", WorkerState::Ready, 1, 0),
            w("ready-new-busy", WorkerState::Ready, 5, 3),
            w("ready-new-idle", WorkerState::Ready, 4, 0),
            w("starting", WorkerState::Starting, 6, 0),
            w("pending", WorkerState::Pending, 2, 0),
            w("draining", WorkerState::Draining, 0, 0),
            w("failed", WorkerState::Failed, 9, 0),
        ];
        let ids: Vec<String> = pick_for_removal(&ws, 10).into_iter().map(String::from).collect();
        assert_eq!(ids, ["pending", "starting", "ready-new-idle", "ready-old-idle", "ready-new-busy"]);
        assert_eq!(pick_for_removal(&ws, 1).len(), 1);
        assert!(pick_for_removal(&ws, 0).is_empty());
    }

    #[test]
    fn timeouts() {
        assert!(!startup_expired(Millis(0), Millis(9_999), 10));
        assert!(startup_expired(Millis(0), Millis(10_000), 10));
        assert!(drain_complete(Millis(0), Millis(1), 0, 600));
        assert!(!drain_complete(Millis(0), Millis(1), 2, 600));
        assert!(drain_complete(Millis(0), Millis(600_000), 2, 600));
    }
}
