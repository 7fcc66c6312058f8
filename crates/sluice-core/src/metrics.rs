//! Metrics (R7.3), the pure parts: the latency histogram's buckets and the snapshot types the
//! gateway hands the control plane, which encodes them for Prometheus.
use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::EndpointId;

/// Upper bounds of the latency buckets, seconds (+Inf is implied).
pub const LATENCY_BOUNDS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Upper bounds of the cold-start buckets, seconds.
pub const COLD_START_BOUNDS: [f64; 12] = [0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// The bucket of a value: the first bound it does not exceed, or `bounds.len()` for +Inf.
pub fn bucket(bounds: &[f64], v: f64) -> usize {
    bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len())
}

/// A histogram as read at one moment: per-bucket counts (not cumulative; the last is +Inf).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Histogram {
    pub bounds: Cow<'static, [f64]>,
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds: Cow::Borrowed(bounds), counts: vec![0; bounds.len() + 1], sum: 0.0, count: 0 }
    }

    pub fn observe(&mut self, v: f64) {
        self.counts[bucket(&self.bounds, v)] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// The `q` quantile, as the upper bound of the bucket it falls in (the last finite bound
    /// for +Inf); `None` with no observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(self.bounds.get(i).or(self.bounds.last()).copied().unwrap_or(0.0));
            }
        }
        self.bounds.last().copied()
    }

    /// `(upper bound, count)` pairs as Prometheus encoders take them, +Inf last.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.bounds.iter().copied().chain([f64::INFINITY]).zip(self.counts.iter().copied()).collect()
    }
}

/// One endpoint's figures at the gateway.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EndpointFigures {
    pub endpoint: Option<EndpointId>,
    /// Responses by status code.
    pub codes: Vec<(u16, u64)>,
    /// Arrival to the response head (the whole request as the client waits for it).
    pub total: Histogram,
    /// What the gateway added: the total less the worker's own time to the response head
    /// (queueing for a worker included).
    pub added: Histogram,
    /// 429s by the limit that refused them (`rate_limit`, `concurrency_limit`).
    pub rejected: Vec<(String, u64)>,
    /// Requests the gateway itself answered with an error, by who was at fault (`client`,
    /// `worker`, `platform`): a client's broken request never counts against a worker.
    #[serde(default)]
    pub errors: Vec<(String, u64)>,
    pub in_flight: u64,
    pub queued: u64,
    /// Streamed OpenAI answers (chat and text completions).
    #[serde(default)]
    pub llm: LlmFigures,
    /// The anatomy of answered requests, by phase (`queue`, `start`, `upstream`, `gateway`).
    #[serde(default)]
    pub phases: Vec<(String, Histogram)>,
}

/// What the gateway measures of streamed OpenAI answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmFigures {
    /// Arrival to the first token.
    pub ttft: Histogram,
    /// Between tokens.
    pub itl: Histogram,
    /// Tokens generated (the final `usage` chunk's `completion_tokens`, else the chunks).
    pub output_tokens: u64,
    pub streams: u64,
}

impl Default for LlmFigures {
    fn default() -> Self {
        LlmFigures {
            ttft: Histogram::new(&LATENCY_BOUNDS),
            itl: Histogram::new(&LATENCY_BOUNDS),
            output_tokens: 0,
            streams: 0,
        }
    }
}

impl LlmFigures {
    pub fn add(&mut self, o: &LlmFigures) {
        self.ttft.add(&o.ttft);
        self.itl.add(&o.itl);
        self.output_tokens += o.output_tokens;
        self.streams += o.streams;
    }
}

/// A gateway process's figures.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GatewayFigures {
    pub endpoints: Vec<EndpointFigures>,
    pub open_connections: u64,
    pub connections_total: u64,
    pub table_version: u64,
}

impl Histogram {
    /// Adds another histogram with the same buckets (another gateway's); one with other bounds
    /// is left out.
    pub fn add(&mut self, other: &Histogram) {
        if self.bounds != other.bounds || self.counts.len() != other.counts.len() {
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
        self.count += other.count;
    }
}

/// Several gateways' figures as one (R8.3: the control plane shows the sum): per endpoint,
/// counts and histograms add up; connections add up; the table version is the oldest any
/// gateway serves.
pub fn merge_figures(all: &[GatewayFigures]) -> GatewayFigures {
    let mut out =
        GatewayFigures { table_version: all.iter().map(|g| g.table_version).min().unwrap_or(0), ..Default::default() };
    for g in all {
        out.open_connections += g.open_connections;
        out.connections_total += g.connections_total;
        for f in &g.endpoints {
            let Some(m) = out.endpoints.iter_mut().find(|m| m.endpoint == f.endpoint) else {
                out.endpoints.push(f.clone());
                continue;
            };
            for (code, n) in &f.codes {
                match m.codes.iter_mut().find(|(c, _)| c == code) {
                    Some((_, k)) => *k += n,
                    None => m.codes.push((*code, *n)),
                }
            }
            m.codes.sort_unstable();
            m.total.add(&f.total);
            m.added.add(&f.added);
            for (limit, n) in &f.rejected {
                match m.rejected.iter_mut().find(|(l, _)| l == limit) {
                    Some((_, k)) => *k += n,
                    None => m.rejected.push((limit.clone(), *n)),
                }
            }
            for (fault, n) in &f.errors {
                match m.errors.iter_mut().find(|(l, _)| l == fault) {
                    Some((_, k)) => *k += n,
                    None => m.errors.push((fault.clone(), *n)),
                }
            }
            m.in_flight += f.in_flight;
            m.queued += f.queued;
            m.llm.add(&f.llm);
            for (name, h) in &f.phases {
                match m.phases.iter_mut().find(|(n, _)| n == name) {
                    Some((_, mine)) => mine.add(h),
                    None => m.phases.push((name.clone(), h.clone())),
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(bucket(&LATENCY_BOUNDS, 0.0), 0);
        assert_eq!(bucket(&LATENCY_BOUNDS, 0.0005), 0, "a bound is inclusive (le)");
        assert_eq!(bucket(&LATENCY_BOUNDS, 0.0006), 1);
        assert_eq!(bucket(&LATENCY_BOUNDS, 60.0), 15);
        assert_eq!(bucket(&LATENCY_BOUNDS, 61.0), 16, "+Inf");
        assert_eq!(bucket(&LATENCY_BOUNDS, f64::NAN), 16);
        let mut h = Histogram::new(&COLD_START_BOUNDS);
        for v in [0.05, 0.3, 0.3, 700.0] {
            h.observe(v);
        }
        assert_eq!((h.count, h.sum), (4, 700.65));
        let b = h.buckets();
        assert_eq!(b.len(), COLD_START_BOUNDS.len() + 1);
        assert_eq!(b[0], (0.1, 1));
        assert_eq!(b[2], (0.5, 2));
        assert_eq!(b.last().copied(), Some((f64::INFINITY, 1)));
        assert_eq!(h.quantile(0.5), Some(0.5));
        assert_eq!(h.quantile(0.25), Some(0.1));
        assert_eq!(h.quantile(0.99), Some(600.0), "+Inf reads as the last bound");
        assert_eq!(Histogram::new(&LATENCY_BOUNDS).quantile(0.5), None);
        // Merging two gateways' figures.
        let ep = Some(EndpointId::parse("e1").unwrap());
        let fig = |code_n: u64, obs: f64| {
            let mut total = Histogram::new(&LATENCY_BOUNDS);
            total.observe(obs);
            EndpointFigures {
                endpoint: ep.clone(),
                codes: vec![(200, code_n), (429, 1)],
                total: total.clone(),
                added: total,
                rejected: vec![("rate_limit".into(), 1)],
                errors: vec![("client".into(), 1)],
                in_flight: 2,
                queued: 1,
                llm: LlmFigures::default(),
                phases: vec![],
            }
        };
        let g1 = GatewayFigures {
            endpoints: vec![fig(3, 0.001)],
            open_connections: 2,
            connections_total: 5,
            table_version: 7,
        };
        let g2 = GatewayFigures {
            endpoints: vec![fig(4, 2.0)],
            open_connections: 1,
            connections_total: 1,
            table_version: 6,
        };
        let m = merge_figures(&[g1, g2]);
        assert_eq!((m.open_connections, m.connections_total, m.table_version), (3, 6, 6));
        let e = &m.endpoints[0];
        assert_eq!(e.codes, vec![(200, 7), (429, 2)]);
        assert_eq!((e.total.count, e.in_flight, e.queued), (2, 4, 2));
        assert_eq!(e.rejected, vec![("rate_limit".to_owned(), 2)]);
        assert_eq!(e.errors, vec![("client".to_owned(), 2)]);
        assert_eq!(e.total.quantile(1.0), Some(2.5));
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<GatewayFigures>(&json).unwrap(), m, "figures travel as JSON");
        assert_eq!(merge_figures(&[]), GatewayFigures::default());
        assert!(LATENCY_BOUNDS.windows(2).all(|w| w[0] < w[1]) && COLD_START_BOUNDS.windows(2).all(|w| w[0] < w[1]));
    }
}
