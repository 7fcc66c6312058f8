//! After a pass: the routing table for the gateway (ready workers, with the live keys for
//! private endpoints; handed over whole and as the changes since the last one) and the worker
//! counts for the API and the status page.
use std::{collections::HashMap, sync::Arc};

use sluice_api::{
    WorkerCounts,
    internal::{EndpointRoute, RouteTable, RoutesDelta, WorkerRoute},
};
use sluice_core::{EndpointId, Millis, WorkerState, routing::EndpointTraffic};
use sluice_store::EndpointRecord;

use super::{Live, Reconciler};

impl Reconciler {
    pub(super) fn publish(
        &mut self,
        endpoints: &[EndpointRecord],
        desired: &HashMap<EndpointId, u32>,
        keys: Vec<(String, String)>,
        traffic: &HashMap<EndpointId, EndpointTraffic>,
        engine_load: &HashMap<sluice_core::WorkerId, u32>,
    ) {
        let mut routes = Vec::with_capacity(endpoints.len());
        let mut counts: HashMap<EndpointId, WorkerCounts> = HashMap::new();
        let mut groups: HashMap<&EndpointId, Vec<&Live>> = HashMap::new();
        for w in self.workers.values() {
            groups.entry(&w.rec.endpoint_id).or_default().push(w);
        }
        let t = crate::now();
        for e in endpoints {
            let mine = groups.get(&e.id).map_or(&[][..], Vec::as_slice);
            let mut ready: Vec<&Live> = mine.iter().copied().filter(|w| w.rec.state == WorkerState::Ready).collect();
            ready.sort_by(|a, b| a.rec.created_at.cmp(&b.rec.created_at).then(a.rec.id.cmp(&b.rec.id)));
            routes.push(EndpointRoute {
                id: e.id.clone(),
                status: e.status,
                account: e.account.clone(),
                public: e.spec.public,
                max_requests_per_minute: e.spec.limits.max_requests_per_minute,
                max_workers: e.spec.workers.max_workers,
                load_balancing: e.spec.limits.load_balancing,
                served_models: e.spec.served_models.clone(),
                session_header: e.spec.session_header.clone(),
                record: e.spec.insight.trace_retention_hours > 0,
                execution_timeout_ms: u64::from(e.spec.timeouts.execution_timeout_secs) * 1000,
                queue_timeout_ms: u64::from(e.spec.limits.queue_timeout_secs) * 1000,
                queue_capacity: e.spec.limits.queue_capacity,
                concurrency_per_worker: e.spec.limits.concurrency_per_worker,
                at_max: mine.iter().filter(|w| w.rec.state.is_live()).count() as u32 >= e.spec.workers.max_workers,
                workers: ready
                    .iter()
                    .filter_map(|w| {
                        Some(WorkerRoute {
                            id: w.rec.id.clone(),
                            addr: w.addr?.to_string(),
                            woken: sluice_core::worker::woken(&w.rec.phases),
                            engine_load: engine_load.get(&w.rec.id).copied(),
                        })
                    })
                    .collect(),
            });
            let tr = traffic.get(&e.id);
            let mut c = WorkerCounts {
                desired: desired.get(&e.id).copied().unwrap_or(0),
                running: tr.map_or(0, |t| t.in_flight),
                queued: tr.map_or(0, |t| t.waiting),
                ..Default::default()
            };
            for w in mine {
                match w.rec.state {
                    WorkerState::Pending => c.pending += 1,
                    WorkerState::Starting => c.starting += 1,
                    WorkerState::Ready => c.ready += 1,
                    WorkerState::Draining => c.draining += 1,
                    WorkerState::Sleeping => c.sleeping += 1,
                    _ => {}
                }
                if w.rec.generation != e.generation && w.rec.state.has_runtime() {
                    c.outdated += 1;
                } else if w.rec.generation == e.generation && w.rec.state == WorkerState::Ready {
                    c.updated += 1;
                }
            }
            self.sig.series.record(&e.id, t, c.running, c.queued, c.ready);
            counts.insert(e.id.clone(), c);
        }
        self.sig.counts.store(Arc::new(counts));
        if routes != self.last_table.endpoints || keys != self.last_table.keys {
            let version = sluice_core::routing::next_version(self.last_table.version, t.0);
            self.install(RouteTable { version, endpoints: routes, keys });
        }
    }

    /// Nothing routed any more (shutdown).
    pub(super) fn publish_empty(&mut self, t: Millis) {
        let version = sluice_core::routing::next_version(self.last_table.version, t.0);
        self.install(RouteTable { version, endpoints: Vec::new(), keys: Vec::new() });
    }

    /// Hands a new table to the data plane (with the changes since the last one), the job
    /// dispatcher, and `/v2`'s key check.
    fn install(&mut self, table: RouteTable) {
        let delta = RoutesDelta::between(&self.last_table, &table);
        if delta.keys.is_some() {
            let keys = table
                .keys
                .iter()
                .filter_map(|(hex, label)| Some((sluice_core::keys::parse_digest(hex)?, label.clone())))
                .collect();
            self.sig.keys.store(Arc::new(keys));
        }
        let table = Arc::new(table);
        self.plane.publish(table.clone(), &delta);
        self.sig.table.store(table.clone());
        self.last_table = table;
    }
}
