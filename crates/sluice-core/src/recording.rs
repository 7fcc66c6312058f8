//! Recorded traffic (issue 20): every request the gateway admitted for an endpoint, every start
//! and wake of its workers and every worker's lifetime, kept so that the endpoint's own traffic
//! can be exported as a trace, replayed through every policy and compared with what happened.
//!
//! The records are compact on purpose (the gateway makes one per request): a record is a JSON
//! array of numbers, and the store keeps them in chunks of one reconcile pass.
use serde::{Deserialize, Serialize};

use crate::{
    autoscale::sim::{SimResult, TraceRequest, percentile, rank},
    worker::{Phase, PhaseAt},
};

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum Outcome {
    /// A worker answered (whatever its status).
    Served,
    /// The gateway's queue was full (429 `concurrency_limit`).
    QueueFull,
    /// No worker took it in time (503 `no_worker_available`, or the execution timeout while
    /// waiting).
    QueueTimeout,
    /// Refused by the endpoint's requests-per-minute limit: a quota, not a capacity matter.
    RateLimited,
    /// Sent to a worker that failed or could not be reached.
    WorkerFailed,
}

impl From<Outcome> for u8 {
    fn from(o: Outcome) -> u8 {
        match o {
            Outcome::Served => 0,
            Outcome::QueueFull => 1,
            Outcome::QueueTimeout => 2,
            Outcome::RateLimited => 3,
            Outcome::WorkerFailed => 4,
        }
    }
}

impl TryFrom<u8> for Outcome {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        Ok(match v {
            0 => Outcome::Served,
            1 => Outcome::QueueFull,
            2 => Outcome::QueueTimeout,
            3 => Outcome::RateLimited,
            4 => Outcome::WorkerFailed,
            _ => return Err(format!("unknown outcome {v}")),
        })
    }
}

/// One admitted request. On the wire and in the store: `[at, queue_ms, start_ms, woke,
/// service_ms, status, outcome, bytes_in, bytes_out]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "RecordRow", from = "RecordRow")]
pub struct RequestRecord {
    /// Arrival, Unix ms.
    pub at: u64,
    /// In the gateway's queue, waiting for a busy worker's slot.
    pub queue_ms: u32,
    /// Waiting for a worker to start or wake (0: it did not).
    pub start_ms: u32,
    /// That wait was for a wake.
    pub woke: bool,
    /// At the worker: from sending the request to the end of the response body (its slot).
    pub service_ms: u32,
    pub status: u16,
    pub outcome: Outcome,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

type RecordRow = (u64, u32, u32, u8, u32, u16, Outcome, u64, u64);

impl From<RequestRecord> for RecordRow {
    fn from(r: RequestRecord) -> RecordRow {
        (r.at, r.queue_ms, r.start_ms, u8::from(r.woke), r.service_ms, r.status, r.outcome, r.bytes_in, r.bytes_out)
    }
}

impl From<RecordRow> for RequestRecord {
    fn from(r: RecordRow) -> RequestRecord {
        RequestRecord {
            at: r.0,
            queue_ms: r.1,
            start_ms: r.2,
            woke: r.3 != 0,
            service_ms: r.4,
            status: r.5,
            outcome: r.6,
            bytes_in: r.7,
            bytes_out: r.8,
        }
    }
}

impl RequestRecord {
    /// End to end: queue, start and the worker (the gateway's own part is negligible).
    pub fn latency_ms(&self) -> u64 {
        u64::from(self.queue_ms) + u64::from(self.start_ms) + u64::from(self.service_ms)
    }
}

/// A worker that became ready: `[at, duration_ms, wake]` (at: Unix ms it became ready).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRecord {
    pub at: u64,
    pub duration_ms: u64,
    pub wake: bool,
}

/// A worker's life: awake from `from` to `to` (Unix ms) on `gpus` GPUs, `asleep_ms` of it asleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanRecord {
    pub from: u64,
    pub to: u64,
    pub gpus: u32,
    #[serde(default)]
    pub asleep_ms: u64,
}

/// How long a worker slept up to `until`, from its phases (asleep from `slept` to the next
/// phase, or to `until`).
pub fn asleep_ms(phases: &[PhaseAt], until: u64) -> u64 {
    let mut total = 0;
    let mut since: Option<u64> = None;
    for p in phases {
        match (p.phase, since) {
            (Phase::Slept, None) => since = Some(p.at.0),
            (Phase::Slept, Some(_)) => {}
            (_, Some(s)) => {
                total += p.at.0.saturating_sub(s);
                since = None;
            }
            (_, None) => {}
        }
    }
    total + since.map_or(0, |s| until.saturating_sub(s))
}

/// The start that just ended at `ready_at`: a wake (from the last wake call) or a cold start
/// (from the worker's creation).
pub fn start_of(created_at: u64, phases: &[PhaseAt], ready_at: u64) -> StartRecord {
    match phases.iter().rev().find(|p| p.phase == Phase::WakeCalled).filter(|_| crate::worker::woken(phases)) {
        Some(call) => StartRecord { at: ready_at, duration_ms: ready_at.saturating_sub(call.at.0), wake: true },
        None => StartRecord { at: ready_at, duration_ms: ready_at.saturating_sub(created_at), wake: false },
    }
}

/// The requests a replay must serve: everything a worker took, and what the gateway turned away
/// for want of capacity (a full queue, a wait that timed out), with the median service time of
/// the served ones, since the demand was there. Requests refused by the rate limit are a quota's
/// doing, not capacity's, and are left out. Sorted by arrival.
pub fn demand(records: &[RequestRecord]) -> Vec<&RequestRecord> {
    let mut v: Vec<&RequestRecord> = records.iter().filter(|r| r.outcome != Outcome::RateLimited).collect();
    v.sort_by_key(|r| r.at);
    v
}

fn median_service(records: &[&RequestRecord]) -> u64 {
    let mut s: Vec<u64> =
        records.iter().filter(|r| r.outcome == Outcome::Served).map(|r| u64::from(r.service_ms)).collect();
    if s.is_empty() {
        return 1;
    }
    s.sort_unstable();
    s[s.len() / 2].max(1)
}

/// The requests as the simulator's trace: arrivals relative to the first, service at the worker.
pub fn to_trace(records: &[RequestRecord]) -> Vec<TraceRequest> {
    let d = demand(records);
    let median = median_service(&d);
    let first = d.first().map_or(0, |r| r.at);
    d.iter()
        .map(|r| TraceRequest {
            arrival_ms: r.at - first,
            service_ms: if r.outcome == Outcome::Served { u64::from(r.service_ms).max(1) } else { median },
        })
        .collect()
}

/// The canonical trace CSV (`shared/traces/README.md`): `arrival_s,service_s`.
pub fn trace_csv(records: &[RequestRecord]) -> String {
    let mut out = String::from("arrival_s,service_s\n");
    for r in to_trace(records) {
        out.push_str(&format!("{:.3},{:.3}\n", r.arrival_ms as f64 / 1000.0, r.service_ms as f64 / 1000.0));
    }
    out
}

/// Start (or wake) durations in the cold-start format: a `cold_start_s` (or `wake_s`) column.
pub fn starts_csv(starts: &[StartRecord], wakes: bool) -> String {
    let mut out = String::from(if wakes { "wake_s\n" } else { "cold_start_s\n" });
    for s in starts.iter().filter(|s| s.wake == wakes) {
        out.push_str(&format!("{:.3}\n", s.duration_ms as f64 / 1000.0));
    }
    out
}

/// GPU-milliseconds of `spans` within `[since, until)`: (awake, asleep). Sleep is taken to be
/// the last part of a span (a worker goes to sleep after serving).
pub fn gpu_ms(spans: &[SpanRecord], since: u64, until: u64) -> (u64, u64) {
    let (mut awake, mut asleep) = (0u64, 0u64);
    for s in spans {
        let sleep_from = s.to.saturating_sub(s.asleep_ms).max(s.from);
        let clip = |a: u64, b: u64| b.min(until).saturating_sub(a.max(since));
        awake += clip(s.from, sleep_from) * u64::from(s.gpus);
        asleep += clip(sleep_from, s.to) * u64::from(s.gpus);
    }
    (awake, asleep)
}

/// One slice of an endpoint's recorded traffic over time (the console's charts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficBucket {
    /// Its start, Unix ms.
    pub at: u64,
    /// Requests admitted, and per second.
    pub requests: u64,
    pub rps: f64,
    /// End to end (queue, start and worker) and at the worker, of the served ones, ms.
    pub latency_p50_ms: Option<u64>,
    pub latency_p99_ms: Option<u64>,
    pub service_p50_ms: Option<u64>,
    pub service_p99_ms: Option<u64>,
    /// Time in the gateway's queue (busy workers), mean and max, ms.
    pub queue_mean_ms: f64,
    pub queue_max_ms: u64,
    /// Requests that waited for a start or wake.
    pub start_waits: u64,
    /// Durations of the starts and wakes that ended in it, ms.
    pub starts_ms: Vec<u64>,
    /// 429s (a full queue, the rate limit) and 503s (no worker in time).
    pub rejected_429: u64,
    pub rejected_503: u64,
    /// Workers running (launched and not yet stopped, asleep included), mean over the slice.
    pub workers: f64,
    /// Requests at a worker, and requests waiting (in the queue, or for a start or wake), mean
    /// over the slice: of the requests that arrived in the window.
    pub running: f64,
    pub waiting: f64,
}

/// Adds to each slice of `out` (`width` ms from `since`, the last cut at `until`) the share of
/// it that `[from, to)` covers, into the field `f` picks.
fn spread(
    out: &mut [TrafficBucket],
    since: u64,
    until: u64,
    width: u64,
    from: u64,
    to: u64,
    f: fn(&mut TrafficBucket) -> &mut f64,
) {
    let (from, to) = (from.max(since), to.min(until));
    let mut i = from.saturating_sub(since) / width;
    while from < to && (i as usize) < out.len() {
        let (b0, b1) = (since + i * width, (since + (i + 1) * width).min(until));
        if b0 >= to {
            break;
        }
        *f(&mut out[i as usize]) += (to.min(b1) - from.max(b0)) as f64 / (b1 - b0) as f64;
        i += 1;
    }
}

/// The records cut into `n` equal slices of `[since, until)`.
pub fn buckets(
    records: &[RequestRecord],
    starts: &[StartRecord],
    spans: &[SpanRecord],
    since: u64,
    until: u64,
    n: usize,
) -> Vec<TrafficBucket> {
    let n = n.clamp(1, 1000);
    let width = until.saturating_sub(since).max(1).div_ceil(n as u64);
    let mut out: Vec<TrafficBucket> =
        (0..n as u64).map(|i| TrafficBucket { at: since + i * width, ..Default::default() }).collect();
    let slot = |at: u64| (at >= since && at < until).then(|| ((at - since) / width) as usize).filter(|i| *i < n);
    let (mut lat, mut svc) = (vec![Vec::new(); n], vec![Vec::new(); n]);
    for r in records {
        // In flight over time (waiting, then at the worker), across the slices it spans...
        let sent = r.at + u64::from(r.queue_ms) + u64::from(r.start_ms);
        spread(&mut out, since, until, width, r.at, sent, |b| &mut b.waiting);
        spread(&mut out, since, until, width, sent, sent + u64::from(r.service_ms), |b| &mut b.running);
        // ...and counted in the slice it arrived in.
        let Some(i) = slot(r.at) else { continue };
        let b = &mut out[i];
        b.requests += 1;
        match r.outcome {
            Outcome::QueueFull | Outcome::RateLimited => b.rejected_429 += 1,
            Outcome::QueueTimeout => b.rejected_503 += 1,
            Outcome::Served | Outcome::WorkerFailed => {
                lat[i].push(r.latency_ms());
                svc[i].push(u64::from(r.service_ms));
            }
        }
        b.start_waits += u64::from(r.start_ms > 0);
        b.queue_mean_ms += f64::from(r.queue_ms);
        b.queue_max_ms = b.queue_max_ms.max(u64::from(r.queue_ms));
    }
    for s in starts {
        if let Some(i) = slot(s.at) {
            out[i].starts_ms.push(s.duration_ms);
        }
    }
    for sp in spans {
        spread(&mut out, since, until, width, sp.from, sp.to, |b| &mut b.workers);
    }
    let pct = |v: &mut Vec<u64>, q: f64| {
        v.sort_unstable();
        rank(v, q)
    };
    for (i, b) in out.iter_mut().enumerate() {
        b.rps = b.requests as f64 * 1000.0 / width as f64;
        if b.requests > 0 {
            b.queue_mean_ms /= b.requests as f64;
        }
        b.latency_p50_ms = pct(&mut lat[i], 0.5);
        b.latency_p99_ms = pct(&mut lat[i], 0.99);
        b.service_p50_ms = pct(&mut svc[i], 0.5);
        b.service_p99_ms = pct(&mut svc[i], 0.99);
    }
    out
}

/// What really happened over a window, as a row of the simulator's table (`policy: "actual"`).
pub struct Actual<'a> {
    pub records: &'a [RequestRecord],
    pub starts: &'a [StartRecord],
    pub spans: &'a [SpanRecord],
    pub since: u64,
    pub until: u64,
    /// Decisions that changed the count within the window, and the most workers they asked for.
    pub scale_events: u64,
    pub peak_workers: u32,
    pub usd_per_gpu_second: f64,
    pub usd_per_sleeping_gpu_second: f64,
    pub concurrency_per_worker: u32,
}

impl Actual<'_> {
    pub fn result(&self) -> SimResult {
        let d = demand(self.records);
        let mut lat: Vec<u64> = d.iter().filter(|r| r.outcome == Outcome::Served).map(|r| r.latency_ms()).collect();
        lat.sort_unstable();
        let count = |o: Outcome| d.iter().filter(|r| r.outcome == o).count() as u64;
        let (full, timeout) = (count(Outcome::QueueFull), count(Outcome::QueueTimeout));
        // Metered as the simulator meters a replay: from the first arrival until the last
        // request is done, so the rows compare like with like.
        let first = d.first().map_or(self.since, |r| r.at.max(self.since));
        let last = d.iter().map(|r| r.at + r.latency_ms()).max().map_or(self.until, |l| l.min(self.until));
        let (awake, asleep) = gpu_ms(self.spans, first, last.max(first));
        let gpu_seconds = awake as f64 / 1000.0;
        let sleeping = asleep as f64 / 1000.0;
        let busy_ms: u64 = d.iter().map(|r| u64::from(r.service_ms)).sum();
        let slot_ms = awake as f64 * f64::from(self.concurrency_per_worker.max(1));
        let hours = last.saturating_sub(first) as f64 / 3_600_000.0;
        let in_window = |s: &&StartRecord| s.at >= self.since && s.at < self.until;
        SimResult {
            policy: "actual".into(),
            requests: d.len() as u64,
            completed: d.len() as u64 - full - timeout,
            rejected: full + timeout,
            rejected_queue_full: full,
            rejected_timeout: timeout,
            p50_s: percentile(&lat, 50.0),
            p95_s: percentile(&lat, 95.0),
            p99_s: percentile(&lat, 99.0),
            cold_start_hits: d.iter().filter(|r| r.start_ms > 0).count() as u64,
            wake_hits: d.iter().filter(|r| r.start_ms > 0 && r.woke).count() as u64,
            wakes: self.starts.iter().filter(in_window).filter(|s| s.wake).count() as u64,
            gpu_seconds,
            sleeping_gpu_seconds: sleeping,
            cost_usd: gpu_seconds * self.usd_per_gpu_second + sleeping * self.usd_per_sleeping_gpu_second,
            busy_fraction: if slot_ms > 0.0 { (busy_ms as f64 / slot_ms).min(1.0) } else { 0.0 },
            scale_events: self.scale_events,
            scale_events_per_hour: if hours > 0.0 { self.scale_events as f64 / hours } else { 0.0 },
            peak_workers: self.peak_workers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(at: u64, service_ms: u32, outcome: Outcome) -> RequestRecord {
        RequestRecord {
            at,
            queue_ms: 0,
            start_ms: 0,
            woke: false,
            service_ms,
            status: 200,
            outcome,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    #[test]
    fn compact_form_round_trips_and_refuses_unknown_outcomes() {
        let r = RequestRecord {
            queue_ms: 3,
            start_ms: 40,
            woke: true,
            bytes_in: 7,
            bytes_out: 9,
            ..rec(5, 12, Outcome::Served)
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, "[5,3,40,1,12,200,0,7,9]");
        assert_eq!(serde_json::from_str::<RequestRecord>(&json).unwrap(), r);
        assert!(serde_json::from_str::<RequestRecord>("[5,3,40,1,12,200,9,7,9]").is_err());
        assert!(serde_json::from_str::<RequestRecord>("[5,3]").is_err());
    }

    #[test]
    fn trace_keeps_capacity_rejections_and_drops_quota_refusals() {
        // (records in, trace lines out)
        let cases: Vec<(Vec<RequestRecord>, &str)> = vec![
            (vec![], "arrival_s,service_s\n"),
            (vec![rec(1_000, 250, Outcome::Served)], "arrival_s,service_s\n0.000,0.250\n"),
            (
                vec![
                    rec(2_500, 100, Outcome::Served),
                    rec(1_000, 300, Outcome::Served),
                    rec(1_200, 0, Outcome::RateLimited),
                    rec(3_000, 0, Outcome::QueueFull),
                    rec(3_100, 0, Outcome::QueueTimeout),
                ],
                // The median served service time (300 of [100, 300]) stands in for the rejected.
                "arrival_s,service_s\n0.000,0.300\n1.500,0.100\n2.000,0.300\n2.100,0.300\n",
            ),
        ];
        for (records, want) in cases {
            assert_eq!(trace_csv(&records), want);
            // What we export, the simulator reads.
            if records.iter().any(|r| r.outcome != Outcome::RateLimited) {
                crate::autoscale::sim::parse_trace(&trace_csv(&records)).unwrap();
            }
        }
    }

    #[test]
    fn starts_split_cold_and_wake() {
        let s = [
            StartRecord { at: 1, duration_ms: 23_456, wake: false },
            StartRecord { at: 2, duration_ms: 312, wake: true },
        ];
        assert_eq!(starts_csv(&s, false), "cold_start_s\n23.456\n");
        assert_eq!(starts_csv(&s, true), "wake_s\n0.312\n");
        crate::autoscale::sim::parse_cold_starts(&starts_csv(&s, false)).unwrap();
    }

    #[test]
    fn traffic_buckets_slice_the_window() {
        let mut recs = vec![
            RequestRecord { queue_ms: 40, ..rec(1_000, 100, Outcome::Served) },
            RequestRecord { start_ms: 3_000, ..rec(2_000, 300, Outcome::Served) },
            rec(6_000, 0, Outcome::QueueFull),
            rec(7_000, 0, Outcome::RateLimited),
            rec(8_000, 0, Outcome::QueueTimeout),
            rec(20_000, 5, Outcome::Served),
        ];
        recs.push(rec(9_999, 200, Outcome::Served));
        let starts = [StartRecord { at: 4_000, duration_ms: 2_500, wake: false }];
        let b = buckets(&recs, &starts, &[], 0, 10_000, 2);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].at, b[0].requests, b[0].rps), (0, 2, 0.4));
        assert_eq!((b[0].service_p50_ms, b[0].latency_p99_ms), (Some(300), Some(3_300)));
        assert_eq!((b[0].queue_mean_ms, b[0].queue_max_ms, b[0].start_waits), (20.0, 40, 1));
        assert_eq!(b[0].starts_ms, [2_500]);
        assert_eq!((b[1].at, b[1].requests, b[1].rejected_429, b[1].rejected_503), (5_000, 4, 2, 1));
        assert_eq!((b[1].service_p50_ms, b[1].service_p99_ms), (Some(200), Some(200)));
        // The request at 20 s is outside; empty buckets have no percentiles.
        assert_eq!(buckets(&recs, &[], &[], 30_000, 40_000, 3).iter().map(|b| b.requests).sum::<u64>(), 0);
        assert_eq!(buckets(&[], &[], &[], 0, 10, 0).len(), 1);
    }

    #[test]
    fn traffic_buckets_spread_workers_and_requests_over_the_slices_they_cover() {
        let span = |from, to| SpanRecord { from, to, gpus: 1, asleep_ms: 0 };
        // 4 slices of 10 s over [100 s, 140 s).
        let cases: &[(&[SpanRecord], [f64; 4])] = &[
            (&[], [0.0; 4]),
            // Running through the whole window, from before it to after it.
            (&[span(0, 500_000)], [1.0; 4]),
            // Half of the second slice, all of the third, a quarter of the fourth.
            (&[span(115_000, 132_500)], [0.0, 0.5, 1.0, 0.25]),
            // Two workers overlapping in one slice; one wholly outside.
            (&[span(100_000, 110_000), span(105_000, 110_000), span(150_000, 160_000)], [1.5, 0.0, 0.0, 0.0]),
            // Stopped as it launched.
            (&[span(120_000, 120_000)], [0.0; 4]),
        ];
        for (spans, want) in cases {
            let got: Vec<f64> = buckets(&[], &[], spans, 100_000, 140_000, 4).iter().map(|b| b.workers).collect();
            assert_eq!(got, want, "{spans:?}");
        }
        // Requests: 2 s waiting then 4 s at the worker, from 102 s; a refusal after 10 s in the
        // queue, from 125 s.
        let recs = [
            RequestRecord { queue_ms: 500, start_ms: 1_500, ..rec(102_000, 4_000, Outcome::Served) },
            RequestRecord { queue_ms: 10_000, ..rec(125_000, 0, Outcome::QueueTimeout) },
        ];
        let b = buckets(&recs, &[], &[], 100_000, 140_000, 4);
        assert_eq!(b.iter().map(|b| b.waiting).collect::<Vec<_>>(), [0.2, 0.0, 0.5, 0.5]);
        assert_eq!(b.iter().map(|b| b.running).collect::<Vec<_>>(), [0.4, 0.0, 0.0, 0.0]);
        // 10 s in 3 slices of 3.334 s, the last cut short at the window's end: a worker through
        // that last slice counts 1, not 0.9994.
        let b = buckets(&[], &[], &[span(6_668, 10_000)], 0, 10_000, 3);
        assert_eq!(b.iter().map(|b| b.workers).collect::<Vec<_>>(), [0.0, 0.0, 1.0]);
    }

    #[test]
    fn sleep_and_wake_from_phases() {
        use crate::Millis;
        let at = |phase, t: u64| PhaseAt { phase, at: Millis(t) };
        let phases = [
            at(Phase::Placed, 0),
            at(Phase::Healthy, 5_000),
            at(Phase::Slept, 10_000),
            at(Phase::WakeCalled, 30_000),
            at(Phase::Woke, 30_400),
            at(Phase::Healthy, 30_500),
            at(Phase::Slept, 40_000),
        ];
        assert_eq!(asleep_ms(&phases, 45_000), 20_000 + 5_000);
        assert_eq!(asleep_ms(&phases[..2], 45_000), 0);
        assert_eq!(start_of(0, &phases[..2], 5_000), StartRecord { at: 5_000, duration_ms: 5_000, wake: false });
        assert_eq!(start_of(0, &phases[..6], 30_500), StartRecord { at: 30_500, duration_ms: 500, wake: true });
    }

    #[test]
    fn gpu_time_is_clipped_to_the_window() {
        let spans = [
            SpanRecord { from: 0, to: 10_000, gpus: 2, asleep_ms: 4_000 },
            SpanRecord { from: 8_000, to: 20_000, gpus: 1, asleep_ms: 0 },
        ];
        // (since, until) → (awake, asleep) GPU-ms
        let cases = [
            ((0, 30_000), (12_000 + 12_000, 8_000)),
            ((5_000, 9_000), (2_000 + 1_000, 6_000)),
            ((20_000, 30_000), (0, 0)),
        ];
        for ((since, until), want) in cases {
            assert_eq!(gpu_ms(&spans, since, until), want, "window {since}..{until}");
        }
    }

    #[test]
    fn actual_row_counts_what_happened() {
        let mut recs: Vec<RequestRecord> = (0..100).map(|i| rec(i * 100, 1_000, Outcome::Served)).collect();
        recs[0].start_ms = 20_000;
        recs[1].start_ms = 500;
        recs[1].woke = true;
        recs.push(rec(50, 0, Outcome::QueueFull));
        recs.push(rec(60, 0, Outcome::RateLimited));
        let spans = [SpanRecord { from: 0, to: 3_600_000, gpus: 1, asleep_ms: 0 }];
        let r = Actual {
            records: &recs,
            starts: &[StartRecord { at: 10, duration_ms: 500, wake: true }],
            spans: &spans,
            since: 0,
            until: 3_600_000,
            scale_events: 2,
            peak_workers: 1,
            usd_per_gpu_second: 0.001,
            usd_per_sleeping_gpu_second: 0.0,
            concurrency_per_worker: 1,
        }
        .result();
        assert_eq!((r.requests, r.completed, r.rejected, r.rejected_queue_full), (101, 100, 1, 1));
        assert_eq!((r.cold_start_hits, r.wake_hits, r.wakes), (2, 1, 1));
        assert_eq!(r.p50_s, 1.0);
        assert_eq!(r.p99_s, 1.5);
        // From the first arrival (0) to the last request's end (the first: 20 s start + 1 s), as
        // a replay meters.
        assert!((r.gpu_seconds - 21.0).abs() < 1e-9 && (r.cost_usd - 0.021).abs() < 1e-9, "{r:?}");
        assert!((r.scale_events_per_hour - 2.0 / (21.0 / 3600.0)).abs() < 1e-6);
    }
}
