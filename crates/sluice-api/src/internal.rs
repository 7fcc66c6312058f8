//! The protocol between the control plane and gateways (R8.3, `/v1/internal/…`, admin key):
//! the routing table the control plane publishes (whole, or as the changes since the version a
//! gateway holds) and the traffic reports gateways send back.
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sluice_core::{
    EndpointId, EndpointStatus, LoadBalancing, WorkerId, metrics::GatewayFigures, routing::EndpointTraffic,
};

/// The routing table: every endpoint and its ready workers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteTable {
    pub version: u64,
    pub endpoints: Vec<EndpointRoute>,
    /// Live API keys: (hex SHA-256 digest, scope label: the account, or `*` for an admin-role
    /// key; `sluice_core::keys::scope_label`).
    pub keys: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRoute {
    pub id: EndpointId,
    pub status: EndpointStatus,
    /// The owning account, and whether a key is needed at all.
    pub account: String,
    pub public: bool,
    pub load_balancing: LoadBalancing,
    /// Whole-request deadline (R3.3).
    pub execution_timeout_ms: u64,
    /// How long a request may wait in the gateway queue for a worker slot.
    pub queue_timeout_ms: u64,
    /// Requests that may wait at once; beyond that, refused.
    pub queue_capacity: u32,
    /// Hard cap on a worker's concurrent requests.
    pub concurrency_per_worker: u32,
    /// The endpoint already has `max_workers`: a refusal is a 429 (limit), not a 503.
    pub at_max: bool,
    pub max_workers: u32,
    /// Requests per minute (R3.7); `None`: unlimited.
    pub max_requests_per_minute: Option<u32>,
    /// Ready workers, in a stable order.
    pub workers: Vec<WorkerRoute>,
    /// The `model` names it serves behind its account's OpenAI base URL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub served_models: Vec<String>,
    /// The session header of `session_affinity` (lowercase); `None`: `x-session-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_header: Option<String>,
    /// Whether its requests are recorded (its `trace_retention_hours` is not 0).
    #[serde(default)]
    pub record: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRoute {
    pub id: WorkerId,
    /// `host:port` on loopback (or a pod address in a cluster).
    pub addr: String,
    /// Its latest start was a wake (a request that waited for it waited for a wake, not a cold
    /// start).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub woken: bool,
    /// Requests running plus waiting inside its engine, as last scraped (`metrics_path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_load: Option<u32>,
}

/// The changes from the table of version `from` to the one of version `version`: endpoints
/// added or changed (whole), endpoints removed, and the keys when they changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutesDelta {
    pub from: u64,
    pub version: u64,
    pub upsert: Vec<EndpointRoute>,
    pub remove: Vec<EndpointId>,
    pub keys: Option<Vec<(String, String)>>,
}

/// What a gateway's `GET /v1/internal/routes?after=VERSION` gets: the changes since its version
/// (in order) when the control plane still has them, else the whole table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutesUpdate {
    Full(RouteTable),
    Deltas(Vec<RoutesDelta>),
}

impl RoutesDelta {
    /// The changes from `old` to `new`. Linear in the endpoints: an endpoint is compared only
    /// with the one of the same id.
    pub fn between(old: &RouteTable, new: &RouteTable) -> RoutesDelta {
        let before: HashMap<&EndpointId, &EndpointRoute> = old.endpoints.iter().map(|e| (&e.id, e)).collect();
        let upsert = new.endpoints.iter().filter(|e| before.get(&e.id).is_none_or(|b| *b != *e)).cloned().collect();
        let now: std::collections::HashSet<&EndpointId> = new.endpoints.iter().map(|e| &e.id).collect();
        let remove = old.endpoints.iter().filter(|e| !now.contains(&e.id)).map(|e| e.id.clone()).collect();
        RoutesDelta {
            from: old.version,
            version: new.version,
            upsert,
            remove,
            keys: (old.keys != new.keys).then(|| new.keys.clone()),
        }
    }
}

impl RouteTable {
    /// Applies `delta` in place; false (nothing changed) when it does not start from this
    /// table's version. Endpoints keep their order; new ones are appended.
    pub fn apply(&mut self, delta: &RoutesDelta) -> bool {
        if delta.from != self.version {
            return false;
        }
        let gone: std::collections::HashSet<&EndpointId> = delta.remove.iter().collect();
        self.endpoints.retain(|e| !gone.contains(&e.id));
        let mut index: HashMap<EndpointId, usize> =
            self.endpoints.iter().enumerate().map(|(i, e)| (e.id.clone(), i)).collect();
        for e in &delta.upsert {
            match index.get(&e.id) {
                Some(&i) => self.endpoints[i] = e.clone(),
                None => {
                    index.insert(e.id.clone(), self.endpoints.len());
                    self.endpoints.push(e.clone());
                }
            }
        }
        if let Some(k) = &delta.keys {
            self.keys = k.clone();
        }
        self.version = delta.version;
        true
    }
}

/// A gateway's report, every second (`POST /v1/internal/traffic`): what it sees of each endpoint
/// and its figures for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficReport {
    pub gateway: String,
    pub traffic: Vec<EndpointTraffic>,
    #[serde(default)]
    pub figures: GatewayFigures,
    /// The version of the TLS bundle the gateway serves with (0: none).
    #[serde(default)]
    pub tls_version: u64,
    /// The requests it answered since its previous report, per endpoint (issue 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<EndpointRecords>,
}

/// Requests of one endpoint as a gateway saw them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecords {
    pub endpoint: EndpointId,
    pub requests: Vec<sluice_core::recording::RequestRecord>,
    /// Records it had to drop (its buffer was full: nobody collected them).
    #[serde(default)]
    pub dropped: u64,
}

/// What gateways serve HTTPS with, beside their own certificate files (issue 16): the
/// certificates issued over ACME, and the ACME challenges pending now. Versioned: a gateway
/// long-polls `GET /v1/internal/tls?after=VERSION` and gets the whole bundle when it changed.
/// **It carries private keys**: only on the internal protocol (admin key; TLS when the control
/// plane is not on loopback), and `Debug` shows none of them.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsBundle {
    pub version: u64,
    pub certificates: Vec<TlsCertificate>,
    /// HTTP-01: token → key authorization.
    #[serde(default)]
    pub http01: std::collections::BTreeMap<String, String>,
    /// TLS-ALPN-01: the challenge certificate for each host being validated.
    #[serde(default)]
    pub tls_alpn01: Vec<TlsCertificate>,
}

impl std::fmt::Debug for TlsBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsBundle")
            .field("version", &self.version)
            .field("certificates", &self.certificates)
            .field("http01", &self.http01.len())
            .field("tls_alpn01", &self.tls_alpn01)
            .finish()
    }
}

/// A certificate chain and its key, as PEM. `Debug` shows the names only.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsCertificate {
    /// The names it covers (for the challenge certificates: the host validated).
    pub names: Vec<String>,
    pub cert_chain: String,
    pub key: String,
}

impl std::fmt::Debug for TlsCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCertificate").field("names", &self.names).finish_non_exhaustive()
    }
}

/// The answer to a traffic report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportTaken {}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, workers: &[&str]) -> EndpointRoute {
        EndpointRoute {
            id: EndpointId::parse(id).unwrap(),
            status: EndpointStatus::Running,
            account: "a".into(),
            public: false,
            load_balancing: LoadBalancing::RoundRobin,
            execution_timeout_ms: 1,
            queue_timeout_ms: 1,
            queue_capacity: 1,
            concurrency_per_worker: 1,
            at_max: false,
            max_workers: 1,
            max_requests_per_minute: None,
            workers: workers
                .iter()
                .map(|w| WorkerRoute {
                    id: WorkerId::parse(w).unwrap(),
                    addr: "127.0.0.1:1".into(),
                    woken: false,
                    engine_load: None,
                })
                .collect(),
            served_models: vec![],
            session_header: None,
            record: false,
        }
    }

    #[test]
    fn a_delta_carries_only_what_changed_and_rebuilds_the_table() {
        let old = RouteTable {
            version: 5,
            endpoints: vec![route("a", &["w1"]), route("b", &[]), route("c", &["w2"])],
            keys: vec![("d1".into(), "a".into())],
        };
        let new = RouteTable {
            version: 9,
            endpoints: vec![route("a", &["w1"]), route("c", &["w2", "w3"]), route("d", &[])],
            keys: old.keys.clone(),
        };
        let d = RoutesDelta::between(&old, &new);
        assert_eq!((d.from, d.version), (5, 9));
        let ids = |v: &[EndpointRoute]| v.iter().map(|e| e.id.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(&d.upsert), ["c", "d"]);
        assert_eq!(d.remove, vec![EndpointId::parse("b").unwrap()]);
        assert_eq!(d.keys, None, "keys unchanged are not sent");
        let mut t = old.clone();
        assert!(t.apply(&d));
        assert_eq!(t, new);
        // A delta from another version is refused and changes nothing.
        let mut other = RouteTable { version: 6, ..old.clone() };
        assert!(!other.apply(&d));
        assert_eq!(other.version, 6);
        // Keys travel when they change; an empty delta is just a version step.
        let newer = RouteTable { version: 10, keys: vec![], ..new.clone() };
        let d2 = RoutesDelta::between(&new, &newer);
        assert_eq!((d2.upsert.len(), d2.remove.len(), d2.keys.clone()), (0, 0, Some(vec![])));
        assert!(t.apply(&d2));
        assert_eq!(t, newer);
        // Both shapes travel as JSON.
        for u in [RoutesUpdate::Full(newer.clone()), RoutesUpdate::Deltas(vec![d, d2])] {
            let json = serde_json::to_string(&u).unwrap();
            assert_eq!(serde_json::from_str::<RoutesUpdate>(&json).unwrap(), u);
        }
    }
}
