//! The in-memory routing table the hot path reads. Control publishes a plain
//! [`RouteTable`]; the gateway turns it into entries that carry their own counters, reusing the
//! counters of endpoints and workers it already knew, and swaps it in atomically.
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
};

use arc_swap::ArcSwap;
use http::uri::Authority;
use sluice_core::{
    EndpointId, Millis, WorkerId,
    routing::{EndpointRoute, EndpointTraffic, RouteTable},
};

/// Per-endpoint counters, kept across table swaps.
#[derive(Debug, Default)]
pub struct EndpointStats {
    pub in_flight: AtomicU64,
    pub waiting: AtomicU64,
    pub requests_total: AtomicU64,
    /// Unix ms of the last request (0 = never).
    pub last_request_ms: AtomicU64,
    /// Round-robin cursor.
    pub cursor: AtomicUsize,
    /// Signalled when a worker slot frees while requests wait; wakes the longest waiter
    /// (tokio's `Notify` is FIFO).
    pub slot_freed: tokio::sync::Notify,
    /// Waiting requests: sequence number → Unix ms they started waiting (oldest first).
    pub waiters: Mutex<std::collections::BTreeMap<u64, u64>>,
    pub waiter_seq: AtomicU64,
    /// The requests-per-minute limiter and the quota it was built for; replaced when the
    /// quota changes (a direct limiter per endpoint: bounded, nothing to prune).
    pub rate: arc_swap::ArcSwapOption<(u32, RpmLimiter)>,
    /// Responses by code, latency histograms, 429s by limit (for `/metrics`).
    pub metrics: crate::metrics::EndpointMetrics,
}

pub type RpmLimiter =
    governor::RateLimiter<governor::state::NotKeyed, governor::state::InMemoryState, governor::clock::MonotonicClock>;

/// A GCRA limiter for `rpm` requests per minute, smoothed: the burst allowed at once is a tenth
/// of the minute's quota (at least one), so a minute's worth cannot arrive in one instant.
pub fn rpm_limiter(rpm: u32) -> RpmLimiter {
    use std::num::NonZeroU32;
    let per_min = NonZeroU32::new(rpm.max(1)).expect("non-zero");
    let burst = NonZeroU32::new((rpm / 10).max(1)).expect("non-zero");
    governor::RateLimiter::direct_with_clock(
        governor::Quota::per_minute(per_min).allow_burst(burst),
        governor::clock::MonotonicClock,
    )
}

/// One ready worker; `outstanding` survives swaps and outlives the worker's removal from the
/// table while its requests finish (drain).
#[derive(Debug)]
pub struct WorkerEntry {
    pub id: WorkerId,
    pub authority: Authority,
    pub outstanding: AtomicU64,
}

#[derive(Debug)]
pub struct EndpointEntry {
    pub route: EndpointRoute,
    pub workers: Vec<Arc<WorkerEntry>>,
    pub stats: Arc<EndpointStats>,
}

#[derive(Default)]
pub struct Table {
    pub version: u64,
    pub endpoints: HashMap<String, Arc<EndpointEntry>>,
    /// Live key digest (SHA-256 bytes) → account, for private endpoints.
    pub keys: HashMap<[u8; 32], String>,
}

/// The table plus the long-lived counters it is built from.
#[derive(Default)]
pub struct Routes {
    current: ArcSwap<Table>,
    /// Every endpoint's stats, and every worker that is routed or still has requests in flight.
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    endpoints: HashMap<EndpointId, Arc<EndpointStats>>,
    workers: HashMap<WorkerId, (EndpointId, Arc<WorkerEntry>)>,
}

impl Routes {
    pub fn load(&self) -> arc_swap::Guard<Arc<Table>> {
        self.current.load()
    }

    /// Installs a new table. Workers whose address changed get fresh counters.
    pub fn publish(&self, table: RouteTable) {
        let mut reg = self.registry.lock().unwrap();
        let mut endpoints = HashMap::with_capacity(table.endpoints.len());
        let mut routed: std::collections::HashSet<WorkerId> = std::collections::HashSet::new();
        for route in table.endpoints {
            let stats = reg.endpoints.entry(route.id.clone()).or_default().clone();
            let have = stats.rate.load().as_ref().map(|r| r.0);
            if have != route.max_requests_per_minute {
                stats.rate.store(route.max_requests_per_minute.map(|n| Arc::new((n, rpm_limiter(n)))));
            }
            let mut workers = Vec::with_capacity(route.workers.len());
            for w in &route.workers {
                let Ok(authority) = w.addr.parse::<Authority>() else { continue };
                let entry = match reg.workers.get(&w.id) {
                    Some((_, e)) if e.authority == authority => e.clone(),
                    _ => {
                        let e = Arc::new(WorkerEntry { id: w.id.clone(), authority, outstanding: AtomicU64::new(0) });
                        reg.workers.insert(w.id.clone(), (route.id.clone(), e.clone()));
                        e
                    }
                };
                routed.insert(w.id.clone());
                workers.push(entry);
            }
            endpoints.insert(route.id.to_string(), Arc::new(EndpointEntry { route, workers, stats }));
        }
        // Forget workers that are neither routed nor busy, and endpoints that are gone and idle.
        reg.workers.retain(|id, (_, e)| routed.contains(id) || e.outstanding.load(Relaxed) > 0);
        reg.endpoints.retain(|id, s| {
            endpoints.contains_key(id.as_str()) || s.in_flight.load(Relaxed) > 0 || s.waiting.load(Relaxed) > 0
        });
        let keys = table
            .keys
            .into_iter()
            .filter_map(|(hex, account)| Some((sluice_core::keys::parse_digest(&hex)?, account)))
            .collect();
        self.current.store(Arc::new(Table { version: table.version, endpoints, keys }));
    }

    /// The `/metrics` figures of every endpoint this gateway knows.
    pub fn figures(&self) -> (u64, Vec<sluice_core::metrics::EndpointFigures>) {
        let version = self.current.load().version;
        let reg = self.registry.lock().unwrap();
        let figures = reg
            .endpoints
            .iter()
            .map(|(id, s)| sluice_core::metrics::EndpointFigures {
                endpoint: Some(id.clone()),
                codes: s.metrics.codes(),
                total: s.metrics.total.snapshot(),
                added: s.metrics.added.snapshot(),
                rejected: vec![
                    ("rate_limit".into(), s.metrics.rate_limited.load(Relaxed)),
                    ("concurrency_limit".into(), s.metrics.concurrency_limited.load(Relaxed)),
                ],
                errors: crate::error::Fault::ALL
                    .iter()
                    .map(|f| (f.label().to_owned(), s.metrics.errors[*f as usize].load(Relaxed)))
                    .collect(),
                in_flight: s.in_flight.load(Relaxed),
                queued: s.waiting.load(Relaxed),
            })
            .collect();
        (version, figures)
    }

    /// What this gateway sees of every endpoint now.
    pub fn traffic(&self) -> Vec<EndpointTraffic> {
        let now_ms = crate::proxy::now_ms();
        let reg = self.registry.lock().unwrap();
        // Busy workers by endpoint, in one pass over the workers (not one per endpoint).
        let mut busy: HashMap<&EndpointId, Vec<(WorkerId, u64)>> = HashMap::new();
        for (ep, e) in reg.workers.values() {
            let n = e.outstanding.load(Relaxed);
            if n > 0 {
                busy.entry(ep).or_default().push((e.id.clone(), n));
            }
        }
        reg.endpoints
            .iter()
            .map(|(id, s)| {
                let last = s.last_request_ms.load(Relaxed);
                EndpointTraffic {
                    endpoint: Some(id.clone()),
                    in_flight: s.in_flight.load(Relaxed),
                    waiting: s.waiting.load(Relaxed),
                    oldest_wait_ms: s
                        .waiters
                        .lock()
                        .unwrap()
                        .values()
                        .next()
                        .map_or(0, |since| now_ms.saturating_sub(*since)),
                    requests_total: s.requests_total.load(Relaxed),
                    last_request_at: (last > 0).then_some(Millis(last)),
                    per_worker: busy.remove(id).unwrap_or_default(),
                }
            })
            .collect()
    }
}
