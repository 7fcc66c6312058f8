//! What the gateway needs to route, as plain data: the traffic figures the gateway reports back,
//! request-target parsing (host form and path form, R1.9), worker choice (R3.1) and table
//! versions. All pure. (The table itself is a wire type: `sluice_api::internal::RouteTable`.)
use serde::{Deserialize, Serialize};

use crate::{EndpointId, LoadBalancing, Millis, WorkerId, ids::is_id_label};

/// What one gateway saw of one endpoint, reported to the control plane.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointTraffic {
    pub endpoint: Option<EndpointId>,
    /// Requests being served by a worker now.
    pub in_flight: u64,
    /// Requests waiting for a worker now.
    pub waiting: u64,
    /// Age of the oldest waiting request.
    pub oldest_wait_ms: u64,
    pub requests_total: u64,
    pub last_request_at: Option<Millis>,
    /// In-flight requests per worker (only workers with any).
    pub per_worker: Vec<(WorkerId, u64)>,
}

impl EndpointTraffic {
    pub fn worker_in_flight(&self, id: &WorkerId) -> u64 {
        self.per_worker.iter().find(|(w, _)| w == id).map_or(0, |(_, n)| *n)
    }
}

/// Sums what several gateways report into one view per endpoint (R8.3: the autoscaler sees the
/// sum of all gateways): counts add up, the oldest wait and the last request are the extremes,
/// per-worker counts add up.
pub fn merge_traffic<'a>(reports: impl IntoIterator<Item = &'a [EndpointTraffic]>) -> Vec<EndpointTraffic> {
    let mut out: Vec<EndpointTraffic> = Vec::new();
    for report in reports {
        for t in report {
            let Some(m) = out.iter_mut().find(|m| m.endpoint == t.endpoint) else {
                out.push(t.clone());
                continue;
            };
            m.in_flight += t.in_flight;
            m.waiting += t.waiting;
            m.oldest_wait_ms = m.oldest_wait_ms.max(t.oldest_wait_ms);
            m.requests_total += t.requests_total;
            m.last_request_at = m.last_request_at.max(t.last_request_at);
            for (w, n) in &t.per_worker {
                match m.per_worker.iter_mut().find(|(x, _)| x == w) {
                    Some((_, k)) => *k += n,
                    None => m.per_worker.push((w.clone(), *n)),
                }
            }
        }
    }
    out
}

/// Finds the endpoint id in a `Host` (or `:authority`) of the form
/// `{endpoint_id}.{data_center}.{domain}[:port]`. Case-insensitive; a trailing dot is allowed.
pub fn endpoint_from_host<'a>(host: &'a str, domain: &str) -> Option<(&'a str, &'a str)> {
    let host = strip_port(host).trim_end_matches('.');
    if host.len() <= domain.len() + 1 {
        return None;
    }
    let (prefix, suffix) = host.split_at(host.len() - domain.len());
    if !suffix.eq_ignore_ascii_case(domain) {
        return None;
    }
    let prefix = prefix.strip_suffix('.')?;
    let (id, dc) = prefix.split_once('.')?;
    if dc.contains('.') || dc.is_empty() || !is_id_label(id) {
        return None;
    }
    Some((id, dc))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host; // IPv6 literal: never an endpoint host.
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Path form for local use: `/e/{endpoint_id}/rest…` → (`endpoint_id`, `/rest…`). The prefix
/// is stripped; `/e/{id}` alone maps to `/`.
pub fn endpoint_from_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/e/")?;
    let (id, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    is_id_label(id).then_some((id, tail))
}

/// Round-robin over `len` ready workers with a shared, ever-increasing counter.
pub fn pick_round_robin(len: usize, counter: usize) -> Option<usize> {
    (len > 0).then(|| counter % len)
}

/// The worker with the fewest outstanding requests; ties are broken by rotating from `start`,
/// so equal workers share load instead of the first one taking it all.
pub fn pick_least_outstanding(len: usize, outstanding: impl Fn(usize) -> u64, start: usize) -> Option<usize> {
    (0..len).map(|k| (start + k) % len).min_by_key(|&i| outstanding(i))
}

/// Picks a worker index among `len` for the endpoint's policy; `outstanding(i)` is worker `i`'s
/// requests in flight. Workers at `cap` are full and skipped; `exclude` (a worker that already
/// failed this request) is skipped too. `None`: no worker can take the request now.
pub fn pick(
    policy: LoadBalancing,
    len: usize,
    outstanding: impl Fn(usize) -> u64,
    counter: usize,
    exclude: Option<usize>,
    cap: u64,
) -> Option<usize> {
    if len == 0 {
        return None;
    }
    match policy {
        LoadBalancing::RoundRobin => {
            let start = counter % len;
            (0..len).map(|k| (start + k) % len).find(|&i| Some(i) != exclude && outstanding(i) < cap)
        }
        // Without what the affinity choices look at (see `affinity`): the least loaded.
        LoadBalancing::LeastOutstandingRequests
        | LoadBalancing::LeastEngineLoad
        | LoadBalancing::SessionAffinity
        | LoadBalancing::PrefixAware => pick_by_load(len, &outstanding, &outstanding, counter, exclude, cap),
    }
}

/// `least_engine_load`: the worker with the least `load(i)` (what its engine last reported
/// running and waiting, plus what was sent to it since) among those under `cap` by their
/// requests in flight here; ties rotate from `counter`.
pub fn pick_by_load(
    len: usize,
    load: impl Fn(usize) -> u64,
    outstanding: impl Fn(usize) -> u64,
    counter: usize,
    exclude: Option<usize>,
    cap: u64,
) -> Option<usize> {
    if len == 0 {
        return None;
    }
    let start = counter % len;
    (0..len).map(|k| (start + k) % len).filter(|&i| Some(i) != exclude && outstanding(i) < cap).min_by_key(|&i| load(i))
}

/// The version of the next routing table: past the last one, and at least the wall clock in ms,
/// so that versions keep growing across a restart of the control plane or a change of leader
/// (a gateway following with `after=N` never mistakes a new table for the one it has).
pub fn next_version(last: u64, now_ms: u64) -> u64 {
    last.saturating_add(1).max(now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_form() {
        let d = "localhost";
        for (host, want) in [
            ("abc123.local.localhost", Some(("abc123", "local"))),
            ("abc123.local.localhost:8080", Some(("abc123", "local"))),
            ("abc123.local.localhost.", Some(("abc123", "local"))),
            ("ABC123.local.LOCALHOST", None), // ids are lowercase; hosts are sent lowercase by clients
            ("abc123.localhost", None),
            ("x.abc123.local.localhost", None),
            ("localhost", None),
            (".local.localhost", None),
            ("abc.local.notlocalhost", None),
            ("abc..localhost", None),
            ("127.0.0.1:8080", None),
            ("[::1]:8080", None),
            ("", None),
        ] {
            assert_eq!(endpoint_from_host(host, d), want, "{host}");
        }
        assert_eq!(endpoint_from_host("ep1.eu-1.sluice.example.com", "sluice.example.com"), Some(("ep1", "eu-1")));
        assert_eq!(endpoint_from_host("ep1.eu-1.SLUICE.example.com:443", "sluice.example.com"), Some(("ep1", "eu-1")));
    }

    #[test]
    fn path_form() {
        for (path, want) in [
            ("/e/abc/v1/chat", Some(("abc", "/v1/chat"))),
            ("/e/abc", Some(("abc", "/"))),
            ("/e/abc/", Some(("abc", "/"))),
            ("/e/", None),
            ("/e//x", None),
            ("/e/ABC/x", None),
            ("/x/abc", None),
            ("/", None),
        ] {
            assert_eq!(endpoint_from_path(path), want, "{path}");
        }
    }

    #[test]
    fn round_robin_spreads_evenly() {
        let mut hits = [0; 3];
        for c in 0..300 {
            hits[pick(LoadBalancing::RoundRobin, 3, |_| 0, c, None, 1).unwrap()] += 1;
        }
        assert_eq!(hits, [100, 100, 100]);
        assert_eq!(pick(LoadBalancing::RoundRobin, 0, |_| 0, 5, None, 1), None);
        // Full workers are skipped; all full: none.
        assert_eq!(pick(LoadBalancing::RoundRobin, 3, |i| [2, 2, 1][i], 0, None, 2), Some(2));
        assert_eq!(pick(LoadBalancing::RoundRobin, 2, |_| 2, 0, None, 2), None);
    }

    #[test]
    fn least_engine_load() {
        // The engine's own count decides; the local cap still holds.
        let load = [5u64, 1, 1];
        assert_eq!(pick_by_load(3, |i| load[i], |_| 0, 0, None, 10), Some(1));
        assert_eq!(pick_by_load(3, |i| load[i], |_| 0, 2, None, 10), Some(2), "ties rotate");
        assert_eq!(pick_by_load(3, |i| load[i], |i| [0, 10, 0][i], 0, None, 10), Some(2), "worker 1 is at its cap");
        assert_eq!(pick_by_load(3, |i| load[i], |_| 0, 0, Some(1), 10), Some(2));
        assert_eq!(pick_by_load(0, |_| 0, |_| 0, 0, None, 10), None);
    }

    #[test]
    fn least_outstanding() {
        let p = LoadBalancing::LeastOutstandingRequests;
        let lor = |o: &[u64], c, x| pick(p, o.len(), |i| o[i], c, x, u64::MAX);
        assert_eq!(lor(&[3, 1, 2], 0, None), Some(1));
        assert_eq!(lor(&[3, 1, 2], 7, None), Some(1));
        // Ties rotate with the counter.
        assert_eq!(lor(&[0, 0, 0], 0, None), Some(0));
        assert_eq!(lor(&[0, 0, 0], 1, None), Some(1));
        assert_eq!(lor(&[0, 0, 0], 5, None), Some(2));
        // Exclusion picks the next best.
        assert_eq!(lor(&[3, 1, 2], 0, Some(1)), Some(2));
        assert_eq!(lor(&[5], 0, Some(0)), None);
        assert_eq!(pick_least_outstanding(3, |i| [2, 2, 1][i], 0), Some(2));
        let rr = |len, c, x| pick(LoadBalancing::RoundRobin, len, |_| 0, c, x, 1);
        assert_eq!(pick(p, 3, |i| [5, 4, 9][i], 0, None, 5), Some(1));
        assert_eq!(pick(p, 2, |i| [5, 5][i], 0, None, 5), None);
        assert_eq!(rr(2, 0, Some(0)), Some(1));
        assert_eq!(rr(2, 0, Some(1)), Some(0));
        assert_eq!(rr(1, 0, Some(0)), None);
        assert_eq!(rr(3, 4, None), Some(1));
    }
    #[test]
    fn traffic_from_several_gateways_adds_up() {
        let ep = |s: &str| Some(EndpointId::parse(s).unwrap());
        let w = |s: &str| WorkerId::parse(s).unwrap();
        let a = vec![
            EndpointTraffic {
                endpoint: ep("e1"),
                in_flight: 2,
                waiting: 1,
                oldest_wait_ms: 300,
                requests_total: 10,
                last_request_at: Some(Millis(5)),
                per_worker: vec![(w("w1"), 2)],
            },
            EndpointTraffic { endpoint: ep("e2"), requests_total: 1, ..Default::default() },
        ];
        let b = vec![EndpointTraffic {
            endpoint: ep("e1"),
            in_flight: 3,
            waiting: 0,
            oldest_wait_ms: 900,
            requests_total: 7,
            last_request_at: Some(Millis(9)),
            per_worker: vec![(w("w1"), 1), (w("w2"), 2)],
        }];
        let m = merge_traffic([a.as_slice(), b.as_slice()]);
        assert_eq!(m.len(), 2);
        let e1 = &m[0];
        assert_eq!((e1.in_flight, e1.waiting, e1.oldest_wait_ms, e1.requests_total), (5, 1, 900, 17));
        assert_eq!(e1.last_request_at, Some(Millis(9)));
        assert_eq!((e1.worker_in_flight(&w("w1")), e1.worker_in_flight(&w("w2"))), (3, 2));
        assert_eq!(m[1].requests_total, 1);
        assert!(merge_traffic(std::iter::empty::<&[EndpointTraffic]>()).is_empty());
    }

    #[test]
    fn versions_grow_across_restarts() {
        assert_eq!(next_version(0, 1_000), 1_000, "a fresh control plane starts at the clock");
        assert_eq!(next_version(1_000, 1_000), 1_001, "two tables in one ms");
        assert_eq!(next_version(5_000, 2_000), 5_001, "a clock behind never goes back");
        assert_eq!(next_version(7, 0), 8);
        assert_eq!(next_version(u64::MAX, 5), u64::MAX);
        // A new leader at a later time is past everything the old one published.
        let old = (0..50).fold(0, |v, i| next_version(v, 10_000 + i));
        assert!(next_version(0, 20_000) > old);
    }
}
