//! The worker lifecycle (R2.3): pending → starting → ready → draining → stopped, or failed with a
//! reason; plus the crash back-off.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Wanted, but not placed or not yet launched (the reason says why).
    Pending,
    /// Launched; not yet answering its health check.
    Starting,
    /// Answering its health check; in the routing table.
    Ready,
    /// Out of the routing table, finishing in-flight requests before it is stopped.
    Draining,
    /// Stopped by the platform.
    Stopped,
    /// Exited, never became healthy, or could not be launched (the reason says which).
    Failed,
}

impl WorkerState {
    pub const ALL: [WorkerState; 6] = [
        WorkerState::Pending,
        WorkerState::Starting,
        WorkerState::Ready,
        WorkerState::Draining,
        WorkerState::Stopped,
        WorkerState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Pending => "pending",
            WorkerState::Starting => "starting",
            WorkerState::Ready => "ready",
            WorkerState::Draining => "draining",
            WorkerState::Stopped => "stopped",
            WorkerState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        WorkerState::ALL.into_iter().find(|w| w.as_str() == s)
    }

    /// Counts toward the endpoint's worker count (it is, or will become, serving).
    pub fn is_live(self) -> bool {
        matches!(self, WorkerState::Pending | WorkerState::Starting | WorkerState::Ready)
    }

    /// May have a process or container that must be stopped eventually.
    pub fn has_runtime(self) -> bool {
        matches!(self, WorkerState::Starting | WorkerState::Ready | WorkerState::Draining)
    }

    /// The transitions the lifecycle allows. Anything may fail; only a ready worker drains;
    /// terminal states are final.
    pub fn can_become(self, next: WorkerState) -> bool {
        use WorkerState::*;
        match (self, next) {
            (Stopped | Failed, _) => false,
            (_, Failed) => true,
            (Pending, Starting | Stopped) => true,
            (Starting, Ready | Stopped | Draining) => true,
            (Ready, Starting | Draining | Stopped) => true,
            (Draining, Stopped) => true,
            _ => false,
        }
    }
}

/// Back-off before replacing a worker after `consecutive_failures` failures in a row (1 → 1 s,
/// 2 → 2 s, 3 → 4 s, …, capped at 60 s). Zero failures: no wait.
pub fn restart_backoff_ms(consecutive_failures: u32) -> u64 {
    if consecutive_failures == 0 {
        return 0;
    }
    let exp = (consecutive_failures - 1).min(16);
    (1000u64 << exp).min(60_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use WorkerState::*;

    #[test]
    fn lifecycle_edges() {
        let allowed = [
            (Pending, Starting),
            (Pending, Stopped),
            (Pending, Failed),
            (Starting, Ready),
            (Starting, Failed),
            (Starting, Draining),
            (Starting, Stopped),
            (Ready, Draining),
            (Ready, Failed),
            (Ready, Starting),
            (Ready, Stopped),
            (Draining, Stopped),
            (Draining, Failed),
        ];
        for a in WorkerState::ALL {
            for b in WorkerState::ALL {
                assert_eq!(a.can_become(b), allowed.contains(&(a, b)), "{a:?} -> {b:?}");
            }
        }
    }

    #[test]
    fn parse_roundtrip() {
        for s in WorkerState::ALL {
            assert_eq!(WorkerState::parse(s.as_str()), Some(s));
        }
        assert_eq!(WorkerState::parse("zombie"), None);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let got: Vec<u64> = (0..10).map(restart_backoff_ms).collect();
        assert_eq!(got, [0, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
        assert_eq!(restart_backoff_ms(u32::MAX), 60_000);
    }
}
