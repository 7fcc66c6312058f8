//! Per-endpoint figures the gateway keeps for `/metrics` (R7.3): responses by status code,
//! latency histograms, 429s by limit. Lock-free on the request path except for one short,
//! uncontended-in-practice lock for the status code list.
use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use sluice_core::{
    metrics::{Histogram, LATENCY_BOUNDS, bucket},
    recording::RequestRecord,
};

/// A latency histogram with atomic buckets.
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl AtomicHistogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        AtomicHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        self.counts[bucket(self.bounds, d.as_secs_f64())].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(d.as_nanos().min(u128::from(u64::MAX)) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> Histogram {
        Histogram {
            bounds: std::borrow::Cow::Borrowed(self.bounds),
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            sum: self.sum_ns.load(Relaxed) as f64 / 1e9,
            count: self.count.load(Relaxed),
        }
    }
}

#[derive(Debug)]
pub struct EndpointMetrics {
    codes: Mutex<Vec<(u16, u64)>>,
    pub total: AtomicHistogram,
    pub added: AtomicHistogram,
    pub rate_limited: AtomicU64,
    pub concurrency_limited: AtomicU64,
    /// Gateway errors by fault: client, worker, platform.
    pub errors: [AtomicU64; 3],
    /// Streamed OpenAI answers: time to first token, between tokens, tokens, streams.
    pub ttft: AtomicHistogram,
    pub itl: AtomicHistogram,
    pub output_tokens: AtomicU64,
    pub streams: AtomicU64,
    /// The anatomy of answered requests: queue, start, upstream, gateway (`Phases`).
    pub phase: [AtomicHistogram; 4],
}

/// Requests recorded for the control plane (issue 20): a bounded buffer, drained once a pass.
/// One short lock per request.
#[derive(Debug, Default)]
pub struct Records {
    buf: Mutex<(Vec<RequestRecord>, u64)>,
}

/// At most this many records wait for collection per endpoint; beyond, new ones are dropped
/// (and counted) rather than growing without bound while no control plane collects them.
pub const MAX_PENDING_RECORDS: usize = 200_000;

impl Records {
    pub fn push(&self, r: RequestRecord) {
        let mut b = self.buf.lock().unwrap();
        if b.0.len() < MAX_PENDING_RECORDS {
            b.0.push(r);
        } else {
            b.1 += 1;
        }
    }

    /// The records since the last take, and how many were dropped.
    pub fn take(&self) -> (Vec<RequestRecord>, u64) {
        std::mem::take(&mut *self.buf.lock().unwrap())
    }
}

/// Where a request's time to its response head went.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phases {
    /// Waiting in the gateway's queue for a busy worker's slot.
    pub queue: Duration,
    /// Waiting for a worker to start or wake (none was ready).
    pub start: Duration,
    /// At the worker, to its response head.
    pub upstream: Duration,
    /// The gateway's own part.
    pub gateway: Duration,
}

/// The phase names, in `EndpointMetrics::phase` order.
pub const PHASES: [&str; 4] = ["queue", "start", "upstream", "gateway"];

impl Phases {
    fn all(&self) -> [Duration; 4] {
        [self.queue, self.start, self.upstream, self.gateway]
    }

    /// `queue;dur=0.000, upstream;dur=12.345, gateway;dur=0.120` (milliseconds; `start` only
    /// when the request waited for one). Integer formatting into one buffer: this runs on
    /// every answer.
    pub fn header(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(96);
        let mut put = |name: &str, d: Duration| {
            let us = d.as_micros();
            let sep = if s.is_empty() { "" } else { ", " };
            let _ = write!(s, "{sep}{name};dur={}.{:03}", us / 1000, us % 1000);
        };
        put("queue", self.queue);
        if !self.start.is_zero() {
            put("start", self.start);
        }
        put("upstream", self.upstream);
        put("gateway", self.gateway);
        s
    }
}

impl Default for EndpointMetrics {
    fn default() -> Self {
        EndpointMetrics {
            codes: Mutex::default(),
            total: AtomicHistogram::new(&LATENCY_BOUNDS),
            added: AtomicHistogram::new(&LATENCY_BOUNDS),
            rate_limited: AtomicU64::new(0),
            concurrency_limited: AtomicU64::new(0),
            errors: Default::default(),
            ttft: AtomicHistogram::new(&LATENCY_BOUNDS),
            itl: AtomicHistogram::new(&LATENCY_BOUNDS),
            output_tokens: AtomicU64::new(0),
            streams: AtomicU64::new(0),
            phase: std::array::from_fn(|_| AtomicHistogram::new(&LATENCY_BOUNDS)),
        }
    }
}

impl EndpointMetrics {
    /// A response: its code, the time from arrival to its head, and the worker's share of it.
    pub fn record(&self, code: u16, total: Duration, upstream: Option<Duration>) {
        {
            let mut codes = self.codes.lock().unwrap();
            match codes.iter_mut().find(|(c, _)| *c == code) {
                Some((_, n)) => *n += 1,
                None => codes.push((code, 1)),
            }
        }
        self.total.observe(total);
        self.added.observe(total.saturating_sub(upstream.unwrap_or_default()));
    }

    /// A request's phases (`start` only when it waited for one).
    pub fn phases(&self, p: &Phases) {
        for (i, d) in p.all().into_iter().enumerate() {
            if i != 1 || !d.is_zero() {
                self.phase[i].observe(d);
            }
        }
    }

    /// The phases' histograms as read now, by name.
    pub fn phase_figures(&self) -> Vec<(String, sluice_core::metrics::Histogram)> {
        PHASES.iter().zip(&self.phase).map(|(n, h)| ((*n).to_owned(), h.snapshot())).collect()
    }

    /// The streamed-answer figures as read now.
    pub fn llm(&self) -> sluice_core::metrics::LlmFigures {
        sluice_core::metrics::LlmFigures {
            ttft: self.ttft.snapshot(),
            itl: self.itl.snapshot(),
            output_tokens: self.output_tokens.load(Relaxed),
            streams: self.streams.load(Relaxed),
        }
    }

    pub fn codes(&self) -> Vec<(u16, u64)> {
        let mut v = self.codes.lock().unwrap().clone();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_codes_and_both_latencies() {
        let m = EndpointMetrics::default();
        m.record(200, Duration::from_millis(12), Some(Duration::from_millis(10)));
        m.record(200, Duration::from_millis(3), Some(Duration::from_millis(1)));
        m.record(503, Duration::from_millis(40), None);
        assert_eq!(m.codes(), vec![(200, 2), (503, 1)]);
        let total = m.total.snapshot();
        assert_eq!(total.count, 3);
        assert!((total.sum - 0.055).abs() < 1e-9, "{}", total.sum);
        let added = m.added.snapshot();
        // 2 ms, 2 ms and (no worker) 40 ms.
        assert!((added.sum - 0.044).abs() < 1e-9, "{}", added.sum);
        assert_eq!(added.counts[bucket(&LATENCY_BOUNDS, 0.002)], 2);
        assert_eq!(added.counts.iter().sum::<u64>(), 3);
        let ms = Duration::from_micros;
        let p = Phases { queue: ms(0), start: ms(0), upstream: ms(12_345), gateway: ms(120) };
        assert_eq!(p.header(), "queue;dur=0.000, upstream;dur=12.345, gateway;dur=0.120");
        let cold = Phases { start: ms(48_211_000), ..p };
        assert!(cold.header().contains("start;dur=48211.000"));
        m.phases(&p);
        m.phases(&cold);
        let f = m.phase_figures();
        assert_eq!(
            f.iter().map(|(n, h)| (n.as_str(), h.count)).collect::<Vec<_>>(),
            [("queue", 2), ("start", 1), ("upstream", 2), ("gateway", 2)]
        );
    }
}
