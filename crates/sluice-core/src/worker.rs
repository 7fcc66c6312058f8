//! The worker lifecycle (R2.3): pending → starting → ready → draining → stopped, or failed with a
//! reason; a drained worker may sleep instead of stopping (sleeping → starting when woken);
//! plus the crash back-off and the phases of a start.
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
    /// Out of the routing table, finishing in-flight requests before it is stopped (or put to
    /// sleep).
    Draining,
    /// Asleep (issue 17): out of rotation, its process kept with its state (an engine's weights
    /// offloaded), woken by a scale-up in a fraction of a cold start. Its GPUs are reclaimable.
    Sleeping,
    /// Stopped by the platform.
    Stopped,
    /// Exited, never became healthy, or could not be launched (the reason says which).
    Failed,
}

impl WorkerState {
    pub const ALL: [WorkerState; 7] = [
        WorkerState::Pending,
        WorkerState::Starting,
        WorkerState::Ready,
        WorkerState::Draining,
        WorkerState::Sleeping,
        WorkerState::Stopped,
        WorkerState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Pending => "pending",
            WorkerState::Starting => "starting",
            WorkerState::Ready => "ready",
            WorkerState::Draining => "draining",
            WorkerState::Sleeping => "sleeping",
            WorkerState::Stopped => "stopped",
            WorkerState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        WorkerState::ALL.into_iter().find(|w| w.as_str() == s)
    }

    /// Counts toward the endpoint's worker count (it is, or will become, serving). A sleeper
    /// does not: it counts against `max_workers` only.
    pub fn is_live(self) -> bool {
        matches!(self, WorkerState::Pending | WorkerState::Starting | WorkerState::Ready)
    }

    /// May have a process or container that must be stopped eventually (and holds its GPUs).
    pub fn has_runtime(self) -> bool {
        matches!(self, WorkerState::Starting | WorkerState::Ready | WorkerState::Draining | WorkerState::Sleeping)
    }

    /// The transitions the lifecycle allows. Anything may fail; only a ready worker drains;
    /// only a drained worker sleeps, and a sleeper wakes (back to starting) or stops; terminal
    /// states are final.
    pub fn can_become(self, next: WorkerState) -> bool {
        use WorkerState::*;
        match (self, next) {
            (Stopped | Failed, _) => false,
            (_, Failed) => true,
            (Pending, Starting | Stopped) => true,
            (Starting, Ready | Stopped | Draining) => true,
            (Ready, Starting | Draining | Stopped) => true,
            (Draining, Stopped | Sleeping) => true,
            (Sleeping, Starting | Stopped) => true,
            _ => false,
        }
    }
}

/// A moment in a worker's start (or wake), recorded with its time: the anatomy of a start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// GPUs assigned on a node.
    Placed,
    /// The image is present on the node (pulled, or found cached); containers only.
    Image,
    /// The process or container is running.
    Started,
    /// The health check answered 200 (it went into rotation).
    Healthy,
    /// It was put to sleep (the sleep call answered).
    Slept,
    /// The wake call was made.
    WakeCalled,
    /// The wake call answered.
    Woke,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Placed => "placed",
            Phase::Image => "image",
            Phase::Started => "started",
            Phase::Healthy => "healthy",
            Phase::Slept => "slept",
            Phase::WakeCalled => "wake_called",
            Phase::Woke => "woke",
        }
    }
}

/// One recorded phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseAt {
    pub phase: Phase,
    pub at: crate::Millis,
}

/// Whether the phases say the worker is asleep now (its sleep call answered, and no wake was
/// called since): what metering bills as sleeping.
pub fn is_asleep(phases: &[PhaseAt]) -> bool {
    phases
        .iter()
        .rev()
        .find(|p| matches!(p.phase, Phase::Slept | Phase::WakeCalled))
        .is_some_and(|p| p.phase == Phase::Slept)
}

/// Whether the worker's latest start was a wake (not a cold start).
pub fn woken(phases: &[PhaseAt]) -> bool {
    phases
        .iter()
        .rev()
        .find(|p| matches!(p.phase, Phase::Placed | Phase::WakeCalled))
        .is_some_and(|p| p.phase == Phase::WakeCalled)
}

/// How long the parts of a start took, from its phases: for a cold start, `placement` (created
/// → placed), `image` (placed → image present), `start` (→ process running), `load` (→ first
/// health 200: the model's load); for a wake, `wake` (wake called → healthy). Only the parts
/// whose ends were recorded; the latest start (or wake) only.
pub fn start_anatomy(created_at: crate::Millis, phases: &[PhaseAt]) -> Vec<(&'static str, u64)> {
    let last = |p: Phase| phases.iter().rev().find(|x| x.phase == p).map(|x| x.at);
    let Some(healthy) = last(Phase::Healthy) else { return Vec::new() };
    // A wake is the latest start when its call came after the last placement.
    if let Some(called) = last(Phase::WakeCalled)
        && last(Phase::Placed).is_none_or(|p| called > p)
        && healthy >= called
    {
        return vec![("wake", healthy.saturating_sub(called))];
    }
    let mut out = Vec::new();
    let mut prev = created_at;
    for (name, p) in [("placement", Phase::Placed), ("image", Phase::Image), ("start", Phase::Started)] {
        if let Some(at) = last(p) {
            out.push((name, at.saturating_sub(prev)));
            prev = at;
        }
    }
    out.push(("load", healthy.saturating_sub(prev)));
    out
}

/// The event line for a finished start: "cold start 48.2 s: placement 0.0 s, image 0.0 s,
/// start 0.3 s, model load 47.9 s", or "woke in 0.31 s".
pub fn describe_start(created_at: crate::Millis, phases: &[PhaseAt]) -> Option<String> {
    let parts = start_anatomy(created_at, phases);
    let secs = |ms: u64| ms as f64 / 1000.0;
    match parts.as_slice() {
        [] => None,
        [("wake", ms)] => Some(format!("woke in {:.2} s", secs(*ms))),
        parts => {
            let total: u64 = parts.iter().map(|(_, ms)| ms).sum();
            let list: Vec<String> = parts
                .iter()
                .map(|(n, ms)| format!("{} {:.1} s", if *n == "load" { "model load" } else { n }, secs(*ms)))
                .collect();
            Some(format!("cold start {:.1} s: {}", secs(total), list.join(", ")))
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
            (Draining, Sleeping),
            (Draining, Failed),
            (Sleeping, Starting),
            (Sleeping, Stopped),
            (Sleeping, Failed),
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
    fn the_anatomy_of_a_start() {
        let at = |phase, ms| PhaseAt { phase, at: crate::Millis(ms) };
        let cold =
            [at(Phase::Placed, 100), at(Phase::Image, 2_100), at(Phase::Started, 2_400), at(Phase::Healthy, 50_300)];
        assert_eq!(
            start_anatomy(crate::Millis(0), &cold),
            [("placement", 100), ("image", 2_000), ("start", 300), ("load", 47_900)]
        );
        assert_eq!(
            describe_start(crate::Millis(0), &cold).unwrap(),
            "cold start 50.3 s: placement 0.1 s, image 2.0 s, start 0.3 s, model load 47.9 s"
        );
        // A process start has no image phase.
        let process = [at(Phase::Placed, 0), at(Phase::Started, 10), at(Phase::Healthy, 1_010)];
        assert_eq!(start_anatomy(crate::Millis(0), &process), [("placement", 0), ("start", 10), ("load", 1_000)]);
        // Then it slept and woke: the wake is the latest start.
        let mut woken = process.to_vec();
        woken.extend([
            at(Phase::Slept, 5_000),
            at(Phase::WakeCalled, 9_000),
            at(Phase::Woke, 9_250),
            at(Phase::Healthy, 9_310),
        ]);
        assert_eq!(start_anatomy(crate::Millis(0), &woken), [("wake", 310)]);
        assert_eq!(describe_start(crate::Millis(0), &woken).unwrap(), "woke in 0.31 s");
        assert!(super::woken(&woken) && !super::woken(&process));
        assert!(is_asleep(&woken[..4]) && !is_asleep(&woken) && !is_asleep(&process));
        // Not healthy yet: nothing to say.
        assert!(describe_start(crate::Millis(0), &cold[..3]).is_none());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let got: Vec<u64> = (0..10).map(restart_backoff_ms).collect();
        assert_eq!(got, [0, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
        assert_eq!(restart_backoff_ms(u32::MAX), 60_000);
    }
}
