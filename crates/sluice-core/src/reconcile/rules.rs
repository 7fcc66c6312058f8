//! The rules the plan is made of: which workers to remove when an endpoint has
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

/// One step of a rolling update: how many workers of the new version to add and how many ready
/// workers of the old version to drain now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutStep {
    pub start: u32,
    pub drain: u32,
}

/// A rolling update replaces workers one at a time: at most one worker above `desired` (surge
/// 1), and an old worker drains only once enough new ones are ready that `desired` stay ready.
/// `old_ready`: ready workers of older versions (old ones not ready are stopped outright);
/// `new_live` / `new_ready`: workers of the current version, live / ready; `new_stuck`: new
/// ones that could not be placed (no free GPUs for the extra worker), in which case one old
/// worker drains first to make room, unless one is draining already.
pub fn rollout_step(
    desired: u32,
    old_ready: u32,
    new_live: u32,
    new_ready: u32,
    new_stuck: u32,
    draining: u32,
) -> RolloutStep {
    if desired == 0 {
        return RolloutStep { start: 0, drain: old_ready };
    }
    let start = if new_live < desired {
        (desired - new_live).min((desired + 1).saturating_sub(old_ready + new_live))
    } else {
        0
    };
    let mut drain = (old_ready + new_ready).saturating_sub(desired).min(old_ready);
    if drain == 0 && new_stuck > 0 && draining == 0 && old_ready > 0 {
        drain = 1;
    }
    RolloutStep { start, drain }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_updates_go_one_at_a_time() {
        let step = |d, or, nl, nr| rollout_step(d, or, nl, nr, 0, 0);
        let s = |start, drain| RolloutStep { start, drain };
        // Two workers: add one, drain one when it is ready, add the next, drain the last.
        assert_eq!(step(2, 2, 0, 0), s(1, 0));
        assert_eq!(step(2, 2, 1, 0), s(0, 0), "wait for the new one to be ready");
        assert_eq!(step(2, 2, 1, 1), s(0, 1));
        assert_eq!(step(2, 1, 1, 1), s(1, 0));
        assert_eq!(step(2, 1, 2, 1), s(0, 0));
        assert_eq!(step(2, 1, 2, 2), s(0, 1));
        assert_eq!(step(2, 0, 2, 2), s(0, 0), "done");
        // One worker: never zero ready.
        assert_eq!(step(1, 1, 0, 0), s(1, 0));
        assert_eq!(step(1, 1, 1, 0), s(0, 0));
        assert_eq!(step(1, 1, 1, 1), s(0, 1));
        // Scaling up during the update: the extra workers come at once.
        assert_eq!(step(4, 1, 0, 0), s(4, 0));
        // Scaling down during it: old ones drain as new ones cover the demand.
        assert_eq!(step(1, 3, 1, 1), s(0, 3));
        // Stopped: every old worker drains, nothing starts.
        assert_eq!(step(0, 2, 0, 0), s(0, 2));
        // No room for the extra worker: one old worker makes room, once.
        assert_eq!(rollout_step(2, 2, 1, 0, 1, 0), s(0, 1));
        assert_eq!(rollout_step(2, 1, 1, 0, 1, 1), s(1, 0), "one is draining already: no second");
        // Never more than desired + 1 live, never fewer than desired ready while old ones serve.
        for d in 1..5u32 {
            for or in 0..5u32 {
                for nl in 0..5u32 {
                    for nr in 0..=nl {
                        let x = step(d, or, nl, nr);
                        assert!(x.start == 0 || or + nl + x.start <= (d + 1).max(or + nl), "{d} {or} {nl} {nr}: {x:?}");
                        assert!(x.drain <= or && or + nr - x.drain >= d.min(or + nr), "{d} {or} {nl} {nr}: {x:?}");
                    }
                }
            }
        }
    }

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
