//! HTTPS at the gateway (R1.9): what a TLS listener serves with, and the plain listener beside
//! it, which answers ACME HTTP-01 challenges and sends everything else to `https://` (308, path
//! and query kept).
use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use sluice_api::internal::{TlsBundle, TlsCertificate};
use sluice_core::Millis;
use sluice_tls::{CertStore, Pem, Served, Source, certs::certified};
use tokio_rustls::TlsAcceptor;

use crate::body::{BoxBody, full};

/// How the gateway serves HTTPS: its certificates (files, and those the control plane issues
/// over ACME), the ACME challenges it answers, and what its answers carry.
pub struct GatewayTls {
    certs: Arc<CertStore>,
    pub(crate) acceptor: TlsAcceptor,
    /// Pending HTTP-01 challenges: token → key authorization (RFC 8555 8.3).
    http01: ArcSwap<HashMap<String, String>>,
    /// The port clients reach HTTPS on (for redirects; 443 is left out of the URL).
    https_port: u16,
    /// `Strict-Transport-Security` on every HTTPS answer, when set.
    pub(crate) hsts: Option<HeaderValue>,
    /// The version of the bundle applied last.
    version: AtomicU64,
}

impl std::fmt::Debug for GatewayTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayTls").field("https_port", &self.https_port).finish_non_exhaustive()
    }
}

fn served(c: &TlsCertificate, what: &str, now: Millis) -> Option<Served> {
    let pem = Pem { cert_chain: c.cert_chain.clone(), key: c.key.clone() };
    match certified(&pem, &format!("{what} for {}", c.names.join(", ")), now) {
        Ok((key, info)) => Some(Served { info, key }),
        Err(e) => {
            tracing::warn!(error = %e, "a certificate from the control plane cannot be served");
            None
        }
    }
}

impl GatewayTls {
    /// `certs` may already hold certificates from files; `hsts_max_age_secs`: send HSTS.
    pub fn new(certs: Arc<CertStore>, https_port: u16, hsts_max_age_secs: Option<u64>) -> Arc<GatewayTls> {
        Arc::new(GatewayTls {
            acceptor: sluice_tls::server::acceptor(certs.clone()),
            certs,
            http01: ArcSwap::default(),
            https_port,
            hsts: hsts_max_age_secs.and_then(|s| HeaderValue::from_str(&format!("max-age={s}")).ok()),
            version: AtomicU64::new(0),
        })
    }

    /// The certificates served.
    pub fn certs(&self) -> &Arc<CertStore> {
        &self.certs
    }

    /// Installs what the control plane published: the issued certificates and the pending
    /// challenges. A certificate that cannot be used is logged and left out.
    pub fn apply(&self, bundle: &TlsBundle, now: Millis) {
        let issued = bundle.certificates.iter().filter_map(|c| served(c, "the issued certificate", now)).collect();
        self.certs.set(Source::Managed, issued);
        let alpn = bundle
            .tls_alpn01
            .iter()
            .filter_map(|c| {
                let host = c.names.first()?.to_ascii_lowercase();
                let pem = Pem { cert_chain: c.cert_chain.clone(), key: c.key.clone() };
                sluice_tls::certs::challenge_key(&pem, &format!("the TLS-ALPN-01 certificate for {host}"))
                    .map_err(|e| tracing::warn!(error = %e, "a challenge certificate cannot be served"))
                    .ok()
                    .map(|k| (host, k))
            })
            .collect();
        self.certs.set_challenges(alpn);
        self.http01.store(Arc::new(bundle.http01.iter().map(|(k, v)| (k.clone(), v.clone())).collect()));
        self.version.store(bundle.version, Ordering::Relaxed);
    }

    /// The version of the bundle applied last (0: none).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// What the plain listener answers (see [`plain_answer`]).
    pub(crate) fn answer_plain(&self, host: Option<&str>, path_and_query: &str) -> Response<BoxBody> {
        plain_answer(&self.http01.load(), host, path_and_query, self.https_port)
    }
}

/// The prefix of HTTP-01 challenge paths.
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// What the plain listener answers when HTTPS is on: a challenge's key authorization, or a
/// 308 to the same path and query on `https://`.
pub fn plain_answer(
    challenges: &HashMap<String, String>,
    host: Option<&str>,
    path_and_query: &str,
    https_port: u16,
) -> Response<BoxBody> {
    if let Some(token) = path_and_query.strip_prefix(CHALLENGE_PREFIX) {
        return match challenges.get(token) {
            Some(key_auth) => {
                let mut r = Response::new(full(Bytes::from(key_auth.clone())));
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                r
            }
            None => {
                let mut r = Response::new(full(Bytes::from_static(b"no such challenge")));
                *r.status_mut() = StatusCode::NOT_FOUND;
                r
            }
        };
    }
    match redirect_location(host, path_and_query, https_port) {
        Some(loc) => {
            let mut r = Response::new(crate::body::empty());
            *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
            if let Ok(v) = HeaderValue::from_str(&loc) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        None => {
            let mut r = Response::new(full(Bytes::from_static(b"this address serves HTTPS only; send a Host header")));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            r
        }
    }
}

/// `https://{host}[:port]{path}` for a request that came to the plain listener.
pub fn redirect_location(host: Option<&str>, path_and_query: &str, https_port: u16) -> Option<String> {
    let host = host?.trim();
    // The host without its port (an IPv6 literal keeps its brackets).
    let name = match host.rsplit_once(':') {
        Some((h, p))
            if !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']')) =>
        {
            h
        }
        _ => host,
    };
    if name.is_empty() || name.contains(['/', '@', ' ', '\\']) {
        return None;
    }
    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    let path = if path_and_query.starts_with('/') { path_and_query } else { "/" };
    Some(format!("https://{name}{port}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_keep_path_and_query() {
        for (host, pq, port, want) in [
            (Some("api.example.com"), "/v1/x?y=1", 443, Some("https://api.example.com/v1/x?y=1")),
            (Some("api.example.com:80"), "/", 443, Some("https://api.example.com/")),
            (Some("a.local.localhost:8080"), "/e?q", 8443, Some("https://a.local.localhost:8443/e?q")),
            (Some("[::1]:80"), "/", 443, Some("https://[::1]/")),
            (Some("evil.com/@x"), "/", 443, None),
            (None, "/", 443, None),
            (Some(""), "/", 443, None),
        ] {
            assert_eq!(redirect_location(host, pq, port).as_deref(), want, "{host:?} {pq}");
        }
        let mut ch = HashMap::new();
        ch.insert("tok".to_owned(), "tok.thumb".to_owned());
        assert_eq!(plain_answer(&ch, Some("h"), "/.well-known/acme-challenge/tok", 443).status(), StatusCode::OK);
        assert_eq!(plain_answer(&ch, Some("h"), "/.well-known/acme-challenge/no", 443).status(), StatusCode::NOT_FOUND);
        let r = plain_answer(&ch, Some("h"), "/x", 443);
        assert_eq!(
            (r.status(), r.headers()[header::LOCATION].to_str().unwrap()),
            (StatusCode::PERMANENT_REDIRECT, "https://h/x")
        );
    }
}
