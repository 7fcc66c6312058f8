//! The certificates a TLS server holds, chosen per connection from the SNI name.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;
use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use crate::CertInfo;

/// One certificate served, with what it says of itself.
#[derive(Clone)]
pub struct Served {
    pub info: CertInfo,
    pub key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served").field("names", &self.info.names).finish_non_exhaustive()
    }
}

/// Where a served certificate came from. Files win over issued certificates for the same name:
/// an operator's explicit choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `tls_cert` / `tls_key` files.
    Files,
    /// Issued over ACME (from the store).
    Managed,
}

/// The ALPN protocol of ACME's TLS-ALPN-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Certificates by name and the certificates of pending TLS-ALPN-01 challenges. Readers (every
/// handshake) never block: each set is an `ArcSwap`, replaced whole.
#[derive(Default)]
pub struct CertStore {
    /// The served set, files first.
    served: ArcSwap<Vec<Served>>,
    /// The two sources, kept apart so that one can be replaced without the other.
    parts: Mutex<(Vec<Served>, Vec<Served>)>,
    challenges: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").field("served", &self.served.load().len()).finish_non_exhaustive()
    }
}

impl CertStore {
    pub fn new() -> Arc<CertStore> {
        Arc::default()
    }

    /// Replaces the certificates of one source (a file changed; one was issued or renewed).
    pub fn set(&self, source: Source, certs: Vec<Served>) {
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        match source {
            Source::Files => parts.0 = certs,
            Source::Managed => parts.1 = certs,
        }
        self.served.store(Arc::new(parts.0.iter().chain(&parts.1).cloned().collect()));
    }

    /// The certificates of one source.
    pub fn get(&self, source: Source) -> Vec<Served> {
        let parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        match source {
            Source::Files => parts.0.clone(),
            Source::Managed => parts.1.clone(),
        }
    }

    /// Replaces the TLS-ALPN-01 challenge certificates (host → certificate).
    pub fn set_challenges(&self, challenges: HashMap<String, Arc<CertifiedKey>>) {
        self.challenges.store(Arc::new(challenges));
    }

    /// Whether no certificate is held.
    pub fn is_empty(&self) -> bool {
        self.served.load().is_empty()
    }

    /// Whether a certificate held covers `host` (by name or wildcard).
    pub fn covers(&self, host: &str) -> bool {
        let served = self.served.load();
        sluice_core::tls::pick_certificate(served.iter().map(|s| s.info.names.as_slice()), host).is_some()
    }

    /// The certificate for `host`: an exact name first, then a wildcard. A client that sends no
    /// name (it dialled an address) gets the first certificate held.
    pub fn for_host(&self, host: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let served = self.served.load();
        match host {
            Some(h) => sluice_core::tls::pick_certificate(served.iter().map(|s| s.info.names.as_slice()), h)
                .map(|i| served[i].key.clone()),
            None => served.first().map(|s| s.key.clone()),
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let host = hello.server_name().map(str::to_ascii_lowercase);
        let acme = hello.alpn().is_some_and(|mut a| a.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // A validation connection gets the challenge certificate, and nothing else.
            return host.and_then(|h| self.challenges.load().get(&h).cloned());
        }
        // No certificate: the handshake fails with an alert (the client sees a TLS error that
        // names no certificate, rather than one for another host).
        self.for_host(host.as_deref())
    }
}
