//! The client side: what every outbound TLS connection of the platform trusts (the ACME
//! directory, webhooks, the control URL a gateway follows, the CLI's API), and connectors for
//! `http://` and `https://` URLs. A certificate that does not verify is an error; nothing falls
//! back to plain HTTP.
use std::{path::Path, sync::Arc, time::Duration};

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, pem::PemObject};

use crate::CertError;

/// The system's roots (`/etc/ssl/certs` and the like), plus the certificates of `extra_ca` (a
/// PEM bundle: a private CA such as Pebble's or a company's step-ca).
pub fn roots(extra_ca: Option<&Path>) -> Result<RootCertStore, CertError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "a system root could not be read");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(roots = added, "system roots loaded");
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path)
            .map_err(|e| CertError::Unreadable { path: path.display().to_string(), reason: e.to_string() })?;
        let what = format!("the CA bundle {}", path.display());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| CertError::BadCertificate { what: what.clone(), reason: e.to_string() })?;
        if certs.is_empty() {
            return Err(CertError::NoCertificate { what });
        }
        for c in certs {
            roots.add(c).map_err(|e| CertError::BadCertificate { what: what.clone(), reason: e.to_string() })?;
        }
    }
    Ok(roots)
}

/// A client config over `roots` (ALPN is the connector's: it offers the protocols it enables).
pub fn config(roots: RootCertStore) -> Arc<ClientConfig> {
    let cfg = ClientConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(cfg)
}

/// A connector for `http://` and `https://` URLs (TLS verified against `cfg`'s roots).
pub fn connector(cfg: Arc<ClientConfig>, connect_timeout: Duration) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*cfg).clone())
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http)
}
