//! Async (queue) jobs, RunPod's model (R6): states, policies, ids, and the clocks a job lives
//! by, pure. The store keeps jobs durably; the gateway and dispatcher apply these rules.
use serde::{Deserialize, Serialize};

use crate::{FieldError, Millis};

/// A job's state, spelled as RunPod's clients expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    InQueue,
    InProgress,
    Completed,
    Failed,
    Cancelled,
    TimedOut,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::InQueue,
        JobState::InProgress,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
        JobState::TimedOut,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::InQueue => "IN_QUEUE",
            JobState::InProgress => "IN_PROGRESS",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
            JobState::TimedOut => "TIMED_OUT",
        }
    }
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|x| x.as_str() == s)
    }
    /// A final state never changes again (only `retry` requeues FAILED and TIMED_OUT).
    pub fn is_final(self) -> bool {
        !matches!(self, JobState::InQueue | JobState::InProgress)
    }
    /// The moves a job may make.
    pub fn can_become(self, next: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, next),
            (InQueue, InProgress | Cancelled | TimedOut)
                | (InProgress, Completed | Failed | Cancelled | TimedOut | InQueue)
                | (Failed | TimedOut, InQueue)
        )
    }
}

pub const EXECUTION_TIMEOUT_DEFAULT_MS: u64 = 600_000;
pub const TTL_DEFAULT_MS: u64 = 86_400_000;
const SEVEN_DAYS_MS: u64 = 7 * 86_400_000;
/// How long a result is kept after the job ends: 30 min for `/run`, 1 min for `/runsync`.
pub const RETAIN_RUN_MS: u64 = 30 * 60_000;
pub const RETAIN_SYNC_MS: u64 = 60_000;

/// `policy` of a `/run` body, as sent (milliseconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyInput {
    pub execution_timeout: Option<i64>,
    pub ttl: Option<i64>,
    pub low_priority: Option<bool>,
}

/// A validated policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPolicy {
    /// How long the job may run once a worker took it.
    pub execution_timeout_ms: u64,
    /// How long the job may exist at all, from submission (a hard delete).
    pub ttl_ms: u64,
    /// Never triggers scale-up.
    pub low_priority: bool,
}

impl JobPolicy {
    /// Validates a policy; the ranges are RunPod's (execution 5 s–7 d, TTL 10 s–7 d).
    pub fn validate(p: Option<&PolicyInput>) -> Result<JobPolicy, FieldError> {
        let p = p.cloned().unwrap_or_default();
        let ms = |field: &str, v: Option<i64>, default: u64, lo: u64| match v {
            None => Ok(default),
            Some(x) if x >= lo as i64 && x <= SEVEN_DAYS_MS as i64 => Ok(x as u64),
            Some(_) => Err(FieldError::new(field, format!("must be between {lo} and {SEVEN_DAYS_MS} ms"))),
        };
        Ok(JobPolicy {
            execution_timeout_ms: ms(
                "policy.executionTimeout",
                p.execution_timeout,
                EXECUTION_TIMEOUT_DEFAULT_MS,
                5_000,
            )?,
            ttl_ms: ms("policy.ttl", p.ttl, TTL_DEFAULT_MS, 10_000)?,
            low_priority: p.low_priority.unwrap_or(false),
        })
    }
}

/// Times a job is handed out again after its worker went away before answering; past that it
/// fails visibly.
pub const MAX_RETRIES: u32 = 3;

/// Where a job's time went (issue 20), the queue endpoints' `Server-Timing`: waiting for a
/// worker (`queue_ms`, RunPod's `delayTime`), of which waiting for the worker that took it to
/// start or wake (`start_ms`), and running (`execution_ms`, RunPod's `executionTime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobTimings {
    pub queue_ms: u64,
    pub start_ms: u64,
    pub execution_ms: u64,
}

/// A started job's timings: the part of its wait that came before its worker became ready
/// (`worker_ready`: when the worker that took it last became ready) is the start's.
pub fn timings(
    created: Millis,
    started: Millis,
    finished: Option<Millis>,
    worker_ready: Millis,
    now: Millis,
) -> JobTimings {
    let queue_ms = started.saturating_sub(created);
    let start_ms = if worker_ready > created { worker_ready.min(started).saturating_sub(created) } else { 0 };
    JobTimings { queue_ms, start_ms, execution_ms: finished.unwrap_or(now).saturating_sub(started) }
}

/// A job id in RunPod's shape: a UUID with a `-u1` suffix, or `sync-` + UUID for `/runsync`.
pub fn job_id(random: [u8; 16], sync: bool) -> String {
    let h: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let uuid = format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]);
    if sync { format!("sync-{uuid}") } else { format!("{uuid}-u1") }
}

/// Whether a string can be a job id (what lookups accept before touching the store).
pub fn is_job_id(s: &str) -> bool {
    (8..=64).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
}

/// What is due for a job at `now`, given when it was created, started and finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing changes.
    Nothing,
    /// The TTL ran out: the job is deleted (its status becomes 404), running or not.
    Delete,
    /// Running longer than its execution timeout: TIMED_OUT, and the worker is told to stop.
    TimeOut,
}

/// The clocks of a job (pure): TTL counts from submission and wins; the execution timeout
/// counts from the start; a finished job is deleted once its result retention is over.
pub fn due(
    state: JobState,
    policy: &JobPolicy,
    sync: bool,
    created: Millis,
    started: Option<Millis>,
    finished: Option<Millis>,
    now: Millis,
) -> Due {
    if now.saturating_sub(created) >= policy.ttl_ms {
        return Due::Delete;
    }
    if let Some(f) = finished.filter(|_| state.is_final()) {
        let keep = if sync { RETAIN_SYNC_MS } else { RETAIN_RUN_MS };
        return if now.saturating_sub(f) >= keep { Due::Delete } else { Due::Nothing };
    }
    match (state, started) {
        (JobState::InProgress, Some(s)) if now.saturating_sub(s) >= policy.execution_timeout_ms => Due::TimeOut,
        _ => Due::Nothing,
    }
}

/// Stream chunks not yet delivered: `delivered` were handed out before, `total` exist now.
/// Each `/stream` call returns only the new ones (RunPod's clients poll and yield them all).
pub fn undelivered(delivered: usize, total: usize) -> std::ops::Range<usize> {
    delivered.min(total)..total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_timings_split_the_wait_at_the_workers_start() {
        let m = Millis;
        // (created, started, finished, worker ready) → (queue, start, execution)
        let cases = [
            ((1_000, 1_200, Some(2_000), 500), (200, 0, 800)),
            ((1_000, 9_000, Some(9_500), 8_900), (8_000, 7_900, 500)),
            ((1_000, 9_000, None, 8_900), (8_000, 7_900, 1_000)),
            // Woken after the job was taken (a later wake): the start part stops at the take.
            ((1_000, 3_000, Some(4_000), 3_500), (2_000, 2_000, 1_000)),
        ];
        for ((c, s, f, w), (q, st, e)) in cases {
            let t = timings(m(c), m(s), f.map(m), m(w), m(10_000));
            assert_eq!((t.queue_ms, t.start_ms, t.execution_ms), (q, st, e), "{c} {s} {f:?} {w}");
        }
    }

    #[test]
    fn states_spell_and_move_like_runpod() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        assert!(JobState::InQueue.can_become(JobState::InProgress));
        assert!(JobState::InProgress.can_become(JobState::InQueue), "a dead worker's job is requeued");
        assert!(JobState::Failed.can_become(JobState::InQueue), "retry");
        assert!(!JobState::Completed.can_become(JobState::InQueue), "a completed job is not retried");
        assert!(!JobState::Cancelled.can_become(JobState::InProgress));
        assert!(!JobState::InQueue.can_become(JobState::Completed), "only a worker completes a job");
        assert!(JobState::Cancelled.is_final() && !JobState::InProgress.is_final());
    }

    #[test]
    fn policies() {
        assert_eq!(
            JobPolicy::validate(None).unwrap(),
            JobPolicy { execution_timeout_ms: 600_000, ttl_ms: 86_400_000, low_priority: false }
        );
        let p = PolicyInput { execution_timeout: Some(5_000), ttl: Some(10_000), low_priority: Some(true) };
        assert_eq!(JobPolicy::validate(Some(&p)).unwrap().ttl_ms, 10_000);
        let bad = PolicyInput { execution_timeout: Some(4_999), ..Default::default() };
        assert_eq!(JobPolicy::validate(Some(&bad)).unwrap_err().field, "policy.executionTimeout");
        let bad = PolicyInput { ttl: Some(SEVEN_DAYS_MS as i64 + 1), ..Default::default() };
        assert_eq!(JobPolicy::validate(Some(&bad)).unwrap_err().field, "policy.ttl");
    }

    #[test]
    fn ids() {
        let id = job_id([0xab; 16], false);
        assert_eq!(id, "abababab-abab-abab-abab-abababababab-u1");
        assert!(job_id([1; 16], true).starts_with("sync-0101"));
        assert!(is_job_id(&id) && is_job_id(&job_id([7; 16], true)));
        assert!(!is_job_id("../etc") && !is_job_id("short") && !is_job_id(&"a".repeat(65)));
    }

    #[test]
    fn clocks() {
        let p = JobPolicy { execution_timeout_ms: 5_000, ttl_ms: 60_000, low_priority: false };
        let t = |ms| Millis(ms);
        use JobState::*;
        assert_eq!(due(InQueue, &p, false, t(0), None, None, t(59_999)), Due::Nothing);
        assert_eq!(due(InQueue, &p, false, t(0), None, None, t(60_000)), Due::Delete, "TTL from submission");
        assert_eq!(due(InProgress, &p, false, t(0), Some(t(1_000)), None, t(5_999)), Due::Nothing);
        assert_eq!(due(InProgress, &p, false, t(0), Some(t(1_000)), None, t(6_000)), Due::TimeOut);
        assert_eq!(due(InProgress, &p, false, t(0), Some(t(1_000)), None, t(60_000)), Due::Delete, "TTL wins");
        let long = JobPolicy { ttl_ms: 86_400_000, ..p };
        assert_eq!(due(Completed, &long, true, t(0), Some(t(1)), Some(t(2)), t(60_001)), Due::Nothing);
        assert_eq!(due(Completed, &long, true, t(0), Some(t(1)), Some(t(2)), t(60_002)), Due::Delete);
        assert_eq!(due(Completed, &long, false, t(0), Some(t(1)), Some(t(2)), t(60_002)), Due::Nothing);
        assert_eq!(due(Failed, &long, false, t(0), Some(t(1)), Some(t(2)), t(2 + RETAIN_RUN_MS)), Due::Delete);
    }

    #[test]
    fn stream_cursor() {
        assert_eq!(undelivered(0, 3), 0..3);
        assert_eq!(undelivered(3, 3), 3..3);
        assert_eq!(undelivered(2, 5), 2..5);
        assert_eq!(undelivered(9, 5), 5..5, "a cursor past the end yields nothing");
    }
}
