//! HTTPS certificates (R1.9, issue 16): which certificates the platform serves, and the ones it
//! issues itself over ACME.
//!
//! - Certificates from files are loaded by whoever serves TLS (`sluice_tls::files`); this
//!   module lists them and leaves alone the hosts they cover.
//! - Over ACME, the leader keeps one certificate per endpoint host (or one wildcard per data
//!   center) and one for the API host, in the store ([`manager`]): issued when an endpoint is
//!   created, renewed at two thirds of its lifetime, retried with back-off after a failure.
//! - What gateways need (the issued certificates and the challenges to answer) goes out as a
//!   [`TlsBundle`] through [`crate::DataPlane::publish_tls`]; every control process also reads
//!   the store into the certificates its own API serves ([`Certs::sync`]).
//!
//! The pure decisions (what is wanted, when it is due) are `sluice_core::tls`.
mod manager;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use arc_swap::ArcSwap;
use sluice_api::{
    CertificateView, EndpointCertificate,
    internal::{TlsBundle, TlsCertificate},
};
use sluice_core::{
    Millis, rfc3339,
    tls::{CertState, HostPolicy, Managed, name_covers, renew_at, retry_after_ms},
};
use sluice_store::{CertificateRecord, Store};
use sluice_tls::{CertStore, Pem, Served, Source, acme::Challenge, certs::certified};
use tokio::sync::Notify;

use crate::DataPlane;

/// How this platform serves HTTPS.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// The gateway and the API serve HTTPS; endpoint URLs are `https://`.
    pub enabled: bool,
    /// The certificates this process serves (its files, and the issued ones it keeps in sync).
    pub serving: Option<Arc<CertStore>>,
    /// Issue certificates over ACME (none: files only).
    pub acme: Option<sluice_tls::acme::AcmeSettings>,
    /// The API's host name (it gets a certificate at startup).
    pub api_host: Option<String>,
    pub policy: HostPolicy,
    /// The challenge for names that are not wildcards.
    pub challenge: Challenge,
    /// The command that sets and clears DNS-01 records: `HOOK present|cleanup FQDN VALUE`.
    pub dns_hook: Option<String>,
    /// What every outbound TLS connection trusts (webhooks, the ACME directory).
    pub client: Arc<rustls::ClientConfig>,
}

impl TlsConfig {
    /// Plain HTTP only; outbound TLS trusts the system's roots.
    pub fn off() -> TlsConfig {
        let roots = sluice_tls::client::roots(None).unwrap_or_else(|_| rustls::RootCertStore::empty());
        TlsConfig {
            enabled: false,
            serving: None,
            acme: None,
            api_host: None,
            policy: HostPolicy::PerHost,
            challenge: Challenge::Http01,
            dns_hook: None,
            client: sluice_tls::client::config(roots),
        }
    }
}

/// Pending ACME challenges, as gateways must answer them.
#[derive(Default)]
struct Pending {
    http01: BTreeMap<String, String>,
    tls_alpn01: BTreeMap<String, Pem>,
}

pub struct Certs {
    store: Store,
    cfg: TlsConfig,
    domain: String,
    data_centers: Vec<String>,
    plane: Arc<dyn DataPlane>,
    /// The managed certificates as last read from the store.
    records: ArcSwap<Vec<CertificateRecord>>,
    pending: Mutex<Pending>,
    /// The version of the last bundle published.
    version: AtomicU64,
    wake: Notify,
}

/// A record's state as the pure decisions see it.
fn managed(r: &CertificateRecord) -> Managed {
    Managed {
        state: CertState::parse(&r.state).unwrap_or(CertState::Pending),
        validity: r.not_before.zip(r.not_after),
        failures: r.failures,
        last_attempt: r.last_attempt,
    }
}

impl Certs {
    pub fn new(
        store: Store,
        cfg: TlsConfig,
        domain: String,
        data_centers: Vec<String>,
        plane: Arc<dyn DataPlane>,
    ) -> Arc<Certs> {
        Arc::new(Certs {
            store,
            cfg,
            domain,
            data_centers,
            plane,
            records: ArcSwap::default(),
            pending: Mutex::default(),
            version: AtomicU64::new(0),
            wake: Notify::new(),
        })
    }

    pub fn config(&self) -> &TlsConfig {
        &self.cfg
    }

    /// Something changed that may want a certificate (an endpoint was created).
    pub fn wake(&self) {
        if self.cfg.acme.is_some() {
            self.wake.notify_one();
        }
    }

    /// Reads the managed certificates from the store into what this process serves (every
    /// control process; a standby's API serves them too).
    pub async fn sync(&self) -> Result<(), sluice_store::Error> {
        if !self.cfg.enabled {
            return Ok(());
        }
        let recs = self.store.list_certificates().await?;
        self.records.store(Arc::new(recs));
        self.serve_records(crate::now());
        Ok(())
    }

    /// The issued certificates that can be served at `now` (an expired one is left out).
    fn issued(&self, now: Millis) -> Vec<TlsCertificate> {
        self.records
            .load()
            .iter()
            .filter(|r| r.not_after.is_some_and(|na| na > now))
            .filter_map(|r| {
                Some(TlsCertificate {
                    names: r.names.clone(),
                    cert_chain: r.cert_chain.clone()?,
                    key: r.key_pem.clone()?,
                })
            })
            .collect()
    }

    fn serve_records(&self, now: Millis) {
        let Some(serving) = &self.cfg.serving else { return };
        let served: Vec<Served> = self
            .issued(now)
            .into_iter()
            .filter_map(|c| {
                let pem = Pem { cert_chain: c.cert_chain, key: c.key };
                certified(&pem, &format!("the issued certificate for {}", c.names.join(", ")), now)
                    .map_err(|e| tracing::warn!(error = %e, "an issued certificate cannot be served"))
                    .ok()
                    .map(|(key, info)| Served { info, key })
            })
            .collect();
        serving.set(Source::Managed, served);
    }

    /// Publishes the issued certificates and the pending challenges to the gateways (and to
    /// what this process serves). Returns the bundle's version.
    fn publish(&self) -> u64 {
        let now = crate::now();
        // Versions grow across leaders too: a new leader's first bundle is never taken for one
        // a gateway already has.
        let version = self
            .version
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some((v + 1).max(now.0)))
            .map_or(now.0, |v| (v + 1).max(now.0));
        let (http01, alpn) = {
            let p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            (p.http01.clone(), p.tls_alpn01.clone())
        };
        let tls_alpn01 = alpn
            .into_iter()
            .map(|(host, pem)| TlsCertificate { names: vec![host], cert_chain: pem.cert_chain, key: pem.key })
            .collect();
        let bundle = TlsBundle { version, certificates: self.issued(now), http01, tls_alpn01 };
        self.serve_records(now);
        self.plane.publish_tls(Arc::new(bundle));
        version
    }

    /// The certificate files this process serves, described.
    fn files(&self) -> Vec<Served> {
        self.cfg.serving.as_ref().map(|s| s.get(Source::Files)).unwrap_or_default()
    }

    /// Every certificate, for `GET /v1/certificates` (`hosts`: only those kept for these hosts;
    /// none: all, files included).
    pub fn views(&self, hosts: Option<&[String]>) -> Vec<CertificateView> {
        let mut out: Vec<CertificateView> = Vec::new();
        if hosts.is_none() {
            for f in self.files() {
                out.push(CertificateView {
                    host: f.info.names.first().cloned().unwrap_or_default(),
                    names: f.info.names.clone(),
                    source: "file".into(),
                    state: "valid".into(),
                    challenge: None,
                    issuer: Some(f.info.issuer.clone()),
                    not_before: Some(rfc3339(f.info.not_before)),
                    expires_at: Some(rfc3339(f.info.not_after)),
                    renew_at: None,
                    failures: 0,
                    last_error: None,
                    last_attempt: None,
                    next_attempt: None,
                });
            }
        }
        for r in self.records.load().iter() {
            if hosts.is_some_and(|h| !h.contains(&r.host)) {
                continue;
            }
            let m = managed(r);
            let next = match sluice_core::tls::due(&m, crate::now()) {
                sluice_core::tls::Due::Wait(t) => Some(t),
                sluice_core::tls::Due::Issue => r.last_attempt.map(|t| Millis(t.0 + retry_after_ms(r.failures))),
            };
            out.push(CertificateView {
                host: r.host.clone(),
                names: r.names.clone(),
                source: "acme".into(),
                state: r.state.clone(),
                challenge: Some(r.challenge.clone()),
                issuer: r.issuer.clone(),
                not_before: r.not_before.map(rfc3339),
                expires_at: r.not_after.map(rfc3339),
                renew_at: r.not_before.zip(r.not_after).map(|(a, b)| rfc3339(renew_at(a, b))),
                failures: r.failures,
                last_error: r.last_error.clone(),
                last_attempt: r.last_attempt.map(rfc3339),
                next_attempt: next.map(rfc3339),
            });
        }
        out
    }

    /// The certificate that serves `host`, for its endpoint's view: a file's that covers it,
    /// else the one kept for it, else its data center's wildcard.
    pub fn for_endpoint(&self, host: &str) -> Option<EndpointCertificate> {
        if !self.cfg.enabled {
            return None;
        }
        if let Some(f) = self.files().into_iter().find(|f| f.info.names.iter().any(|n| name_covers(n, host))) {
            return Some(EndpointCertificate {
                host: f.info.names.first().cloned().unwrap_or_default(),
                source: "file".into(),
                state: "valid".into(),
                expires_at: Some(rfc3339(f.info.not_after)),
                last_error: None,
            });
        }
        let recs = self.records.load();
        let rec = recs
            .iter()
            .find(|r| r.host == host)
            .or_else(|| recs.iter().find(|r| r.names.iter().any(|n| n.starts_with("*.") && name_covers(n, host))));
        Some(match rec {
            Some(r) => EndpointCertificate {
                host: r.host.clone(),
                source: "acme".into(),
                state: r.state.clone(),
                expires_at: r.not_after.map(rfc3339),
                last_error: r.last_error.clone(),
            },
            None => EndpointCertificate {
                host: host.to_owned(),
                source: if self.cfg.acme.is_some() { "acme" } else { "none" }.into(),
                state: "pending".into(),
                expires_at: None,
                last_error: (self.cfg.acme.is_none())
                    .then(|| "no certificate file covers this host, and ACME is not configured".to_owned()),
            },
        })
    }

    /// Hosts of managed certificates by state (for `/metrics`).
    pub fn counts(&self) -> HashMap<String, u64> {
        let mut m = HashMap::new();
        for r in self.records.load().iter() {
            *m.entry(r.state.clone()).or_insert(0) += 1;
        }
        m
    }
}
