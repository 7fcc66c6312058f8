//! The reconciler's decisions, as pure functions: how many workers an endpoint should have, and
//! which workers to remove when it has too many. The control plane applies them.
use crate::{EndpointSpec, EndpointStatus, Millis, WorkerId, WorkerState, routing::EndpointTraffic};

/// Desired worker count before autoscaling: `active_workers`, or one worker while an endpoint
/// with `active_workers = 0` has traffic (requests waiting or in flight, or a request within the
/// idle timeout). A stopped endpoint wants none. Never above `max_workers`.
pub fn desired_workers(spec: &EndpointSpec, status: EndpointStatus, traffic: &EndpointTraffic, now: Millis) -> u32 {
    if status == EndpointStatus::Stopped {
        return 0;
    }
    let recently_used =
        traffic.last_request_at.is_some_and(|t| now.saturating_sub(t) < u64::from(spec.idle_timeout_secs) * 1000);
    let busy = traffic.in_flight > 0 || traffic.waiting > 0 || recently_used;
    let want = if spec.active_workers == 0 && busy { 1 } else { spec.active_workers };
    want.min(spec.max_workers)
}

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
    use crate::{EndpointDraft, RuntimeKind, ValidationContext};

    fn spec(active: i64, max: i64) -> EndpointSpec {
        let ctx = ValidationContext {
            gpu_types: vec!["SIM".into()],
            data_centers: vec!["local".into()],
            max_workers_quota: 10,
            runtime: RuntimeKind::Process,
        };
        EndpointSpec::validate(
            EndpointDraft {
                name: Some("e".into()),
                start_command: Some("x".into()),
                active_workers: Some(active),
                max_workers: Some(max),
                idle_timeout_secs: Some(10),
                ..Default::default()
            },
            &ctx,
        )
        .unwrap()
    }

    fn traffic(in_flight: u64, waiting: u64, last: Option<u64>) -> EndpointTraffic {
        EndpointTraffic { in_flight, waiting, last_request_at: last.map(Millis), ..Default::default() }
    }

    #[test]
    fn desired() {
        let now = Millis(100_000);
        let run = EndpointStatus::Running;
        for (active, max, t, status, want) in [
            (2, 3, traffic(0, 0, None), run, 2),
            (2, 3, traffic(50, 9, Some(99_000)), run, 2),
            (0, 3, traffic(0, 0, None), run, 0),
            (0, 3, traffic(0, 1, None), run, 1),
            (0, 3, traffic(1, 0, None), run, 1),
            (0, 3, traffic(0, 0, Some(95_000)), run, 1),
            (0, 3, traffic(0, 0, Some(90_000)), run, 0),
            (0, 3, traffic(0, 0, Some(89_000)), run, 0),
            (3, 3, traffic(0, 0, None), EndpointStatus::Stopped, 0),
            (0, 1, traffic(5, 0, None), EndpointStatus::Stopped, 0),
        ] {
            assert_eq!(desired_workers(&spec(active, max), status, &t, now), want, "{active} {max} {t:?} {status:?}");
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
