//! The in-memory routing table the hot path reads. Control publishes a plain
//! [`RouteTable`] (or the changes since the last one, [`RoutesDelta`]); the gateway turns it into
//! entries that carry their own counters, reusing the counters of endpoints and workers it
//! already knew, and swaps it in atomically. A delta rebuilds only the endpoints it names.
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
};

use arc_swap::ArcSwap;
use http::uri::Authority;
use sluice_api::internal::{EndpointRoute, RouteTable, RoutesDelta};
use sluice_core::{EndpointId, Millis, WorkerId, routing::EndpointTraffic};

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
    /// Its answered requests since the control plane last collected them (issue 20).
    pub records: crate::metrics::Records,
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
    /// The prompt blocks this gateway sent it lately (`prefix_aware`).
    pub prefixes: Mutex<sluice_core::affinity::Recent>,
}

#[derive(Debug)]
pub struct EndpointEntry {
    pub route: EndpointRoute,
    pub workers: Vec<Arc<WorkerEntry>>,
    pub stats: Arc<EndpointStats>,
    /// The workers' places on the session ring (`session_affinity` only).
    pub ring: Vec<(u64, usize)>,
    /// Each worker's engine load (running plus waiting) as last scraped, in `workers` order.
    pub engine_load: Vec<u64>,
}

#[derive(Default)]
pub struct Table {
    pub version: u64,
    pub endpoints: HashMap<String, Arc<EndpointEntry>>,
    /// Live key digest (SHA-256 bytes) → scope label (`sluice_core::keys::scope_label`), for
    /// private endpoints; shared between tables while the keys do not change.
    pub keys: Arc<HashMap<[u8; 32], String>>,
    /// A served `model` name → the endpoints serving it (ids; one per account), for the OpenAI
    /// front door.
    pub served: HashMap<String, Vec<String>>,
}

/// The `served` index of `endpoints`.
fn served_index(endpoints: &HashMap<String, Arc<EndpointEntry>>) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for (id, e) in endpoints {
        for m in &e.route.served_models {
            out.entry(m.clone()).or_default().push(id.clone());
        }
    }
    for ids in out.values_mut() {
        ids.sort_unstable();
    }
    out
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

impl Registry {
    /// The entry of a route: its endpoint's counters (kept, the rate limiter replaced when the
    /// quota changed) and its workers' (kept unless a worker's address changed).
    fn entry(&mut self, route: EndpointRoute) -> Arc<EndpointEntry> {
        let stats = self.endpoints.entry(route.id.clone()).or_default().clone();
        let have = stats.rate.load().as_ref().map(|r| r.0);
        if have != route.max_requests_per_minute {
            stats.rate.store(route.max_requests_per_minute.map(|n| Arc::new((n, rpm_limiter(n)))));
        }
        let mut workers = Vec::with_capacity(route.workers.len());
        let mut engine_load = Vec::with_capacity(route.workers.len());
        for w in &route.workers {
            let Ok(authority) = w.addr.parse::<Authority>() else { continue };
            engine_load.push(w.engine_load.map_or(0, u64::from));
            let entry = match self.workers.get(&w.id) {
                Some((_, e)) if e.authority == authority => e.clone(),
                _ => {
                    let e = Arc::new(WorkerEntry {
                        id: w.id.clone(),
                        authority,
                        outstanding: AtomicU64::new(0),
                        prefixes: Mutex::default(),
                    });
                    self.workers.insert(w.id.clone(), (route.id.clone(), e.clone()));
                    e
                }
            };
            workers.push(entry);
        }
        let ring = if route.load_balancing == sluice_core::LoadBalancing::SessionAffinity {
            let ids: Vec<&str> = workers.iter().map(|w| w.id.as_str()).collect();
            sluice_core::affinity::ring(&ids)
        } else {
            Vec::new()
        };
        Arc::new(EndpointEntry { route, workers, stats, ring, engine_load })
    }
}

impl EndpointStats {
    /// Requests are in flight or waiting: the counters must outlive the endpoint's removal.
    fn busy(&self) -> bool {
        self.in_flight.load(Relaxed) > 0 || self.waiting.load(Relaxed) > 0
    }
}

/// The live keys as the hot path looks them up.
fn keys_of(keys: Vec<(String, String)>) -> HashMap<[u8; 32], String> {
    keys.into_iter().filter_map(|(hex, label)| Some((sluice_core::keys::parse_digest(&hex)?, label))).collect()
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
            routed.extend(route.workers.iter().map(|w| w.id.clone()));
            endpoints.insert(route.id.to_string(), reg.entry(route));
        }
        // Forget workers that are neither routed nor busy, and endpoints that are gone and idle.
        reg.workers.retain(|id, (_, e)| routed.contains(id) || e.outstanding.load(Relaxed) > 0);
        reg.endpoints.retain(|id, s| endpoints.contains_key(id.as_str()) || s.busy());
        let served = served_index(&endpoints);
        self.current.store(Arc::new(Table {
            version: table.version,
            endpoints,
            keys: Arc::new(keys_of(table.keys)),
            served,
        }));
    }

    /// Applies the changes from the installed table's version; false (nothing changed) when the
    /// installed table is another version (the caller then needs the whole table). Costs what the
    /// delta names, plus one copy of the map of entries (shared pointers).
    pub fn apply(&self, delta: RoutesDelta) -> bool {
        let mut reg = self.registry.lock().unwrap();
        let cur = self.current.load_full();
        if cur.version != delta.from {
            return false;
        }
        let mut endpoints = cur.endpoints.clone();
        // The workers the changed endpoints had: each is forgotten unless still routed or busy.
        let mut before: Vec<WorkerId> = Vec::new();
        for id in delta.remove.iter().map(|e| e.to_string()).chain(delta.upsert.iter().map(|r| r.id.to_string())) {
            if let Some(old) = endpoints.get(&id) {
                before.extend(old.workers.iter().map(|w| w.id.clone()));
            }
        }
        for id in &delta.remove {
            endpoints.remove(id.as_str());
        }
        let mut routed: std::collections::HashSet<WorkerId> = std::collections::HashSet::new();
        for route in delta.upsert {
            routed.extend(route.workers.iter().map(|w| w.id.clone()));
            endpoints.insert(route.id.to_string(), reg.entry(route));
        }
        for id in before.iter().filter(|id| !routed.contains(*id)) {
            if reg.workers.get(id).is_some_and(|(_, e)| e.outstanding.load(Relaxed) == 0) {
                reg.workers.remove(id);
            }
        }
        for id in &delta.remove {
            if reg.endpoints.get(id).is_some_and(|s| !s.busy()) {
                reg.endpoints.remove(id);
            }
        }
        let keys = match delta.keys {
            Some(k) => Arc::new(keys_of(k)),
            None => cur.keys.clone(),
        };
        let served = served_index(&endpoints);
        self.current.store(Arc::new(Table { version: delta.version, endpoints, keys, served }));
        true
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
                llm: s.metrics.llm(),
                phases: s.metrics.phase_figures(),
            })
            .collect();
        (version, figures)
    }

    /// What this gateway sees of every endpoint now.
    /// The requests recorded since the last call, per endpoint (issue 20).
    pub fn take_records(&self) -> Vec<sluice_api::internal::EndpointRecords> {
        let reg = self.registry.lock().unwrap();
        reg.endpoints
            .iter()
            .filter_map(|(id, s)| {
                let (requests, dropped) = s.records.take();
                (!requests.is_empty() || dropped > 0).then(|| sluice_api::internal::EndpointRecords {
                    endpoint: id.clone(),
                    requests,
                    dropped,
                })
            })
            .collect()
    }

    pub fn traffic(&self) -> Vec<EndpointTraffic> {
        let now_ms = crate::now_ms();
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
